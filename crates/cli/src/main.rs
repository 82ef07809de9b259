//! `ail`: amortised invariance learning for contrastive self-supervision, from the command line.
//!
//! With no arguments it runs the built-in demo on the built-in data.

use std::process::ExitCode;

use ail_cli::{args, batchnorm, bench, bound, common, compare, export, fewshot, finetune, fit, info, interop, lowshot, measure, pretrain, preview, report};

use clap::Parser;

fn main() -> ExitCode {
    // Mesa's Vulkan drivers print an error line per probe when XDG_RUNTIME_DIR is unset (common in
    // containers and CI); give them a directory before any thread or driver starts.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: first statement of main, before any other thread exists.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
    keep_freed_memory();
    let cli = args::Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) if matches!(err.downcast_ref::<ail_core::CoreError>(), Some(ail_core::CoreError::Interrupted { .. })) => {
            eprintln!("{err}");
            ExitCode::from(130)
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Keeps the memory a training step frees for the next step instead of returning it to the
/// kernel (glibc only). By default glibc serves every large buffer (activations, gradients, im2col
/// columns; all above its 128 KiB-32 MiB threshold) with its own `mmap` and unmaps it when freed,
/// so each step faults in and zeroes all its pages again: 9% of a width-0.25 step and about a
/// fifth of a width-1.0 one went to page faults. Served from the heap and kept, the next step
/// reuses them (BENCHMARKS.md, "Pretraining and fit steps": 20-30% faster at width 1.0, peak
/// memory 5% higher). jemalloc and mimalloc, tried earlier, were slower here.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::ffi::c_int;
        unsafe extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        // glibc's malloc.h: M_TRIM_THRESHOLD -1, M_TOP_PAD -2, M_MMAP_MAX -4.
        // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
        unsafe {
            mallopt(-4, 0); // no buffer gets its own mapping: all come from the heap
            mallopt(-1, c_int::MAX); // keep up to 2 GiB of freed memory at the heap's top
            mallopt(-2, 64 << 20); // grow the heap 64 MiB at a time
        }
    }
}

fn run(cli: args::Cli) -> anyhow::Result<ExitCode> {
    if let Some(gib) = cli.global.max_memory {
        anyhow::ensure!(gib.is_finite() && gib > 0.0, "--max-memory {gib}: give a positive number of GiB");
        ail_data::limits::set_memory_ceiling((gib * (1u64 << 30) as f64) as u64);
    }
    match cli.command {
        None => pretrain::demo(&cli.global),
        Some(args::Command::AugmentPreview(a)) => preview::run(&cli.global, &a),
        Some(args::Command::Bench(b)) => bench::run(&cli.global, &b),
        Some(args::Command::Info(a)) => info::run(&cli.global, &a),
        Some(args::Command::Export(a)) => export::run(&a),
        Some(args::Command::Import(a)) => export::run_import(&a),
        Some(args::Command::Fit(a)) => fit::run(&cli.global, &a),
        Some(args::Command::Compare(a)) => compare::run(&cli.global, &a),
        Some(args::Command::Batchnorm(a)) => batchnorm::run(&cli.global, &a),
        Some(args::Command::Embed(a)) => interop::run_embed(&cli.global, &a),
        Some(args::Command::Predict(a)) => interop::run_predict(&cli.global, &a),
        Some(args::Command::Fewshot(a)) => fewshot::run(&cli.global, &a),
        Some(args::Command::Lowshot(a)) => lowshot::run(&cli.global, &a),
        Some(args::Command::Bound(a)) => bound::run(&a),
        Some(args::Command::Finetune(a)) => finetune::run(&cli.global, &a),
        Some(args::Command::Pareto(a)) => report::run_pareto(&a),
        Some(args::Command::Report(a)) => report::run_report(&a),
        Some(args::Command::Measure(a)) => measure::run_measure(&cli.global, &a),
        Some(args::Command::Interpolate(a)) => measure::run_interpolate(&cli.global, &a),
        Some(args::Command::Pretrain(a)) => pretrain::run(&cli.global, &a).map(|_| ()),
        Some(args::Command::Serve(a)) => common::serve(&cli.global, &a),
    }?;
    Ok(ExitCode::SUCCESS)
}

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

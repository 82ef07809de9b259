//! `ail info`: parameters per part and FLOPs of an encoder.

use ail_core::summary::{flops, params};
use ail_core::{EncoderConfig, ModelKind};
use burn::module::Module;

use crate::args::{Global, InfoArgs};

/// Models up to this many parameters are also built, to check the analytic count.
const BUILD_LIMIT: usize = 200_000_000;

fn human(n: f64) -> String {
    match n {
        n if n >= 1e9 => format!("{:.2} G", n / 1e9),
        n if n >= 1e6 => format!("{:.2} M", n / 1e6),
        n if n >= 1e3 => format!("{:.1} k", n / 1e3),
        n => format!("{n:.0}"),
    }
}

pub fn run(global: &Global, args: &InfoArgs) -> anyhow::Result<()> {
    let kind: ModelKind = args.model.parse()?;
    let family = args.invariances;
    let mut config = EncoderConfig::new(kind, family.num_invariances())
        .with_width(args.width)
        .with_image_size(args.image_size);
    config.hidden = args.hidden;
    config.condition_stem = args.condition_stem;
    config.validate()?;

    let summary = params(&config, args.num_classes);
    let total = summary.total();
    let k = config.input_invariances();
    println!(
        "{kind}: {}K = {k}{}, {}x{} input, feature dim {}",
        if kind.is_vit() { String::new() } else { format!("width {}, ", args.width) },
        if kind.is_amortised() { format!(" ({family:?})") } else { String::new() },
        args.image_size,
        args.image_size,
        config.feature_dim()
    );
    println!("\n{:<28} {:>15} {:>9}", "part", "parameters", "share");
    for (part, n) in &summary.parts {
        println!("{part:<28} {n:>15} {:>8.2}%", 100.0 * *n as f64 / total as f64);
    }
    println!("{:<28} {total:>15} {:>9}", "total", human(total as f64));
    if summary.running_stats > 0 {
        println!("(plus {} BatchNorm running statistics, which are not trained)", summary.running_stats);
    }
    let f = flops(&config);
    println!("\nFLOPs (multiply-add = 2): {} per image", human(f.per_image as f64));
    if f.per_forward > 0 {
        println!(
            "  + {} once per forward for the whole batch ({})",
            human(f.per_forward as f64),
            if kind.is_vit() { "the invariance token" } else { "generating the kernels from i" }
        );
    }

    if total <= BUILD_LIMIT {
        // Counting needs no accelerator: build on the CPU.
        let cpu = ail_augment::device::cpu();
        if global.device == "wgpu" {
            eprintln!("note: info builds the model on the CPU to count it");
        }
        eprintln!("device: {}", cpu.description);
        let device = cpu.device;
        let built = config.init(&device)?.num_params();
        let head = summary.part("head");
        anyhow::ensure!(
            built + head == total + summary.running_stats,
            "the built model has {built} parameters, the analytic count says {}",
            total - head + summary.running_stats
        );
        println!("checked: the built model has the same count");
    } else {
        println!("(not built: {} parameters is more than this check builds)", human(total as f64));
    }
    Ok(())
}

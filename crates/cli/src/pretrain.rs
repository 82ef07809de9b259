//! `ail pretrain` and the built-in demo: flags -> a [`PretrainConfig`] (defaults < `--config` file <
//! flags), devices, and a terminal observer around [`ail_core::pretrain::pretrain`], which does the
//! training and keeps the run directory.

use std::path::PathBuf;

use ail_core::pretrain::{Data, PretrainConfig, Resume, RunDir, RunOptions, Summary, pretrain};
use anyhow::Context;

use crate::args::{Global, PretrainArgs};
use crate::common;
use crate::progress::Progress;

/// Applies the flags that were given on top of `config`.
fn apply_flags(config: &mut PretrainConfig, args: &PretrainArgs) -> anyhow::Result<()> {
    macro_rules! set {
        ($($flag:ident => $($field:ident).+),* $(,)?) => { $( if let Some(v) = &args.$flag { config.$($field).+ = v.clone(); } )* };
    }
    set!(
        data => data.source, format => data.format, image_size => data.image_size, method => method, model => encoder.model,
        width => encoder.width, invariances => invariances, fractional_draws => fractional_draws, steps => steps, batch_size => batch_size, shards => shards,
        lr => optimizer.lr, seed => seed, log_every => log_every, checkpoint_every => checkpoint_every,
        monitor_every => monitor.every, monitor_descriptors => monitor.descriptors,
        monitor_batch_norm => monitor.batch_norm, modality => modality, audio_labels => audio.labels,
    );
    if let Some(t) = &args.takes {
        let (lo, hi) = ail_core::task::parse_takes(t)?;
        config.audio.takes = Some([lo, hi]);
    }
    Ok(())
}

/// The config a new run (or a rerun of the same command) asks for: defaults < `--config` < flags.
fn asked_config(args: &PretrainArgs) -> anyhow::Result<PretrainConfig> {
    let mut config = match &args.config {
        Some(path) => {
            let text = ail_data::limits::read_text(path, ail_data::limits::MAX_TEXT_FILE).with_context(|| format!("reading {}", path.display()))?;
            PretrainConfig::from_toml(&text).with_context(|| format!("{} is not a valid pretraining config", path.display()))?
        }
        None => PretrainConfig::default(),
    };
    apply_flags(&mut config, args)?;
    if args.shards.is_none() && config.shards == 1 {
        config.shards = args.replicas();
    }
    Ok(config)
}

/// `--resume`: the run's own config.json, with only its length and intervals changed by flags.
fn resumed_config(args: &PretrainArgs) -> anyhow::Result<PretrainConfig> {
    let changed: Vec<&str> = [
        ("--config", args.config.is_some()),
        ("--data", args.data.is_some()),
        ("--format", args.format.is_some()),
        ("--image-size", args.image_size.is_some()),
        ("--method", args.method.is_some()),
        ("--model", args.model.is_some()),
        ("--width", args.width.is_some()),
        ("--invariances", args.invariances.is_some()),
        ("--fractional-draws", args.fractional_draws.is_some()),
        ("--batch-size", args.batch_size.is_some()),
        ("--shards", args.shards.is_some()),
        ("--lr", args.lr.is_some()),
        ("--seed", args.seed.is_some()),
        ("--modality", args.modality.is_some()),
        ("--audio-labels", args.audio_labels.is_some()),
        ("--takes", args.takes.is_some()),
    ]
    .into_iter()
    .filter_map(|(flag, set)| set.then_some(flag))
    .collect();
    anyhow::ensure!(
        changed.is_empty(),
        "--resume continues the run as configured in its config.json; {} would change it (only --steps/--epochs, \
         --log-every, --checkpoint-every, --monitor-every, --monitor-descriptors and --monitor-batch-norm may be given)",
        changed.join(", ")
    );
    let mut config = RunDir::new(&args.out).read_config().map_err(|e| anyhow::anyhow!("--resume: {e}"))?;
    apply_flags(&mut config, args)?;
    Ok(config)
}

pub fn run(global: &Global, args: &PretrainArgs) -> anyhow::Result<Summary> {
    let (config, resume) = if args.resume {
        (resumed_config(args)?, Resume::Required)
    } else {
        (asked_config(args)?, if args.no_resume { Resume::Never } else { Resume::IfSameRun })
    };
    config.validate()?;
    let devices = match &args.hosts {
        Some(hosts) => common::remote_devices(hosts, args.token_file.as_deref())?,
        None => common::devices(global, args.replicas())?,
    };
    let mut options = RunOptions::new(&args.out, devices);
    options.resume = resume;
    options.epochs = args.epochs;
    options.skip_bad = args.skip_bad;
    options.overwrite = args.overwrite;
    let mut progress = Progress::new().with_stop_signals();
    let summary = pretrain(&config, Data::FromConfig, &options, &mut progress);
    progress.finish();
    let summary = summary?;
    println!("pretrained {} for {} steps (final loss {:.4}) in {:.0} s", config.encoder.model, summary.steps, summary.final_loss, summary.seconds);
    println!("kNN accuracy (k = {}, T = {}) on {} held-out images:", config.monitor.k, config.monitor.temperature, summary.num_queries);
    for (d, acc) in &summary.knn_accuracy {
        println!("  i = [{d}]  {:.1}%", acc * 100.0);
    }
    println!("outputs: {} (config.json, metrics.csv, checkpoints/, summary.json)", args.out.display());
    Ok(summary)
}

/// The default run (`cargo run --release` with no arguments): AI-SimCLR with K = 2 and a narrow
/// Hyper-ResNet-18 on the built-in Fashion-MNIST subset, a few minutes on a 2-core CPU.
pub fn demo(global: &Global) -> anyhow::Result<()> {
    let out = (1..)
        .map(|n| PathBuf::from(format!("runs/demo-{n}")))
        .find(|p| !p.exists())
        .expect("a free run directory name");
    eprintln!(
        "ail demo: pretraining AI-SimCLR (K = 2: spatial, appearance) with a narrow Hyper-ResNet-18 on the \
         built-in Fashion-MNIST images, then measuring kNN accuracy per descriptor. `ail --help` lists the commands."
    );
    let args = PretrainArgs {
        out,
        width: Some(0.125),
        // AIL_DEMO_STEPS shortens the demo (the tests run it in a few steps).
        steps: Some(std::env::var("AIL_DEMO_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(400)),
        batch_size: Some(64),
        monitor_every: Some(100),
        ..Default::default()
    };
    let summary = run(global, &args)?;
    let best = summary.knn_accuracy.iter().max_by(|a, b| a.1.total_cmp(&b.1)).expect("at least one descriptor");
    println!(
        "the encoder is one network dialled by i; its best setting here is i = [{}] ({:.1}%). \
         Next: `ail pretrain --data <cifar-10-batches-bin> --width 0.5` for a real run.",
        best.0,
        best.1 * 100.0
    );
    Ok(())
}

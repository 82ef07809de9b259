//! `ail finetune`: the fine-tuning baseline, the last stages of a ResNet trained with a linear head,
//! written as fit.json like `ail fit`.

use std::time::Instant;

use ail_core::fit::Split;

use crate::args::{FineTuneArgs, Global};
use crate::common;
use crate::downstream::{Opened, bar, describe, open_task, task_normalization, write_json};
use crate::fit::{FitReport, GridPoint};
use crate::parse::parse_descriptor;

pub fn run(global: &Global, args: &FineTuneArgs) -> anyhow::Result<()> {
    common::prepare_out(&args.out)?;
    let budget = match (&args.budget_from, args.time_budget) {
        (Some(path), _) => {
            Some(FitReport::read(path)?.wall_time_s)
        }
        (None, t) => t,
    };
    anyhow::ensure!(budget.is_none_or(|t| t > 0.0), "the time budget must be positive");
    anyhow::ensure!(args.epochs >= 1 && args.batch_size >= 1, "--epochs and --batch-size must be at least 1");
    let Opened { selected, dir, meta, task } = open_task(global, &args.checkpoint, &args.task.spec()?)?;
    crate::downstream::check_fit_memory(&meta.encoder, meta.encoder.feature_dim(), &task, args.batch_size, true, ail_core::summary::params(&meta.encoder, 0).total())?;
    let normalization = meta.normalization.clone().unwrap_or_else(|| task_normalization(&task));
    let device = selected.device.clone().autodiff();
    let checkpoint = ail_core::checkpoint::load_encoder(&dir, &device)?;
    let descriptor = parse_descriptor(&args.descriptor, "--descriptor")?;
    let config = ail_core::finetune::FineTuneConfig {
        stages: args.stages,
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        weight_decay: args.weight_decay,
        time_budget_s: budget,
        descriptor: if meta.encoder.input_invariances() == 0 { Vec::new() } else { descriptor },
        seed: args.seed,
    };
    let start = Instant::now();
    let batches = task.train.len().div_ceil(args.batch_size) as u64;
    let pb = bar(batches * args.epochs as u64, &format!("fine-tune last {} stage(s)", args.stages));
    let run = ail_core::finetune::finetune(checkpoint, &normalization, &task.train, &task.val, &config, &mut |e, _, _| {
        pb.inc(1);
        pb.set_message(format!("epoch {e}"));
    })?;
    pb.finish_and_clear();
    let wall = start.elapsed().as_secs_f64();
    let score = |split: &Split| {
        let out = ail_core::finetune::outputs(&run.model, split, &normalization, &config.descriptor, &device);
        ail_core::fit::score_outputs(&out, &split.targets, &[])
    };
    let report = FitReport {
        checkpoint: dir.clone(),
        model: meta.encoder.kind.to_string(),
        task: task.name.clone(),
        family: meta.family.map(|f| format!("{f:?}").to_lowercase()),
        learned_i: false,
        i: config.descriptor.clone(),
        trajectory: Vec::new(),
        grid: vec![GridPoint { lr: args.lr, weight_decay: args.weight_decay, best_epoch: run.best_epoch, val_score: run.val.primary() }],
        lr: args.lr,
        weight_decay: args.weight_decay,
        epochs: run.best_epoch,
        warm_start_epochs: 0,
        train: score(&task.train),
        val: run.val,
        test: score(&task.test),
        quantised: Vec::new(),
        official_test: task.official_test,
        samples: [task.train.len(), task.val.len(), task.test.len()],
        parameters_updated: run.trainable,
        wall_time_s: wall,
        bound: None,
        bn_statistics: None,
        i_gradient: None,
        head: None,
        finetuned_stages: Some(args.stages),
        corners: Vec::new(),
        head_refit: None,
    };
    let path = args.out.join("fit.json");
    write_json(&path, &report)?;
    println!(
        "{} fine-tuned (last {} stage(s), {} parameters){}: best epoch {} of {} run",
        report.model,
        args.stages,
        run.trainable,
        budget.map(|t| format!(" under a {t:.1} s budget")).unwrap_or_default(),
        run.best_epoch,
        run.epochs_done
    );
    if run.stopped_by_budget {
        println!("  stopped by the time budget");
    }
    println!("  train: {}", describe(&report.train));
    println!("  val:   {}", describe(&report.val));
    println!("  test:  {}", describe(&report.test));
    println!("  {:.1} s; written {}", wall, path.display());
    Ok(())
}

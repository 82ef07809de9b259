//! `ail lowshot`: low-shot regression, a ridge readout trained on fractions of the training split
//! with `i` learned through its leave-one-out error.

use std::time::Instant;

use ail_core::fewshot::{EpisodeConfig, LearnedRidge, learn_ridge, normalised_features};
use ail_core::fit::{Targets, permutation, standardisation, target_rows};
use ail_core::metrics::{MeanCi, r2_score};
use serde::{Deserialize, Serialize};

use crate::args::{Global, LowShotArgs};
use crate::common;
use crate::downstream::{bar, open, write_json};
use crate::parse::{ListError, Start, parse_descriptor, parse_list};

#[derive(Debug, Serialize, Deserialize)]
pub struct LowShotRow {
    pub fraction: f64,
    pub samples: usize,
    pub r2: MeanCi,
    pub mean_i: Vec<f64>,
    pub runs: Vec<(f64, Vec<f32>)>,
}

pub fn run(global: &Global, args: &LowShotArgs) -> anyhow::Result<()> {
    common::prepare_out(&args.out)?;
    let fractions: Vec<f64> = parse_list(&args.fractions, "--fractions", ListError::Long)?;
    anyhow::ensure!(fractions.iter().all(|f| *f > 0.0 && *f <= 1.0), "--fractions must be in (0, 1]");
    anyhow::ensure!(args.repeats >= 1, "--repeats must be at least 1");
    let fixed = args.fixed_invariance.as_deref().map(|t| parse_descriptor(t, "--fixed-invariance")).transpose()?;
    let (mut frozen, task) = open(global, &args.checkpoint, &args.task.spec()?)?;
    frozen.set_batch_norm_statistics(args.bn_statistics, &task.train.pixels, task.train.len(), task.train.shape);
    let Targets::Values { outputs, .. } = task.train.targets else {
        anyhow::bail!("ail lowshot is regression: use --task omniglot-pen or csv (for classes, use ail fewshot or ail fit)")
    };
    let i_start = Start::parse(&args.i_init, "--i-init")?;
    let start_corners = match i_start {
        Start::BestCorner if fixed.is_none() && frozen.num_invariances() > 0 => Some(crate::parse::trained_corners(&frozen, "--i-init")?),
        _ => None,
    };
    let config = EpisodeConfig { steps: args.steps, i_lr: args.i_lr, i_init: i_start.value(), start_corners, fixed: fixed.clone(), lambdas: vec![0.001, 0.01, 0.1, 1.0, 10.0], ..Default::default() };
    let start = Instant::now();
    let pb = bar((fractions.len() * args.repeats) as u64, "low-shot regression");
    let mut rows = Vec::new();
    let Targets::Values { values: test_values, .. } = &task.test.targets else { unreachable!("regression task") };
    for &s in &fractions {
        let n = ((task.train.len() as f64 * s).round() as usize).max(3);
        anyhow::ensure!(n <= task.train.len(), "--fractions {s}: {n} samples, but the training split has only {}", task.train.len());
        let mut runs = Vec::new();
        for r in 0..args.repeats {
            let order = permutation(task.train.len(), args.seed ^ 0x10_5407, (r as u64) << 8 | (s * 1000.0) as u64);
            let sub = task.train.subset(&order[..n]);
            // Targets standardised on the subset, as a user of this fraction would.
            let (mean, std) = standardisation(&sub.targets);
            let y = target_rows(&sub.targets, &mean, &std);
            let LearnedRidge { i, readout, .. } = learn_ridge(&frozen, &sub, &y, outputs, &config)?;
            let pred: Vec<f32> = readout
                .predict(&normalised_features(&frozen, &task.test, &i), task.test.len())
                .iter()
                .enumerate()
                .map(|(k, p)| p * std[k % outputs] + mean[k % outputs])
                .collect();
            runs.push((r2_score(test_values, &pred, outputs), i));
            pb.inc(1);
        }
        let r2 = MeanCi::of(&runs.iter().map(|r| r.0).collect::<Vec<_>>());
        let k = frozen.num_invariances();
        let mean_i = (0..k).map(|j| runs.iter().map(|r| r.1[j] as f64).sum::<f64>() / runs.len() as f64).collect();
        rows.push(LowShotRow { fraction: s, samples: n, r2, mean_i, runs });
    }
    pb.finish_and_clear();
    let path = args.out.join("lowshot.json");
    write_json(
        &path,
        &serde_json::json!({
            "checkpoint": frozen.checkpoint, "task": task.name, "learned_i": fixed.is_none() && frozen.num_invariances() > 0 && args.steps > 0, "i_init": args.i_init.trim(),
            "test_samples": task.test.len(), "wall_time_s": start.elapsed().as_secs_f64(), "rows": rows,
        }),
    )?;
    println!("low-shot regression on {} (test R^2, mean +- 95% CI over {} draws):", task.name, args.repeats);
    for row in &rows {
        println!("  s = {:<5} ({:>4} samples): R^2 {:.4} +- {:.4}, mean i = {:.3?}", row.fraction, row.samples, row.r2.mean, row.r2.ci95, row.mean_i);
    }
    println!("written {}", path.display());
    Ok(())
}

//! `ail compare`: the fair test of "a task picks its own invariance" (docs/method.md, "Comparing
//! learned and fixed invariances"). Every arm gets the same epochs and the same hyper-parameter
//! grid, and everything is chosen on the validation split: the grid point and epoch of each fit,
//! and which trained descriptor ("corner") is the best fixed one. The test split is scored once
//! per arm and seed. Arms: learned `i` from each start (0.5 as in the paper, or the corner that
//! won on validation), the same with the head refitted at the learned `i` as `ail fit
//! --refit-head` does (a fixed fit there, kept when validation prefers it: the learned fit's head
//! was trained while the features moved), the encoder fixed at each
//! corner, the validation-best corner, and separately pretrained plain encoders.

use std::path::PathBuf;
use std::time::Instant;

use ail_core::fit::{FitConfig, FitRun, Scores};
use ail_core::frozen::Frozen;
use ail_core::metrics::MeanCi;
use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::args::{CompareArgs, Global};
use crate::common;
use crate::downstream::{open, task_normalization, write_json};
use crate::fit::{fit_grid, parse_grid, refit_head};
use crate::parse::parse_descriptor;
use crate::svg;

pub use crate::parse::Start;

impl Start {
    fn name(&self) -> String {
        match self {
            Start::Value(v) => format!("learned i (from {v})"),
            Start::BestCorner => "learned i (from the best corner)".into(),
        }
    }

    fn refit_name(&self) -> String {
        format!("{}, head refit", self.name())
    }
}

/// One arm's result in one seed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArmRun {
    pub seed: u64,
    /// The descriptor read at the end (empty for plain encoders).
    pub i: Vec<f32>,
    /// The descriptor it started from (learned arms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Vec<f32>>,
    /// Learned arms: `i` after each epoch of the chosen grid point (the first entry is the start).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trajectory: Vec<Vec<f32>>,
    pub lr: f64,
    pub weight_decay: f64,
    pub best_epoch: usize,
    pub val: Scores,
    pub test: Scores,
    pub wall_time_s: f64,
}

/// One arm over the seeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Arm {
    pub name: String,
    /// `learned`, `learned-refit`, `corner`, `best-corner` or `plain`.
    pub kind: String,
    pub runs: Vec<ArmRun>,
    /// Validation and test score (accuracy or R^2) over the seeds: mean and 95% interval (Student's t).
    pub val: MeanCi,
    pub test: MeanCi,
}

/// compare.json.
#[derive(Debug, Serialize, Deserialize)]
pub struct CompareReport {
    pub checkpoint: PathBuf,
    pub task: String,
    /// `accuracy` or `R^2`.
    pub metric: String,
    pub samples: [usize; 3],
    pub seeds: u64,
    pub epochs: usize,
    pub lrs: Vec<f64>,
    pub weight_decays: Vec<f64>,
    pub i_lr: f64,
    pub bn_statistics: String,
    /// How learned arms' gradient in i treated per-descriptor statistics (absent in older
    /// reports: held).
    #[serde(default)]
    pub i_gradient: Option<ail_core::fit::DescriptorGradient>,
    pub arms: Vec<Arm>,
    pub command: String,
}

fn arm(name: String, kind: &str, runs: Vec<ArmRun>) -> Arm {
    let val = MeanCi::of_few(&runs.iter().map(|r| r.val.primary()).collect::<Vec<_>>());
    let test = MeanCi::of_few(&runs.iter().map(|r| r.test.primary()).collect::<Vec<_>>());
    Arm { name, kind: kind.into(), runs, val, test }
}

pub(crate) fn fmt_i(i: &[f32]) -> String {
    let parts: Vec<String> = i.iter().map(|v| format!("{v:.2}")).collect();
    format!("[{}]", parts.join(", "))
}

pub fn run(global: &Global, args: &CompareArgs) -> anyhow::Result<()> {
    common::prepare_out(&args.out)?;
    let (lrs, wds) = parse_grid(&args.grid)?;
    anyhow::ensure!(args.seeds >= 2, "--seeds must be at least 2 (an interval needs two)");
    let starts: Vec<Start> =
        if args.starts.trim() == "none" { Vec::new() } else { args.starts.split(',').map(|t| Start::parse(t, "--starts")).collect::<anyhow::Result<_>>()? };
    let plains: Vec<(String, PathBuf)> = args
        .plains
        .iter()
        .map(|p| {
            let (name, path) = p.split_once('=').ok_or_else(|| anyhow::anyhow!("--plain {p}: give NAME=PATH, e.g. default=runs/simclr-default"))?;
            anyhow::ensure!(!name.trim().is_empty(), "--plain {p}: the name is empty");
            Ok((name.trim().to_string(), PathBuf::from(path)))
        })
        .collect::<anyhow::Result<_>>()?;

    let spec = args.task.spec()?;
    let (mut frozen, task) = open(global, &args.checkpoint, &spec)?;
    crate::downstream::check_fit_memory(&frozen.meta.encoder, frozen.feature_dim(), &task, args.grid.batch_size, true, 0)?;
    let k = frozen.num_invariances();
    anyhow::ensure!(k > 0, "{} is a plain encoder: compare needs an amortised one (pass plain encoders with --plain)", frozen.checkpoint.display());
    let corners: Vec<Vec<f32>> = match &args.corners {
        Some(text) => text.split(';').map(|t| parse_descriptor(t, "--corners")).collect::<anyhow::Result<_>>()?,
        None => match frozen.family() {
            Some(family) => family.trained().into_iter().map(|d| d.0).collect(),
            None => anyhow::bail!("the checkpoint records no descriptor family: name the corners with --corners"),
        },
    };
    for c in &corners {
        frozen.check_descriptor(c).context("--corners")?;
    }
    frozen.set_batch_norm_statistics(args.bn_statistics, &task.train.pixels, task.train.len(), task.train.shape);
    let device = common::device(global)?.device;
    let mut plain_encoders = Vec::new();
    for (name, path) in &plains {
        let dir = ail_core::frozen::resolve_checkpoint(path).with_context(|| format!("--plain {name}"))?;
        let mut p = Frozen::open(&dir, &device, || task_normalization(&task)).with_context(|| format!("--plain {name}"))?;
        anyhow::ensure!(
            p.input_shape() == frozen.input_shape(),
            "--plain {name}: it takes inputs {:?}, the amortised encoder {:?}: compare encoders of one input size",
            p.input_shape(),
            frozen.input_shape()
        );
        anyhow::ensure!(
            p.num_invariances() == 0,
            "--plain {name}: {} is an amortised encoder (K = {}); plain arms are encoders pretrained on one augmentation set (`ail pretrain --invariances fixed:...`)",
            p.checkpoint.display(),
            p.num_invariances()
        );
        p.set_batch_norm_statistics(args.bn_statistics, &task.train.pixels, task.train.len(), task.train.shape);
        plain_encoders.push((name.clone(), p));
    }

    let base = FitConfig { epochs: args.grid.epochs, batch_size: args.grid.batch_size, i_lr: args.i_lr, i_gradient: args.i_gradient, ..FitConfig::default() };
    let arm_run = |frozen: &Frozen, seed: u64, (lr, weight_decay): (f64, f64), run: &FitRun, wall_time_s: f64| ArmRun {
        seed,
        i: run.best.i.clone(),
        start: run.learned_i.then(|| run.trajectory[0].clone()),
        trajectory: if run.learned_i { run.trajectory.clone() } else { Vec::new() },
        lr,
        weight_decay,
        best_epoch: run.best_epoch,
        val: run.val,
        test: run.best.score(frozen, &task.test, None),
        wall_time_s,
    };
    let one = |frozen: &Frozen, config: FitConfig, what: &str| -> anyhow::Result<ArmRun> {
        let start = Instant::now();
        let (lr, wd, run, _) = fit_grid(frozen, &task.train, &task.val, &config, &lrs, &wds, what, false)?;
        Ok(arm_run(frozen, config.seed, (lr, wd), &run, start.elapsed().as_secs_f64()))
    };
    let mut corner_runs: Vec<Vec<ArmRun>> = vec![Vec::new(); corners.len()];
    let mut best_runs = Vec::new();
    let mut learned_runs: Vec<Vec<ArmRun>> = vec![Vec::new(); starts.len()];
    let mut refit_runs: Vec<Vec<ArmRun>> = vec![Vec::new(); starts.len()];
    let mut plain_runs: Vec<Vec<ArmRun>> = vec![Vec::new(); plain_encoders.len()];
    for seed in 0..args.seeds {
        for (c, corner) in corners.iter().enumerate() {
            let run = one(&frozen, FitConfig { fixed: Some(corner.clone()), seed, ..base.clone() }, &format!("seed {seed}, i fixed at {}", fmt_i(corner)))?;
            corner_runs[c].push(run);
        }
        let best = corner_runs
            .iter()
            .map(|runs| runs.last().expect("this seed's run"))
            .max_by(|a, b| a.val.primary().total_cmp(&b.val.primary()))
            .expect("at least one corner")
            .clone();
        eprintln!("seed {seed}: the best corner on validation is {} ({:.4})", fmt_i(&best.i), best.val.primary());
        for (s, start) in starts.iter().enumerate() {
            let i_start = match start {
                Start::Value(v) => vec![*v; k],
                Start::BestCorner => best.i.clone(),
            };
            let what = format!("seed {seed}, {}", start.name());
            let config = FitConfig { i_start: Some(i_start), seed, ..base.clone() };
            let clock = Instant::now();
            let (lr, wd, mut run, _) = fit_grid(&frozen, &task.train, &task.val, &config, &lrs, &wds, &what, false)?;
            let learned = arm_run(&frozen, seed, (lr, wd), &run, clock.elapsed().as_secs_f64());
            eprintln!("{what}: validation {:.4}, i = {}", learned.val.primary(), fmt_i(&learned.i));
            // What `ail fit --refit-head` does: a new head at the learned i, kept when validation
            // prefers it. Its time counts the learned fit's.
            let refit = refit_head(&frozen, &task.train, &task.val, &config, &lrs, &wds, &format!("{what}, head refit"), &mut run)?;
            let grid_point = if refit.kept { (refit.lr, refit.weight_decay) } else { (lr, wd) };
            refit_runs[s].push(arm_run(&frozen, seed, grid_point, &run, clock.elapsed().as_secs_f64()));
            learned_runs[s].push(learned);
        }
        best_runs.push(best);
        for (p, (name, encoder)) in plain_encoders.iter().enumerate() {
            plain_runs[p].push(one(encoder, FitConfig { seed, ..base.clone() }, &format!("seed {seed}, plain {name}"))?);
        }
    }

    let mut arms = Vec::new();
    for ((start, runs), refits) in starts.iter().zip(learned_runs).zip(refit_runs) {
        arms.push(arm(start.name(), "learned", runs));
        arms.push(arm(start.refit_name(), "learned-refit", refits));
    }
    arms.push(arm("best corner (chosen on validation)".into(), "best-corner", best_runs));
    for (corner, runs) in corners.iter().zip(corner_runs) {
        arms.push(arm(format!("fixed i = {}", fmt_i(corner)), "corner", runs));
    }
    for ((name, _), runs) in plain_encoders.iter().zip(plain_runs) {
        arms.push(arm(format!("plain encoder `{name}`"), "plain", runs));
    }
    let metric = if matches!(task.train.targets, ail_core::fit::Targets::Classes { .. }) { "accuracy" } else { "R^2" };
    let report = CompareReport {
        checkpoint: frozen.checkpoint.clone(),
        task: task.name.clone(),
        metric: metric.into(),
        samples: [task.train.len(), task.val.len(), task.test.len()],
        seeds: args.seeds,
        epochs: args.grid.epochs,
        lrs,
        weight_decays: wds,
        i_lr: args.i_lr,
        bn_statistics: frozen.batch_norm_statistics().name().into(),
        i_gradient: Some(args.i_gradient),
        arms,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    write_json(&args.out.join("compare.json"), &report)?;
    let table = markdown(&report);
    ail_core::io::write_atomic(&args.out.join("compare.md"), table.as_bytes()).context("writing compare.md")?;
    ail_core::io::write_atomic(&args.out.join("compare.svg"), chart(&report).as_bytes()).context("writing compare.svg")?;
    print!("{table}");
    println!("written {}/compare.{{json,md,svg}}", args.out.display());
    Ok(())
}

/// The table: one row per arm, scores as mean +- 95% interval in points (accuracy) or R^2.
pub fn markdown(report: &CompareReport) -> String {
    let scale = if report.metric == "accuracy" { 100.0 } else { 1.0 };
    let fmt = |m: &MeanCi| if scale == 100.0 { format!("{:.1} +- {:.1}", 100.0 * m.mean, 100.0 * m.ci95) } else { format!("{:.3} +- {:.3}", m.mean, m.ci95) };
    let mut out = format!(
        "{} on {} ({} train / {} val / {} test); {} seeds, {} epochs, lr grid {:?} x weight decay {:?}, i lr {}, BatchNorm statistics {}{}\n\n",
        report.metric,
        report.task,
        report.samples[0],
        report.samples[1],
        report.samples[2],
        report.seeds,
        report.epochs,
        report.lrs,
        report.weight_decays,
        report.i_lr,
        report.bn_statistics,
        match report.i_gradient {
            Some(ail_core::fit::DescriptorGradient::BatchStatistics) => " (gradient in i through batch statistics)",
            Some(ail_core::fit::DescriptorGradient::HeldStatistics) => " (gradient in i with statistics held)",
            None => "",
        }
    );
    out.push_str(&format!("| arm | validation {} | test {} | i at the end (mean) | seconds per fit |\n|---|---:|---:|---|---:|\n", report.metric, report.metric));
    for arm in &report.arms {
        let n = arm.runs.len().max(1) as f32;
        let k = arm.runs.first().map_or(0, |r| r.i.len());
        let mean_i: Vec<f32> = (0..k).map(|j| arm.runs.iter().map(|r| r.i[j]).sum::<f32>() / n).collect();
        let wall = arm.runs.iter().map(|r| r.wall_time_s).sum::<f64>() / n as f64;
        let i = if k == 0 { "-".into() } else { fmt_i(&mean_i) };
        out.push_str(&format!("| {} | {} | {} | {} | {:.1} |\n", arm.name, fmt(&arm.val), fmt(&arm.test), i, wall));
    }
    out
}

/// Test score per arm with its 95% interval.
pub fn chart(report: &CompareReport) -> String {
    let scale = if report.metric == "accuracy" { 100.0 } else { 1.0 };
    let bars: Vec<svg::Bar> = report
        .arms
        .iter()
        .map(|a| svg::Bar { name: a.name.clone(), value: scale * a.test.mean, interval: scale * a.test.ci95 })
        .collect();
    let unit = if scale == 100.0 { "test accuracy (%)" } else { "test R^2" };
    svg::bar_chart(&format!("{}: learned vs fixed invariance ({} seeds, 95% intervals)", report.task, report.seeds), unit, &bars)
}

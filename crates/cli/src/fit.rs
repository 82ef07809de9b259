//! `ail fit`: a linear head and the invariance descriptor `i` fitted on a frozen encoder, written
//! as fit.json (which `ail bound`, `ail finetune --budget-from`, `ail pareto` and `ail report` read).

use std::path::PathBuf;
use std::time::Instant;

use ail_core::bound::ramp_risk;
use ail_core::fit::{FitConfig, FitRun, Readout, Scores, Split, Targets, fit};
use ail_core::frozen::Frozen;
use ail_core::metrics::quantise;
use anyhow::Context;
use burn::prelude::Tensor;
use serde::{Deserialize, Serialize};

use crate::args::{FitArgs, Global, GridArgs};
use crate::common;
use crate::downstream::{bar, describe, open, write_json};
use crate::parse::{ListError, parse_descriptor, parse_list};

/// A corner's best validation score with i fixed there (`--i-init best-corner`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CornerScore {
    pub i: Vec<f32>,
    pub val_score: f64,
}

/// One point of the validation grid.
#[derive(Debug, Serialize, Deserialize)]
pub struct GridPoint {
    pub lr: f64,
    pub weight_decay: f64,
    pub best_epoch: usize,
    pub val_score: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Quantised {
    pub bits: u32,
    pub i: Vec<f32>,
    pub train: Scores,
    pub val: Scores,
    pub test: Scores,
}

/// Terms `ail bound` needs, measured on the training split.
#[derive(Debug, Serialize, Deserialize)]
pub struct BoundTerms {
    pub samples: usize,
    pub classes: usize,
    /// Largest feature norm at the chosen descriptor (X).
    pub feature_norm: f64,
    /// Frobenius norm of the head's weights (B).
    pub weight_norm: f64,
    /// Mean ramp loss on the training split, per quantisation (`bits`, risk); `bits` 0 is unquantised.
    pub ramp_risk: Vec<(u32, f64)>,
}

/// The fitted head, saved beside fit.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeadInfo {
    /// The safetensors file (in fit.json's directory): `weight` `[outputs, features]` (PyTorch's
    /// `nn.Linear` layout), `bias` `[outputs]`, and with per-descriptor BatchNorm statistics
    /// `batch_norm.<k>.mean` / `batch_norm.<k>.var` for the k-th BatchNorm call of a forward pass.
    pub file: String,
    pub features: usize,
    pub outputs: usize,
    /// Class names in output order (empty for regression).
    pub class_names: Vec<String>,
    /// Regression: predictions are `output * target_std + target_mean` (empty for classes).
    pub target_mean: Vec<f32>,
    pub target_std: Vec<f32>,
}

pub const HEAD_FILE: &str = "head.safetensors";

/// Writes the readout's head (and the BatchNorm statistics its scores were computed with) into
/// `dir`/head.safetensors.
pub(crate) fn save_head(
    dir: &std::path::Path,
    statistics: Option<&ail_core::norm::EncoderStatistics>,
    readout: &Readout,
    class_names: &[String],
) -> anyhow::Result<HeadInfo> {
    use ail_core::arrays::{Array, safetensors_bytes};
    let (w, b) = readout.weights();
    let (outputs, features) = (b.len(), w.len() / b.len().max(1));
    let mut arrays = vec![Array::f32("weight", &[outputs, features], w), Array::f32("bias", &[outputs], b)];
    if let Some(stats) = statistics {
        for (k, layer) in stats.iter().enumerate() {
            arrays.push(Array::f32(&format!("batch_norm.{k}.mean"), &[layer.mean.len()], layer.mean.clone()));
            arrays.push(Array::f32(&format!("batch_norm.{k}.var"), &[layer.var.len()], layer.var.clone()));
        }
    }
    let metadata = std::collections::BTreeMap::from([("i".to_string(), format!("{:?}", readout.i))]);
    let path = dir.join(HEAD_FILE);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    ail_core::io::write_atomic(&path, &safetensors_bytes(&arrays, &metadata)).with_context(|| format!("writing {}", path.display()))?;
    Ok(HeadInfo {
        file: HEAD_FILE.into(),
        features,
        outputs,
        class_names: class_names.to_vec(),
        target_mean: readout.target_mean.clone(),
        target_std: readout.target_std.clone(),
    })
}

/// fit.json.
#[derive(Debug, Serialize, Deserialize)]
pub struct FitReport {
    pub checkpoint: PathBuf,
    pub model: String,
    pub task: String,
    pub family: Option<String>,
    pub learned_i: bool,
    pub i: Vec<f32>,
    /// i after each epoch of the chosen grid point (the first entry is the start).
    pub trajectory: Vec<Vec<f32>>,
    pub grid: Vec<GridPoint>,
    pub lr: f64,
    pub weight_decay: f64,
    /// The chosen epoch (counting the warm-start epochs).
    pub epochs: usize,
    #[serde(default)]
    pub warm_start_epochs: usize,
    pub train: Scores,
    pub val: Scores,
    pub test: Scores,
    pub quantised: Vec<Quantised>,
    pub official_test: bool,
    pub samples: [usize; 3],
    pub parameters_updated: usize,
    pub wall_time_s: f64,
    pub bound: Option<BoundTerms>,
    /// The frozen encoder's BatchNorm statistics (`shared` or `per-descriptor`; absent in older
    /// reports: shared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bn_statistics: Option<String>,
    /// A learned i: how its gradient treated per-descriptor statistics (absent in older reports:
    /// held; absent for fixed fits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub i_gradient: Option<ail_core::fit::DescriptorGradient>,
    /// The fitted head (`ail predict` applies it; absent in older reports and fine-tuning runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<HeadInfo>,
    /// Fine-tuning runs: the stages trained (counted from the last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetuned_stages: Option<usize>,
    /// `--i-init best-corner`: each corner's validation score with i fixed there; learned i
    /// started at the best.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub corners: Vec<CornerScore>,
    /// `--refit-head`: the validation scores of the head learned with i and of the head refitted
    /// at the learned i, and which one the report's head is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_refit: Option<HeadRefit>,
}

/// `ail fit --refit-head`: the two heads at the learned i, scored on validation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeadRefit {
    /// Validation score (accuracy or R^2) of the head trained jointly with i.
    pub joint_val_score: f64,
    /// Validation score of the head refitted with i fixed at the learned value.
    pub refit_val_score: f64,
    /// The refit's chosen learning rate, weight decay and epoch.
    pub lr: f64,
    pub weight_decay: f64,
    pub epochs: usize,
    /// Whether the report's head (and its scores) is the refitted one.
    pub kept: bool,
}

impl FitReport {
    /// Reads `fit.json` (or the `fit.json` in the directory `path`) of `ail fit` or `ail finetune`,
    /// within the size bound of settings files.
    pub fn read(path: &std::path::Path) -> anyhow::Result<Self> {
        let path = if path.is_dir() { path.join("fit.json") } else { path.to_path_buf() };
        let bytes = ail_data::limits::read_file(&path, ail_data::limits::MAX_TEXT_FILE).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not a fit.json of `ail fit` or `ail finetune`", path.display()))
    }
}

fn bound_terms(frozen: &Frozen, readout: &Readout, train: &Split, bits: &[u32]) -> Option<BoundTerms> {
    let Targets::Classes { labels, classes } = &train.targets else { return None };
    let d = frozen.feature_dim();
    let mut descriptors = vec![readout.i.clone()];
    if frozen.num_invariances() > 0 {
        descriptors.extend(bits.iter().map(|&b| quantise(&readout.i, b)));
    }
    // X covers every descriptor scored; the bias is a weight on a constant feature 1, so the
    // features are [f, 1] (norm sqrt(|f|^2 + 1)) and phi is [W, b].
    let feature_norm = descriptors
        .iter()
        .flat_map(|i| {
            let f = frozen.features_u8(&train.pixels, train.len(), train.shape, i);
            f.chunks_exact(d).map(|r| (r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() + 1.0).sqrt()).collect::<Vec<_>>()
        })
        .fold(0.0, f64::max);
    let values = |t: Tensor<2>| t.into_data().convert::<f32>().try_into_vec::<f32>().ok();
    let w = values(readout.head.weight.val())?;
    let b = readout.head.bias.as_ref().and_then(|b| b.val().into_data().convert::<f32>().try_into_vec::<f32>().ok()).unwrap_or_default();
    let weight_norm = w.iter().chain(&b).map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
    let mut risks = vec![(0, ramp_risk(&readout.predict(frozen, train, None), labels, *classes))];
    if frozen.num_invariances() > 0 {
        for &b in bits {
            let q = quantise(&readout.i, b);
            risks.push((b, ramp_risk(&readout.predict(frozen, train, Some(&q)), labels, *classes)));
        }
    }
    Some(BoundTerms { samples: train.len(), classes: *classes, feature_norm, weight_norm, ramp_risk: risks })
}

/// Fits `base` at every (learning rate, weight decay) of the grid and keeps the one with the best
/// validation score: `(lr, weight decay, run, grid)`. `verbose` prints each grid point's result.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fit_grid(
    frozen: &Frozen,
    train: &Split,
    val: &Split,
    base: &FitConfig,
    lrs: &[f64],
    wds: &[f64],
    what: &str,
    verbose: bool,
) -> anyhow::Result<(f64, f64, FitRun, Vec<GridPoint>)> {
    let mut runs = Vec::new();
    let total = lrs.len() * wds.len();
    let learned = base.fixed.is_none() && frozen.num_invariances() > 0;
    let warm = if learned { base.warm_start_epochs } else { 0 };
    for (g, (&lr, &wd)) in lrs.iter().flat_map(|l| wds.iter().map(move |w| (l, w))).enumerate() {
        let config = FitConfig { lr, weight_decay: wd, ..base.clone() };
        let batches = train.len().div_ceil(base.batch_size) as u64;
        let pb = bar(batches * (warm + base.epochs) as u64, &format!("{what} {}/{total} (lr {lr}, wd {wd})", g + 1));
        let run = fit(frozen, train, val, &config, &mut |e, _, _| {
            pb.inc(1);
            pb.set_message(format!("epoch {e}"));
        })?;
        pb.finish_and_clear();
        if verbose {
            eprintln!(
                "lr {lr}, weight decay {wd}: best epoch {} of {}, validation {} (i = {:?})",
                run.best_epoch,
                warm + base.epochs,
                describe(&run.val),
                run.best.i
            );
        }
        runs.push((lr, wd, run));
    }
    let grid: Vec<GridPoint> =
        runs.iter().map(|(lr, wd, r)| GridPoint { lr: *lr, weight_decay: *wd, best_epoch: r.best_epoch, val_score: r.val.primary() }).collect();
    let (lr, wd, best) = runs.into_iter().max_by(|a, b| a.2.val.primary().total_cmp(&b.2.val.primary())).expect("a grid point");
    Ok((lr, wd, best, grid))
}

/// `--refit-head` (and `ail compare`'s refit arms): fits a new head with `i` fixed at the value the
/// learned fit `run` ended with (the same grid and epochs as `base`; features once), and puts it
/// in `run` (head, validation scores and epoch) when it scores better on validation than the head
/// learned with `i`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn refit_head(
    frozen: &Frozen,
    train: &Split,
    val: &Split,
    base: &FitConfig,
    lrs: &[f64],
    wds: &[f64],
    what: &str,
    run: &mut FitRun,
) -> anyhow::Result<HeadRefit> {
    let at = run.best.i.clone();
    let what = format!("{what} at {}", crate::compare::fmt_i(&at));
    let (lr, weight_decay, refit, _) = fit_grid(frozen, train, val, &FitConfig { fixed: Some(at), ..base.clone() }, lrs, wds, &what, false)?;
    let kept = refit.val.primary() > run.val.primary();
    eprintln!(
        "{what}: validation {} against {} with the head learned with i: {}",
        describe(&refit.val),
        describe(&run.val),
        if kept { "the refitted head is kept" } else { "the joint head is kept" }
    );
    let info = HeadRefit { joint_val_score: run.val.primary(), refit_val_score: refit.val.primary(), lr, weight_decay, epochs: refit.best_epoch, kept };
    if kept {
        run.best.head = refit.best.head;
        run.val = refit.val;
        run.best_epoch = refit.best_epoch;
    }
    Ok(info)
}

/// The grid's learning rates and weight decays, checked with the budget.
pub(crate) fn parse_grid(grid: &GridArgs) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let lrs: Vec<f64> = parse_list(&grid.lrs, "--lrs", ListError::Long)?;
    let wds: Vec<f64> = parse_list(&grid.weight_decays, "--weight-decays", ListError::Long)?;
    anyhow::ensure!(lrs.iter().all(|l| *l > 0.0) && wds.iter().all(|w| *w >= 0.0), "--lrs must be > 0 and --weight-decays >= 0");
    anyhow::ensure!(grid.epochs >= 1 && grid.batch_size >= 1, "--epochs and --batch-size must be at least 1");
    Ok((lrs, wds))
}

pub fn run(global: &Global, args: &FitArgs) -> anyhow::Result<()> {
    common::prepare_out(&args.out)?;
    let (lrs, wds) = parse_grid(&args.grid)?;
    let bits: Vec<u32> = parse_list(&args.bits, "--bits", ListError::Long)?;
    anyhow::ensure!(bits.iter().all(|b| (1..=16).contains(b)), "--bits: each entry must be 1..=16");
    let i_start = crate::parse::Start::parse(&args.i_init, "--i-init")?;
    let best_corner_start = i_start == crate::parse::Start::BestCorner;
    let i_init = i_start.value();
    let fixed = args.fixed_invariance.as_deref().map(|t| parse_descriptor(t, "--fixed-invariance")).transpose()?;
    let (mut frozen, task) = open(global, &args.checkpoint, &args.task.spec()?)?;
    if let Some(f) = &fixed {
        frozen.check_descriptor(f).context("--fixed-invariance")?;
    }
    crate::downstream::check_fit_memory(&frozen.meta.encoder, frozen.feature_dim(), &task, args.grid.batch_size, fixed.is_none() && frozen.num_invariances() > 0, 0)?;
    if args.refit_head {
        anyhow::ensure!(fixed.is_none(), "--refit-head refits the head at a learned i: drop --fixed-invariance (a fixed fit is already one)");
        anyhow::ensure!(frozen.num_invariances() > 0, "--refit-head refits the head at a learned i: {} is a plain encoder, with no i to learn", frozen.checkpoint.display());
    }
    frozen.set_batch_norm_statistics(args.bn_statistics, &task.train.pixels, task.train.len(), task.train.shape);
    let start = Instant::now();
    let base = FitConfig {
        epochs: args.grid.epochs,
        batch_size: args.grid.batch_size,
        i_lr: args.i_lr,
        i_gradient: args.i_gradient,
        i_init,
        fixed: fixed.clone(),
        seed: args.seed,
        warm_start_epochs: args.warm_start_epochs,
        ..FitConfig::default()
    };
    let mut corners = Vec::new();
    let base = if best_corner_start && fixed.is_none() && frozen.num_invariances() > 0 {
        for c in crate::parse::trained_corners(&frozen, "--i-init")? {
            let what = format!("corner {}", crate::compare::fmt_i(&c));
            let (_, _, run, _) = fit_grid(&frozen, &task.train, &task.val, &FitConfig { fixed: Some(c.clone()), ..base.clone() }, &lrs, &wds, &what, false)?;
            eprintln!("{what}: validation {}", describe(&run.val));
            corners.push(CornerScore { i: c, val_score: run.val.primary() });
        }
        let best = corners.iter().max_by(|a, b| a.val_score.total_cmp(&b.val_score)).expect("a family trains at least one corner");
        eprintln!("learned i starts at the best corner on validation, {}", crate::compare::fmt_i(&best.i));
        FitConfig { i_start: Some(best.i.clone()), ..base }
    } else {
        base
    };
    let (mut lr, mut wd, mut best, grid) = fit_grid(&frozen, &task.train, &task.val, &base, &lrs, &wds, "fit", true)?;
    let head_refit = if args.refit_head && best.learned_i {
        let info = refit_head(&frozen, &task.train, &task.val, &base, &lrs, &wds, "head refit", &mut best)?;
        if info.kept {
            (lr, wd) = (info.lr, info.weight_decay);
        }
        Some(info)
    } else {
        None
    };
    let readout = &best.best;
    // The statistics the scores below are computed with (per-descriptor mode), saved with the head.
    let statistics = frozen.statistics_at(&readout.i);
    let train = readout.score(&frozen, &task.train, None);
    let test = readout.score(&frozen, &task.test, None);
    let quantised = if frozen.num_invariances() > 0 && best.learned_i {
        bits.iter()
            .map(|&b| {
                let q = quantise(&readout.i, b);
                Quantised {
                    bits: b,
                    train: readout.score(&frozen, &task.train, Some(&q)),
                    val: readout.score(&frozen, &task.val, Some(&q)),
                    test: readout.score(&frozen, &task.test, Some(&q)),
                    i: q,
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    let wall = start.elapsed().as_secs_f64();
    let report = FitReport {
        checkpoint: frozen.checkpoint.clone(),
        model: frozen.meta.encoder.kind.to_string(),
        task: task.name.clone(),
        family: frozen.family().map(|f| format!("{f:?}").to_lowercase()),
        learned_i: best.learned_i,
        i: readout.i.clone(),
        trajectory: best.trajectory.clone(),
        grid,
        lr,
        weight_decay: wd,
        epochs: best.best_epoch,
        warm_start_epochs: if best.learned_i { args.warm_start_epochs } else { 0 },
        train,
        val: best.val,
        test,
        quantised,
        official_test: task.official_test,
        samples: [task.train.len(), task.val.len(), task.test.len()],
        parameters_updated: readout.head_parameters() + if best.learned_i { frozen.num_invariances() } else { 0 },
        wall_time_s: wall,
        bound: bound_terms(&frozen, readout, &task.train, &bits),
        bn_statistics: Some(frozen.batch_norm_statistics().name().into()),
        i_gradient: best.learned_i.then_some(args.i_gradient),
        head: Some(save_head(&args.out, statistics.as_deref(), readout, &task.class_names)?),
        finetuned_stages: None,
        corners,
        head_refit,
    };
    let path = args.out.join("fit.json");
    write_json(&path, &report)?;
    println!("{} on {} ({}):", report.model, report.task, if report.learned_i { "head and i learned" } else { "head only, i fixed" });
    println!("  chosen on validation: lr {lr}, weight decay {wd}, {} epochs", report.epochs);
    println!("  i = {:?}", report.i);
    println!("  train: {}", describe(&report.train));
    println!("  val:   {}", describe(&report.val));
    println!("  test:  {}", describe(&report.test));
    for q in &report.quantised {
        println!("  test with i quantised to {} bit(s) {:?}: {}", q.bits, q.i, describe(&q.test));
    }
    println!("  {} parameters updated, {:.1} s; written {}", report.parameters_updated, wall, path.display());
    Ok(())
}

//! `ail fit`, `ail fewshot`, `ail lowshot` and `ail bound`: what a pretrained encoder is for. A task
//! finds its own invariance by gradient descent on `i` (METHOD.md, "Downstream").

use std::path::{Path, PathBuf};
use std::time::Instant;

use ail_core::bound::{Bound, BoundInputs, ramp_risk};
use ail_core::fewshot::{EpisodeConfig, EpisodeResult, FewShotReadout, learn_ridge, normalised_features, run_episode, sample_episode};
use ail_core::fit::{FitConfig, Readout, Scores, Split, Targets, fit, permutation, standardisation, target_rows};
use ail_core::frozen::{Frozen, channel_statistics};
use ail_core::metrics::{MeanCi, quantise, r2_score};
use anyhow::Context;
use burn::prelude::Tensor;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::args::Global;
use crate::common;
use crate::task::{Task, TaskArgs, TaskKind};

fn parse_list<T: std::str::FromStr>(text: &str, flag: &str) -> anyhow::Result<Vec<T>> {
    text.split(',')
        .map(|v| v.trim().parse::<T>().map_err(|_| anyhow::anyhow!("{flag} {text}: `{v}` is not a number (give a comma-separated list)")))
        .collect()
}

fn parse_descriptor(text: &str, flag: &str) -> anyhow::Result<Vec<f32>> {
    let v: Vec<f32> = parse_list(text, flag)?;
    anyhow::ensure!(v.iter().all(|x| (0.0..=1.0).contains(x)), "{flag} {text}: every entry must be in [0, 1]");
    Ok(v)
}

/// Opens the checkpoint; inputs are normalised with its recorded statistics, or the task's
/// training images' when it has none.
fn open(global: &Global, checkpoint: &Path, task: &TaskArgs) -> anyhow::Result<(Frozen, Task)> {
    let selected = common::device(global)?;
    let dir = ail_core::frozen::resolve_checkpoint(checkpoint)?;
    let meta = ail_core::checkpoint::read_meta(&dir)?;
    let task = task.load(&meta, &selected.device)?;
    let frozen = Frozen::open(&dir, &selected.device, || {
        eprintln!("the checkpoint records no input normalisation: using the task's training images' statistics");
        channel_statistics(&task.train.pixels, task.train.shape)
    })?;
    eprintln!(
        "encoder: {} from {} (step {}, K = {}, {} features)",
        frozen.meta.encoder.kind,
        frozen.checkpoint.display(),
        frozen.meta.step,
        frozen.num_invariances(),
        frozen.feature_dim()
    );
    Ok((frozen, task))
}

fn bar(len: u64, what: &str) -> ProgressBar {
    ProgressBar::new(len).with_style(
        ProgressStyle::with_template(&format!("{what} [{{bar:30}}] {{pos}}/{{len}} {{msg}} [{{elapsed}} < {{eta}}]"))
            .expect("valid template")
            .progress_chars("=> "),
    )
}

fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    ail_core::io::write_atomic(path, &serde_json::to_vec_pretty(value)?).with_context(|| format!("writing {}", path.display()))
}

// --- ail fit ------------------------------------------------------------------------------------

#[derive(Debug, Args)]
pub struct FitArgs {
    /// A pretraining run directory (its newest checkpoint) or a checkpoint directory.
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub task: TaskArgs,
    /// Keep i at this descriptor and fit the head alone (the linear-readout baseline), e.g. 1,1.
    #[arg(long)]
    pub fixed_invariance: Option<String>,
    /// Most epochs; the best epoch on the validation split is kept.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Head learning rates to choose from on the validation split (comma-separated).
    #[arg(long, default_value = "0.001,0.01")]
    pub lrs: String,
    /// Weight decays to choose from on the validation split (comma-separated).
    #[arg(long, default_value = "0,0.0001")]
    pub weight_decays: String,
    /// Learning rate of i (Adam).
    #[arg(long, default_value_t = 0.01)]
    pub i_lr: f64,
    /// Initial value of every entry of i.
    #[arg(long, default_value_t = 0.5)]
    pub i_init: f32,
    /// Train the head alone at the start descriptor for this many epochs (features computed once,
    /// cheap) before the --epochs in which head and i are learned together.
    #[arg(long, default_value_t = 0)]
    pub warm_start_epochs: usize,
    /// Also score the descriptor quantised to these bits per entry (comma-separated), for `ail bound`.
    #[arg(long, default_value = "1")]
    pub bits: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where fit.json goes.
    #[arg(long, default_value = "runs/fit")]
    pub out: PathBuf,
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
    /// Fine-tuning runs: the stages trained (counted from the last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetuned_stages: Option<usize>,
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

fn describe(s: &Scores) -> String {
    match (s.accuracy, s.mean_per_class_accuracy, s.r2) {
        (Some(a), Some(m), _) => format!("accuracy {:.2}%, mean per-class {:.2}%, loss {:.4}", 100.0 * a, 100.0 * m, s.loss),
        (_, _, Some(r)) => format!("R^2 {r:.4}, loss {:.4}", s.loss),
        _ => format!("loss {:.4}", s.loss),
    }
}

pub fn run_fit(global: &Global, args: &FitArgs) -> anyhow::Result<()> {
    common::prepare_out(&args.out)?;
    let lrs: Vec<f64> = parse_list(&args.lrs, "--lrs")?;
    let wds: Vec<f64> = parse_list(&args.weight_decays, "--weight-decays")?;
    let bits: Vec<u32> = parse_list(&args.bits, "--bits")?;
    anyhow::ensure!(bits.iter().all(|b| (1..=16).contains(b)), "--bits: each entry must be 1..=16");
    anyhow::ensure!(lrs.iter().all(|l| *l > 0.0) && wds.iter().all(|w| *w >= 0.0), "--lrs must be > 0 and --weight-decays >= 0");
    anyhow::ensure!((0.0..=1.0).contains(&args.i_init), "--i-init must be in [0, 1]");
    anyhow::ensure!(args.epochs >= 1 && args.batch_size >= 1, "--epochs and --batch-size must be at least 1");
    let fixed = args.fixed_invariance.as_deref().map(|t| parse_descriptor(t, "--fixed-invariance")).transpose()?;
    let (frozen, task) = open(global, &args.checkpoint, &args.task)?;
    if let Some(f) = &fixed {
        frozen.check_descriptor(f).context("--fixed-invariance")?;
    }
    let start = Instant::now();
    let mut runs = Vec::new();
    let total = lrs.len() * wds.len();
    for (g, (&lr, &wd)) in lrs.iter().flat_map(|l| wds.iter().map(move |w| (l, w))).enumerate() {
        let config = FitConfig {
            epochs: args.epochs,
            batch_size: args.batch_size,
            lr,
            weight_decay: wd,
            i_lr: args.i_lr,
            i_init: args.i_init,
            fixed: fixed.clone(),
            seed: args.seed,
            warm_start_epochs: args.warm_start_epochs,
        };
        let batches = task.train.len().div_ceil(args.batch_size) as u64;
        let warm = if fixed.is_none() && frozen.num_invariances() > 0 { args.warm_start_epochs } else { 0 };
        let pb = bar(batches * (warm + args.epochs) as u64, &format!("fit {}/{total} (lr {lr}, wd {wd})", g + 1));
        let run = fit(&frozen, &task.train, &task.val, &config, &mut |e, _, _| {
            pb.inc(1);
            pb.set_message(format!("epoch {e}"));
        })?;
        pb.finish_and_clear();
        eprintln!(
            "lr {lr}, weight decay {wd}: best epoch {} of {}, validation {} (i = {:?})",
            run.best_epoch,
            warm + args.epochs,
            describe(&run.val),
            run.best.i
        );
        runs.push((lr, wd, run));
    }
    let grid: Vec<GridPoint> =
        runs.iter().map(|(lr, wd, r)| GridPoint { lr: *lr, weight_decay: *wd, best_epoch: r.best_epoch, val_score: r.val.primary() }).collect();
    let (lr, wd, best) = runs.into_iter().max_by(|a, b| a.2.val.primary().total_cmp(&b.2.val.primary())).expect("a grid point");
    let readout = &best.best;
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
        finetuned_stages: None,
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

// --- ail fewshot --------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ReadoutArg {
    /// Ridge regression on one-hot targets; i descends its closed-form leave-one-out error.
    Ridge,
    /// A softmax linear head trained on the support set jointly with i.
    Logistic,
}

#[derive(Debug, Args)]
pub struct FewShotArgs {
    /// A pretraining run directory or a checkpoint directory.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Classes to sample episodes from: `omniglot` (--data images zip), `classify` (any image
    /// dataset) or `audio` (an audio folder or FSDD, with an audio encoder).
    #[arg(long, value_enum, default_value_t = TaskKind::Omniglot)]
    pub task: TaskKind,
    #[arg(long, default_value = "builtin")]
    pub data: String,
    /// --task audio: classes are the `class` (folder; FSDD: digit), the `digit` or the `speaker`.
    #[arg(long, default_value = "class")]
    pub audio_labels: String,
    /// --task audio on FSDD: only these takes, e.g. `5-9` (recordings held out of pretraining).
    #[arg(long)]
    pub takes: Option<String>,
    /// N: classes per episode.
    #[arg(long, default_value_t = 5)]
    pub ways: usize,
    /// K: support images per class.
    #[arg(long, default_value_t = 1)]
    pub shots: usize,
    /// Q: query images per class.
    #[arg(long, default_value_t = 15)]
    pub queries: usize,
    #[arg(long, default_value_t = 100)]
    pub episodes: usize,
    #[arg(long, value_enum, default_value_t = ReadoutArg::Ridge)]
    pub readout: ReadoutArg,
    /// Adam steps on i per episode.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    #[arg(long, default_value_t = 0.05)]
    pub i_lr: f64,
    #[arg(long, default_value_t = 0.5)]
    pub i_init: f32,
    /// Keep i fixed (e.g. 1,1): the baseline of one fixed invariance.
    #[arg(long)]
    pub fixed_invariance: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where fewshot.json goes.
    #[arg(long, default_value = "runs/fewshot")]
    pub out: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FewShotReport {
    pub checkpoint: PathBuf,
    pub data: String,
    /// What the classes are: the task, and for audio the labels and takes.
    pub classes: String,
    pub ways: usize,
    pub shots: usize,
    pub queries: usize,
    pub readout: String,
    pub learned_i: bool,
    pub accuracy: MeanCi,
    pub mean_i: Vec<f64>,
    pub wall_time_s: f64,
    pub episodes: Vec<EpisodeResult>,
}

pub fn run_fewshot(global: &Global, args: &FewShotArgs) -> anyhow::Result<()> {
    common::prepare_out(&args.out)?;
    anyhow::ensure!(args.ways >= 2 && args.shots >= 1 && args.queries >= 1 && args.episodes >= 1, "need --ways >= 2, --shots >= 1, --queries >= 1, --episodes >= 1");
    let fixed = args.fixed_invariance.as_deref().map(|t| parse_descriptor(t, "--fixed-invariance")).transpose()?;
    let task_args = TaskArgs {
        task: args.task,
        data: args.data.clone(),
        format: crate::args::Format::Auto,
        strokes: None,
        val_fraction: 0.0,
        test_fraction: 0.0,
        train_size: None,
        val_size: None,
        test_size: None,
        split_seed: 0,
        audio_labels: args.audio_labels.clone(),
        takes: args.takes.clone(),
    };
    anyhow::ensure!(
        matches!(args.task, TaskKind::Omniglot | TaskKind::Classify | TaskKind::Audio),
        "--task must be omniglot, classify or audio: episodes need classes"
    );
    anyhow::ensure!(
        !(args.task == TaskKind::Omniglot && args.data == "builtin"),
        "--task omniglot reads Omniglot's images_background*.zip: pass it with --data (or use --task classify for the built-in data)"
    );
    let (frozen, task) = open(global, &args.checkpoint, &task_args)?;
    // Episodes draw from every image (validation carving leaves one aside; put it back).
    let all = Split {
        pixels: [task.train.pixels.clone(), task.val.pixels.clone()].concat(),
        shape: task.train.shape,
        targets: match (&task.train.targets, &task.val.targets) {
            (Targets::Classes { labels: a, classes }, Targets::Classes { labels: b, .. }) => {
                Targets::Classes { labels: [a.clone(), b.clone()].concat(), classes: *classes }
            }
            _ => anyhow::bail!("episodes need class targets"),
        },
    };
    let Targets::Classes { labels, .. } = &all.targets else { unreachable!("checked above") };
    let config = EpisodeConfig {
        ways: args.ways,
        shots: args.shots,
        queries: args.queries,
        readout: match args.readout {
            ReadoutArg::Ridge => FewShotReadout::Ridge,
            ReadoutArg::Logistic => FewShotReadout::Logistic,
        },
        steps: args.steps,
        i_lr: args.i_lr,
        i_init: args.i_init,
        fixed: fixed.clone(),
        ..Default::default()
    };
    if let Some(f) = &fixed {
        frozen.check_descriptor(f).context("--fixed-invariance")?;
    }
    let start = Instant::now();
    let pb = bar(args.episodes as u64, &format!("{}-way {}-shot", args.ways, args.shots));
    let mut results = Vec::with_capacity(args.episodes);
    for e in 0..args.episodes {
        let ep = sample_episode(labels, args.ways, args.shots, args.queries, args.seed, e as u64)?;
        let relabel = |idx: &[usize], l: &[u32]| Split {
            targets: Targets::Classes { labels: l.to_vec(), classes: args.ways },
            ..all.subset(idx)
        };
        let support = relabel(&ep.support, &ep.support_labels);
        let query = relabel(&ep.query, &ep.query_labels);
        let r = run_episode(&frozen, &support, &query, &config, args.seed ^ e as u64)?;
        results.push(r);
        let acc = MeanCi::of(&results.iter().map(|r| r.accuracy).collect::<Vec<_>>());
        pb.set_message(format!("accuracy {:.1}%", 100.0 * acc.mean));
        pb.inc(1);
    }
    pb.finish_and_clear();
    let accuracy = MeanCi::of(&results.iter().map(|r| r.accuracy).collect::<Vec<_>>());
    let k = frozen.num_invariances();
    let mean_i: Vec<f64> = (0..k).map(|j| results.iter().map(|r| r.i[j] as f64).sum::<f64>() / results.len() as f64).collect();
    let report = FewShotReport {
        checkpoint: frozen.checkpoint.clone(),
        data: args.data.clone(),
        classes: match args.task {
            TaskKind::Audio => format!("audio {} (takes {})", args.audio_labels, args.takes.as_deref().unwrap_or("all")),
            other => serde_json::to_value(other)?.as_str().unwrap_or("?").to_string(),
        },
        ways: args.ways,
        shots: args.shots,
        queries: args.queries,
        readout: format!("{:?}", args.readout).to_lowercase(),
        learned_i: fixed.is_none() && k > 0 && args.steps > 0,
        accuracy,
        mean_i,
        wall_time_s: start.elapsed().as_secs_f64(),
        episodes: results,
    };
    let path = args.out.join("fewshot.json");
    write_json(&path, &report)?;
    println!(
        "{}-way {}-shot, {} episodes, {} readout{}: accuracy {:.2}% +- {:.2}% (95% CI); mean i = {:.3?}; written {}",
        args.ways,
        args.shots,
        args.episodes,
        report.readout,
        if report.learned_i { ", i learned per episode" } else { ", i fixed" },
        100.0 * accuracy.mean,
        100.0 * accuracy.ci95,
        report.mean_i,
        path.display()
    );
    Ok(())
}

// --- ail lowshot --------------------------------------------------------------------------------

#[derive(Debug, Args)]
pub struct LowShotArgs {
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub task: TaskArgs,
    /// Fractions of the training split to train on.
    #[arg(long, default_value = "0.05,0.1,0.2")]
    pub fractions: String,
    /// Random draws of the training subset per fraction.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Adam steps on i (through the ridge readout's leave-one-out error).
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    #[arg(long, default_value_t = 0.05)]
    pub i_lr: f64,
    #[arg(long)]
    pub fixed_invariance: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "runs/lowshot")]
    pub out: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LowShotRow {
    pub fraction: f64,
    pub samples: usize,
    pub r2: MeanCi,
    pub mean_i: Vec<f64>,
    pub runs: Vec<(f64, Vec<f32>)>,
}

pub fn run_lowshot(global: &Global, args: &LowShotArgs) -> anyhow::Result<()> {
    common::prepare_out(&args.out)?;
    let fractions: Vec<f64> = parse_list(&args.fractions, "--fractions")?;
    anyhow::ensure!(fractions.iter().all(|f| *f > 0.0 && *f <= 1.0), "--fractions must be in (0, 1]");
    anyhow::ensure!(args.repeats >= 1, "--repeats must be at least 1");
    let fixed = args.fixed_invariance.as_deref().map(|t| parse_descriptor(t, "--fixed-invariance")).transpose()?;
    let (frozen, task) = open(global, &args.checkpoint, &args.task)?;
    let Targets::Values { outputs, .. } = task.train.targets else {
        anyhow::bail!("ail lowshot is regression: use --task omniglot-pen or csv (for classes, use ail fewshot or ail fit)")
    };
    let config = EpisodeConfig { steps: args.steps, i_lr: args.i_lr, fixed: fixed.clone(), lambdas: vec![0.001, 0.01, 0.1, 1.0, 10.0], ..Default::default() };
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
            let (i, _, readout) = learn_ridge(&frozen, &sub, &y, outputs, &config)?;
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
            "checkpoint": frozen.checkpoint, "task": task.name, "learned_i": fixed.is_none() && frozen.num_invariances() > 0 && args.steps > 0,
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

// --- ail bound ----------------------------------------------------------------------------------

#[derive(Debug, Args)]
pub struct BoundArgs {
    /// fit.json files of `ail fit` on classification tasks (amortised and plain readouts).
    #[arg(long, required = true, num_args = 1..)]
    pub fit: Vec<PathBuf>,
    /// Confidence 1 - delta.
    #[arg(long, default_value_t = 0.05)]
    pub delta: f64,
}

pub fn run_bound(args: &BoundArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.delta > 0.0 && args.delta < 1.0, "--delta must be in (0, 1)");
    for path in &args.fit {
        let report: FitReport = serde_json::from_slice(&std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
            .with_context(|| format!("{} is not a fit.json of `ail fit`", path.display()))?;
        let terms = report.bound.as_ref().with_context(|| {
            format!("{}: no bound terms: the bound is for `ail fit` readouts on classification tasks (not regression, not fine-tuning)", path.display())
        })?;
        let k = report.i.len();
        println!("{} ({}, {}):", path.display(), report.task, if report.learned_i { "learned i" } else { "fixed i" });
        println!(
            "  n = {}, c = {}, X = max ||f(x)|| = {:.4}, B = ||phi|| = {:.4}, M = 1 (ramp loss), delta = {}",
            terms.samples, terms.classes, terms.feature_norm, terms.weight_norm, args.delta
        );
        let inputs = |empirical| BoundInputs {
            empirical,
            weight_norm: terms.weight_norm,
            feature_norm: terms.feature_norm,
            loss_max: 1.0,
            classes: terms.classes,
            samples: terms.samples,
            delta: args.delta,
        };
        let print = |name: &str, b: Bound| {
            println!(
                "  {name:<38} empirical {:.4} + complexity 2 sqrt(2c) X B / sqrt(n) {:.4} + confidence {:.4} = {:.4}",
                b.empirical, b.complexity, b.confidence, b.total
            )
        };
        let plain = terms.ramp_risk.iter().find(|(b, _)| *b == 0).map(|r| r.1).unwrap_or(f64::NAN);
        if !report.learned_i {
            // With i chosen on the training data, the single-extractor bound does not apply.
            print("linear readout, ln(2/delta)", Bound::linear(&inputs(plain)));
        }
        if report.learned_i && k > 0 {
            for &(bits, risk) in terms.ramp_risk.iter().filter(|(b, _)| *b > 0) {
                print(&format!("amortised, {bits}-bit i, |I| = 2^{}", bits as usize * k), Bound::amortised(&inputs(risk), bits, k));
                print("  (union bound as derived, ln(2|I|/delta))", Bound::union_term(&inputs(risk), bits, k));
            }
        }
    }
    Ok(())
}

// --- ail finetune -------------------------------------------------------------------------------

#[derive(Debug, Args)]
pub struct FineTuneArgs {
    /// A pretraining run directory or a checkpoint directory (a ResNet).
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub task: TaskArgs,
    /// Stages to train, counted from the last (1..=4); earlier stages stay frozen in eval mode.
    #[arg(long, default_value_t = 1)]
    pub stages: usize,
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    /// Stop training after this many seconds.
    #[arg(long, conflicts_with = "budget_from")]
    pub time_budget: Option<f64>,
    /// Use the wall time of this fit.json (an `ail fit` run) as the time budget.
    #[arg(long)]
    pub budget_from: Option<PathBuf>,
    /// Descriptor an amortised encoder is read at while fine-tuning (plain encoders ignore it).
    #[arg(long, default_value = "1,1")]
    pub descriptor: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where fit.json goes (the same format as `ail fit`, for `ail pareto`).
    #[arg(long, default_value = "runs/finetune")]
    pub out: PathBuf,
}

pub fn run_finetune(global: &Global, args: &FineTuneArgs) -> anyhow::Result<()> {
    common::prepare_out(&args.out)?;
    let budget = match (&args.budget_from, args.time_budget) {
        (Some(path), _) => {
            let fit: FitReport = serde_json::from_slice(&std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
                .with_context(|| format!("{} is not a fit.json", path.display()))?;
            Some(fit.wall_time_s)
        }
        (None, t) => t,
    };
    anyhow::ensure!(budget.is_none_or(|t| t > 0.0), "the time budget must be positive");
    anyhow::ensure!(args.epochs >= 1 && args.batch_size >= 1, "--epochs and --batch-size must be at least 1");
    let selected = common::device(global)?;
    let dir = ail_core::frozen::resolve_checkpoint(&args.checkpoint)?;
    let meta = ail_core::checkpoint::read_meta(&dir)?;
    let task = args.task.load(&meta, &selected.device)?;
    let normalization = meta.normalization.clone().unwrap_or_else(|| {
        eprintln!("the checkpoint records no input normalisation: using the task's training images' statistics");
        channel_statistics(&task.train.pixels, task.train.shape)
    });
    let device = selected.device.clone().autodiff();
    let checkpoint = ail_core::checkpoint::load(&dir, &device)?;
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
        finetuned_stages: Some(args.stages),
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

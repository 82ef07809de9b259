//! `ail fewshot`: N-way K-shot episodes, a readout fitted on each support set alone with `i`
//! learned per episode.

use std::path::PathBuf;
use std::time::Instant;

use ail_core::fewshot::{EpisodeConfig, EpisodeResult, FewShotReadout, run_episode, sample_episode};
use ail_core::fit::{Split, Targets};
use ail_core::metrics::MeanCi;
use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::args::{FewShotArgs, Global, ReadoutArg};
use crate::common;
use crate::downstream::{bar, open, write_json};
use crate::parse::{Start, parse_descriptor};
use ail_core::task::{TaskKind, TaskSpec};

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
    /// Where learned i started: a number, or `best-corner` (chosen per episode; absent in older
    /// reports: 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub i_init: Option<String>,
    pub accuracy: MeanCi,
    pub mean_i: Vec<f64>,
    pub wall_time_s: f64,
    /// `shared` or `per-descriptor` (absent in older reports: shared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bn_statistics: Option<String>,
    pub episodes: Vec<EpisodeResult>,
}

pub fn run(global: &Global, args: &FewShotArgs) -> anyhow::Result<()> {
    common::prepare_out(&args.out)?;
    anyhow::ensure!(args.ways >= 2 && args.shots >= 1 && args.queries >= 1 && args.episodes >= 1, "need --ways >= 2, --shots >= 1, --queries >= 1, --episodes >= 1");
    let fixed = args.fixed_invariance.as_deref().map(|t| parse_descriptor(t, "--fixed-invariance")).transpose()?;
    let i_start = Start::parse(&args.i_init, "--i-init")?;
    anyhow::ensure!(
        i_start != Start::BestCorner || args.shots >= 2 || fixed.is_some(),
        "--i-init best-corner chooses the start by leaving one support image out, which with --shots 1 removes its class: use --shots 2 or more, or a number (0.5, the paper's start)"
    );
    let task_spec = TaskSpec {
        task: args.task,
        data: args.data.clone(),
        val_fraction: 0.0,
        test_fraction: 0.0,
        audio_labels: args.audio_labels,
        takes: args.takes.as_deref().map(ail_core::task::parse_takes).transpose()?,
        ..Default::default()
    };
    anyhow::ensure!(
        matches!(args.task, TaskKind::Omniglot | TaskKind::Classify | TaskKind::Audio),
        "--task must be omniglot, classify or audio: episodes need classes"
    );
    anyhow::ensure!(
        !(args.task == TaskKind::Omniglot && args.data == "builtin"),
        "--task omniglot reads Omniglot's images_background*.zip: pass it with --data (or use --task classify for the built-in data)"
    );
    let (mut frozen, task) = open(global, &args.checkpoint, &task_spec)?;
    // Episodes draw from every image (validation carving leaves one aside; put it back).
    let all = Split::concat(&[&task.train, &task.val]);
    let Targets::Classes { labels, .. } = &all.targets else { anyhow::bail!("episodes need class targets") };
    // Per-descriptor statistics come from images of the pool, without their labels.
    frozen.set_batch_norm_statistics(args.bn_statistics, &all.pixels, all.len(), all.shape);
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
        i_init: i_start.value(),
        start_corners: match i_start {
            Start::BestCorner if fixed.is_none() && frozen.num_invariances() > 0 => Some(crate::parse::trained_corners(&frozen, "--i-init")?),
            _ => None,
        },
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
        i_init: Some(args.i_init.trim().to_string()),
        accuracy,
        mean_i,
        wall_time_s: start.elapsed().as_secs_f64(),
        bn_statistics: Some(frozen.batch_norm_statistics().name().into()),
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
        if !report.learned_i && i_start == Start::BestCorner && fixed.is_none() && k > 0 {
            ", i fixed at the corner chosen on each support set".to_string()
        } else if !report.learned_i {
            ", i fixed".to_string()
        } else if i_start == Start::BestCorner {
            ", i learned per episode from the corner chosen on the support set".to_string()
        } else {
            format!(", i learned per episode from {}", i_start.value())
        },
        100.0 * accuracy.mean,
        100.0 * accuracy.ci95,
        report.mean_i,
        path.display()
    );
    Ok(())
}

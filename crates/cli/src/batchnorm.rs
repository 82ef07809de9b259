//! `ail batchnorm`: what the shared BatchNorm statistics cost (docs/method.md, "BatchNorm and the
//! descriptor"). Pretraining keeps one running average per BatchNorm layer over every descriptor
//! it draws, while the generated kernels, and so the activations, differ per descriptor; in eval
//! mode every descriptor is then normalised with statistics of the mix. For each descriptor this
//! measures, per layer, how far its own statistics (computed on training images at that
//! descriptor) are from the shared ones, and the kNN accuracy with either.

use std::path::PathBuf;

use ail_core::fit::Targets;
use ail_core::frozen::BatchNormStatistics;
use ail_core::knn::knn_accuracy_of_features;
use ail_core::norm::ChannelStatistics;
use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::args::{BatchNormArgs, Global};
use crate::common;
use crate::downstream::{bar, open, write_json};
use crate::parse::parse_descriptor;
use crate::svg;

/// How far one layer's statistics at a descriptor are from the shared running ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerGap {
    pub layer: usize,
    pub channels: usize,
    /// Mean over channels of `|mean_i - mean_shared| / sd_shared`.
    pub mean_shift: f64,
    /// Mean over channels of `|ln(sd_i / sd_shared)|`.
    pub log_sd_ratio: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DescriptorReport {
    pub i: Vec<f32>,
    pub layers: Vec<LayerGap>,
    pub knn_shared: f64,
    pub knn_per_descriptor: f64,
    /// kNN with one set of statistics recomputed on the same images at the all-ones descriptor and
    /// used at every descriptor: separates adapting to the task's images (which this does too)
    /// from adapting to the descriptor (which it does not).
    pub knn_recomputed_once: f64,
}

/// batchnorm.json.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchNormReport {
    pub checkpoint: PathBuf,
    pub task: String,
    pub statistics_images: usize,
    pub bank: usize,
    pub queries: usize,
    pub k: usize,
    pub temperature: f32,
    pub descriptors: Vec<DescriptorReport>,
    pub command: String,
}

/// Per-layer gaps of `own` statistics from `shared` ones.
pub fn gaps(own: &[ChannelStatistics], shared: &[ChannelStatistics]) -> Vec<LayerGap> {
    own.iter()
        .zip(shared)
        .enumerate()
        .map(|(layer, (o, s))| {
            let c = o.mean.len().max(1) as f64;
            let sd = |v: f32| (v as f64 + 1e-5).sqrt();
            let mean_shift = o.mean.iter().zip(&s.mean).zip(&s.var).map(|((&a, &b), &v)| (a as f64 - b as f64).abs() / sd(v)).sum::<f64>() / c;
            let log_sd_ratio = o.var.iter().zip(&s.var).map(|(&a, &b)| (sd(a) / sd(b)).ln().abs()).sum::<f64>() / c;
            LayerGap { layer, channels: o.mean.len(), mean_shift, log_sd_ratio }
        })
        .collect()
}

fn fmt_i(i: &[f32]) -> String {
    let parts: Vec<String> = i.iter().map(|v| format!("{v}")).collect();
    parts.join(",")
}

pub fn run(global: &Global, args: &BatchNormArgs) -> anyhow::Result<()> {
    common::prepare_out(&args.out)?;
    anyhow::ensure!(args.bank >= 1 && args.queries >= 1 && args.k >= 1, "--bank, --queries and --k must be at least 1");
    let (mut frozen, task) = open(global, &args.checkpoint, &args.task.spec()?)?;
    // A plain encoder (K = 0) has one descriptor, the empty one: its kNN with the running
    // statistics and with statistics recomputed on the task's training images, as for each
    // descriptor of an amortised encoder (the layers' gaps are then between those two).
    let k = frozen.num_invariances();
    anyhow::ensure!(k > 0 || args.descriptors.is_none(), "--descriptors: {} is a plain encoder, it has no descriptors", frozen.checkpoint.display());
    let Targets::Classes { labels: train_labels, classes } = &task.train.targets else {
        anyhow::bail!("--task {}: kNN needs class labels (use a classification task)", task.name)
    };
    let Targets::Classes { labels: test_labels, .. } = &task.test.targets else { unreachable!("one task, one kind of target") };
    let descriptors: Vec<Vec<f32>> = match &args.descriptors {
        Some(text) => text.split(';').map(|t| parse_descriptor(t, "--descriptors")).collect::<anyhow::Result<_>>()?,
        None if k == 0 => vec![Vec::new()],
        None => {
            let mut d: Vec<Vec<f32>> = frozen.family().map(|f| f.trained().into_iter().map(|d| d.0).collect()).unwrap_or_default();
            d.push(vec![0.5; k]);
            d
        }
    };
    for d in &descriptors {
        frozen.check_descriptor(d).context("--descriptors")?;
    }
    let (train, test) = (&task.train, &task.test);
    let bank = train.subset(&(0..args.bank.min(train.len())).collect::<Vec<_>>());
    let queries = test.subset(&(0..args.queries.min(test.len())).collect::<Vec<_>>());
    let bank_labels = &train_labels[..bank.len()];
    let query_labels = &test_labels[..queries.len()];
    let stats_images = ail_core::frozen::CALIBRATION_IMAGES.min(train.len());
    let calibration = train.subset(&ail_core::fit::permutation(train.len(), 0x6a7c, 0)[..stats_images]);
    let d = frozen.feature_dim();
    let (once, _) = frozen.layer_statistics(&calibration.pixels, calibration.len(), calibration.shape, &vec![1.0; k])?;
    let once = std::sync::Arc::new(once);
    let pb = bar(descriptors.len() as u64, "descriptors");
    let mut reports = Vec::new();
    for i in &descriptors {
        let (own, records) = frozen.layer_statistics(&calibration.pixels, calibration.len(), calibration.shape, i)?;
        let shared: Vec<ChannelStatistics> = records.into_iter().map(|r| r.running).collect();
        let mut knn = [0.0; 2];
        for (slot, mode) in [BatchNormStatistics::Shared, BatchNormStatistics::PerDescriptor].into_iter().enumerate() {
            frozen.set_batch_norm_statistics(mode, &train.pixels, train.len(), train.shape);
            let fb = frozen.features_u8(&bank.pixels, bank.len(), bank.shape, i);
            let fq = frozen.features_u8(&queries.pixels, queries.len(), queries.shape, i);
            knn[slot] = knn_accuracy_of_features(&fq, &fb, d, bank_labels, query_labels, *classes, args.k, args.temperature);
        }
        // Shared mode (no per-descriptor replay of its own), uncached features, the one set replayed.
        frozen.set_batch_norm_statistics(BatchNormStatistics::Shared, &train.pixels, train.len(), train.shape);
        let (fb, fq) = ail_core::norm::with_statistics(once.clone(), || {
            (frozen.compute_features_u8(&bank.pixels, bank.len(), bank.shape, i), frozen.compute_features_u8(&queries.pixels, queries.len(), queries.shape, i))
        });
        let knn_once = knn_accuracy_of_features(&fq, &fb, d, bank_labels, query_labels, *classes, args.k, args.temperature);
        reports.push(DescriptorReport {
            i: i.clone(),
            layers: gaps(&own, &shared),
            knn_shared: knn[0],
            knn_per_descriptor: knn[1],
            knn_recomputed_once: knn_once,
        });
        pb.inc(1);
    }
    pb.finish_and_clear();
    let report = BatchNormReport {
        checkpoint: frozen.checkpoint.clone(),
        task: task.name.clone(),
        statistics_images: stats_images,
        bank: bank.len(),
        queries: queries.len(),
        k: args.k,
        temperature: args.temperature,
        descriptors: reports,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    write_json(&args.out.join("batchnorm.json"), &report)?;
    let table = markdown(&report);
    ail_core::io::write_atomic(&args.out.join("batchnorm.md"), table.as_bytes()).context("writing batchnorm.md")?;
    let curves: Vec<svg::Curve> = report
        .descriptors
        .iter()
        .map(|r| svg::Curve { name: format!("i = {}", fmt_i(&r.i)), points: r.layers.iter().map(|l| (l.layer as f64, l.mean_shift)).collect() })
        .collect();
    let chart = svg::line_chart("BatchNorm: own statistics vs shared, per layer", "BatchNorm layer (input side first)", "mean |shift| in shared SDs", &curves);
    ail_core::io::write_atomic(&args.out.join("batchnorm.svg"), chart.as_bytes()).context("writing batchnorm.svg")?;
    print!("{table}");
    println!("written {}/batchnorm.{{json,md,svg}}", args.out.display());
    Ok(())
}

pub fn markdown(report: &BatchNormReport) -> String {
    let mut out = format!(
        "BatchNorm statistics per descriptor on {} ({} images), against the checkpoint's shared running statistics; kNN (k {}, T {}) of {} test images against {} training images\n\n",
        report.task, report.statistics_images, report.k, report.temperature, report.queries, report.bank
    );
    out.push_str("| i | mean shift, first / middle / last layer (shared SDs) | mean over layers | log SD ratio, mean over layers | kNN, shared | kNN, recomputed once (at all ones) | kNN, per-descriptor |\n|---|---|---:|---:|---:|---:|---:|\n");
    for r in &report.descriptors {
        let n = r.layers.len().max(1) as f64;
        let at = |k: usize| r.layers.get(k).map_or(f64::NAN, |l| l.mean_shift);
        let name = if r.i.is_empty() { "plain".to_string() } else { format!("`{}`", fmt_i(&r.i)) };
        out.push_str(&format!(
            "| {} | {:.3} / {:.3} / {:.3} | {:.3} | {:.3} | {:.1}% | {:.1}% | {:.1}% |\n",
            name,
            at(0),
            at(r.layers.len() / 2),
            at(r.layers.len().saturating_sub(1)),
            r.layers.iter().map(|l| l.mean_shift).sum::<f64>() / n,
            r.layers.iter().map(|l| l.log_sd_ratio).sum::<f64>() / n,
            100.0 * r.knn_shared,
            100.0 * r.knn_recomputed_once,
            100.0 * r.knn_per_descriptor
        ));
    }
    out
}

//! Features and predictions out: `ail embed` writes a task's features at a descriptor (or at the
//! one an `ail fit` run learned) as safetensors and `.npy`, with labels or targets, for any other
//! tool; `ail predict` applies a fitted head (`ail fit`'s head.safetensors) to images and writes a
//! CSV of predictions.

use std::path::{Path, PathBuf};

use ail_core::arrays::{Array, npy_bytes, read_safetensors, safetensors_bytes};
use ail_core::fit::{Readout, Split, Targets, score_outputs};
use ail_core::frozen::Frozen;
use ail_core::norm::{ChannelStatistics, EncoderStatistics};
use ail_core::task::Task;
use anyhow::Context;
use serde::Serialize;

use crate::args::{EmbedArgs, Global, PredictArgs, SplitArg};
use crate::common;
use crate::downstream::{describe, open, write_json};
use crate::fit::FitReport;
use crate::parse::parse_descriptor;

/// The part of `task` a command reads; `All` is train, validation and test in that order.
pub fn split_of(task: &Task, which: SplitArg) -> Split {
    match which {
        SplitArg::Train => task.train.clone(),
        SplitArg::Val => task.val.clone(),
        SplitArg::Test => task.test.clone(),
        SplitArg::All => Split::concat(&[&task.train, &task.val, &task.test]),
    }
}

/// An `ail fit` output read back: its report, the head and the BatchNorm statistics it was scored
/// with (None: the shared running statistics).
pub struct SavedFit {
    pub report: FitReport,
    pub dir: PathBuf,
    pub readout: Readout,
    pub statistics: Option<EncoderStatistics>,
}

/// Reads fit.json (or the fit.json in the directory `path`) and its head file.
pub fn read_fit(path: &Path, device: &burn::prelude::Device) -> anyhow::Result<SavedFit> {
    let report = FitReport::read(path)?;
    let dir = if path.is_dir() { path.to_path_buf() } else { path.parent().map(Path::to_path_buf).unwrap_or_default() };
    let head = report.head.clone().ok_or_else(|| {
        anyhow::anyhow!("{} holds no fitted head (written by an older `ail fit`, or by `ail finetune`): run `ail fit` again", path.display())
    })?;
    let file = dir.join(&head.file);
    let bytes = ail_data::limits::read_file(&file, 256 << 20).with_context(|| format!("reading {}", file.display()))?;
    let (arrays, _) = read_safetensors(&bytes, &file.display().to_string())?;
    let find = |name: &str| arrays.iter().find(|a| a.name == name).and_then(|a| a.as_f32());
    let (weight, bias) = match (find("weight"), find("bias")) {
        (Some(w), Some(b)) if head.features.checked_mul(head.outputs) == Some(w.len()) && b.len() == head.outputs => (w, b),
        _ => anyhow::bail!("{}: no f32 `weight` [{}, {}] and `bias` [{}] as fit.json describes", file.display(), head.outputs, head.features, head.outputs),
    };
    let mut statistics = Vec::new();
    while let (Some(mean), Some(var)) = (find(&format!("batch_norm.{}.mean", statistics.len())), find(&format!("batch_norm.{}.var", statistics.len()))) {
        let k = statistics.len();
        anyhow::ensure!(
            mean.len() == var.len() && mean.iter().chain(var).all(|v| v.is_finite()) && var.iter().all(|v| *v >= 0.0),
            "{}: batch_norm.{k} is not a set of finite means and non-negative variances of one length",
            file.display()
        );
        statistics.push(ChannelStatistics { mean: mean.to_vec(), var: var.to_vec() });
    }
    let readout = Readout::from_weights(weight, bias, report.i.clone(), head.target_mean.clone(), head.target_std.clone(), device)?;
    Ok(SavedFit { report, dir, readout, statistics: (!statistics.is_empty()).then_some(statistics) })
}

/// The encoder a saved fit was fitted on (or `checkpoint`), with the fit's BatchNorm statistics.
fn open_for_fit(global: &Global, fit: &SavedFit, checkpoint: Option<&Path>, task: &crate::args::TaskArgs) -> anyhow::Result<(Frozen, Task)> {
    let path = checkpoint.unwrap_or(&fit.report.checkpoint);
    let (mut frozen, task) = open(global, path, &task.spec()?)
        .with_context(|| format!("opening the encoder the fit was fitted on ({}; --checkpoint names another place)", path.display()))?;
    let features = fit.report.head.as_ref().map_or(0, |h| h.features);
    anyhow::ensure!(
        frozen.feature_dim() == features,
        "{} gives {} features, the head takes {features}: not the encoder this head was fitted on",
        frozen.checkpoint.display(),
        frozen.feature_dim()
    );
    frozen.check_descriptor(&fit.report.i).context("the fit's descriptor")?;
    // Without saved statistics the fit used the shared ones, which a freshly opened encoder has.
    if let Some(s) = &fit.statistics {
        // The saved statistics must fit this encoder's BatchNorm layers, call by call.
        let one = &task.train.pixels[..task.train.shape.iter().product::<usize>()];
        let (_, records) = frozen.layer_statistics(one, 1, task.train.shape, &fit.report.i)?;
        let fits = records.len() == s.len() && records.iter().zip(s).all(|(r, s)| r.batch.mean.len() == s.mean.len());
        anyhow::ensure!(
            fits,
            "the BatchNorm statistics saved with the fit ({} layers) do not fit {} ({} layers): not the encoder this head was fitted on",
            s.len(),
            frozen.checkpoint.display(),
            records.len()
        );
        frozen.use_statistics(&fit.report.i, s.clone())
    }
    Ok((frozen, task))
}

pub fn run_predict(global: &Global, args: &PredictArgs) -> anyhow::Result<()> {
    let device = common::device(global)?.device;
    let fit = read_fit(&args.fit, &device.clone().without_autodiff().autodiff())?;
    let (frozen, task) = open_for_fit(global, &fit, args.checkpoint.as_deref(), &args.task)?;
    let head = fit.report.head.as_ref().expect("read_fit checked it");
    let split = split_of(&task, args.split);
    let out = fit.readout.predict(&frozen, &split, None);
    let outputs = head.outputs;
    anyhow::ensure!(split.targets.outputs() == outputs || matches!(split.targets, Targets::Classes { .. }), "the head has {outputs} outputs, the task's targets {}", split.targets.outputs());
    let mut csv = String::new();
    let comparable = match &split.targets {
        Targets::Classes { .. } => task.class_names == head.class_names,
        Targets::Values { outputs: m, .. } => *m == outputs,
    };
    match &split.targets {
        Targets::Classes { labels, .. } => {
            csv.push_str("index,source,prediction,target\n");
            let predicted = ail_core::metrics::argmax_rows(&out, outputs);
            for (k, (p, t)) in predicted.iter().zip(labels).enumerate() {
                let name = |names: &[String], c: u32| csv_field(&names.get(c as usize).cloned().unwrap_or_else(|| c.to_string()));
                csv.push_str(&format!("{k},{},{},{}\n", csv_field(&split.source(k)), name(&head.class_names, *p), name(&task.class_names, *t)));
            }
        }
        Targets::Values { values, outputs: m } => {
            let header: Vec<String> = (0..outputs).map(|o| format!("prediction_{o}")).chain((0..*m).map(|o| format!("target_{o}"))).collect();
            csv.push_str(&format!("index,source,{}\n", header.join(",")));
            for k in 0..split.len() {
                let row: Vec<String> = out[k * outputs..(k + 1) * outputs].iter().chain(&values[k * m..(k + 1) * m]).map(|v| v.to_string()).collect();
                csv.push_str(&format!("{k},{},{}\n", csv_field(&split.source(k)), row.join(",")));
            }
        }
    }
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    ail_core::io::write_atomic(&args.out, csv.as_bytes()).with_context(|| format!("writing {}", args.out.display()))?;
    if comparable {
        let scores = score_outputs(&out, &split.targets, &fit.readout.target_std);
        println!("{} {:?} images of {} at i = {:?}: {}", split.len(), args.split, task.name, fit.report.i, describe(&scores));
    } else {
        eprintln!("the data's classes {:?} are not the head's {:?}: predictions written, no score", task.class_names, head.class_names);
    }
    println!("written {}", args.out.display());
    Ok(())
}

#[derive(Serialize)]
struct EmbedReport {
    checkpoint: PathBuf,
    task: String,
    split: String,
    samples: usize,
    feature_dim: usize,
    /// The descriptor the encoder was read at (empty for plain encoders).
    i: Vec<f32>,
    bn_statistics: String,
    /// The fit whose descriptor and statistics were used.
    fit: Option<PathBuf>,
    class_names: Vec<String>,
    files: Vec<String>,
}

pub fn run_embed(global: &Global, args: &EmbedArgs) -> anyhow::Result<()> {
    common::prepare_out(&args.out)?;
    let device = common::device(global)?.device;
    let (frozen, task, i, fit_dir) = match &args.fit {
        Some(path) => {
            let fit = read_fit(path, &device.clone().without_autodiff().autodiff())?;
            let (frozen, task) = open_for_fit(global, &fit, args.checkpoint.as_deref(), &args.task)?;
            (frozen, task, fit.report.i.clone(), Some(fit.dir))
        }
        None => {
            let checkpoint = args.checkpoint.as_deref().ok_or_else(|| anyhow::anyhow!("name the encoder with --checkpoint (or a fit with --fit)"))?;
            let (mut frozen, task) = open(global, checkpoint, &args.task.spec()?)?;
            let k = frozen.num_invariances();
            let i = match &args.invariance {
                Some(text) => parse_descriptor(text, "--invariance")?,
                None => vec![1.0; k],
            };
            if k > 0 {
                frozen.check_descriptor(&i).context("--invariance")?;
            }
            frozen.set_batch_norm_statistics(args.bn_statistics, &task.train.pixels, task.train.len(), task.train.shape);
            (frozen, task, if k > 0 { i } else { Vec::new() }, None)
        }
    };
    let split = split_of(&task, args.split);
    let d = frozen.feature_dim();
    let pb = crate::downstream::bar(split.len().div_ceil(256) as u64, "embedding");
    let len = split.shape.iter().product::<usize>();
    let mut features = Vec::with_capacity(split.len() * d);
    for s in (0..split.len()).step_by(256) {
        let e = (s + 256).min(split.len());
        features.extend(frozen.compute_features_u8(&split.pixels[s * len..e * len], e - s, split.shape, &i));
        pb.inc(1);
    }
    pb.finish_and_clear();
    let n = split.len();
    let mut arrays = vec![Array::f32("features", &[n, d], features)];
    match &split.targets {
        Targets::Classes { labels, .. } => arrays.push(Array::i64("labels", &[n], labels.iter().map(|&l| l as i64).collect())),
        Targets::Values { values, outputs } => arrays.push(Array::f32("targets", &[n, *outputs], values.clone())),
    }
    let metadata = std::collections::BTreeMap::from([("i".to_string(), format!("{i:?}")), ("task".to_string(), task.name.clone())]);
    let mut files = vec!["features.safetensors".to_string()];
    let write = |name: &str, bytes: &[u8]| -> anyhow::Result<()> {
        let path = args.out.join(name);
        ail_core::io::write_atomic(&path, bytes).with_context(|| format!("writing {}", path.display()))
    };
    write("features.safetensors", &safetensors_bytes(&arrays, &metadata))?;
    for a in &arrays {
        let name = format!("{}.npy", a.name);
        write(&name, &npy_bytes(a))?;
        files.push(name);
    }
    // Where each row's image came from, in row order (a JSON list: paths may hold any character).
    let sources: Vec<String> = (0..n).map(|k| split.source(k)).collect();
    write("sources.json", &serde_json::to_vec(&sources)?)?;
    files.push("sources.json".into());
    let report = EmbedReport {
        checkpoint: frozen.checkpoint.clone(),
        task: task.name.clone(),
        split: format!("{:?}", args.split).to_lowercase(),
        samples: n,
        feature_dim: d,
        i: i.clone(),
        bn_statistics: frozen.batch_norm_statistics().name().into(),
        fit: fit_dir,
        class_names: task.class_names.clone(),
        files,
    };
    write_json(&args.out.join("embed.json"), &report)?;
    println!("{n} images of {} ({:?} split) at i = {i:?}: {d} features each, written to {}", task.name, args.split, args.out.display());
    Ok(())
}

/// A CSV field: quoted (with inner quotes doubled) when it holds a comma, a quote or a line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text.to_string() }
}

//! What the downstream commands (`ail fit`, `ail fewshot`, `ail lowshot`, `ail finetune`) share:
//! opening a checkpoint with its task, progress bars, JSON output, scores in words. These commands
//! are what a pretrained encoder is for: a task finds its own invariance by gradient descent on `i`
//! (docs/method.md, "Downstream").

use std::path::Path;

use ail_core::fit::Scores;
use ail_core::frozen::{Frozen, channel_statistics};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::args::Global;
use crate::common;
use ail_core::task::{Task, TaskSpec};

/// What a downstream command starts from: its device, the checkpoint directory, its description and
/// the task loaded at the encoder's input shape.
pub(crate) struct Opened {
    pub selected: ail_augment::device::SelectedDevice,
    pub dir: std::path::PathBuf,
    pub meta: ail_core::checkpoint::CheckpointMeta,
    pub task: Task,
}

/// Selects the device, finds the checkpoint `checkpoint` names and loads `task` for it (printing
/// the task and any notes).
pub(crate) fn open_task(global: &Global, checkpoint: &Path, task: &TaskSpec) -> anyhow::Result<Opened> {
    let selected = common::device(global)?;
    let dir = ail_core::frozen::resolve_checkpoint(checkpoint)?;
    let meta = ail_core::checkpoint::read_meta(&dir)?;
    let task = task.load(&meta, &selected.device)?;
    for note in &task.notes {
        eprintln!("{note}");
    }
    eprintln!("{}", task.describe());
    Ok(Opened { selected, dir, meta, task })
}

/// The input normalisation recorded with the encoder, or the task's training images' when the
/// checkpoint has none.
pub(crate) fn task_normalization(task: &Task) -> ail_core::checkpoint::Normalization {
    eprintln!("the checkpoint records no input normalisation: using the task's training images' statistics");
    channel_statistics(&task.train.pixels, task.train.shape)
}

/// Opens the checkpoint frozen, with its task (see [`open_task`] and [`task_normalization`]).
pub(crate) fn open(global: &Global, checkpoint: &Path, task: &TaskSpec) -> anyhow::Result<(Frozen, Task)> {
    let Opened { selected, dir, task, .. } = open_task(global, checkpoint, task)?;
    let frozen = Frozen::open(&dir, &selected.device, || task_normalization(&task))?;
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

/// Refuses a fit that would not fit in memory, before its first step: the task's images (held),
/// their features (cached for each descriptor scored) and a batch's activations — kept for the
/// backward pass when `i` (or the encoder) learns, in chunks of 256 images otherwise.
///
/// `trained` is the number of encoder parameters the fit updates (fine-tuning): each holds its
/// gradient and AdamW's two moments beside it.
pub(crate) fn check_fit_memory(encoder: &ail_core::encoder::EncoderConfig, feature_dim: usize, task: &Task, batch: usize, backward: bool, trained: usize) -> anyhow::Result<()> {
    use ail_core::memory::{Estimate, batch_bytes};
    let splits = [&task.train, &task.val, &task.test];
    let images: usize = splits.iter().map(|s| s.pixels.len()).sum();
    let count: usize = splits.iter().map(|s| s.len()).sum();
    let batch = if backward { batch.min(task.train.len().max(1)) } else { 256 };
    Estimate::new("this fit")
        .part(format!("{count} images"), images as f64)
        .part("their features", 2.0 * count as f64 * feature_dim as f64 * 4.0)
        .part(format!("a batch of {batch}"), batch_bytes(encoder, batch, backward))
        .part("the trained parameters' gradients and optimiser moments", 3.0 * 4.0 * trained as f64)
        .check(None, "lower --batch-size, or use a smaller task")?;
    Ok(())
}

pub(crate) fn bar(len: u64, what: &str) -> ProgressBar {
    ProgressBar::new(len).with_style(
        ProgressStyle::with_template(&format!("{what} [{{bar:30}}] {{pos}}/{{len}} {{msg}} [{{elapsed}} < {{eta}}]"))
            .expect("valid template")
            .progress_chars("=> "),
    )
}

pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    ail_core::io::write_atomic(path, &serde_json::to_vec_pretty(value)?).with_context(|| format!("writing {}", path.display()))
}

pub(crate) fn describe(s: &Scores) -> String {
    match (s.accuracy, s.mean_per_class_accuracy, s.r2) {
        (Some(a), Some(m), _) => format!("accuracy {:.2}%, mean per-class {:.2}%, loss {:.4}", 100.0 * a, 100.0 * m, s.loss),
        (_, _, Some(r)) => format!("R^2 {r:.4}, loss {:.4}", s.loss),
        _ => format!("loss {:.4}", s.loss),
    }
}

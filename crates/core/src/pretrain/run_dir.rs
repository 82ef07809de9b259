//! A pretraining run's directory:
//!
//! ```text
//! config.json                    every setting, written before training
//! metrics.csv                    step, descriptor, loss, lr, images_per_s, knn_accuracy
//! checkpoints/step-NNNNNNN/      encoder (model.safetensors, checkpoint.json, optimizer.bpk),
//!                                heads, predictor, MoCo key model and queues, training.json
//! summary.json                   written when the run ends
//! ```
//!
//! Checkpoints are written in `step-N.partial` and renamed when complete; old ones are renamed to
//! `step-N.deleting` before they are deleted, so a kill at any moment leaves each whole or gone.
//! Checkpoints are ordered by step number (`step-10000000` after `step-9999999`), and a run continues
//! from the newest one that loads, skipping (and naming) damaged ones.
//!
//! A run directory has one writer: `.lock` is locked (an advisory lock of the operating system)
//! for the whole run, so a second process on the same directory is refused with the first one's
//! PID. The operating system releases the lock when its process ends, however it ends; the file
//! stays, and a PID left in it names a writer that ended without releasing it (killed, say).

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::Module;
use serde::{Deserialize, Serialize};

use super::config::PretrainConfig;
use super::step::Stepper;
use super::{Observer, Resume};
use crate::checkpoint::{self, CheckpointMeta};
use crate::io::write_atomic;
use crate::method::ContrastiveModel;
use crate::queue::DescriptorQueues;
use crate::{CoreError, Descriptor};

pub const CONFIG_FILE: &str = "config.json";
pub const METRICS_FILE: &str = "metrics.csv";
pub const SUMMARY_FILE: &str = "summary.json";
pub const LOCK_FILE: &str = ".lock";

/// The writer lock of a run directory, held until dropped (or until the process ends).
pub struct WriterLock {
    file: std::fs::File,
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        // An empty lock file says the last writer released it; the lock itself goes with the file
        // handle.
        let _ = self.file.set_len(0);
    }
}

/// What travels beside the encoder checkpoint to resume training.
#[derive(Serialize, Deserialize)]
struct TrainingState {
    heads_param_ids: std::collections::BTreeMap<String, u64>,
    #[serde(default)]
    predictor_param_ids: std::collections::BTreeMap<String, u64>,
    /// MoCo-v2: the queue pointers (their values are in queues.bin, f32 little-endian).
    #[serde(default)]
    queue_pointers: Vec<usize>,
}

/// A run directory.
pub struct RunDir {
    pub path: PathBuf,
}

impl RunDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn config_path(&self) -> PathBuf {
        self.path.join(CONFIG_FILE)
    }

    /// The run's saved `config.json`.
    pub fn read_config(&self) -> Result<PretrainConfig, CoreError> {
        let path = self.config_path();
        let text = ail_data::limits::read_text(&path, ail_data::limits::MAX_TEXT_FILE).map_err(|e| {
            CoreError::RunDirectory(format!("reading {} (is {} a run directory?): {e}", path.display(), self.path.display()))
        })?;
        PretrainConfig::from_json(&text).map_err(|e| CoreError::RunDirectory(format!("{} is not a run config: {e}", path.display())))
    }

    /// Takes the directory's writer lock (creating the directory), or says which process holds it.
    pub fn lock(&self, observer: &mut dyn Observer) -> Result<WriterLock, CoreError> {
        std::fs::create_dir_all(&self.path).map_err(|e| CoreError::io("creating", &self.path, crate::io::with_hint(e, &self.path)))?;
        let path = self.path.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| CoreError::io("opening", &path, crate::io::with_hint(e, &path)))?;
        // A PID: the first few bytes are all that is read of it.
        let mut previous = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::Read::take(&mut file, 32), &mut previous);
        let previous = previous.trim().to_string();
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let who = if previous.is_empty() { "another process".to_string() } else { format!("another process (PID {previous})") };
                return Err(CoreError::RunDirectory(format!(
                    "{} is being written by {who}: wait for it to finish, or choose another --out",
                    self.path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(CoreError::io("locking", &path, e)),
        }
        if !previous.is_empty() && previous != std::process::id().to_string() {
            observer.message(&format!(
                "{}: the previous writer (PID {previous}) ended without releasing its lock (killed?); taking over",
                self.path.display()
            ));
        }
        let pid = std::process::id().to_string();
        file.set_len(0)
            .and_then(|_| std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0)))
            .and_then(|_| file.write_all(pid.as_bytes()))
            .and_then(|_| file.flush())
            .map_err(|e| CoreError::io("writing", &path, e))?;
        Ok(WriterLock { file })
    }

    /// Decides what a run asking for `config` does with this directory: `true` continues it from a
    /// checkpoint, `false` starts it afresh (after removing another run's files when `overwrite`).
    /// Refuses, naming the fix, a directory that holds another run (or `Resume::Never` one that
    /// holds checkpoints, or `Resume::Required` one without any).
    pub fn settle(&self, config: &PretrainConfig, resume: Resume, overwrite: bool, observer: &mut dyn Observer) -> Result<bool, CoreError> {
        let has_checkpoints = !self.checkpoints().is_empty();
        let out = self.path.display();
        let saved = self.config_path().exists().then(|| self.read_config());
        let differences = match &saved {
            Some(Ok(saved)) => saved.differences(config),
            Some(Err(e)) => vec![format!("its config.json does not read ({e})")],
            None if self.path.join(METRICS_FILE).exists() || has_checkpoints => vec!["it has metrics or checkpoints but no config.json".into()],
            None => Vec::new(),
        };
        if !differences.is_empty() && overwrite {
            observer.message(&format!("{out}: replacing the files of another run (--overwrite)"));
            for file in [CONFIG_FILE, METRICS_FILE, SUMMARY_FILE] {
                let path = self.path.join(file);
                if path.exists() {
                    std::fs::remove_file(&path).map_err(|e| CoreError::io("removing", &path, e))?;
                }
            }
            let checkpoints = self.path.join("checkpoints");
            if checkpoints.exists() {
                std::fs::remove_dir_all(&checkpoints).map_err(|e| CoreError::io("removing", &checkpoints, e))?;
            }
            return match resume {
                Resume::Required => Err(CoreError::RunDirectory(format!("--resume: no checkpoint in {out}/checkpoints"))),
                _ => Ok(false),
            };
        }
        match (resume, has_checkpoints) {
            (Resume::Never, true) => Err(CoreError::RunDirectory(format!(
                "{out} already holds a run with checkpoints (--no-resume): choose another --out, or drop --no-resume to continue it"
            ))),
            (Resume::Required, false) => Err(CoreError::RunDirectory(format!("--resume: no checkpoint in {out}/checkpoints"))),
            _ if !differences.is_empty() => Err(CoreError::RunDirectory(format!(
                "{out} already holds a different run ({}): {}choose another --out, or pass --overwrite to replace it",
                differences.join(", "),
                if has_checkpoints { "pass --resume to continue it as configured, " } else { "" }
            ))),
            (_, false) => Ok(false),
            (_, true) => {
                if resume == Resume::IfSameRun {
                    observer.message(&format!("{out} holds this run's checkpoints: continuing it (--no-resume refuses)"));
                }
                Ok(true)
            }
        }
    }

    /// Loads the newest checkpoint that loads whole into `model` and `optim` (see
    /// [`RunDir::load_model`]), naming each newer one it skips and why. Returns its directory, its
    /// step and the MoCo queue pointers.
    pub fn load_newest(
        &self,
        config: &PretrainConfig,
        model: &mut ContrastiveModel,
        optim: &mut burn::optim::ModuleOptimizer,
        device: &burn::prelude::Device,
        observer: &mut dyn Observer,
    ) -> Result<(PathBuf, u64, Vec<usize>), CoreError> {
        let mut skipped = Vec::new();
        for dir in self.checkpoints().into_iter().rev() {
            let loaded = check_training_files(&dir, config).and_then(|_| Self::load_model(&dir, config, model, optim, device));
            match loaded {
                Ok((step, pointers)) => return Ok((dir, step, pointers)),
                Err(e) => {
                    observer.message(&format!("skipping the checkpoint {}: {e}", dir.display()));
                    skipped.push(format!("{}: {e}", dir.display()));
                }
            }
        }
        Err(CoreError::RunDirectory(format!(
            "no checkpoint of {} loads: {}; start the run afresh in another --out",
            self.path.display(),
            skipped.join("; ")
        )))
    }

    /// Creates the directory (when new) and writes `config.json`.
    pub fn write_config(&self, config: &PretrainConfig) -> Result<(), CoreError> {
        std::fs::create_dir_all(&self.path).map_err(|e| CoreError::io("creating", &self.path, crate::io::with_hint(e, &self.path)))?;
        let path = self.config_path();
        write_atomic(&path, &to_json(config)).map_err(|e| CoreError::io("writing", path, e))
    }

    pub fn checkpoint_dir(&self, step: u64) -> PathBuf {
        self.path.join("checkpoints").join(format!("step-{step:07}"))
    }

    /// The complete checkpoint directories of the run, oldest first (by step number).
    pub fn checkpoints(&self) -> Vec<PathBuf> {
        crate::frozen::run_checkpoints(&self.path)
    }

    /// Deletes what interrupted writes and deletions leave behind (`*.partial`, `*.deleting`).
    pub fn sweep(&self) {
        for entry in std::fs::read_dir(self.path.join("checkpoints")).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "partial" || e == "deleting") {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }

    /// Writes the checkpoint of `step` (in a `.partial` directory, renamed when complete) and keeps
    /// the newest `keep` checkpoints.
    pub fn save(
        &self,
        model: &ContrastiveModel,
        optim: &burn::optim::ModuleOptimizer,
        stepper: &Stepper,
        meta: &CheckpointMeta,
        keep: usize,
    ) -> Result<PathBuf, CoreError> {
        let dir = self.checkpoint_dir(meta.step);
        let tmp = dir.with_extension("partial");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| CoreError::io("creating", &tmp, crate::io::with_hint(e, &tmp)))?;
        // Eval copies: they carry the latest BatchNorm running statistics (and keep parameter ids).
        let heads_param_ids = checkpoint::save_module(&tmp.join("heads.safetensors"), &model.heads.valid())?;
        let predictor_param_ids = match &model.predictor {
            Some(p) => checkpoint::save_module(&tmp.join("predictor.safetensors"), &p.valid())?,
            None => Default::default(),
        };
        if let Some(key) = &stepper.key {
            checkpoint::save_module(&tmp.join("key.safetensors"), &key.valid())?;
        }
        let mut queue_pointers = Vec::new();
        if let Some(queues) = &stepper.queues {
            let (data, pointers) = queues.export();
            let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            let path = tmp.join("queues.bin");
            write_atomic(&path, &bytes).map_err(|e| CoreError::io("writing", path, e))?;
            queue_pointers = pointers;
        }
        let state = TrainingState { heads_param_ids, predictor_param_ids, queue_pointers };
        let path = tmp.join("training.json");
        write_atomic(&path, &to_json(&state)).map_err(|e| CoreError::io("writing", path, e))?;
        checkpoint::save(&tmp, &model.encoder, meta, Some(optim.to_record()))?;
        remove_checkpoint(&dir);
        std::fs::rename(&tmp, &dir).map_err(|e| CoreError::io("moving the checkpoint into", &dir, e))?;
        let all = self.checkpoints();
        for old in &all[..all.len().saturating_sub(keep)] {
            remove_checkpoint(old);
        }
        Ok(dir)
    }

    /// Loads checkpoint `dir` of a run of `config` into `model` (encoder, heads, predictor) and
    /// `optim` (the run's optimiser with the saved state), and returns the step it was written at
    /// and MoCo's queue pointers. Nothing is changed unless all of it loads.
    pub fn load_model(
        dir: &Path,
        config: &PretrainConfig,
        model: &mut ContrastiveModel,
        optim: &mut burn::optim::ModuleOptimizer,
        device: &burn::prelude::Device,
    ) -> Result<(u64, Vec<usize>), CoreError> {
        let ckpt = checkpoint::load(dir, device)?;
        if ckpt.meta.encoder != config.encoder_config() {
            return Err(CoreError::RunDirectory(format!("{}: the checkpoint's encoder differs from config.json", dir.display())));
        }
        let state = read_state(dir)?;
        let mut heads = model.heads.clone();
        checkpoint::load_module(&dir.join("heads.safetensors"), &mut heads, &state.heads_param_ids)?;
        let mut predictor = model.predictor.clone();
        if let Some(p) = predictor.as_mut() {
            checkpoint::load_module(&dir.join("predictor.safetensors"), p, &state.predictor_param_ids)?;
        }
        *model = ContrastiveModel { encoder: ckpt.encoder, heads, predictor };
        if let Some(record) = ckpt.optimizer {
            *optim = super::step::optimizer(config).load_record(record);
        }
        Ok((ckpt.meta.step, state.queue_pointers))
    }

    /// Loads MoCo's key model and queues of checkpoint `dir` into `stepper`.
    pub fn load_stepper(dir: &Path, stepper: &mut Stepper, pointers: Vec<usize>, config: &PretrainConfig, device: &burn::prelude::Device) -> Result<(), CoreError> {
        if let Some(key) = stepper.key.as_mut() {
            checkpoint::load_module(&dir.join("key.safetensors"), key, &Default::default())?;
        }
        if stepper.queues.is_some() {
            let path = dir.join("queues.bin");
            // No more than the queues that training.json's pointers and the config describe.
            let expected = pointers
                .len()
                .checked_mul(config.queue_size)
                .and_then(|v| v.checked_mul(config.heads.output))
                .and_then(|v| v.checked_mul(4))
                .ok_or_else(|| CoreError::Checkpoint { path: path.clone(), reason: format!("{} queue pointers of {} x {} overflow", pointers.len(), config.queue_size, config.heads.output) })?;
            let bytes = ail_data::limits::read_file(&path, expected as u64).map_err(|e| CoreError::io("reading", &path, e))?;
            let data: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            stepper.queues = Some(DescriptorQueues::import(&data, pointers, config.queue_size, config.heads.output, device)?);
        }
        Ok(())
    }

    /// Keeps the metrics rows a resumed run does not write again: those up to `start_step` (not
    /// the closing kNN rows at `steps`), dropping a last row torn by a kill.
    pub fn truncate_metrics(&self, start_step: u64, steps: u64) -> Result<(), CoreError> {
        use std::io::{BufRead, Read};
        let path = self.path.join(METRICS_FILE);
        let Ok(file) = std::fs::File::open(&path) else { return Ok(()) };
        // Streamed line by line (a long run's file is never held whole); a line longer than any
        // row this program writes is not a row and is dropped.
        const LONGEST_ROW: usize = 1 << 16;
        let mut reader = std::io::BufReader::new(file);
        crate::io::write_atomic_with(&path, |out| {
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = (&mut reader).take(LONGEST_ROW as u64 + 1).read_until(b'\n', &mut line)?;
                if n == 0 {
                    return Ok(());
                }
                // A last line without its newline was torn by a kill in the middle of writing it.
                let Some(row) = line.strip_suffix(b"\n") else {
                    if n > LONGEST_ROW {
                        // The rest of an overlong line, skipped in the reader's own buffer.
                        loop {
                            let buf = reader.fill_buf()?;
                            if buf.is_empty() {
                                return Ok(());
                            }
                            match buf.iter().position(|&b| b == b'\n') {
                                Some(at) => {
                                    reader.consume(at + 1);
                                    break;
                                }
                                None => {
                                    let len = buf.len();
                                    reader.consume(len);
                                }
                            }
                        }
                        continue;
                    }
                    return Ok(());
                };
                let Ok(row) = std::str::from_utf8(row) else { continue };
                let step = row.split(',').next().and_then(|s| s.parse::<u64>().ok());
                // The closing kNN rows (at the last step, after the loop) are written again.
                let closing = step == Some(steps) && !row.ends_with(',');
                if step.is_none_or(|s| s <= start_step) && !closing {
                    out.write_all(row.as_bytes())?;
                    out.write_all(b"\n")?;
                }
            }
        })
        .map_err(|e| CoreError::io("writing", path, e))
    }

    /// Removes the metrics of an earlier run that left no checkpoint.
    pub fn remove_stale_metrics(&self) -> Result<(), CoreError> {
        let path = self.path.join(METRICS_FILE);
        if path.exists() {
            std::fs::remove_file(&path).map_err(|e| CoreError::io("removing the stale", path, e))?;
        }
        Ok(())
    }

    pub fn write_summary(&self, summary: &impl Serialize) -> Result<(), CoreError> {
        let path = self.path.join(SUMMARY_FILE);
        write_atomic(&path, &to_json(summary)).map_err(|e| CoreError::io("writing", path, e))
    }

    pub fn has_summary(&self) -> bool {
        self.path.join(SUMMARY_FILE).exists()
    }
}

/// Checks what [`RunDir::load_stepper`] will read: MoCo's key model file, and MoCo-v2's queues at
/// their full size.
fn check_training_files(dir: &Path, config: &PretrainConfig) -> Result<(), CoreError> {
    let bad = |reason: String| Err(CoreError::Checkpoint { path: dir.to_path_buf(), reason });
    if config.method.uses_key_model() && !dir.join("key.safetensors").is_file() {
        return bad("key.safetensors (MoCo's key model) is missing".into());
    }
    if config.method.uses_queues() {
        let expected = (config.invariances.trained().len() * config.queue_size * config.heads.output * 4) as u64;
        let found = std::fs::metadata(dir.join("queues.bin")).map(|m| m.len()).unwrap_or(0);
        if found != expected {
            return bad(format!("queues.bin holds {found} bytes, the run's queues take {expected}"));
        }
    }
    Ok(())
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec_pretty(value).expect("plain data serialises to JSON")
}

fn read_state(dir: &Path) -> Result<TrainingState, CoreError> {
    let path = dir.join("training.json");
    let bytes = ail_data::limits::read_file(&path, ail_data::limits::MAX_TEXT_FILE).map_err(|e| CoreError::io("reading", &path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| CoreError::Checkpoint { path, reason: format!("not a training state: {e}") })
}

/// Removes a checkpoint directory so that a kill at any moment leaves it whole or gone: it is first
/// renamed (atomically) to `step-N.deleting`, then deleted.
fn remove_checkpoint(dir: &Path) {
    let trash = dir.with_extension("deleting");
    let _ = std::fs::remove_dir_all(&trash);
    if std::fs::rename(dir, &trash).is_ok() {
        let _ = std::fs::remove_dir_all(&trash);
    }
}

/// `metrics.csv`, appended row by row (flushed after each).
pub struct Metrics {
    file: std::fs::File,
    path: PathBuf,
}

impl Metrics {
    pub const HEADER: &str = "step,descriptor,loss,lr,images_per_s,knn_accuracy";

    pub fn open(run: &RunDir) -> Result<Self, CoreError> {
        let path = run.path.join(METRICS_FILE);
        let new = !path.exists();
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| CoreError::io("opening", &path, e))?;
        if new {
            writeln!(file, "{}", Self::HEADER).map_err(|e| CoreError::io("writing", &path, e))?;
        }
        Ok(Self { file, path })
    }

    pub fn row(&mut self, step: u64, descriptor: &Descriptor, loss: Option<f32>, lr: Option<f64>, ips: Option<f64>, knn: Option<f64>) -> Result<(), CoreError> {
        let f = |v: Option<String>| v.unwrap_or_default();
        let line = format!(
            "{step},\"{descriptor}\",{},{},{},{}\n",
            f(loss.map(|l| format!("{l:.6}"))),
            f(lr.map(|l| format!("{l:.6e}"))),
            f(ips.map(|v| format!("{v:.1}"))),
            f(knn.map(|v| format!("{v:.4}")))
        );
        self.file.write_all(line.as_bytes()).and_then(|_| self.file.flush()).map_err(|e| CoreError::io("writing", &self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncating_metrics_keeps_the_rows_up_to_the_resumed_step_and_drops_torn_and_overlong_lines() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let overlong = format!("7,{}\n", "9".repeat(70_000));
        let text = format!(
            "step,descriptor,loss,lr,images_per_s,knn_accuracy\n0,\"1,0\",,,,0.25\n5,\"1,0\",3.1,1e-3,100.0,\n{overlong}10,\"0,1\",2.9,1e-3,100.0,\n20,\"1,0\",2.5,1e-3,100.0,\n20,\"1,0\",,,,0.4\n25,\"0,1\",2.4"
        );
        std::fs::write(dir.path().join(METRICS_FILE), text).unwrap();
        run.truncate_metrics(10, 20).unwrap();
        let kept = std::fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap();
        assert_eq!(kept, "step,descriptor,loss,lr,images_per_s,knn_accuracy\n0,\"1,0\",,,,0.25\n5,\"1,0\",3.1,1e-3,100.0,\n10,\"0,1\",2.9,1e-3,100.0,\n");
        // No file: nothing to do.
        std::fs::remove_file(dir.path().join(METRICS_FILE)).unwrap();
        run.truncate_metrics(10, 20).unwrap();
        assert!(!dir.path().join(METRICS_FILE).exists());
    }
}

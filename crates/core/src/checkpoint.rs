//! Checkpoints: `model.safetensors` (every tensor of the encoder; PyTorch opens it with
//! `safetensors.torch.load_file`), optionally `optimizer.bpk` (the optimiser state, burn's burnpack
//! record, for resuming), and `checkpoint.json` (the encoder config, descriptor family, step and the
//! name of the optimiser file), each written atomically. The JSON is written last, so a directory
//! with a readable JSON always has the complete files it names.
//!
//! Loading rebuilds the encoder from the JSON and checks the tensors against it: a truncated file,
//! a missing tensor or a shape that does not match the config each get an error naming it.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use serde::{Deserialize, Serialize};

use crate::{CoreError, Encoder, EncoderConfig, Family};

pub const TENSORS_FILE: &str = "model.safetensors";
pub const META_FILE: &str = "checkpoint.json";
pub const OPTIMIZER_FILE: &str = "optimizer.bpk";
const FORMAT: &str = "ail-checkpoint";
const VERSION: u32 = 1;

/// What `checkpoint.json` holds besides the format tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub encoder: EncoderConfig,
    /// The descriptor family the encoder was trained on (None for plain encoders).
    pub family: Option<Family>,
    /// Optimisation steps done.
    pub step: u64,
    /// The per-channel input normalisation the encoder was trained with (absent in checkpoints
    /// written before it was recorded: downstream commands then use their data's statistics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalization: Option<Normalization>,
    /// Audio encoders: the log-mel front-end and clip length their inputs come from (None for
    /// images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<crate::mel::AudioFrontEnd>,
}

/// Per-channel mean and standard deviation, in [0, 1] pixel units: inputs become `(x - mean) / std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalization {
    /// `(x - mean) / std` per channel of `[N, C, H, W]` images in [0, 1].
    pub fn apply(&self, x01: Tensor<4>) -> Tensor<4> {
        let device = x01.device();
        let c = self.mean.len();
        let mean = Tensor::<1>::from_floats(self.mean.as_slice(), &device).reshape([1, c, 1, 1]);
        let std = Tensor::<1>::from_floats(self.std.as_slice(), &device).reshape([1, c, 1, 1]);
        (x01 - mean) / std
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaFile {
    format: String,
    version: u32,
    #[serde(flatten)]
    meta: CheckpointMeta,
    /// The optimiser state file, when saved.
    #[serde(default)]
    optimizer: Option<String>,
    /// Parameter identities by tensor name: the optimiser state is keyed by them, and safetensors
    /// has no place for them.
    #[serde(default)]
    param_ids: std::collections::BTreeMap<String, u64>,
}

/// A loaded checkpoint.
pub struct Checkpoint {
    pub encoder: Encoder,
    pub meta: CheckpointMeta,
    /// The optimiser state (`OptimizerRecord::from_bytes` restores it), when it was saved.
    pub optimizer: Option<burn::optim::OptimizerRecord>,
}

fn err(path: &Path, reason: impl Into<String>) -> CoreError {
    CoreError::Checkpoint { path: path.to_path_buf(), reason: reason.into() }
}

/// Writes `dir/model.safetensors`, the optimiser state (if any), then `dir/checkpoint.json`, each
/// atomically.
pub fn save(
    dir: &Path,
    encoder: &Encoder,
    meta: &CheckpointMeta,
    optimizer: Option<burn::optim::OptimizerRecord>,
) -> Result<(), CoreError> {
    std::fs::create_dir_all(dir).map_err(|e| err(dir, format!("cannot create the directory: {e}")))?;
    // The eval-mode copy: burn folds pending BatchNorm running-statistics updates (from every
    // thread) into it; the training module would save stale statistics.
    let encoder = &encoder.valid();
    let mut store = SafetensorsStore::from_bytes(None);
    encoder.save_into(&mut store).map_err(|e| err(dir, format!("cannot serialise the tensors: {e}")))?;
    let bytes = store.get_bytes().map_err(|e| err(dir, format!("cannot serialise the tensors: {e}")))?;
    let tensors = dir.join(TENSORS_FILE);
    crate::io::write_atomic(&tensors, &bytes).map_err(|e| err(&tensors, format!("cannot write: {e}")))?;
    let optimizer_file = match optimizer {
        Some(record) => {
            let path = dir.join(OPTIMIZER_FILE);
            let bytes = record.into_bytes().map_err(|e| err(&path, format!("cannot serialise the optimiser state: {e:?}")))?;
            crate::io::write_atomic(&path, &bytes).map_err(|e| err(&path, format!("cannot write: {e}")))?;
            Some(OPTIMIZER_FILE.to_string())
        }
        None => None,
    };
    let param_ids = param_ids(encoder);
    let file = MetaFile { format: FORMAT.into(), version: VERSION, meta: meta.clone(), optimizer: optimizer_file, param_ids };
    let json = serde_json::to_vec_pretty(&file).expect("checkpoint metadata serialises");
    let meta_path = dir.join(META_FILE);
    crate::io::write_atomic(&meta_path, &json).map_err(|e| err(&meta_path, format!("cannot write: {e}")))
}

/// Reads `dir/checkpoint.json` alone.
pub fn read_meta(dir: &Path) -> Result<CheckpointMeta, CoreError> {
    read_meta_file(dir).map(|f| f.meta)
}

fn read_meta_file(dir: &Path) -> Result<MetaFile, CoreError> {
    let path = dir.join(META_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        err(&path, format!("cannot read ({e}); a checkpoint directory holds {META_FILE} and {TENSORS_FILE}"))
    })?;
    let file: MetaFile = serde_json::from_str(&text).map_err(|e| err(&path, format!("not a valid checkpoint description: {e}")))?;
    if file.format != FORMAT || file.version != VERSION {
        return Err(err(&path, format!("format `{}` version {} is not {FORMAT} version {VERSION}", file.format, file.version)));
    }
    file.meta.encoder.validate().map_err(|e| err(&path, e.to_string()))?;
    if let Some(family) = file.meta.family
        && file.meta.encoder.kind.is_amortised()
        && family.num_invariances() != file.meta.encoder.num_invariances
    {
        return Err(err(&path, format!(
            "family {family:?} has K = {} but the encoder takes K = {}",
            family.num_invariances(),
            file.meta.encoder.num_invariances
        )));
    }
    if file.optimizer.as_deref().is_some_and(|name| name != OPTIMIZER_FILE) {
        return Err(err(&path, format!("the optimiser state must be {OPTIMIZER_FILE} beside it")));
    }
    Ok(file)
}

/// Rebuilds the encoder of `dir` on `device` and loads its tensors (and optimiser state).
pub fn load(dir: &Path, device: &Device) -> Result<Checkpoint, CoreError> {
    let file = read_meta_file(dir)?;
    let meta = file.meta;
    let path: PathBuf = dir.join(TENSORS_FILE);
    let bytes = std::fs::read(&path).map_err(|e| err(&path, format!("cannot read: {e}")))?;
    // Before building anything: the file must be able to hold the tensors the config describes
    // (a config that does not match the file would otherwise allocate for nothing).
    let summary = crate::summary::params(&meta.encoder, 0);
    let needed = (summary.total() + summary.running_stats) as u64 * 4;
    if (bytes.len() as u64) < needed {
        return Err(err(&path, format!(
            "{} bytes cannot hold the {} f32 values of the {} described in {META_FILE}: truncated, or not this model's tensors",
            bytes.len(),
            needed / 4,
            meta.encoder.kind
        )));
    }
    let mut encoder = meta.encoder.init(device)?;
    let mut store = SafetensorsStore::from_bytes(Some(bytes));
    let result = encoder.load_from(&mut store).map_err(|e| {
        err(&path, format!("truncated, corrupt or not matching {META_FILE} ({e})"))
    })?;
    let mut problems = Vec::new();
    problems.extend(result.missing.iter().take(3).map(|(p, _)| format!("tensor `{p}` is missing")));
    problems.extend(result.errors.iter().take(3).map(|e| e.to_string()));
    problems.extend(result.unused.iter().take(3).map(|p| format!("tensor `{p}` is not part of this model")));
    if !problems.is_empty() {
        let total = result.missing.len() + result.errors.len() + result.unused.len();
        return Err(err(
            &path,
            format!(
                "the tensors do not match the {} described in {META_FILE} ({total} problems; first: {})",
                meta.encoder.kind,
                problems.join("; ")
            ),
        ));
    }
    // Give the parameters their saved identities, so that the optimiser state finds them.
    restore_ids(&path, &mut encoder, &file.param_ids)?;
    let optimizer = match file.optimizer {
        Some(name) => {
            let path = dir.join(&name);
            let bytes = std::fs::read(&path).map_err(|e| err(&path, format!("cannot read: {e}")))?;
            let record = burn::optim::OptimizerRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
                .map_err(|e| err(&path, format!("truncated or corrupt optimiser state ({e:?})")))?;
            Some(record)
        }
        None => None,
    };
    Ok(Checkpoint { encoder, meta, optimizer })
}

/// Parameter identities of `module` by tensor name (what optimiser state is keyed by).
pub fn param_ids<M: ModuleSnapshot>(module: &M) -> std::collections::BTreeMap<String, u64> {
    module.collect(None, None, false).into_iter().filter_map(|t| t.param_id.map(|id| (t.name, id))).collect()
}

/// Writes any module's tensors to `path` (safetensors, atomically) and returns its parameter
/// identities, for modules that travel beside an encoder checkpoint (projection heads).
pub fn save_module<M: ModuleSnapshot>(path: &Path, module: &M) -> Result<std::collections::BTreeMap<String, u64>, CoreError> {
    let mut store = SafetensorsStore::from_bytes(None);
    module.save_into(&mut store).map_err(|e| err(path, format!("cannot serialise the tensors: {e}")))?;
    let bytes = store.get_bytes().map_err(|e| err(path, format!("cannot serialise the tensors: {e}")))?;
    crate::io::write_atomic(path, &bytes).map_err(|e| err(path, format!("cannot write: {e}")))?;
    Ok(param_ids(module))
}

/// Loads `path` into `module` (built with the same config) and gives its parameters `ids`.
pub fn load_module<M: ModuleSnapshot>(
    path: &Path,
    module: &mut M,
    ids: &std::collections::BTreeMap<String, u64>,
) -> Result<(), CoreError> {
    let bytes = std::fs::read(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
    let mut store = SafetensorsStore::from_bytes(Some(bytes));
    let result = module.load_from(&mut store).map_err(|e| err(path, format!("truncated, corrupt or not matching ({e})")))?;
    if !result.missing.is_empty() || !result.errors.is_empty() || !result.unused.is_empty() {
        return Err(err(path, format!(
            "the tensors do not match the module ({} missing, {} mismatched, {} unused)",
            result.missing.len(),
            result.errors.len(),
            result.unused.len()
        )));
    }
    restore_ids(path, module, ids)
}

fn restore_ids<M: ModuleSnapshot>(path: &Path, module: &mut M, ids: &std::collections::BTreeMap<String, u64>) -> Result<(), CoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut tensors = module.collect(None, None, false);
    for t in &mut tensors {
        t.param_id = ids.get(&t.name).copied().or(t.param_id);
    }
    let result = module.apply(tensors, None, None, false);
    match result.errors.first() {
        Some(e) => Err(err(path, format!("cannot restore parameter identities: {e}"))),
        None => Ok(()),
    }
}

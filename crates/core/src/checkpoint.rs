//! Checkpoints: `model.safetensors` (every tensor of the encoder; PyTorch opens it with
//! `safetensors.torch.load_file`) and `checkpoint.json` (the encoder config, descriptor family and
//! step), both written atomically. The JSON is written last, so a directory with a readable JSON
//! always has its complete tensors.
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
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaFile {
    format: String,
    version: u32,
    #[serde(flatten)]
    meta: CheckpointMeta,
}

fn err(path: &Path, reason: impl Into<String>) -> CoreError {
    CoreError::Checkpoint { path: path.to_path_buf(), reason: reason.into() }
}

/// Writes `dir/model.safetensors` then `dir/checkpoint.json`, each atomically.
pub fn save(dir: &Path, encoder: &Encoder, meta: &CheckpointMeta) -> Result<(), CoreError> {
    std::fs::create_dir_all(dir).map_err(|e| err(dir, format!("cannot create the directory: {e}")))?;
    let mut store = SafetensorsStore::from_bytes(None);
    encoder.save_into(&mut store).map_err(|e| err(dir, format!("cannot serialise the tensors: {e}")))?;
    let bytes = store.get_bytes().map_err(|e| err(dir, format!("cannot serialise the tensors: {e}")))?;
    let tensors = dir.join(TENSORS_FILE);
    crate::io::write_atomic(&tensors, &bytes).map_err(|e| err(&tensors, format!("cannot write: {e}")))?;
    let json = serde_json::to_vec_pretty(&MetaFile { format: FORMAT.into(), version: VERSION, meta: meta.clone() })
        .expect("checkpoint metadata serialises");
    let meta_path = dir.join(META_FILE);
    crate::io::write_atomic(&meta_path, &json).map_err(|e| err(&meta_path, format!("cannot write: {e}")))
}

/// Reads `dir/checkpoint.json` alone.
pub fn read_meta(dir: &Path) -> Result<CheckpointMeta, CoreError> {
    let path = dir.join(META_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        err(&path, format!("cannot read ({e}); a checkpoint directory holds {META_FILE} and {TENSORS_FILE}"))
    })?;
    let file: MetaFile = serde_json::from_str(&text).map_err(|e| err(&path, format!("not a valid checkpoint description: {e}")))?;
    if file.format != FORMAT || file.version != VERSION {
        return Err(err(&path, format!("format `{}` version {} is not {FORMAT} version {VERSION}", file.format, file.version)));
    }
    file.meta.encoder.validate().map_err(|e| err(&path, e.to_string()))?;
    Ok(file.meta)
}

/// Rebuilds the encoder of `dir` on `device` and loads its tensors.
pub fn load(dir: &Path, device: &Device) -> Result<(Encoder, CheckpointMeta), CoreError> {
    let meta = read_meta(dir)?;
    let path: PathBuf = dir.join(TENSORS_FILE);
    let bytes = std::fs::read(&path).map_err(|e| err(&path, format!("cannot read: {e}")))?;
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
    Ok((encoder, meta))
}

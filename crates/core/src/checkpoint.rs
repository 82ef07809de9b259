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
/// 2: the `individual` family's entries are SimCLR's five (crop, flip, colour jitter, grayscale,
/// blur). Version 1 files are read unless they hold an `individual` encoder, whose entries then
/// meant crop (with flip), colour jitter, grayscale, blur and solarize.
const VERSION: u32 = 2;
/// The oldest version read.
const OLDEST_VERSION: u32 = 1;

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
    let (encoder, bytes) = encoder_bytes(encoder).map_err(|e| err(dir, e))?;
    let encoder = &encoder;
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

/// The eval-mode copy of `encoder` (burn folds pending BatchNorm running-statistics updates, from
/// every thread, into it; the training module would give stale statistics) and the bytes of
/// `model.safetensors` for it.
fn encoder_bytes(encoder: &Encoder) -> Result<(Encoder, Vec<u8>), String> {
    let encoder = encoder.valid();
    let mut store = SafetensorsStore::from_bytes(None);
    encoder.save_into(&mut store).map_err(|e| format!("cannot serialise the tensors: {e}"))?;
    let bytes = store.get_bytes().map_err(|e| format!("cannot serialise the tensors: {e}"))?;
    Ok((encoder, bytes))
}

/// Builds the encoder `config` describes on `device` from `model.safetensors` bytes: every tensor
/// present with its shape, and no other. Errors name `path` and say the tensors do not fit
/// `described` (where the description came from).
fn encoder_from_bytes(config: &EncoderConfig, bytes: Vec<u8>, path: &Path, described: &str, device: &Device) -> Result<Encoder, CoreError> {
    let mut encoder = config.init(device)?;
    let mut store = SafetensorsStore::from_bytes(Some(bytes));
    let result = encoder.load_from(&mut store).map_err(|e| err(path, format!("truncated, corrupt or not matching {described} ({e})")))?;
    if let Some(problems) = mismatch(&result) {
        return Err(err(path, format!("the tensors do not match the {} described in {described} ({problems})", config.kind)));
    }
    Ok(encoder)
}

/// Every tensor of `encoder` (its eval-mode copy) as it is saved in `model.safetensors`.
pub fn tensors(encoder: &Encoder) -> Result<Vec<crate::arrays::Array>, CoreError> {
    let (_, bytes) = encoder_bytes(encoder).map_err(CoreError::Config)?;
    Ok(crate::arrays::read_safetensors(&bytes, "the encoder's tensors")?.0)
}

/// Builds the encoder `config` describes on `device` from tensors named as in `model.safetensors`
/// (every one present, with its shape, and no other); `source` names their origin in errors.
pub fn from_tensors(config: &EncoderConfig, arrays: Vec<crate::arrays::Array>, source: &Path, device: &Device) -> Result<Encoder, CoreError> {
    let bytes = crate::arrays::safetensors_bytes(&arrays, &Default::default());
    drop(arrays);
    encoder_from_bytes(config, bytes, source, "the import's description", device)
}

/// Reads `dir/checkpoint.json` alone.
///
/// `dir` may also be an encoder file of `ail export --web` (the published encoders are such files).
pub fn read_meta(dir: &Path) -> Result<CheckpointMeta, CoreError> {
    if is_export_file(dir) {
        return read_export_header(dir);
    }
    read_meta_file(dir).map(|f| f.meta)
}

/// Whether `path` is a file that starts as an encoder export of `ail export --web` does.
pub fn is_export_file(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 6];
    path.is_file() && std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == WEB_MAGIC
}

/// The checked description of an export file, read from the file's first bytes alone (the
/// description is bounded like any text file) without the tensors.
fn read_export_header(path: &Path) -> Result<CheckpointMeta, CoreError> {
    use std::io::Read;
    let source = path.display().to_string();
    let mut file = std::fs::File::open(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
    let mut head = vec![0u8; 12];
    file.read_exact(&mut head).map_err(|e| err(path, format!("cannot read its first 12 bytes: {e}")))?;
    let len = u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as u64;
    if len > ail_data::limits::MAX_TEXT_FILE {
        return Err(err(path, format!("its description claims {len} bytes, more than the {} accepted: not an encoder export", ail_data::limits::MAX_TEXT_FILE)));
    }
    (&mut file).take(len).read_to_end(&mut head).map_err(|e| err(path, format!("cannot read: {e}")))?;
    web_meta(&head, &source)
}

/// The bytes of an export file, read only after its description says how many its tensors take
/// (f32 at most, with a generous margin for the safetensors header), as [`load_parts`] bounds a
/// checkpoint directory's tensors.
fn read_export(path: &Path) -> Result<Vec<u8>, CoreError> {
    let meta = read_export_header(path)?;
    let summary = crate::summary::params(&meta.encoder, 0);
    let limit = (summary.total() + summary.running_stats) as u64 * 4 + ail_data::limits::MAX_TEXT_FILE + (64 << 20);
    ail_data::limits::read_file(path, limit).map_err(|e| err(path, format!("cannot read: {e}")))
}

fn read_meta_file(dir: &Path) -> Result<MetaFile, CoreError> {
    let path = dir.join(META_FILE);
    let text = ail_data::limits::read_text(&path, ail_data::limits::MAX_TEXT_FILE).map_err(|e| {
        err(&path, format!("cannot read ({e}); a checkpoint directory holds {META_FILE} and {TENSORS_FILE}"))
    })?;
    let file: MetaFile = serde_json::from_str(&text).map_err(|e| err(&path, format!("not a valid checkpoint description: {e}")))?;
    if file.format != FORMAT || !(OLDEST_VERSION..=VERSION).contains(&file.version) {
        return Err(err(&path, format!("format `{}` version {} is not {FORMAT} version {OLDEST_VERSION}-{VERSION}", file.format, file.version)));
    }
    check_family_layout(&path, file.version, file.meta.family)?;
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

/// Refuses an encoder trained on the `individual` family's earlier entries (checkpoint version 1):
/// the same descriptor would now switch other augmentations on.
fn check_family_layout(path: &Path, version: u32, family: Option<Family>) -> Result<(), CoreError> {
    if version < 2 && family == Some(Family::Individual) {
        return Err(err(path, format!(
            "this K = 5 encoder was trained with the earlier `individual` entries [crop with flip, colour jitter, grayscale, blur, solarize]; \
             the entries are now SimCLR's five [{}], so its descriptors would mean other augmentations: \
             pretrain it again with `ail pretrain --invariances individual`",
            Family::Individual.entry_names().join(", ")
        )));
    }
    Ok(())
}

/// Rebuilds the encoder of `dir` on `device` and loads its tensors (and optimiser state).
pub fn load(dir: &Path, device: &Device) -> Result<Checkpoint, CoreError> {
    load_parts(dir, device, true)
}

/// [`load`] without the optimiser state, which a frozen or exported encoder never uses (it is
/// neither read nor held; `optimizer` is `None`).
///
/// `dir` may also be an encoder file of `ail export --web` (f16 kernel weights, read as f32).
pub fn load_encoder(dir: &Path, device: &Device) -> Result<Checkpoint, CoreError> {
    if is_export_file(dir) {
        let (encoder, meta) = load_web(&read_export(dir)?, &dir.display().to_string(), device)?;
        return Ok(Checkpoint { encoder, meta, optimizer: None });
    }
    load_parts(dir, device, false)
}

fn load_parts(dir: &Path, device: &Device, with_optimizer: bool) -> Result<Checkpoint, CoreError> {
    let file = read_meta_file(dir)?;
    let meta = file.meta;
    let path: PathBuf = dir.join(TENSORS_FILE);
    // Before building anything: the file must be able to hold the tensors the config describes
    // (a config that does not match the file would otherwise allocate for nothing), and it is read
    // only up to what they take with a generous header.
    let summary = crate::summary::params(&meta.encoder, 0);
    let needed = (summary.total() + summary.running_stats) as u64 * 4;
    let bytes = ail_data::limits::read_file(&path, needed + (64 << 20)).map_err(|e| err(&path, format!("cannot read: {e}")))?;
    if (bytes.len() as u64) < needed {
        return Err(err(&path, format!(
            "{} bytes cannot hold the {} f32 values of the {} described in {META_FILE}: truncated, or not this model's tensors",
            bytes.len(),
            needed / 4,
            meta.encoder.kind
        )));
    }
    let mut encoder = encoder_from_bytes(&meta.encoder, bytes, &path, META_FILE, device)?;
    // Give the parameters their saved identities, so that the optimiser state finds them.
    restore_ids(&path, &mut encoder, &file.param_ids)?;
    let optimizer = match file.optimizer.filter(|_| with_optimizer) {
        Some(name) => {
            let path = dir.join(&name);
            let bytes = ail_data::limits::read_data_file(&path).map_err(|e| err(&path, format!("cannot read: {e}")))?;
            let record = burn::optim::OptimizerRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
                .map_err(|e| err(&path, format!("truncated or corrupt optimiser state ({e:?})")))?;
            Some(record)
        }
        None => None,
    };
    Ok(Checkpoint { encoder, meta, optimizer })
}

/// The first bytes of a browser export (`ail export --web`).
pub const WEB_MAGIC: &[u8; 6] = b"AILWEB";
/// The browser export's layout version: bump it when the layout changes.
pub const WEB_VERSION: u16 = 1;
/// What the export's JSON says its tensors are stored as.
const WEB_STORAGE: &str = "f16-weights";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebHeader {
    format: String,
    /// The checkpoint version the description follows (absent in exports of version 1).
    #[serde(default = "first_version")]
    version: u32,
    #[serde(flatten)]
    meta: CheckpointMeta,
    /// `f16-weights`: convolution and linear weights in f16, everything else (batch-norm
    /// statistics, biases of other layers) in f32; loading widens all to f32.
    storage: String,
}

fn first_version() -> u32 {
    1
}

fn web_err(source: &str, reason: impl Into<String>) -> CoreError {
    CoreError::Checkpoint { path: PathBuf::from(source), reason: reason.into() }
}

/// One file for the browser page: `AILWEB`, the layout version (u16 LE), the JSON length (u32 LE),
/// the JSON (the checkpoint description) and a safetensors body whose convolution and linear
/// weights are f16 (half the size; the page computes in f32). `meta.normalization` must be set.
pub fn export_web(encoder: &Encoder, meta: &CheckpointMeta) -> Result<Vec<u8>, CoreError> {
    let here = "web export";
    if meta.normalization.is_none() {
        return Err(web_err(here, "the checkpoint records no input normalisation: re-save it with a current `ail pretrain`"));
    }
    let header = WebHeader { format: FORMAT.into(), version: VERSION, meta: meta.clone(), storage: WEB_STORAGE.into() };
    let json = serde_json::to_vec(&header).expect("the export header serialises");
    let mut store = SafetensorsStore::from_bytes(None)
        .with_to_adapter(burn::store::HalfPrecisionAdapter::new().with_module("HyperConv"));
    encoder.valid().save_into(&mut store).map_err(|e| web_err(here, format!("cannot serialise the tensors: {e}")))?;
    let body = store.get_bytes().map_err(|e| web_err(here, format!("cannot serialise the tensors: {e}")))?;
    let mut out = Vec::with_capacity(12 + json.len() + body.len());
    out.extend_from_slice(WEB_MAGIC);
    out.extend_from_slice(&WEB_VERSION.to_le_bytes());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&body);
    Ok(out)
}

/// The description of an export [`export_web`] wrote, checked (magic, versions, family layout, a
/// valid encoder, its normalisation), without building anything: what [`load_web`] would load.
pub fn web_meta(bytes: &[u8], source: &str) -> Result<CheckpointMeta, CoreError> {
    web_header(bytes, source).map(|(meta, _)| meta)
}

/// The checked description and where the tensors start.
fn web_header(bytes: &[u8], source: &str) -> Result<(CheckpointMeta, usize), CoreError> {
    let how = "export one with `ail export --web RUN --out FILE`";
    if bytes.len() < 12 || &bytes[..6] != WEB_MAGIC {
        return Err(web_err(source, format!("not an encoder export for the page (it does not start with AILWEB): {how}")));
    }
    let version = u16::from_le_bytes([bytes[6], bytes[7]]);
    if version != WEB_VERSION {
        return Err(web_err(source, format!("export layout version {version}; this page reads version {WEB_VERSION}: {how} with this version")));
    }
    let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let json = bytes.get(12..12 + len).ok_or_else(|| web_err(source, format!("truncated: the description needs {len} bytes, the file has {}", bytes.len() - 12)))?;
    let header: WebHeader = serde_json::from_slice(json).map_err(|e| web_err(source, format!("the description is not valid ({e}): {how}")))?;
    if header.format != FORMAT || header.storage != WEB_STORAGE {
        return Err(web_err(source, format!("format `{}` with storage `{}` is not {FORMAT} with {WEB_STORAGE}: {how}", header.format, header.storage)));
    }
    if !(OLDEST_VERSION..=VERSION).contains(&header.version) {
        return Err(web_err(source, format!("description version {}; this version of ail reads {OLDEST_VERSION}-{VERSION}: a newer ail wrote it", header.version)));
    }
    check_family_layout(Path::new(source), header.version, header.meta.family)?;
    let meta = header.meta;
    meta.encoder.validate().map_err(|e| web_err(source, e.to_string()))?;
    if meta.normalization.as_ref().is_none_or(|n| n.mean.len() != meta.encoder.in_channels || n.std.len() != meta.encoder.in_channels) {
        return Err(web_err(source, format!("the input normalisation does not match the encoder's {} channels", meta.encoder.in_channels)));
    }
    Ok((meta, 12 + len))
}

/// Reads what [`export_web`] wrote (named `source` in errors) onto `device`: the encoder with f32
/// parameters, and its description. Wrong files, other versions, truncation and tensors that do not
/// match the description each get an error saying so.
pub fn load_web(bytes: &[u8], source: &str, device: &Device) -> Result<(Encoder, CheckpointMeta), CoreError> {
    let (meta, body_start) = web_header(bytes, source)?;
    let body = bytes[body_start..].to_vec();
    let summary = crate::summary::params(&meta.encoder, 0);
    // Half of the weights may be f16: at least 2 bytes per value.
    let needed = (summary.total() + summary.running_stats) as u64 * 2;
    if (body.len() as u64) < needed {
        return Err(web_err(source, format!(
            "truncated: {} bytes of tensors cannot hold the {} values of the {} it describes",
            body.len(),
            needed / 2,
            meta.encoder.kind
        )));
    }
    let mut encoder = meta.encoder.init(device)?;
    let mut store = SafetensorsStore::from_bytes(Some(body))
        .with_from_adapter(burn::store::HalfPrecisionAdapter::new().with_module("HyperConv"));
    let result = encoder.load_from(&mut store).map_err(|e| web_err(source, format!("truncated or corrupt tensors ({e})")))?;
    if let Some(problems) = mismatch(&result) {
        return Err(web_err(source, format!("the tensors do not match the {} it describes ({problems})", meta.encoder.kind)));
    }
    Ok((encoder, meta))
}

/// Every float of `module` (parameters and buffers), in the order the module lists its tensors:
/// for comparing two copies of a model.
pub fn param_values<M: ModuleSnapshot>(module: &M) -> Vec<f32> {
    module
        .collect(None, None, false)
        .into_iter()
        .flat_map(|t| burn::store::bridge::into_data(t).map(|d| d.convert::<f32>().try_into_vec::<f32>().unwrap_or_default()).unwrap_or_default())
        .collect()
}

/// What is wrong with loaded tensors, if anything: the count and the first few problems.
fn mismatch(result: &burn::store::ApplyResult) -> Option<String> {
    let total = result.missing.len() + result.errors.len() + result.unused.len();
    if total == 0 {
        return None;
    }
    let first: Vec<String> = result
        .missing
        .iter()
        .map(|(p, _)| format!("tensor `{p}` is missing"))
        .chain(result.errors.iter().map(|e| e.to_string()))
        .chain(result.unused.iter().map(|p| format!("tensor `{p}` is not part of this model")))
        .take(3)
        .collect();
    Some(format!("{total} problems; first: {}", first.join("; ")))
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
    let bytes = ail_data::limits::read_data_file(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
    let mut store = SafetensorsStore::from_bytes(Some(bytes));
    let result = module.load_from(&mut store).map_err(|e| err(path, format!("truncated, corrupt or not matching ({e})")))?;
    if let Some(problems) = mismatch(&result) {
        return Err(err(path, format!("the tensors do not match the module ({problems})")));
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

//! Encoders out and in.
//!
//! - `ail export --web RUN`: one file for the browser page (`web/`), which opens it from its file
//!   picker or ships it as the built-in encoder. Convolution and linear weights are stored as f16
//!   (the page computes in f32); see [`ail_core::checkpoint::export_web`] for the layout.
//! - `ail export --torch RUN`: a directory in PyTorch's conventions (`ail_core::torch`) that
//!   `python/ail_torch.py` loads; `ail import --torch DIR` reads one back.
//! - `ail import --release PATH`: a checkpoint of the authors' PyTorch release.

use ail_core::checkpoint::{self, export_web, load_web};
use ail_core::frozen::resolve_checkpoint;
use ail_core::io::write_atomic;
use anyhow::Context;
use burn::module::Module;
use burn::tensor::Device;

use std::path::Path;

use ail_core::arrays::{Array, read_safetensors, safetensors_bytes};
use ail_core::checkpoint::{CheckpointMeta, Normalization};
use ail_core::torch::{TorchArch, from_torch, to_torch, torch_arch};
use ail_core::{EncoderConfig, Family, ModelKind};
use serde::{Deserialize, Serialize};

use crate::args::{ExportArgs, ImportArgs};

/// The page loads any export, but it is meant for narrow encoders: above this it warns.
const WEB_SIZE_HINT: usize = 25 << 20;

pub fn run(args: &ExportArgs) -> anyhow::Result<()> {
    match (&args.web, &args.torch) {
        (Some(run), _) => run_web(run, args.out.as_deref()),
        (None, Some(run)) => run_torch(run, args.out.as_deref()),
        (None, None) => anyhow::bail!("say what to export: --web RUN (the browser page) or --torch RUN (PyTorch)"),
    }
}

fn run_web(run: &Path, out: Option<&Path>) -> anyhow::Result<()> {
    let dir = resolve_checkpoint(run)?;
    let device = Device::flex();
    let ckpt = checkpoint::load_encoder(&dir, &device)?;
    let bytes = export_web(&ckpt.encoder, &ckpt.meta).with_context(|| format!("exporting {}", dir.display()))?;
    // What the page will read must load back, with values within f16 rounding of the checkpoint's.
    let (back, _) = load_web(&bytes, "the export just written", &device)?;
    let (a, b) = (
        ail_core::checkpoint::param_values(&ckpt.encoder.valid()),
        ail_core::checkpoint::param_values(&back),
    );
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs() / x.abs().max(1e-3)).fold(0f32, f32::max);
    anyhow::ensure!(a.len() == b.len() && worst < 2e-3, "the export does not read back as the checkpoint (relative difference {worst})");
    let out = out.map(Path::to_path_buf).unwrap_or_else(|| run.join("encoder.ailweb"));
    write_atomic(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    let m = &ckpt.meta;
    println!(
        "wrote {} ({:.1} MB): {} width {} (K = {}, {}x{} inputs, step {}); open it in the page with \"Open an export\"",
        out.display(),
        bytes.len() as f64 / 1e6,
        m.encoder.kind,
        m.encoder.width,
        m.encoder.input_invariances(),
        m.encoder.image_size,
        m.encoder.image_size,
        m.step
    );
    if bytes.len() > WEB_SIZE_HINT {
        eprintln!(
            "warning: {:.0} MB is heavy for a page (it is downloaded and held in memory): the page is meant for narrow encoders (--width 0.125 to 0.25)",
            bytes.len() as f64 / 1e6
        );
    }
    Ok(())
}

/// The description beside an `ail export --torch` directory's tensors.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TorchExport {
    format: String,
    version: u32,
    /// What python/ail_torch.py builds.
    arch: TorchArch,
    #[serde(flatten)]
    meta: CheckpointMeta,
}

const TORCH_FORMAT: &str = "ail-torch";
const TORCH_VERSION: u32 = 1;
const TORCH_TENSORS: &str = "model.safetensors";
const TORCH_CONFIG: &str = "config.json";
/// The largest tensor file read back (a full-width Hyper-ResNet-50 holds about 3.2 GB).
const MAX_TENSOR_BYTES: u64 = 8 << 30;

/// Writes `dir/model.safetensors` (PyTorch names and layouts) and then `dir/config.json`, each
/// atomically, for the encoder of checkpoint `ckpt`.
pub fn export_torch(checkpoint_dir: &Path, out: &Path) -> anyhow::Result<TorchArchSummary> {
    let device = Device::flex();
    let ckpt = checkpoint::load_encoder(checkpoint_dir, &device)?;
    let arch = torch_arch(&ckpt.meta.encoder);
    let source = checkpoint_dir.join(checkpoint::TENSORS_FILE).display().to_string();
    let tensors = to_torch(&ckpt.meta.encoder, checkpoint::tensors(&ckpt.encoder)?, &source)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let metadata = [("format".to_string(), "pt".to_string())].into_iter().collect();
    let path = out.join(TORCH_TENSORS);
    write_atomic(&path, &safetensors_bytes(&tensors, &metadata)).with_context(|| format!("writing {}", path.display()))?;
    let summary = TorchArchSummary::of(ckpt.meta.encoder.kind, &tensors);
    let config = TorchExport { format: TORCH_FORMAT.into(), version: TORCH_VERSION, arch, meta: ckpt.meta };
    let path = out.join(TORCH_CONFIG);
    write_atomic(&path, &serde_json::to_vec_pretty(&config)?).with_context(|| format!("writing {}", path.display()))?;
    Ok(summary)
}

/// What an export or import moved.
pub struct TorchArchSummary {
    pub kind: ModelKind,
    pub tensors: usize,
    pub values: usize,
}

impl TorchArchSummary {
    fn of(kind: ModelKind, tensors: &[Array]) -> Self {
        Self { kind, tensors: tensors.len(), values: tensors.iter().map(|t| t.shape.iter().product::<usize>()).sum() }
    }
}

fn run_torch(run: &Path, out: Option<&Path>) -> anyhow::Result<()> {
    let dir = resolve_checkpoint(run)?;
    // Beside what was named (RUN/torch for a run directory), never inside checkpoints/, whose old
    // steps a continuing run deletes.
    let out = out.map(Path::to_path_buf).unwrap_or_else(|| run.join("torch"));
    let s = export_torch(&dir, &out).with_context(|| format!("exporting {} for PyTorch", dir.display()))?;
    println!(
        "wrote {} ({} {} tensors, {} values): in Python, `import ail_torch; model = ail_torch.load(\"{}\")` (python/ail_torch.py)",
        out.display(),
        s.tensors,
        s.kind,
        s.values,
        out.display()
    );
    Ok(())
}

pub fn run_import(args: &ImportArgs) -> anyhow::Result<()> {
    if args.out.join(checkpoint::META_FILE).exists() {
        anyhow::bail!("{} holds a checkpoint already: choose another --out", args.out.display());
    }
    let (source, s) = match (&args.release, &args.torch) {
        (Some(path), _) => (path, import_release(path, args.image_size, &args.out)?),
        (None, Some(dir)) => (dir, import_torch(dir, &args.out)?),
        (None, None) => anyhow::bail!("say what to import: --release PATH.pth.tar or --torch DIR"),
    };
    println!(
        "wrote {}: {} ({} tensors, {} values) from {}; every command takes it as --checkpoint {}",
        args.out.display(),
        s.kind,
        s.tensors,
        s.values,
        source.display(),
        args.out.display()
    );
    Ok(())
}

/// Builds the encoder from our-named tensors and saves it as a checkpoint in `out`.
fn save_imported(meta: &CheckpointMeta, tensors: Vec<Array>, source: &Path, out: &Path) -> anyhow::Result<TorchArchSummary> {
    let summary = TorchArchSummary::of(meta.encoder.kind, &tensors);
    eprintln!("building the {} and writing {}...", meta.encoder.kind, out.display());
    let encoder = checkpoint::from_tensors(&meta.encoder, tensors, source, &Device::flex())?;
    checkpoint::save(out, &encoder, meta, None)?;
    Ok(summary)
}

/// An `ail export --torch` directory back into a checkpoint.
pub fn import_torch(dir: &Path, out: &Path) -> anyhow::Result<TorchArchSummary> {
    let path = dir.join(TORCH_CONFIG);
    let text = ail_data::limits::read_file(&path, 1 << 20).with_context(|| format!("reading {} (an `ail export --torch` directory holds {TORCH_CONFIG} and {TORCH_TENSORS})", path.display()))?;
    let config: TorchExport = serde_json::from_slice(&text).with_context(|| format!("{}: not an `ail export --torch` description", path.display()))?;
    anyhow::ensure!(
        config.format == TORCH_FORMAT && config.version == TORCH_VERSION,
        "{}: format `{}` version {} is not {TORCH_FORMAT} version {TORCH_VERSION}",
        path.display(),
        config.format,
        config.version
    );
    config.meta.encoder.validate().with_context(|| format!("{}", path.display()))?;
    anyhow::ensure!(
        torch_arch(&config.meta.encoder) == config.arch,
        "{}: `arch` does not describe the `encoder` beside it (edited by hand?)",
        path.display()
    );
    let tensors_path = dir.join(TORCH_TENSORS);
    let bytes = ail_data::limits::read_file(&tensors_path, MAX_TENSOR_BYTES).with_context(|| format!("reading {}", tensors_path.display()))?;
    let (arrays, _) = read_safetensors(&bytes, &tensors_path.display().to_string())?;
    drop(bytes);
    let ours = from_torch(&config.meta.encoder, arrays, &|n| n.ends_with("num_batches_tracked"), &tensors_path.display().to_string())?;
    save_imported(&config.meta, ours, &tensors_path, out)
}

/// ImageNet's channel statistics, which the release normalises with.
fn imagenet_normalization() -> Normalization {
    Normalization { mean: vec![0.485, 0.456, 0.406], std: vec![0.229, 0.224, 0.225] }
}

/// The values of a tensor of a PyTorch file, as f32.
fn read_torch_tensor(t: &pytorch_reader::Tensor) -> anyhow::Result<Vec<f32>> {
    use pytorch_reader::DType;
    let bytes = t.read().with_context(|| format!("reading tensor `{}`", t.name))?;
    Ok(match t.dtype() {
        DType::F32 => bytes.chunks_exact(4).map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect(),
        DType::F64 => bytes.chunks_exact(8).map(|c| f64::from_ne_bytes(c.try_into().expect("8 bytes")) as f32).collect(),
        DType::F16 => bytes.chunks_exact(2).map(|c| burn::tensor::f16::from_ne_bytes([c[0], c[1]]).to_f32()).collect(),
        DType::BF16 => bytes.chunks_exact(2).map(|c| burn::tensor::bf16::from_ne_bytes([c[0], c[1]]).to_f32()).collect(),
        other => anyhow::bail!("tensor `{}` is {other:?}, not floating point", t.name),
    })
}

/// The prefixes under which the release's checkpoints hold the query encoder: the amortised
/// MoCo-v2 model (`module.base_encoder.`) and the MoCo-v2 baselines (`module.encoder_q.`), with
/// and without DistributedDataParallel's `module.`.
const RELEASE_PREFIXES: [&str; 5] = ["module.base_encoder.", "module.encoder_q.", "base_encoder.", "encoder_q.", ""];

/// Reads the release checkpoint `path` and works out which of our encoders it is.
pub fn import_release(path: &Path, image_size: usize, out: &Path) -> anyhow::Result<TorchArchSummary> {
    let reader = pytorch_reader::PytorchReader::with_top_level_key(path, "state_dict")
        .or_else(|_| pytorch_reader::PytorchReader::new(path))
        .with_context(|| format!("{}: not a PyTorch checkpoint that pytorch-reader can open", path.display()))?;
    let tensors = reader.tensors();
    let found = |p: &str| tensors.contains_key(&format!("{p}conv1.weight")) || tensors.contains_key(&format!("{p}cls_token"));
    let prefix = RELEASE_PREFIXES.into_iter().find(|p| found(p)).ok_or_else(|| {
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        anyhow::anyhow!(
            "{}: no `conv1.weight` (ResNet) or `cls_token` (ViT) under any of the release's prefixes ({}): not an encoder checkpoint of the release (first names: {:?})",
            path.display(),
            RELEASE_PREFIXES[..4].join(", "),
            names.iter().take(5).collect::<Vec<_>>()
        )
    })?;
    let shape = |name: &str| tensors.get(&format!("{prefix}{name}")).map(|t| t.shape().to_vec());
    let encoder = if shape("cls_token").is_some() { release_vit(path, &shape)? } else { release_resnet(path, image_size, &shape)? };
    encoder.validate()?;
    let k = encoder.input_invariances();
    let family = match k {
        2 => Some(Family::Groups),
        _ => None,
    };
    if k > 0 && family.is_none() {
        eprintln!(
            "note: K = {k}: the release's entries for K = {k} are not this project's {} (docs/method.md, \"From the authors' release\"); the checkpoint records no family",
            Family::Individual.entry_names().join(", ")
        );
    }
    if encoder.kind.is_vit() {
        eprintln!(
            "note: the release's ViT blocks normalise with LayerNorm epsilon 1e-6, these with {}: features differ from the release's by about that much",
            ail_core::vit::BLOCK_EPS
        );
    }
    let meta = CheckpointMeta { encoder: encoder.clone(), family, step: 0, normalization: Some(imagenet_normalization()), audio: None };
    // The projection heads (`fc.*`, `head.*`; `predictor_b.*`, one per descriptor, in the amortised
    // ResNet), the BatchNorm counters and the `bn_down` layers the release builds in every
    // Bottleneck but never calls are left out; everything else must map.
    let ignore = |n: &str| {
        n.starts_with("fc.")
            || n.starts_with("head.")
            || n.starts_with("predictor_b.")
            || n.ends_with("num_batches_tracked")
            || n.contains(".bn_down.")
    };
    let mut names: Vec<&String> = tensors
        .keys()
        .filter(|n| n.starts_with(prefix) && !ignore(&n[prefix.len()..]))
        .filter(|n| !(prefix.is_empty() && RELEASE_PREFIXES[..4].iter().any(|p| n.starts_with(p))))
        .collect();
    names.sort();
    // Before any tensor is read: the values (as f32) must fit the tensor budget, and the import
    // holds them about three times (as read, as the body the encoder loads from, in the encoder).
    let bytes: u64 = names.iter().map(|n| tensors[*n].num_elements() as u64 * 4).sum();
    anyhow::ensure!(
        bytes <= MAX_TENSOR_BYTES,
        "{}: its {} tensors declare {:.1} GB of values, more than the {} GB accepted",
        path.display(),
        names.len(),
        bytes as f64 / 1e9,
        MAX_TENSOR_BYTES >> 30
    );
    if let Some(budget) = ail_data::limits::memory_budget() {
        anyhow::ensure!(
            3 * bytes <= budget,
            "{}: importing its {:.1} GB of values needs about {:.1} GB of memory, more than the {:.1} GB here",
            path.display(),
            bytes as f64 / 1e9,
            3.0 * bytes as f64 / 1e9,
            budget as f64 / 1e9
        );
    }
    eprintln!("reading the {} ({} tensors, {:.2} GB, under `{prefix}`) from {}...", encoder.kind, names.len(), bytes as f64 / 1e9, path.display());
    let mut arrays = Vec::with_capacity(names.len());
    for name in names {
        let t = &tensors[name];
        arrays.push(Array::f32(&name[prefix.len()..], t.shape(), read_torch_tensor(t)?));
    }
    let ours = from_torch(&encoder, arrays, &|_| false, &path.display().to_string())?;
    save_imported(&meta, ours, path, out)
}

/// The ResNet a release state_dict (`shape` of each name, prefix removed) holds.
fn release_resnet(path: &Path, image_size: usize, shape: &dyn Fn(&str) -> Option<Vec<usize>>) -> anyhow::Result<EncoderConfig> {
    let conv1 = shape("conv1.weight").expect("found above");
    anyhow::ensure!(conv1.len() == 4, "{}: `conv1.weight` has shape {conv1:?}, not a conv kernel", path.display());
    let hyper = shape("layer1.0.emb1.weight");
    let bottleneck = shape("layer1.0.bn3.weight").is_some();
    let mut layers = [0usize; 4];
    for (s, count) in layers.iter_mut().enumerate() {
        while shape(&format!("layer{}.{}.bn1.weight", s + 1, *count)).is_some() {
            *count += 1;
        }
    }
    let kind = match (bottleneck, layers, hyper.is_some()) {
        (false, [2, 2, 2, 2], false) => ModelKind::Resnet18,
        (false, [2, 2, 2, 2], true) => ModelKind::HyperResnet18,
        (false, [3, 4, 6, 3], false) => ModelKind::Resnet34,
        (false, [3, 4, 6, 3], true) => ModelKind::HyperResnet34,
        (true, [3, 4, 6, 3], false) => ModelKind::Resnet50,
        (true, [3, 4, 6, 3], true) => ModelKind::HyperResnet50,
        _ => anyhow::bail!(
            "{}: a ResNet with {} blocks {layers:?} per stage is none of ResNet-18/34/50",
            path.display(),
            if bottleneck { "bottleneck" } else { "basic" }
        ),
    };
    let k = hyper.as_ref().map_or(0, |s| s.get(1).copied().unwrap_or(0));
    let mut encoder = EncoderConfig::new(kind, k).with_width(conv1[0] as f32 / 64.0).with_image_size(image_size);
    encoder.in_channels = conv1[1];
    if let Some(h) = shape("layer1.0.hypernet1.layer.0.weight") {
        encoder.hidden = h[0];
    }
    let stem_kernel = if image_size <= 64 { 3 } else { 7 };
    anyhow::ensure!(
        conv1[2] == stem_kernel,
        "{}: the stem is {}x{}, but --image-size {image_size} means a {stem_kernel}x{stem_kernel} stem: pass the image size the encoder was trained on (224 for the release's ImageNet models)",
        path.display(),
        conv1[2],
        conv1[3]
    );
    Ok(encoder)
}

/// The ViT a release state_dict holds (MoCo-v3's ViT, with `inv_fc` projectors when amortised);
/// the image size follows from the position embeddings.
fn release_vit(path: &Path, shape: &dyn Fn(&str) -> Option<Vec<usize>>) -> anyhow::Result<EncoderConfig> {
    let patch = shape("patch_embed.proj.weight").ok_or_else(|| anyhow::anyhow!("{}: a ViT without `patch_embed.proj.weight`", path.display()))?;
    let pos = shape("pos_embed").ok_or_else(|| anyhow::anyhow!("{}: a ViT without `pos_embed`", path.display()))?;
    anyhow::ensure!(patch.len() == 4 && pos.len() == 3 && pos[1] >= 2, "{}: `patch_embed.proj.weight` {patch:?} / `pos_embed` {pos:?} are not a ViT's", path.display());
    let (d, side) = (patch[0], (((pos[1] - 1) as f64).sqrt().round()) as usize);
    anyhow::ensure!(side * side == pos[1] - 1, "{}: `pos_embed` holds {} patch positions, not a square grid", path.display(), pos[1] - 1);
    let mut depth = 0;
    while shape(&format!("blocks.{depth}.attn.qkv.weight")).is_some() {
        depth += 1;
    }
    let mut projectors = 0;
    while shape(&format!("inv_fc.{projectors}.0.weight")).is_some() {
        projectors += 1;
    }
    let amortised = projectors > 0;
    let kind = match (d, depth, amortised) {
        (192, 12, true) => ModelKind::PromptVitTiny,
        (384, 12, true) => ModelKind::PromptVitSmall,
        (768, 12, true) => ModelKind::PromptVitBase,
        (192, 12, false) => ModelKind::VitTiny,
        (384, 12, false) => ModelKind::VitSmall,
        (768, 12, false) => ModelKind::VitBase,
        _ => anyhow::bail!("{}: a ViT of width {d} and depth {depth} is none of ViT-Tiny/Small/Base", path.display()),
    };
    let k = if amortised { shape("inv_fc.0.0.weight").map_or(0, |s| s[1]) } else { 0 };
    let mut encoder = EncoderConfig::new(kind, k).with_image_size(side * patch[2]);
    encoder.in_channels = patch[1];
    encoder.patch_size = Some(patch[2]);
    encoder.num_projectors = amortised.then_some(projectors);
    Ok(encoder)
}

//! A pretrained encoder frozen for downstream use (docs/method.md, "Downstream"): parameters never
//! trained, batch norm in EVAL mode (running statistics, never updated), while gradients still flow
//! to the descriptor `i` through the generated weights.

use std::path::{Path, PathBuf};

use std::sync::Arc;

use burn::module::Module;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::norm::{EncoderStatistics, LayerRecord, pool_records, record_statistics, with_statistics};

use crate::checkpoint::{self, CheckpointMeta, Normalization};
use crate::{CoreError, Encoder, Family};

/// The frozen encoder, its checkpoint and its input normalisation.
pub struct Frozen {
    /// Frozen (no gradients, eval-mode batch norm) on the autodiff device.
    pub encoder: Encoder,
    /// The same weights on the inner device, for feature extraction without a graph.
    pub inference: Encoder,
    pub meta: CheckpointMeta,
    /// The checkpoint directory that was loaded.
    pub checkpoint: PathBuf,
    pub normalization: Normalization,
    device: Device,
    /// Recent results of [`Frozen::features_u8`], keyed by the images' content and the
    /// descriptor: a validation grid reads the same features many times.
    cache: std::sync::Mutex<Vec<(u64, Vec<f32>)>>,
    /// Per-descriptor BatchNorm statistics: the calibration images and the statistics computed
    /// so far (None: the checkpoint's shared running statistics).
    per_descriptor: Option<Calibration>,
}

/// Which BatchNorm statistics a frozen encoder normalises with (docs/method.md, "BatchNorm and
/// the descriptor").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum BatchNormStatistics {
    /// The running statistics saved with the checkpoint: one average over every descriptor
    /// trained (what pretraining leaves, and what the authors' release uses).
    Shared,
    /// Statistics recomputed at the descriptor being read, on the task's training images.
    #[default]
    PerDescriptor,
}

impl BatchNormStatistics {
    pub fn name(self) -> &'static str {
        match self {
            BatchNormStatistics::Shared => "shared",
            BatchNormStatistics::PerDescriptor => "per-descriptor",
        }
    }
}

/// Images per-descriptor statistics are computed on (the first of the task's training split in a
/// fixed shuffled order), in one forward pass: one batch, as a training step normalises with.
pub const CALIBRATION_IMAGES: usize = 512;
/// Statistics are computed at descriptors on a lattice of this step (corners included) and a
/// descriptor is normalised with those of its nearest lattice point, so they are a function of the
/// descriptor alone; a learned `i` gets new ones when it crosses into another lattice cell.
pub const CALIBRATION_STEP: f32 = 0.05;
/// Bytes of per-descriptor statistics kept (the oldest lattice points are dropped beyond it and
/// recomputed when met again: the result is the same). A K = 2 encoder's whole lattice (441 points)
/// fits for the CIFAR widths, so a long series of episodes computes each point once.
const CALIBRATION_BYTES_KEPT: usize = 64 << 20;
/// Lattice points kept whatever their size.
const CALIBRATIONS_KEPT_AT_LEAST: usize = 64;

/// The lattice point (in steps) nearest to `i`.
fn lattice(i: &[f32]) -> Vec<i32> {
    i.iter().map(|v| (v.clamp(0.0, 1.0) / CALIBRATION_STEP).round() as i32).collect()
}

struct Calibration {
    pixels: Vec<u8>,
    shape: [usize; 3],
    /// Statistics by lattice point.
    computed: std::sync::Mutex<Computed>,
}

/// Statistics by lattice point, with the order they were computed in (oldest first) for eviction.
#[derive(Default)]
struct Computed {
    by_point: std::collections::HashMap<Vec<i32>, Arc<EncoderStatistics>>,
    order: std::collections::VecDeque<Vec<i32>>,
    bytes: usize,
}

impl Computed {
    fn get(&self, key: &[i32]) -> Option<Arc<EncoderStatistics>> {
        self.by_point.get(key).cloned()
    }

    fn insert(&mut self, key: Vec<i32>, statistics: Arc<EncoderStatistics>) {
        let size = |s: &EncoderStatistics| s.iter().map(|c| (c.mean.len() + c.var.len()) * 4).sum::<usize>();
        if self.by_point.contains_key(&key) {
            return;
        }
        self.bytes += size(&statistics);
        self.order.push_back(key.clone());
        self.by_point.insert(key, statistics);
        while self.order.len() > CALIBRATIONS_KEPT_AT_LEAST && self.bytes > CALIBRATION_BYTES_KEPT {
            let old = self.order.pop_front().expect("more than the minimum kept");
            if let Some(s) = self.by_point.remove(&old) {
                self.bytes -= size(&s);
            }
        }
    }
}

/// How many feature sets the cache keeps.
const CACHED_SETS: usize = 8;

/// Finds the checkpoint a path names: a checkpoint directory (holds `checkpoint.json`), a run
/// directory (its newest `checkpoints/step-*`) or an encoder file of `ail export --web` (the form
/// the published encoders take).
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf, CoreError> {
    if path.join(checkpoint::META_FILE).exists() || checkpoint::is_export_file(path) {
        return Ok(path.to_path_buf());
    }
    run_checkpoints(path).pop().ok_or_else(|| CoreError::Checkpoint {
        path: path.to_path_buf(),
        reason: format!(
            "neither a checkpoint (no {}), a run directory with checkpoints/step-* nor an encoder file of `ail export --web`: pass the --out of `ail pretrain`, one of its checkpoints or an exported encoder",
            checkpoint::META_FILE
        ),
    })
}

/// `step-` followed by digits only: a complete checkpoint directory of a run (interrupted writes
/// leave `step-NNNNNNN.partial`).
pub fn is_checkpoint_name(name: &str) -> bool {
    checkpoint_step(name).is_some()
}

/// The step a checkpoint directory's name `step-N` holds (`N` has at least 7 digits, more past step
/// 9,999,999), or `None` for any other name.
pub fn checkpoint_step(name: &str) -> Option<u64> {
    name.strip_prefix("step-").filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())).and_then(|d| d.parse().ok())
}

/// The complete checkpoints (`checkpoints/step-N` holding `checkpoint.json`) of the run directory
/// `run`, oldest first: ordered by step number, not by name, so `step-10000000` comes after
/// `step-9999999`.
pub fn run_checkpoints(run: &Path) -> Vec<PathBuf> {
    let mut steps: Vec<(u64, PathBuf)> = std::fs::read_dir(run.join("checkpoints"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((checkpoint_step(&e.file_name().to_string_lossy())?, e.path())))
        .filter(|(_, p)| p.join(checkpoint::META_FILE).exists())
        .collect();
    steps.sort();
    steps.into_iter().map(|(_, p)| p).collect()
}

impl Frozen {
    /// Loads the checkpoint `path` names (see [`resolve_checkpoint`]) onto `device` (any device;
    /// the autodiff one is derived from it). `fallback` normalises inputs when the checkpoint
    /// does not record its own statistics (checkpoints written before they were recorded).
    pub fn open(path: &Path, device: &Device, fallback: impl FnOnce() -> Normalization) -> Result<Self, CoreError> {
        let dir = resolve_checkpoint(path)?;
        let ad = device.clone().without_autodiff().autodiff();
        let mut ckpt = checkpoint::load_encoder(&dir, &ad)?;
        if ckpt.meta.normalization.is_none() {
            ckpt.meta.normalization = Some(fallback());
        }
        Self::from_encoder(ckpt.encoder, ckpt.meta, dir)
    }

    /// Freezes an encoder already loaded on an autodiff device (a browser export, say), with its
    /// description; `source` names where it came from. `meta.normalization` must be set.
    pub fn from_encoder(encoder: Encoder, meta: CheckpointMeta, source: PathBuf) -> Result<Self, CoreError> {
        let bad = |reason: String| CoreError::Checkpoint { path: source.clone(), reason };
        let normalization = meta.normalization.clone().ok_or_else(|| bad("no input normalisation is recorded".into()))?;
        let channels = meta.encoder.in_channels;
        if normalization.mean.len() != channels || normalization.std.len() != channels {
            return Err(bad(format!("the normalisation has {} channels, the encoder takes {channels}", normalization.mean.len())));
        }
        let device = encoder.devices().into_iter().next().ok_or_else(|| bad("the encoder has no parameters".into()))?;
        let ad = device.without_autodiff().autodiff();
        let inference = encoder.valid();
        let encoder = encoder.freeze();
        Ok(Self { encoder, inference, meta, checkpoint: source, normalization, device: ad, cache: Default::default(), per_descriptor: None })
    }

    /// Normalises with BatchNorm statistics recomputed at each descriptor read, on (at most
    /// [`CALIBRATION_IMAGES`] of) the `u8` images `pixels` (`[n, C, H, W]`), or with the shared
    /// running statistics. Encoders without BatchNorm (ViTs) are unaffected.
    pub fn set_batch_norm_statistics(&mut self, mode: BatchNormStatistics, pixels: &[u8], n: usize, shape: [usize; 3]) {
        self.cache.lock().expect("feature cache").clear();
        self.per_descriptor = match mode {
            BatchNormStatistics::Shared => None,
            BatchNormStatistics::PerDescriptor => {
                let len = shape.iter().product::<usize>();
                let order = crate::fit::permutation(n, 0x6a7c, 0);
                let pixels = order.iter().take(CALIBRATION_IMAGES).flat_map(|&r| pixels[r * len..(r + 1) * len].iter().copied()).collect();
                Some(Calibration { pixels, shape, computed: Default::default() })
            }
        };
    }

    /// Which statistics the encoder normalises with.
    pub fn batch_norm_statistics(&self) -> BatchNormStatistics {
        if self.per_descriptor.is_some() { BatchNormStatistics::PerDescriptor } else { BatchNormStatistics::Shared }
    }

    /// What every BatchNorm layer call sees at descriptor `i` on `u8` images: the images' own
    /// statistics and the layer's running (shared) ones. Up to [`CALIBRATION_IMAGES`] images are
    /// one batch; more are pooled over such batches.
    pub fn layer_statistics(&self, pixels: &[u8], n: usize, shape: [usize; 3], i: &[f32]) -> Result<(EncoderStatistics, Vec<LayerRecord>), CoreError> {
        let inner = self.device.clone().without_autodiff();
        let len = shape.iter().product::<usize>();
        let descriptor = self.descriptor(i, &inner);
        let passes: Vec<Vec<LayerRecord>> = (0..n)
            .step_by(CALIBRATION_IMAGES)
            .map(|s| {
                let e = (s + CALIBRATION_IMAGES).min(n);
                let x = self.normalization.apply(Self::upload_u8(&pixels[s * len..e * len], e - s, shape, &inner));
                record_statistics(|| self.inference.forward_features(x, descriptor.clone()).into_data()).1
            })
            .collect();
        Ok((pool_records(&passes)?, passes.into_iter().next().unwrap_or_default()))
    }

    /// Normalises with `statistics` at descriptor `i` (saved with a fit, say) and nowhere else: the
    /// per-descriptor mode without images to compute others from.
    pub fn use_statistics(&mut self, i: &[f32], statistics: EncoderStatistics) {
        self.cache.lock().expect("feature cache").clear();
        let shape = self.input_shape();
        let mut computed = Computed::default();
        computed.insert(lattice(i), Arc::new(statistics));
        self.per_descriptor = Some(Calibration { pixels: Vec::new(), shape, computed: std::sync::Mutex::new(computed) });
    }

    /// The per-descriptor statistics at `i`: those of its nearest lattice point (see
    /// [`CALIBRATION_STEP`]), a function of `i` alone; None with shared statistics. The ones a fit's
    /// scores were computed with, to save beside its head.
    pub fn statistics_at(&self, i: &[f32]) -> Option<Arc<EncoderStatistics>> {
        let calibration = self.per_descriptor.as_ref()?;
        let key = lattice(i);
        if let Some(s) = calibration.computed.lock().expect("statistics").get(&key) {
            return Some(s);
        }
        assert!(!calibration.pixels.is_empty(), "no images to compute BatchNorm statistics at {i:?} from (only given ones are used)");
        let n = calibration.pixels.len() / calibration.shape.iter().product::<usize>().max(1);
        let point: Vec<f32> = key.iter().map(|&k| (k as f32 * CALIBRATION_STEP).min(1.0)).collect();
        let (pooled, _) = self.layer_statistics(&calibration.pixels, n, calibration.shape, &point).expect("one encoder records the same layers on every pass");
        let pooled = Arc::new(pooled);
        calibration.computed.lock().expect("statistics").insert(key, pooled.clone());
        Some(pooled)
    }

    /// Runs `f` with the BatchNorm statistics of descriptor `i`.
    fn at_statistics<R>(&self, i: &[f32], f: impl FnOnce() -> R) -> R {
        match self.statistics_at(i) {
            Some(s) => with_statistics(s, f),
            None => f(),
        }
    }

    /// The autodiff device the frozen encoder lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `K`: the descriptor's length (0 for a plain encoder).
    pub fn num_invariances(&self) -> usize {
        self.meta.encoder.input_invariances()
    }

    pub fn family(&self) -> Option<Family> {
        self.meta.family
    }

    pub fn feature_dim(&self) -> usize {
        self.meta.encoder.feature_dim()
    }

    /// `[channels, height, width]` the encoder was trained on.
    pub fn input_shape(&self) -> [usize; 3] {
        if let Some(audio) = &self.meta.audio {
            return audio.input_shape();
        }
        let e = &self.meta.encoder;
        [e.in_channels, e.image_size, e.image_size]
    }

    /// Checks a descriptor's length against the encoder and its range against [0, 1].
    pub fn check_descriptor(&self, i: &[f32]) -> Result<(), CoreError> {
        let k = self.num_invariances();
        if i.len() != k {
            return Err(CoreError::Descriptor {
                input: format!("{i:?}"),
                reason: format!("this encoder takes {k} entries (got {})", i.len()),
            });
        }
        if let Some(v) = i.iter().find(|v| !(0.0..=1.0).contains(*v)) {
            return Err(CoreError::Descriptor { input: format!("{i:?}"), reason: format!("{v} is outside [0, 1]") });
        }
        Ok(())
    }

    /// Where a downstream fit starts `i`: the fixed descriptor when one is given (checked), else
    /// `init` (clamped to [0, 1]) in every entry; empty for a plain encoder.
    pub fn start_descriptor(&self, fixed: Option<&[f32]>, init: f32) -> Result<Vec<f32>, CoreError> {
        let k = self.num_invariances();
        match fixed {
            Some(f) if k > 0 => {
                self.check_descriptor(f)?;
                Ok(f.to_vec())
            }
            _ => Ok(vec![init.clamp(0.0, 1.0); k]),
        }
    }

    /// `u8` images (`[n, C, H, W]`, row-major) as a `[0, 1]` tensor on `device`.
    pub fn upload_u8(pixels: &[u8], n: usize, [c, h, w]: [usize; 3], device: &Device) -> Tensor<4> {
        assert_eq!(pixels.len(), n * c * h * w, "pixels do not match [{n}, {c}, {h}, {w}]");
        Tensor::<4>::from_data(TensorData::new(pixels.to_vec(), [n, c, h, w]), device) / 255.0
    }

    /// Features at a fixed descriptor, without a graph, in chunks of 256 images. `x01`: `[n, C, H, W]`
    /// in [0, 1] on any device (moved to the inner one). Output `[n, D]` on the inner device.
    pub fn features(&self, x01: Tensor<4>, i: &[f32]) -> Tensor<2> {
        let inner = self.device.clone().without_autodiff();
        let x01 = x01.to_device(&inner);
        let descriptor = self.descriptor(i, &inner);
        let n = x01.dims()[0];
        let chunks: Vec<Tensor<2>> = (0..n)
            .step_by(256)
            .map(|s| {
                let e = (s + 256).min(n);
                let x = self.normalization.apply(x01.clone().slice(s..e));
                self.at_statistics(i, || self.inference.forward_features(x, descriptor.clone()))
            })
            .collect();
        Tensor::cat(chunks, 0)
    }

    /// Features of `u8` images at a fixed descriptor, on the host (`[n, D]` row-major).
    pub fn features_u8(&self, pixels: &[u8], n: usize, shape: [usize; 3], i: &[f32]) -> Vec<f32> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (pixels, n, shape, i.iter().map(|v| v.to_bits()).collect::<Vec<_>>()).hash(&mut hasher);
        let key = hasher.finish();
        if let Some((_, f)) = self.cache.lock().expect("feature cache").iter().find(|(k, _)| *k == key) {
            return f.clone();
        }
        let out = self.compute_features_u8(pixels, n, shape, i);
        let mut cache = self.cache.lock().expect("feature cache");
        if cache.len() == CACHED_SETS {
            cache.remove(0);
        }
        cache.push((key, out.clone()));
        out
    }

    /// [`Frozen::features_u8`] without the cache.
    pub fn compute_features_u8(&self, pixels: &[u8], n: usize, shape: [usize; 3], i: &[f32]) -> Vec<f32> {
        let inner = self.device.clone().without_autodiff();
        let mut out = Vec::with_capacity(n * self.feature_dim());
        let len = shape.iter().product::<usize>();
        for s in (0..n).step_by(256) {
            let e = (s + 256).min(n);
            let x = Self::upload_u8(&pixels[s * len..e * len], e - s, shape, &inner);
            let f: Vec<f32> = self.features(x, i).into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 features");
            out.extend(f);
        }
        out
    }

    /// Features with a graph to `i`: `x01` and `i_t` on the autodiff device; `i_t` (which should
    /// require grad) holds the values `i`, which choose the BatchNorm statistics without reading
    /// the tensor back.
    pub fn features_with_grad(&self, x01: Tensor<4>, i_t: Tensor<1>, i: &[f32]) -> Tensor<2> {
        let x = self.normalization.apply(x01);
        self.at_statistics(i, || self.encoder.forward_features(x, i_t))
    }

    /// [`Frozen::features_with_grad`] for a gradient in `i` that sees what per-descriptor
    /// statistics do: with them, every BatchNorm layer normalises the batch with the batch's own
    /// statistics computed in the graph, so the derivative includes how those statistics move with
    /// `i` (statistics held at their lattice point give only the partial derivative, which can
    /// point the other way: EXPERIMENTS.md, "The gradient in i and BatchNorm statistics"). With
    /// shared statistics, which do not depend on `i`, the same as [`Frozen::features_with_grad`].
    pub fn features_with_grad_through_statistics(&self, x01: Tensor<4>, i_t: Tensor<1>, i: &[f32]) -> Tensor<2> {
        if self.per_descriptor.is_none() {
            return self.features_with_grad(x01, i_t, i);
        }
        let x = self.normalization.apply(x01);
        crate::norm::batch_statistics_in_graph(|| self.encoder.forward_features(x, i_t))
    }

    /// A descriptor as the encoder's input tensor (empty for a plain encoder).
    pub fn descriptor(&self, i: &[f32], device: &Device) -> Tensor<1> {
        self.meta.encoder.kind.descriptor_input(i, device)
    }
}

/// Per-channel mean and standard deviation of `u8` images (`[n, C, H, W]`), in [0, 1] units.
pub fn channel_statistics(pixels: &[u8], [c, h, w]: [usize; 3]) -> Normalization {
    let hw = h * w;
    let mut sum = vec![0f64; c];
    let mut sq = vec![0f64; c];
    for image in pixels.chunks_exact(c * hw) {
        for ch in 0..c {
            for &p in &image[ch * hw..(ch + 1) * hw] {
                let v = p as f64 / 255.0;
                sum[ch] += v;
                sq[ch] += v * v;
            }
        }
    }
    let n = (pixels.len() / c.max(1)).max(1) as f64;
    let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
    let std = sq.iter().zip(&mean).map(|(q, &m)| ((q / n - (m as f64).powi(2)).max(1e-6)).sqrt() as f32).collect();
    Normalization { mean, std }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::norm::ChannelStatistics;

    fn statistics(channels: usize, value: f32) -> Arc<EncoderStatistics> {
        Arc::new(vec![ChannelStatistics { mean: vec![value; channels], var: vec![1.0; channels] }])
    }

    #[test]
    fn the_statistics_kept_are_bounded_in_bytes_and_the_newest_stay() {
        let mut computed = Computed::default();
        // 1 MiB per point: the budget keeps 64 of them (and never fewer than the minimum).
        let channels = (1 << 20) / 8;
        for p in 0..200 {
            computed.insert(vec![p, 0], statistics(channels, p as f32));
        }
        assert_eq!(computed.order.len(), CALIBRATION_BYTES_KEPT >> 20);
        assert!(computed.bytes <= CALIBRATION_BYTES_KEPT);
        assert!(computed.get(&[0, 0]).is_none(), "the oldest point is dropped");
        assert_eq!(computed.get(&[199, 0]).unwrap()[0].mean[0], 199.0);
        // Small statistics: the whole K = 2 lattice (21 x 21 points) is kept.
        let mut computed = Computed::default();
        for a in 0..21 {
            for b in 0..21 {
                computed.insert(vec![a, b], statistics(2000, 0.0));
            }
        }
        assert_eq!(computed.by_point.len(), 441);
        assert!(computed.get(&[0, 0]).is_some());
        // A point met again is not stored twice.
        computed.insert(vec![3, 4], statistics(2000, 1.0));
        assert_eq!(computed.order.len(), 441);
        assert_eq!(computed.get(&[3, 4]).unwrap()[0].mean[0], 0.0);
    }
}

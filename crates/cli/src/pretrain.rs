//! `ail pretrain`: contrastive pretraining of an amortised (or plain) encoder with SimCLR.
//!
//! One step: batch of images -> descriptor of the step (from seed and step) -> two views with its
//! augmentations, on the device -> encoder(views, i) -> projection head -> NT-Xent -> AdamW step with
//! warm-up + cosine learning rate. Nothing returns to the host inside a step except the loss at log
//! intervals. Every random choice of step `s` derives from `(seed, s)`, so `--resume` replays exactly.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ail_augment::audio::{AudioAugmentConfig, AudioViewParams};
use ail_augment::{AugmentConfig, Augmenter, OpSet, sample_views};
use ail_core::checkpoint::{self, CheckpointMeta, Normalization};
use ail_core::head::ProjectionHeadConfig;
use ail_core::knn::knn_accuracy;
use ail_core::method::{ContrastiveModel, cosine_momentum, ema_update};
use ail_core::queue::DescriptorQueues;
use ail_core::sampler::Invariances;
use ail_core::schedule::warmup_cosine;
use ail_core::{Descriptor, EncoderConfig, ModelKind};
use ail_data::{BatchLoader, ImageSet, LoaderConfig, epoch_order};
use anyhow::Context;
use burn::module::Module;
use burn::optim::AdamWConfig;
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::args::{DataArgs, Format, Global, PretrainArgs};
use crate::common;
use crate::parallel::{Job, Objective, Replicas, combine, split_views};

/// Every setting of a run; written to `config.json` before training starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainConfig {
    pub data: String,
    pub format: String,
    pub image_size: usize,
    pub method: String,
    pub model: ModelKind,
    pub width: f32,
    /// Hidden units of each kernel generator.
    pub hidden: usize,
    /// ViT patch side (default: 4 up to 64 px, 16 above).
    pub patch_size: Option<usize>,
    /// Prompt-ViT: projectors averaged into the invariance token (default 16).
    pub num_projectors: Option<usize>,
    pub invariances: String,
    pub steps: u64,
    pub batch_size: usize,
    /// Each batch is split into this many shards, each with its own BatchNorm statistics and
    /// (SimCLR) negatives; their gradients are averaged. One shard per device in data-parallel runs
    /// (`--devices`); the result does not depend on how many devices run the shards.
    pub shards: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub weight_decay: f32,
    /// Clip each gradient's L2 norm to this value (none when absent).
    pub grad_clip: Option<f32>,
    pub warmup_steps: u64,
    pub temperature: f32,
    /// Momentum of the key encoder (MoCo; MoCo-v3 raises it to 1 along a cosine).
    pub momentum: f64,
    /// Negatives per descriptor queue (MoCo-v2).
    pub queue_size: usize,
    pub head_hidden: usize,
    pub head_output: usize,
    pub head_layers: usize,
    pub per_descriptor_heads: bool,
    pub seed: u64,
    pub log_every: u64,
    pub checkpoint_every: u64,
    pub keep_checkpoints: usize,
    pub monitor_every: u64,
    /// Training images whose features form the kNN bank.
    pub monitor_bank: usize,
    /// Held-out images (never trained on) classified by the kNN monitor.
    pub monitor_queries: usize,
    pub knn_k: usize,
    pub knn_temperature: f32,
    pub augment: AugmentConfig,
    /// `image`, or `audio`: waveforms, the seven CLAR augmentations, log-mel spectrograms on the
    /// device (see `audio`).
    pub modality: String,
    pub audio: AudioSettings,
}

/// The audio side of a run (`modality = "audio"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AudioSettings {
    /// Every view is this long (clips are centred and cut or padded after stretch and pitch shift).
    pub clip_seconds: f32,
    /// Labels of the kNN monitor: `class` (folder; FSDD: digit), `digit` or `speaker`.
    pub labels: String,
    /// FSDD: train on these takes only (inclusive), holding the others out for evaluation.
    pub takes: Option<[u32; 2]>,
    pub mel: ail_core::mel::MelConfig,
    pub augment: AudioAugmentConfig,
}

impl Default for AudioSettings {
    fn default() -> Self {
        Self { clip_seconds: 1.0, labels: "class".into(), takes: None, mel: Default::default(), augment: Default::default() }
    }
}

impl AudioSettings {
    pub fn front_end(&self) -> ail_core::mel::AudioFrontEnd {
        ail_core::mel::AudioFrontEnd { mel: self.mel.clone(), clip_samples: (self.clip_seconds * self.mel.sample_rate as f32).round() as usize }
    }
}

impl Default for PretrainConfig {
    fn default() -> Self {
        Self {
            data: "builtin".into(),
            format: "auto".into(),
            image_size: 32,
            method: "simclr".into(),
            model: ModelKind::HyperResnet18,
            width: 0.25,
            hidden: 32,
            patch_size: None,
            num_projectors: None,
            invariances: "groups".into(),
            steps: 300,
            batch_size: 64,
            shards: 1,
            lr: 1e-3,
            min_lr: 0.0,
            weight_decay: 1e-4,
            grad_clip: None,
            warmup_steps: 20,
            temperature: 0.2,
            momentum: 0.99,
            queue_size: 4096,
            head_hidden: 512,
            head_output: 128,
            head_layers: 2,
            per_descriptor_heads: false,
            seed: 0,
            log_every: 10,
            checkpoint_every: 100,
            keep_checkpoints: 2,
            monitor_every: 100,
            monitor_bank: 2000,
            monitor_queries: 500,
            knn_k: 200,
            knn_temperature: 0.1,
            augment: AugmentConfig::default(),
            modality: "image".into(),
            audio: AudioSettings::default(),
        }
    }
}

impl PretrainConfig {
    /// Defaults < `--config` file < flags.
    fn resolve(args: &PretrainArgs, base: Option<PretrainConfig>) -> anyhow::Result<Self> {
        let resumed = base.is_some();
        let mut c = match (&args.config, base) {
            (_, Some(base)) => base,
            (Some(path), None) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                Self::from_toml(&text).with_context(|| format!("{} is not a valid pretraining config", path.display()))?
            }
            (None, None) => Self::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = &args.$field { c.$field = v.clone(); } )* };
        }
        set!(data, format, image_size, method, width, invariances, steps, batch_size, shards, lr, seed, log_every, checkpoint_every, monitor_every);
        if args.shards.is_none() && !resumed && c.shards == 1 {
            c.shards = args.replicas();
        }
        if let Some(m) = &args.model {
            c.model = m.parse()?;
        }
        if let Some(m) = &args.modality {
            c.modality = m.clone();
        }
        if let Some(l) = &args.audio_labels {
            c.audio.labels = l.clone();
        }
        if let Some(t) = &args.takes {
            let (lo, hi) = crate::task::parse_takes(t)?;
            c.audio.takes = Some([lo, hi]);
        }
        c.validate()?;
        Ok(c)
    }

    /// Parses a TOML config file's text (unchecked: [`PretrainConfig::validate`] checks the values).
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            ["simclr", "mocov2", "mocov3"].contains(&self.method.as_str()),
            "--method {}: use simclr, mocov2 or mocov3",
            self.method
        );
        anyhow::ensure!((0.0..1.0).contains(&self.momentum), "momentum must be in [0, 1)");
        anyhow::ensure!(self.queue_size >= 1, "queue_size must be at least 1");
        anyhow::ensure!(self.grad_clip.is_none_or(|c| c > 0.0), "grad_clip must be positive");
        anyhow::ensure!(self.head_hidden >= 1 && self.head_output >= 1, "head_hidden and head_output must be at least 1");
        anyhow::ensure!(self.knn_k >= 1 && self.knn_temperature > 0.0, "knn_k must be >= 1 and knn_temperature > 0");
        anyhow::ensure!(self.monitor_bank >= 1 && self.monitor_queries >= 1, "monitor_bank and monitor_queries must be at least 1");
        anyhow::ensure!((0.0..=self.lr).contains(&self.min_lr), "min_lr must be in [0, lr]");
        anyhow::ensure!(self.steps > 0 && self.batch_size >= 2, "--steps must be >= 1 and --batch-size >= 2");
        anyhow::ensure!(
            self.shards >= 1 && self.batch_size % self.shards == 0 && self.batch_size / self.shards >= 2,
            "--batch-size {} cannot be split into {} shards of at least 2 images: use a batch size that is a multiple of 2 x shards",
            self.batch_size,
            self.shards
        );
        anyhow::ensure!(self.lr > 0.0 && self.lr.is_finite(), "--lr must be positive (got {})", self.lr);
        anyhow::ensure!(self.temperature > 0.0, "temperature must be positive");
        anyhow::ensure!(self.log_every > 0 && self.checkpoint_every > 0, "log_every and checkpoint_every must be >= 1");
        anyhow::ensure!(self.head_layers >= 2 && self.keep_checkpoints >= 1, "head_layers >= 2 and keep_checkpoints >= 1");
        self.augment.validate()?;
        let invariances = Invariances::parse(&self.invariances)?;
        let audio_family = invariances.family() == ail_core::Family::Audio;
        match self.modality.as_str() {
            "image" => anyhow::ensure!(
                !audio_family,
                "--invariances {} is the audio family (K = 7): add --modality audio and audio --data",
                self.invariances
            ),
            "audio" => {
                anyhow::ensure!(
                    audio_family,
                    "--modality audio trains the K = 7 audio augmentations: use --invariances audio (AI-SimCLR) or \
                     fixed:1,1,1,1,1,1,1 (plain SimCLR with all seven), not {}",
                    self.invariances
                );
                anyhow::ensure!(!self.model.is_vit(), "--modality audio needs a ResNet encoder (hyper-resnet18, resnet18, ...)");
                self.audio.mel.validate().map_err(anyhow::Error::msg)?;
                self.audio.augment.validate()?;
                anyhow::ensure!(
                    self.audio.clip_seconds > 0.0 && self.audio.clip_seconds <= 60.0,
                    "audio.clip_seconds must be in (0, 60] (got {})",
                    self.audio.clip_seconds
                );
                self.audio.labels.parse::<ail_data::audio::AudioLabels>().map_err(anyhow::Error::msg)?;
            }
            other => anyhow::bail!("--modality {other}: use image or audio"),
        }
        self.encoder(&invariances).validate()?;
        Ok(())
    }

    pub fn encoder(&self, invariances: &Invariances) -> EncoderConfig {
        let mut e = EncoderConfig::new(self.model, invariances.family().num_invariances())
            .with_width(self.width)
            .with_image_size(self.image_size);
        e.hidden = self.hidden;
        e.patch_size = self.patch_size;
        if self.num_projectors.is_some() {
            e.num_projectors = self.num_projectors;
        }
        if self.modality == "audio" {
            // One input channel; the mel axis chooses the stem (128 bins: the ImageNet stem).
            e.in_channels = 1;
            e.image_size = self.audio.mel.n_mels;
        }
        e
    }
}

/// One optimisation step of pretraining, shared by `ail pretrain` and `ail bench pretrain`; holds
/// MoCo's momentum model and per-descriptor queues.
pub struct Stepper {
    config: PretrainConfig,
    /// MoCo's key model (momentum copy of the model).
    pub key: Option<ContrastiveModel>,
    /// MoCo-v2's negatives, one queue per trained descriptor.
    pub queues: Option<DescriptorQueues>,
    invariances: Invariances,
    /// Each trained descriptor as a device tensor, uploaded once.
    descriptors: Vec<Tensor<1>>,
    augmenter: Augmenter,
    stats: (Tensor<4>, Tensor<4>),
    radius: usize,
    shape: [usize; 4],
    /// Audio runs: the training clips (indexed like the loader's images) and the log-mel front-end.
    audio: Option<(Arc<Vec<Arc<Vec<f32>>>>, ail_core::mel::LogMel)>,
    /// Several devices: their worker threads (see [`crate::parallel`]).
    replicas: Option<Replicas>,
}

impl Stepper {
    /// `device` must be an autodiff device; `stats` the per-channel mean and std; `image` `[C, H, W]`;
    /// `model` seeds MoCo's key model.
    pub fn new(
        config: &PretrainConfig,
        device: &Device,
        stats: (Tensor<4>, Tensor<4>),
        [c, h, w]: [usize; 3],
        model: &ContrastiveModel,
    ) -> anyhow::Result<Self> {
        let invariances = Invariances::parse(&config.invariances)?;
        let moco = config.method != "simclr";
        Ok(Self {
            // The key model never uses MoCo-v3's predictor: leave it out.
            key: moco.then(|| {
                let mut key = ema_update(model.clone(), model, 0.0).no_grad();
                key.predictor = None;
                key
            }),
            queues: (config.method == "mocov2")
                .then(|| DescriptorQueues::new(invariances.trained().len(), config.queue_size, config.head_output, device)),
            descriptors: invariances.trained().iter().map(|d| descriptor_tensor(config.model, d, device)).collect(),
            invariances,
            augmenter: Augmenter::new(device),
            stats,
            radius: config.augment.blur_radius(config.image_size),
            shape: [config.batch_size, c, h, w],
            config: config.clone(),
            audio: None,
            replicas: None,
        })
    }

    /// Runs the shards of every batch on these replicas (all devices at once) instead of in turn
    /// on the main device.
    pub fn with_replicas(mut self, replicas: Replicas) -> Self {
        self.replicas = (replicas.len() > 1).then_some(replicas);
        self
    }

    /// Makes the views of an audio run from `clips` (the training clips, in the order of the
    /// loader's images) with the CLAR augmentations and the log-mel front-end.
    pub fn with_audio(mut self, clips: Arc<Vec<Arc<Vec<f32>>>>, device: &Device) -> Self {
        self.audio = Some((clips, ail_core::mel::LogMel::new(&self.config.audio.mel, device)));
        self
    }

    /// The two views of a batch, normalised, `[2B, C, H, W]` (first views, then second views).
    fn views(&self, ops_descriptor: &Descriptor, pixels: &[u8], indices: &[usize], rng: &mut ChaCha8Rng) -> anyhow::Result<Tensor<4>> {
        let c = &self.config;
        let x = match &self.audio {
            Some((clips, front)) => {
                let on: [bool; 7] = std::array::from_fn(|j| ops_descriptor.is_on(j));
                let batch: Vec<Arc<Vec<f32>>> = indices.iter().map(|&i| clips[i].clone()).collect();
                let views: Vec<AudioViewParams> = (0..2 * batch.len()).map(|_| AudioViewParams::sample(on, &c.audio.augment, rng)).collect();
                let len = c.audio.front_end().clip_samples;
                let wave = ail_augment::audio::augment_batch(&batch, &views, len);
                let device = self.stats.0.device();
                front.forward(Tensor::<1>::from_floats(wave.as_slice(), &device).reshape([views.len(), len]))
            }
            None => {
                let ops = OpSet::from_descriptor(self.invariances.family(), ops_descriptor);
                let [b, _, h, w] = self.shape;
                let views = sample_views(ops, &c.augment, [b, h, w], 2, rng);
                self.augmenter.apply(pixels, self.shape, &views, self.radius)? // [2B, C, H, W]
            }
        };
        Ok((x - self.stats.0.clone()) / self.stats.1.clone())
    }

    /// [`Stepper::step`] on a loader's batch (audio runs read its indices).
    pub fn step_batch(
        &mut self,
        model: ContrastiveModel,
        optim: &mut burn::optim::ModuleOptimizer,
        batch: &ail_data::Batch,
        step: u64,
    ) -> anyhow::Result<(ContrastiveModel, Tensor<1>, f64, usize)> {
        self.step_indexed(model, optim, &batch.pixels, &batch.indices, step)
    }

    /// Step `step` on the `u8` batch `pixels`: the step's descriptor (from seed and step), its two
    /// views on the device, forward, NT-Xent, backward, AdamW. Returns the new model, the loss (still
    /// on the device), the learning rate and the descriptor's index.
    pub fn step(
        &mut self,
        model: ContrastiveModel,
        optim: &mut burn::optim::ModuleOptimizer,
        pixels: &[u8],
        step: u64,
    ) -> anyhow::Result<(ContrastiveModel, Tensor<1>, f64, usize)> {
        self.step_indexed(model, optim, pixels, &[], step)
    }

    fn step_indexed(
        &mut self,
        model: ContrastiveModel,
        optim: &mut burn::optim::ModuleOptimizer,
        pixels: &[u8],
        indices: &[usize],
        step: u64,
    ) -> anyhow::Result<(ContrastiveModel, Tensor<1>, f64, usize)> {
        // views: the step's descriptor, its augmentations
        let index = self.invariances.draw(self.config.seed, step);
        let descriptor = self.invariances.trained()[index].clone();
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
        rng.set_stream(step);
        let x = self.views(&descriptor, pixels, indices, &mut rng)?;
        let c = &self.config;
        // forward, loss, step
        let i = self.descriptors[index].clone();
        // MoCo: update the key model first, then compute keys with it (MoCo's order).
        let momentum = match c.method.as_str() {
            "mocov3" => cosine_momentum(step, c.steps, c.momentum),
            _ => c.momentum,
        };
        if let Some(key) = self.key.take() {
            // The predictor is the query side's alone (the key has none).
            let source = ContrastiveModel { predictor: None, ..model.clone() };
            self.key = Some(ema_update(key, &source, momentum as f32));
        }
        let job = Job {
            model: model.clone(),
            key: self.key.clone(),
            shards: split_views(x, c.batch_size, c.shards).into_iter().enumerate().collect(),
            i,
            index,
            queue: self.queues.as_ref().map(|q| q.queue(index)),
            objective: Objective { method: c.method.clone(), temperature: c.temperature, scale: 1.0 / c.shards as f32 },
        };
        // One device: the shards in turn on this thread; several: all devices at once.
        let out = match &self.replicas {
            Some(replicas) => replicas.run(job)?,
            None => {
                let main = self.stats.0.device();
                combine(&model, job.run(&main, &main))
            }
        };
        let lr = warmup_cosine(step, c.steps, c.warmup_steps, c.lr, c.min_lr);
        let model = optim.step(lr, model, out.grads);
        if let (Some(queues), Some(keys)) = (self.queues.as_mut(), out.keys) {
            queues.enqueue(index, keys);
        }
        let loss = out.loss;
        Ok((model, loss, lr, index))
    }
}

/// AdamW with the run's weight decay and optional gradient clipping.
pub fn optimizer(config: &PretrainConfig) -> burn::optim::ModuleOptimizer {
    let clip = config.grad_clip.map(burn::optim::grad_clipping::GradientClippingConfig::Norm);
    AdamWConfig::new().with_weight_decay(config.weight_decay).with_grad_clipping(clip).init()
}

/// The run stopped at the user's request (Ctrl-C / SIGTERM) after writing a checkpoint; `ail`
/// exits with 130.
#[derive(Debug)]
pub struct Interrupted {
    pub step: u64,
    pub checkpoint: PathBuf,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "interrupted: stopped after step {} with a checkpoint in {}; run the same command again (or add --resume) to continue",
            self.step,
            self.checkpoint.display()
        )
    }
}

impl std::error::Error for Interrupted {}

/// Set by the first SIGINT / SIGTERM; a second one exits at once with 130.
fn stop_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    #[cfg(unix)]
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Order matters: the conditional exit checks the flag before the second handler sets it.
        let _ = signal_hook::flag::register_conditional_shutdown(signal, 130, flag.clone());
        let _ = signal_hook::flag::register(signal, flag.clone());
    }
    flag
}

/// What the run ends with (also `summary.json`).
#[derive(Debug, Serialize)]
pub struct Summary {
    pub steps: u64,
    pub final_loss: f32,
    pub knn_accuracy: Vec<(String, f64)>,
    pub seconds: f64,
    pub images_per_second: f64,
    pub device: String,
    pub checkpoint: PathBuf,
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

fn checkpoint_dir(out: &Path, step: u64) -> PathBuf {
    out.join("checkpoints").join(format!("step-{step:07}"))
}

/// The settings (other than the length, logging, checkpoint and monitor intervals) in which two
/// configs differ, by name.
fn config_differences(a: &PretrainConfig, b: &PretrainConfig) -> Vec<String> {
    let (a, b) = (serde_json::to_value(a).unwrap_or_default(), serde_json::to_value(b).unwrap_or_default());
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return vec!["config".into()] };
    a.iter()
        .filter(|(k, v)| !["steps", "log_every", "checkpoint_every", "monitor_every"].contains(&k.as_str()) && b.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k} {v} there, {} here", b.get(k).unwrap_or(&serde_json::Value::Null)))
        .collect()
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

/// Deletes what interrupted writes and deletions leave behind (`*.partial`, `*.deleting`).
fn sweep_checkpoints(out: &Path) {
    for entry in std::fs::read_dir(out.join("checkpoints")).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "partial" || e == "deleting") {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// The checkpoint directories of a run, oldest first.
fn checkpoints(out: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(out.join("checkpoints"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    // Only complete ones: `step-NNNNNNN` (an interrupted write leaves `step-NNNNNNN.partial`).
    dirs.retain(|p| p.join(checkpoint::META_FILE).exists() && p.file_name().is_some_and(|n| ail_core::frozen::is_checkpoint_name(&n.to_string_lossy())));
    dirs.sort();
    dirs
}

/// Per-channel mean and std as `[1, C, 1, 1]` tensors.
pub fn stats_tensors(n: &Normalization, device: &Device) -> (Tensor<4>, Tensor<4>) {
    let c = n.mean.len();
    let t = |v: &[f32]| Tensor::<1>::from_floats(v, device).reshape([1, c, 1, 1]);
    (t(&n.mean), t(&n.std))
}

fn descriptor_tensor(model: ModelKind, d: &Descriptor, device: &Device) -> Tensor<1> {
    if model.is_amortised() { Tensor::from_floats(d.values(), device) } else { Tensor::zeros([0], device) }
}

/// kNN accuracy of each trained descriptor: queries (held out) against the bank (training images),
/// with the encoder in eval mode.
#[allow(clippy::too_many_arguments)]
fn monitor(
    model: &ContrastiveModel,
    config: &PretrainConfig,
    trained: &[Descriptor],
    bank: &ImageSet,
    queries: &ImageSet,
    stats: &(Tensor<4>, Tensor<4>),
) -> anyhow::Result<Vec<f64>> {
    let encoder = model.encoder.valid();
    let device = stats.0.device().without_autodiff();
    let (mean, std) = (stats.0.clone().without_autodiff(), stats.1.clone().without_autodiff());
    let features = |set: &ImageSet, i: &Tensor<1>| -> Tensor<2> {
        let chunks: Vec<Tensor<2>> = (0..set.len())
            .step_by(256)
            .map(|start| {
                let end = (start + 256).min(set.len());
                let [c, h, w] = set.shape();
                let pixels = &set.pixels[start * set.image_len()..end * set.image_len()];
                let x = Tensor::<4>::from_data(burn::tensor::TensorData::new(pixels.to_vec(), [end - start, c, h, w]), &device) / 255.0;
                encoder.forward_features((x - mean.clone()) / std.clone(), i.clone())
            })
            .collect();
        ail_core::loss::normalize_rows(Tensor::cat(chunks, 0))
    };
    trained
        .iter()
        .map(|d| {
            let i = descriptor_tensor(config.model, d, &device);
            let sim = features(queries, &i).matmul(features(bank, &i).transpose());
            let sim: Vec<f32> = sim.into_data().try_to_vec().map_err(|e| anyhow::anyhow!("reading similarities: {e:?}"))?;
            Ok(knn_accuracy(&sim, &bank.labels, &queries.labels, bank.num_classes(), config.knn_k, config.knn_temperature))
        })
        .collect()
}

struct Metrics(std::fs::File);

impl Metrics {
    const HEADER: &str = "step,descriptor,loss,lr,images_per_s,knn_accuracy";

    fn open(path: &Path) -> anyhow::Result<Self> {
        let new = !path.exists();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        if new {
            writeln!(file, "{}", Self::HEADER)?;
        }
        Ok(Self(file))
    }

    fn row(&mut self, step: u64, descriptor: &Descriptor, loss: Option<f32>, lr: Option<f64>, ips: Option<f64>, knn: Option<f64>) -> anyhow::Result<()> {
        let f = |v: Option<String>| v.unwrap_or_default();
        writeln!(
            self.0,
            "{step},\"{descriptor}\",{},{},{},{}",
            f(loss.map(|l| format!("{l:.6}"))),
            f(lr.map(|l| format!("{l:.6e}"))),
            f(ips.map(|v| format!("{v:.1}"))),
            f(knn.map(|v| format!("{v:.4}")))
        )?;
        self.0.flush()?;
        Ok(())
    }
}

pub fn run(global: &Global, args: &PretrainArgs) -> anyhow::Result<Summary> {
    // --- configuration: defaults < --config < flags; a resumed run keeps its config.json --------
    let out = args.out.clone();
    let saved_config = out.join("config.json");
    if args.resume {
        let changed: Vec<&str> = [
            ("--config", args.config.is_some()),
            ("--data", args.data.is_some()),
            ("--format", args.format.is_some()),
            ("--image-size", args.image_size.is_some()),
            ("--method", args.method.is_some()),
            ("--model", args.model.is_some()),
            ("--width", args.width.is_some()),
            ("--invariances", args.invariances.is_some()),
            ("--batch-size", args.batch_size.is_some()),
            ("--shards", args.shards.is_some()),
            ("--lr", args.lr.is_some()),
            ("--seed", args.seed.is_some()),
            ("--modality", args.modality.is_some()),
            ("--audio-labels", args.audio_labels.is_some()),
            ("--takes", args.takes.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, set)| set.then_some(flag))
        .collect();
        anyhow::ensure!(
            changed.is_empty(),
            "--resume continues the run as configured in its config.json; {} would change it (only --steps/--epochs, \
             --log-every, --checkpoint-every and --monitor-every may be given)",
            changed.join(", ")
        );
    }
    let read_saved = || -> anyhow::Result<PretrainConfig> {
        let text = std::fs::read_to_string(&saved_config)
            .with_context(|| format!("--resume: reading {} (is --out a run directory?)", saved_config.display()))?;
        serde_json::from_str::<PretrainConfig>(&text).with_context(|| format!("{} is not a run config", saved_config.display()))
    };
    // Rerunning the command of a run that has checkpoints (after a crash, a kill or Ctrl-C)
    // continues it, when the command describes the same run; --no-resume refuses.
    let mut resume = args.resume;
    if !resume && !checkpoints(&out).is_empty() {
        anyhow::ensure!(
            !args.no_resume,
            "{} already holds a run with checkpoints (--no-resume): choose another --out, or drop --no-resume to continue it",
            out.display()
        );
        let saved = read_saved()?;
        let asked = PretrainConfig::resolve(args, None)?;
        let differences = config_differences(&saved, &asked);
        anyhow::ensure!(
            differences.is_empty(),
            "{} already holds a different run (these settings differ from its config.json: {}): pass --resume to continue it \
             as configured, or choose another --out",
            out.display(),
            differences.join(", ")
        );
        eprintln!("{} holds this run's checkpoints: continuing it (--no-resume refuses)", out.display());
        resume = true;
    }
    let base = if resume { Some(read_saved()?) } else { None };
    sweep_checkpoints(&out);
    let mut config = PretrainConfig::resolve(args, base)?;
    let invariances = Invariances::parse(&config.invariances)?;
    let trained = invariances.trained();
    let family = invariances.family();

    // --- device and data ---------------------------------------------------------------------------
    let devices = args.replicas();
    anyhow::ensure!(
        devices <= config.shards,
        "--devices {devices} is more than the run's {} shard(s) of each batch: with --devices N a new run splits its batches \
         into N shards (set --shards for more); a continued run keeps its shards",
        config.shards
    );
    let all = match &args.hosts {
        Some(hosts) => common::remote_devices(hosts)?,
        None => common::devices(global, devices)?,
    };
    let selected = all[0].clone();
    let device = selected.device.clone().autodiff();
    device.seed(config.seed);
    let format = match config.format.as_str() {
        "auto" => Format::Auto,
        "cifar" => Format::Cifar,
        "idx" => Format::Idx,
        "folder" => Format::Folder,
        other => anyhow::bail!("--format {other}: use auto, cifar, idx or folder"),
    };
    // Audio: the un-augmented log-mel images stand in for images (kNN monitor, statistics, batch
    // order); the clips beside them are what the views are made from.
    let (data, clips) = if config.modality == "audio" {
        anyhow::ensure!(config.data != "builtin", "--modality audio needs --data: an audio folder (`<class>/<file>.wav`) or FSDD's folder");
        let front = config.audio.front_end();
        let takes = config.audio.takes.map(|[lo, hi]| (lo, hi));
        let (set, audio) = crate::task::audio_images(Path::new(&config.data), &config.audio.labels, takes, args.skip_bad, &front, &selected.device)?;
        eprintln!("{} clips of {} classes, {} s views, log-mel inputs {:?}", set.len(), set.num_classes(), config.audio.clip_seconds, front.input_shape());
        (Arc::new(set), Some(audio.clips.into_iter().map(Arc::new).collect::<Vec<_>>()))
    } else {
        (common::load(&DataArgs { data: config.data.clone(), format, image_size: config.image_size, skip_bad: args.skip_bad })?, None)
    };
    // Held-out queries for the kNN monitor (never trained on); the bank comes from training images.
    let order = epoch_order(data.len(), config.seed ^ 0x6b6e_6e, 0, true);
    let num_queries = config.monitor_queries.min(data.len() / 5).max(1);
    anyhow::ensure!(
        data.len() > num_queries + config.batch_size,
        "{} images are too few: {num_queries} are held out for the kNN monitor and a batch needs {}; lower --batch-size",
        data.len(),
        config.batch_size
    );
    let queries = data.subset(&order[..num_queries]);
    let train = Arc::new(data.subset(&order[num_queries..]));
    let train_clips = clips.map(|c| Arc::new(order[num_queries..].iter().map(|&i| c[i].clone()).collect::<Vec<_>>()));
    let bank_order = epoch_order(train.len(), config.seed ^ 0x62_616e_6b, 0, true);
    let bank = train.subset(&bank_order[..config.monitor_bank.clamp(1, train.len())]);
    if let Some(epochs) = args.epochs {
        let per_epoch = (train.len() / config.batch_size) as u64;
        config.steps = epochs
            .checked_mul(per_epoch)
            .filter(|&s| s >= 1)
            .with_context(|| format!("--epochs {epochs} with {per_epoch} steps per epoch gives no valid step count"))?;
    }
    let normalization = ail_core::frozen::channel_statistics(&train.pixels, train.shape());
    let stats = stats_tensors(&normalization, &device);

    // --- model, optimiser, resume ---------------------------------------------------------------
    let encoder_config = config.encoder(&invariances);
    let head_config = ProjectionHeadConfig::new(encoder_config.feature_dim())
        .with_hidden_dim(config.head_hidden)
        .with_output_dim(config.head_output)
        .with_num_layers(config.head_layers);
    let mut model = ContrastiveModel::new(&encoder_config, &head_config, trained.len(), config.per_descriptor_heads, &device)?;
    if config.method == "mocov3" {
        model = model.with_predictor(&head_config, &device);
    }
    let mut optim = optimizer(&config);
    let mut start_step = 0;
    let mut resume_state: Option<(PathBuf, TrainingState)> = None;
    if resume {
        let dir = checkpoints(&out).pop().with_context(|| format!("--resume: no checkpoint in {}/checkpoints", out.display()))?;
        let ckpt = checkpoint::load(&dir, &device)?;
        anyhow::ensure!(ckpt.meta.encoder == encoder_config, "{}: the checkpoint's encoder differs from config.json", dir.display());
        let state: TrainingState = serde_json::from_slice(&std::fs::read(dir.join("training.json"))?)
            .with_context(|| format!("reading {}/training.json", dir.display()))?;
        let mut heads = model.heads.clone();
        checkpoint::load_module(&dir.join("heads.safetensors"), &mut heads, &state.heads_param_ids)?;
        let mut predictor = model.predictor.clone();
        if let Some(p) = predictor.as_mut() {
            checkpoint::load_module(&dir.join("predictor.safetensors"), p, &state.predictor_param_ids)?;
        }
        model = ContrastiveModel { encoder: ckpt.encoder, heads, predictor };
        resume_state = Some((dir.clone(), state));
        if let Some(record) = ckpt.optimizer {
            optim = optim.load_record(record);
        }
        start_step = ckpt.meta.step;
        // A run interrupted after its last checkpoint but before its summary only has the summary
        // left to do; a complete run needs more --steps to continue.
        anyhow::ensure!(
            start_step < config.steps || (start_step == config.steps && !out.join("summary.json").exists()),
            "the run already did {start_step} of its {} steps: raise --steps to continue",
            config.steps
        );
        ail_core::io::write_atomic(&saved_config, &serde_json::to_vec_pretty(&config)?)?;
        eprintln!("resuming {} at step {start_step} from {}", out.display(), dir.display());
    } else {
        std::fs::create_dir_all(&out).map_err(|e| ail_core::io::with_hint(e, &out)).with_context(|| format!("creating {}", out.display()))?;
        let json = serde_json::to_vec_pretty(&config)?;
        ail_core::io::write_atomic(&saved_config, &json).with_context(|| format!("writing {}", saved_config.display()))?;
    }
    let metrics_path = out.join("metrics.csv");
    if resume {
        // Rows after the checkpoint were logged by the interrupted run: the resumed run rewrites them.
        if let Ok(text) = std::fs::read_to_string(&metrics_path) {
            let kept: Vec<&str> = text
                .split_inclusive('\n')
                // A last line without its newline was torn by a kill in the middle of writing it.
                .filter_map(|l| l.strip_suffix('\n'))
                .filter(|l| {
                    let step = l.split(',').next().and_then(|s| s.parse::<u64>().ok());
                    // The closing kNN rows (at the last step, after the loop) are written again.
                    let closing = step == Some(config.steps) && !l.ends_with(',');
                    step.is_none_or(|s| s <= start_step) && !closing
                })
                .collect();
            ail_core::io::write_atomic(&metrics_path, format!("{}\n", kept.join("\n")).as_bytes())?;
        }
    } else if metrics_path.exists() {
        std::fs::remove_file(&metrics_path).with_context(|| format!("removing the stale {}", metrics_path.display()))?;
    }
    let mut metrics = Metrics::open(&metrics_path)?;
    let mut stepper = Stepper::new(&config, &device, stats.clone(), [train.channels, train.height, train.width], &model)?;
    if let Some(clips) = train_clips {
        stepper = stepper.with_audio(clips, &device);
    }
    if devices > 1 {
        let replicas = Replicas::new(all.iter().map(|d| d.device.clone().autodiff()).collect(), all.iter().map(|d| d.description.clone()).collect());
        stepper = stepper.with_replicas(replicas);
    }
    if let Some((dir, state)) = &resume_state {
        if let Some(key) = stepper.key.as_mut() {
            checkpoint::load_module(&dir.join("key.safetensors"), key, &Default::default())?;
        }
        if stepper.queues.is_some() {
            let bytes = std::fs::read(dir.join("queues.bin")).with_context(|| format!("reading {}/queues.bin", dir.display()))?;
            let data: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            stepper.queues = Some(DescriptorQueues::import(&data, state.queue_pointers.clone(), config.queue_size, config.head_output, &device)?);
        }
    }
    eprintln!(
        "pretraining {} (K = {}, {} descriptors) with {}: {} steps of {} images, {} training images, {} held out",
        config.model,
        family.num_invariances(),
        trained.len(),
        config.method,
        config.steps,
        config.batch_size,
        train.len(),
        queries.len()
    );
    if config.shards > 1 {
        eprintln!(
            "each batch: {} shards of {} images (own BatchNorm statistics and negatives, gradients averaged), on {devices} device{}",
            config.shards,
            config.batch_size / config.shards,
            if devices == 1 { " in turn" } else { "s at once" }
        );
    }

    let save = |model: &ContrastiveModel, optim: &burn::optim::ModuleOptimizer, stepper: &Stepper, step: u64| -> anyhow::Result<PathBuf> {
        let dir = checkpoint_dir(&out, step);
        let tmp = dir.with_extension("partial");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
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
            ail_core::io::write_atomic(&tmp.join("queues.bin"), &bytes)?;
            queue_pointers = pointers;
        }
        let state = TrainingState { heads_param_ids, predictor_param_ids, queue_pointers };
        ail_core::io::write_atomic(&tmp.join("training.json"), &serde_json::to_vec_pretty(&state)?)?;
        let meta = CheckpointMeta { encoder: encoder_config.clone(), family: encoder_config.kind.is_amortised().then_some(family), step, normalization: Some(normalization.clone()), audio: (config.modality == "audio").then(|| config.audio.front_end()) };
        checkpoint::save(&tmp, &model.encoder, &meta, Some(optim.to_record()))?;
        remove_checkpoint(&dir);
        std::fs::rename(&tmp, &dir).with_context(|| format!("moving the checkpoint into {}", dir.display()))?;
        let all = checkpoints(&out);
        for old in &all[..all.len().saturating_sub(config.keep_checkpoints)] {
            remove_checkpoint(old);
        }
        Ok(dir)
    };

    // --- the loop ---------------------------------------------------------------------------------
    let loader = BatchLoader::new(train.clone(), LoaderConfig { start_step, ..LoaderConfig::new(config.batch_size, config.seed) })?;
    let bar = ProgressBar::new(config.steps).with_style(
        ProgressStyle::with_template("{bar:30} step {pos}/{len} {msg} [{elapsed}, eta {eta}]").expect("valid template"),
    );
    bar.set_position(start_step);
    if start_step == 0 && config.monitor_every > 0 {
        // Step 0: the untrained encoder, the baseline every later kNN row is compared with.
        for (d, acc) in trained.iter().zip(monitor(&model, &config, &trained, &bank, &queries, &stats)?) {
            metrics.row(0, d, None, None, None, Some(acc))?;
        }
    }
    let stop = stop_flag();
    let started = Instant::now();
    let mut window = (Instant::now(), 0u64);
    let mut last_loss = f32::NAN;
    let mut last_dir = None;
    for (step, batch) in (start_step..config.steps).zip(loader) {
        let (next, loss, lr, index) = stepper.step_batch(model, &mut optim, &batch, step)?;
        model = next;
        let descriptor = &trained[index];
        window.1 += 1;
        let done = step + 1;
        // log (the only host round trip)
        let log_now = done % config.log_every == 0 || done == config.steps;
        // The loss is also checked before every checkpoint, so that a diverged model is never saved.
        let save_now = done % config.checkpoint_every == 0 || done == config.steps;
        if log_now || save_now {
            last_loss = loss.into_scalar::<f32>();
            anyhow::ensure!(
                last_loss.is_finite(),
                "the loss became {last_loss} at step {done} (descriptor {descriptor}, lr {lr:.3e}): the run diverged; lower --lr \
                 (or set grad_clip) and rerun; the last good checkpoint is kept in {}",
                out.join("checkpoints").display()
            );
        }
        if log_now {
            let ips = (window.1 as usize * config.batch_size) as f64 / window.0.elapsed().as_secs_f64();
            window = (Instant::now(), 0);
            metrics.row(done, descriptor, Some(last_loss), Some(lr), Some(ips), None)?;
            bar.set_message(format!("loss {last_loss:.4} lr {lr:.2e} {ips:.0} img/s"));
        }
        bar.set_position(done);
        if config.monitor_every > 0 && done % config.monitor_every == 0 && done != config.steps {
            for (d, acc) in trained.iter().zip(monitor(&model, &config, &trained, &bank, &queries, &stats)?) {
                metrics.row(done, d, None, None, None, Some(acc))?;
            }
            window = (Instant::now(), 0); // images/s measures training only
        }
        if save_now {
            last_dir = Some(save(&model, &optim, &stepper, done)?);
        }
        if stop.load(std::sync::atomic::Ordering::SeqCst) && done < config.steps {
            bar.finish_and_clear();
            let checkpoint = match &last_dir {
                Some(dir) if dir == &checkpoint_dir(&out, done) => dir.clone(),
                _ => save(&model, &optim, &stepper, done)?,
            };
            return Err(Interrupted { step: done, checkpoint }.into());
        }
    }
    bar.finish_and_clear();

    // --- summary ----------------------------------------------------------------------------------
    let accuracies = monitor(&model, &config, &trained, &bank, &queries, &stats)?;
    for (d, acc) in trained.iter().zip(&accuracies) {
        metrics.row(config.steps, d, None, None, None, Some(*acc))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let steps_run = config.steps.saturating_sub(start_step);
    let summary = Summary {
        steps: config.steps,
        final_loss: last_loss,
        knn_accuracy: trained.iter().map(|d| d.to_string()).zip(accuracies).collect(),
        seconds,
        images_per_second: (steps_run as usize * config.batch_size) as f64 / seconds.max(1e-9),
        device: if devices > 1 { format!("{} (and {} more replicas)", selected.description, devices - 1) } else { selected.description },
        checkpoint: last_dir.unwrap_or_else(|| checkpoints(&out).pop().unwrap_or_default()),
    };
    ail_core::io::write_atomic(&out.join("summary.json"), &serde_json::to_vec_pretty(&summary)?)?;
    println!("pretrained {} for {} steps (final loss {:.4}) in {:.0} s", config.model, config.steps, summary.final_loss, seconds);
    println!("kNN accuracy (k = {}, T = {}) on {} held-out images:", config.knn_k, config.knn_temperature, queries.len());
    for (d, acc) in &summary.knn_accuracy {
        println!("  i = [{d}]  {:.1}%", acc * 100.0);
    }
    println!("outputs: {} (config.json, metrics.csv, checkpoints/, summary.json)", out.display());
    Ok(summary)
}

/// The default run (`cargo run --release` with no arguments): AI-SimCLR with K = 2 and a narrow
/// Hyper-ResNet-18 on the built-in Fashion-MNIST subset, a few minutes on a 2-core CPU.
pub fn demo(global: &Global) -> anyhow::Result<()> {
    let out = (1..)
        .map(|n| PathBuf::from(format!("runs/demo-{n}")))
        .find(|p| !p.exists())
        .expect("a free run directory name");
    eprintln!(
        "ail demo: pretraining AI-SimCLR (K = 2: spatial, appearance) with a narrow Hyper-ResNet-18 on the \
         built-in Fashion-MNIST images, then measuring kNN accuracy per descriptor. `ail --help` lists the commands."
    );
    let args = PretrainArgs {
        out,
        width: Some(0.125),
        // AIL_DEMO_STEPS shortens the demo (the tests run it in a few steps).
        steps: Some(std::env::var("AIL_DEMO_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(400)),
        batch_size: Some(64),
        monitor_every: Some(100),
        ..Default::default()
    };
    let summary = run(global, &args)?;
    let best = summary.knn_accuracy.iter().max_by(|a, b| a.1.total_cmp(&b.1)).expect("at least one descriptor");
    println!(
        "the encoder is one network dialled by i; its best setting here is i = [{}] ({:.1}%). \
         Next: `ail pretrain --data <cifar-10-batches-bin> --width 0.5` for a real run.",
        best.0,
        best.1 * 100.0
    );
    Ok(())
}

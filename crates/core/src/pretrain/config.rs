//! Every setting of a pretraining run, nested by part (data, encoder, heads, optimiser,
//! augmentation, audio, monitor), with the defaults of docs/method.md. A run writes it to
//! `config.json` before training; `ail pretrain --config run.toml` reads the same fields from TOML
//! (`[optimizer]` tables or dotted keys such as `optimizer.lr = 0.003`).

use ail_augment::AugmentConfig;
use ail_augment::audio::AudioAugmentConfig;
use ail_data::DataFormat;
use ail_data::audio::AudioLabels;
use serde::{Deserialize, Serialize};

use crate::head::ProjectionHeadConfig;
use crate::method::Method;
use crate::sampler::Invariances;
use crate::{CoreError, EncoderConfig, Family, ModelKind};

/// What the encoder sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    #[default]
    Image,
    /// Waveforms: the seven CLAR augmentations on the host, log-mel spectrograms on the device.
    Audio,
}

/// A pretraining run's settings; `config.json` of a run directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainConfig {
    pub data: DataSettings,
    pub modality: Modality,
    pub method: Method,
    /// The trained descriptors: a family's set, or one fixed descriptor (a plain baseline).
    pub invariances: Invariances,
    /// The share of steps whose descriptor is drawn uniformly from `[0, 1]^K` instead of from the
    /// trained set, its augmentations at the fractional strengths of
    /// [`ail_augment::AugmentConfig::at_descriptor`] (0: the paper's binary descriptors only).
    pub fractional_draws: f64,
    pub steps: u64,
    /// Images per step (each gives two views).
    pub batch_size: usize,
    /// Each batch is split into this many shards, each with its own BatchNorm statistics and
    /// (SimCLR) negatives; their gradients are averaged. One shard per device in data-parallel runs;
    /// the result does not depend on how many devices run the shards.
    pub shards: usize,
    /// Seed of initialisation, data order, descriptor draws and augmentations.
    pub seed: u64,
    /// Temperature of NT-Xent / InfoNCE.
    pub temperature: f32,
    /// Momentum of the key encoder (MoCo; MoCo-v3 raises it to 1 along a cosine).
    pub momentum: f64,
    /// Negatives per descriptor queue (MoCo-v2).
    pub queue_size: usize,
    pub encoder: EncoderSettings,
    pub heads: HeadSettings,
    pub optimizer: OptimizerSettings,
    pub augment: AugmentConfig,
    pub audio: AudioSettings,
    pub monitor: MonitorSettings,
    /// Steps between log rows in `metrics.csv`.
    pub log_every: u64,
    /// Steps between checkpoints (one is always written at the end).
    pub checkpoint_every: u64,
    /// Checkpoints kept (the newest).
    pub keep_checkpoints: usize,
}

/// Where the images come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSettings {
    /// `builtin`, or a path in one of the official formats (an audio folder for audio runs).
    pub source: String,
    pub format: DataFormat,
    /// Side of the square images fed to the encoder.
    pub image_size: usize,
}

/// The encoder (`EncoderConfig` is derived from these and the family).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncoderSettings {
    pub model: ModelKind,
    /// Width multiplier of ResNets (1.0 = 64 channels in the first stage).
    pub width: f32,
    /// Hidden units of each kernel generator.
    pub hidden: usize,
    /// ViT patch side (default: 4 up to 64 px, 16 above).
    pub patch_size: Option<usize>,
    /// Prompt-ViT: projectors averaged into the invariance token (default 16).
    pub num_projectors: Option<usize>,
}

/// The projection head(s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeadSettings {
    pub hidden: usize,
    pub output: usize,
    pub layers: usize,
    /// One head per trained descriptor instead of one shared head.
    pub per_descriptor: bool,
}

/// AdamW with a linear warm-up and a cosine decay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerSettings {
    /// Peak learning rate (after the warm-up).
    pub lr: f64,
    /// Learning rate at the end of the cosine.
    pub min_lr: f64,
    pub weight_decay: f32,
    /// Clip each gradient's L2 norm to this value (none when absent).
    pub grad_clip: Option<f32>,
    pub warmup_steps: u64,
}

/// The kNN monitor: held-out training images classified against a bank of training images, once
/// per monitored descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorSettings {
    /// Steps between evaluations (0: only at the end; otherwise also before training).
    pub every: u64,
    /// Training images whose features form the bank.
    pub bank: usize,
    /// Held-out images (never trained on) that are classified.
    pub queries: usize,
    pub k: usize,
    pub temperature: f32,
    /// Which trained descriptors are evaluated: `named` (default) or `all`.
    pub descriptors: MonitoredDescriptors,
    /// Which BatchNorm statistics each descriptor is read with: `per-descriptor` (default:
    /// recomputed at the descriptor on 512 of the bank's images, as every downstream
    /// evaluation reads it) or `shared` (the running statistics training keeps, one average over
    /// every descriptor trained: they understate an amortised encoder more as training goes on).
    pub batch_norm: crate::frozen::BatchNormStatistics,
}

/// Which descriptors the kNN monitor evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum MonitoredDescriptors {
    /// A fixed, named set: each single augmentation (one-hot), all of them (all ones) and all but
    /// one; `2K + 1` descriptors at most (K = 2: the three trained ones; K = 5: 11 where 26 are
    /// trained; audio, K = 7: 15 where 120 are). A fixed descriptor is monitored alone.
    #[default]
    Named,
    /// Every trained descriptor (audio: 120 kNN passes per evaluation).
    All,
}

impl MonitoredDescriptors {
    /// The descriptors to evaluate, ordered by their binary value (first entry most significant)
    /// as [`crate::Family::trained`] orders them.
    pub fn select(self, invariances: &crate::sampler::Invariances) -> Vec<crate::Descriptor> {
        let family = match (self, invariances) {
            (MonitoredDescriptors::Named, crate::sampler::Invariances::Family(f)) => *f,
            _ => return invariances.trained(),
        };
        let k = family.num_invariances();
        let mut set: Vec<Vec<f32>> = Vec::new();
        for j in 0..k {
            set.push((0..k).map(|m| if m == j { 1.0 } else { 0.0 }).collect());
            set.push((0..k).map(|m| if m == j { 0.0 } else { 1.0 }).collect());
        }
        set.push(vec![1.0; k]);
        set.retain(|v| v.contains(&1.0));
        let bits = |v: &Vec<f32>| v.iter().fold(0u64, |acc, &x| (acc << 1) | u64::from(x == 1.0));
        set.sort_by_key(bits);
        set.dedup();
        set.into_iter().map(crate::Descriptor).collect()
    }
}

/// The audio side of a run (`modality = "audio"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AudioSettings {
    /// Every view is this long (clips are centred and cut or padded after stretch and pitch shift).
    pub clip_seconds: f32,
    /// Labels of the kNN monitor: the folder (FSDD: the digit), the digit or the speaker.
    pub labels: AudioLabels,
    /// FSDD: train on these takes only (inclusive), holding the others out for evaluation.
    pub takes: Option<[u32; 2]>,
    pub mel: crate::mel::MelConfig,
    pub augment: AudioAugmentConfig,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        Self {
            data: DataSettings::default(),
            modality: Modality::Image,
            method: Method::Simclr,
            invariances: Invariances::Family(Family::Groups),
            fractional_draws: 0.0,
            steps: 300,
            batch_size: 64,
            shards: 1,
            seed: 0,
            temperature: 0.2,
            momentum: 0.99,
            queue_size: 4096,
            encoder: EncoderSettings::default(),
            heads: HeadSettings::default(),
            optimizer: OptimizerSettings::default(),
            augment: AugmentConfig::default(),
            audio: AudioSettings::default(),
            monitor: MonitorSettings::default(),
            log_every: 10,
            checkpoint_every: 100,
            keep_checkpoints: 2,
        }
    }
}

impl Default for DataSettings {
    fn default() -> Self {
        Self { source: "builtin".into(), format: DataFormat::Auto, image_size: 32 }
    }
}

impl Default for EncoderSettings {
    fn default() -> Self {
        Self { model: ModelKind::HyperResnet18, width: 0.25, hidden: 32, patch_size: None, num_projectors: None }
    }
}

impl Default for HeadSettings {
    fn default() -> Self {
        Self { hidden: 512, output: 128, layers: 2, per_descriptor: false }
    }
}

impl Default for OptimizerSettings {
    fn default() -> Self {
        Self { lr: 1e-3, min_lr: 0.0, weight_decay: 1e-4, grad_clip: None, warmup_steps: 20 }
    }
}

impl Default for MonitorSettings {
    fn default() -> Self {
        Self { every: 100, bank: 2000, queries: 500, k: 200, temperature: 0.1, descriptors: MonitoredDescriptors::Named, batch_norm: Default::default() }
    }
}

impl Default for AudioSettings {
    fn default() -> Self {
        Self { clip_seconds: 1.0, labels: AudioLabels::Class, takes: None, mel: Default::default(), augment: Default::default() }
    }
}

impl AudioSettings {
    pub fn front_end(&self) -> crate::mel::AudioFrontEnd {
        crate::mel::AudioFrontEnd { mel: self.mel.clone(), clip_samples: (self.clip_seconds * self.mel.sample_rate as f32).round() as usize }
    }
}

/// `Err(CoreError::Setting)` unless `ok`.
fn ensure(ok: bool, setting: &str, reason: impl FnOnce() -> String) -> Result<(), CoreError> {
    if ok { Ok(()) } else { Err(CoreError::setting(setting, reason())) }
}

impl PretrainConfig {
    /// Parses a TOML config file's text (unchecked: [`PretrainConfig::validate`] checks the values).
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Reads a run's `config.json`, also in the flat layout of runs written before the settings were
    /// nested (`lr`, `width`, `monitor_every`, ... at the top level), so that older runs still
    /// continue and report.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        let mut value: serde_json::Value = serde_json::from_str(text)?;
        if let Some(object) = value.as_object_mut() {
            for (flat, [table, key]) in FLAT_LAYOUT {
                // `data` was the source's path; it is now the `[data]` table.
                let legacy = *flat != "data" || object.get("data").is_some_and(|v| v.is_string());
                if let Some(v) = legacy.then(|| object.remove(*flat)).flatten() {
                    let entry = object.entry(*table).or_insert_with(|| serde_json::json!({}));
                    if let Some(t) = entry.as_object_mut() {
                        t.insert((*key).to_string(), v);
                    }
                }
            }
        }
        serde_json::from_value(value)
    }

    /// Checks every value and how they fit together; the error names the setting and the fix.
    pub fn validate(&self) -> Result<(), CoreError> {
        let o = &self.optimizer;
        ensure((0.0..1.0).contains(&self.momentum), "momentum", || "must be in [0, 1)".into())?;
        ensure(self.queue_size >= 1, "queue_size", || "must be at least 1".into())?;
        ensure(o.grad_clip.is_none_or(|c| c > 0.0), "optimizer.grad_clip", || "must be positive".into())?;
        ensure(self.heads.hidden >= 1 && self.heads.output >= 1, "heads.hidden and heads.output", || "must be at least 1".into())?;
        ensure(self.monitor.k >= 1 && self.monitor.temperature > 0.0, "monitor.k", || "must be >= 1 and monitor.temperature > 0".into())?;
        ensure(self.monitor.bank >= 1 && self.monitor.queries >= 1, "monitor.bank and monitor.queries", || "must be at least 1".into())?;
        ensure(self.steps > 0 && self.batch_size >= 2, "--steps", || {
            format!("must be >= 1 and --batch-size >= 2 (got {} and {})", self.steps, self.batch_size)
        })?;
        ensure(
            self.shards >= 1 && self.batch_size.is_multiple_of(self.shards) && self.batch_size / self.shards >= 2,
            &format!("--batch-size {}", self.batch_size),
            || format!("cannot be split into {} shards of at least 2 images: use a batch size that is a multiple of 2 x shards", self.shards),
        )?;
        ensure(o.lr > 0.0 && o.lr.is_finite(), "--lr", || format!("must be positive (got {})", o.lr))?;
        ensure((0.0..=o.lr).contains(&o.min_lr), "optimizer.min_lr", || "must be in [0, lr]".into())?;
        ensure(self.temperature > 0.0, "temperature", || "must be positive".into())?;
        ensure(self.log_every > 0 && self.checkpoint_every > 0, "log_every / checkpoint_every", || "must be >= 1".into())?;
        ensure(self.heads.layers >= 2, "heads.layers", || "must be at least 2".into())?;
        ensure(self.keep_checkpoints >= 1, "keep_checkpoints", || "must be at least 1".into())?;
        ensure((1..=4096).contains(&self.data.image_size), "--image-size", || {
            format!("must be between 1 and 4096 (got {})", self.data.image_size)
        })?;
        self.augment.validate()?;
        self.validate_fractional()?;
        let audio_family = self.invariances.family() == Family::Audio;
        match self.modality {
            Modality::Image => ensure(!audio_family, &format!("--invariances {}", self.invariances), || {
                "is the audio family (K = 7): add --modality audio and audio --data".into()
            })?,
            Modality::Audio => {
                ensure(audio_family, "--modality audio", || {
                    format!(
                        "trains the K = 7 audio augmentations: use --invariances audio (AI-SimCLR) or \
                         fixed:1,1,1,1,1,1,1 (plain SimCLR with all seven), not {}",
                        self.invariances
                    )
                })?;
                ensure(!self.encoder.model.is_vit(), "--modality audio", || "needs a ResNet encoder (hyper-resnet18, resnet18, ...)".into())?;
                self.audio.mel.validate().map_err(|reason| CoreError::setting("audio.mel", reason))?;
                self.audio.augment.validate()?;
                ensure(self.audio.clip_seconds > 0.0 && self.audio.clip_seconds <= 60.0, "audio.clip_seconds", || {
                    format!("must be in (0, 60] (got {})", self.audio.clip_seconds)
                })?;
                ensure(self.data.source != "builtin", "--modality audio", || {
                    "needs --data: an audio folder (`<class>/<file>.wav`) or FSDD's folder".into()
                })?;
            }
        }
        self.encoder_config().validate()?;
        Ok(())
    }

    /// `fractional_draws` needs image views, a family to draw from, and what every descriptor
    /// shares: one projection head and no per-descriptor queue.
    fn validate_fractional(&self) -> Result<(), CoreError> {
        let p = self.fractional_draws;
        ensure((0.0..=1.0).contains(&p), "--fractional-draws", || format!("must be in [0, 1] (got {p})"))?;
        if p == 0.0 {
            return Ok(());
        }
        let why = match () {
            _ if self.modality == Modality::Audio => Some("are defined for image augmentations only: leave it at 0 for --modality audio"),
            _ if matches!(self.invariances, Invariances::Fixed(..)) => Some("need a family to draw from: use --invariances groups or individual"),
            _ if self.method.uses_queues() => Some("have no queue of negatives (MoCo-v2 keeps one per trained descriptor): use --method simclr or mocov3"),
            _ if self.heads.per_descriptor => Some("have no projection head of their own: set heads.per_descriptor = false"),
            _ => None,
        };
        match why {
            Some(why) => Err(CoreError::setting("--fractional-draws", format!("{p}: fractional descriptors {why}"))),
            None => Ok(()),
        }
    }

    /// About how many bytes a run of this config holds at once, the training images aside: the
    /// encoder's and heads' parameters with their gradients and AdamW moments (4 copies), MoCo's key
    /// model and queues, and a step's two views with the activations the backward pass keeps.
    /// An estimate to refuse a config that cannot fit before allocating it, not a measurement.
    pub fn memory_estimate(&self) -> f64 {
        let encoder = self.encoder_config();
        let params = crate::summary::params(&encoder, 0).total() as f64;
        let feature = encoder.feature_dim() as f64;
        let (hidden, output) = (self.heads.hidden as f64, self.heads.output as f64);
        let num_trained = self.invariances.trained().len() as f64;
        let head = feature * hidden + (self.heads.layers.saturating_sub(2)) as f64 * hidden * hidden + hidden * output;
        let heads = head * if self.heads.per_descriptor { num_trained } else { 1.0 };
        let key = if self.method.uses_key_model() { params + heads } else { 0.0 };
        let queues = if self.method.uses_queues() { num_trained * self.queue_size as f64 * output } else { 0.0 };
        let views = 2.0 * self.batch_size as f64;
        let [c, h, w] = [encoder.in_channels, encoder.image_size, encoder.image_size].map(|v| v as f64);
        let step = views * (c * h * w * 2.0 + 2.0 * crate::summary::activations_per_image(&encoder) as f64);
        4.0 * (4.0 * (params + heads) + key + queues + step)
    }

    /// The encoder this config trains.
    pub fn encoder_config(&self) -> EncoderConfig {
        let s = &self.encoder;
        let mut e = EncoderConfig::new(s.model, self.invariances.family().num_invariances())
            .with_width(s.width)
            .with_image_size(self.data.image_size);
        e.hidden = s.hidden;
        e.patch_size = s.patch_size;
        if s.num_projectors.is_some() {
            e.num_projectors = s.num_projectors;
        }
        if self.modality == Modality::Audio {
            // One input channel; the mel axis chooses the stem (128 bins: the ImageNet stem).
            e.in_channels = 1;
            e.image_size = self.audio.mel.n_mels;
        }
        e
    }

    /// The projection head on top of `encoder`'s features.
    pub fn head_config(&self, encoder: &EncoderConfig) -> ProjectionHeadConfig {
        ProjectionHeadConfig::new(encoder.feature_dim())
            .with_hidden_dim(self.heads.hidden)
            .with_output_dim(self.heads.output)
            .with_num_layers(self.heads.layers)
    }

    /// The settings (other than the length, logging, checkpoint and monitor intervals) in which
    /// `self` (a run's saved config) and `asked` differ, named by their path (`optimizer.lr`).
    pub fn differences(&self, asked: &PretrainConfig) -> Vec<String> {
        const FREE: [&str; 6] = ["steps", "log_every", "checkpoint_every", "monitor.every", "monitor.descriptors", "monitor.batch_norm"];
        let (a, b) = (serde_json::to_value(self).unwrap_or_default(), serde_json::to_value(asked).unwrap_or_default());
        let mut out = Vec::new();
        diff_values("", &a, &b, &mut out);
        out.retain(|(k, _)| !FREE.contains(&k.as_str()));
        out.into_iter().map(|(_, text)| text).collect()
    }
}

/// Where each setting of the flat layout (before the settings were nested) lives now.
const FLAT_LAYOUT: &[(&str, [&str; 2])] = &[
    ("data", ["data", "source"]),
    ("format", ["data", "format"]),
    ("image_size", ["data", "image_size"]),
    ("model", ["encoder", "model"]),
    ("width", ["encoder", "width"]),
    ("hidden", ["encoder", "hidden"]),
    ("patch_size", ["encoder", "patch_size"]),
    ("num_projectors", ["encoder", "num_projectors"]),
    ("head_hidden", ["heads", "hidden"]),
    ("head_output", ["heads", "output"]),
    ("head_layers", ["heads", "layers"]),
    ("per_descriptor_heads", ["heads", "per_descriptor"]),
    ("lr", ["optimizer", "lr"]),
    ("min_lr", ["optimizer", "min_lr"]),
    ("weight_decay", ["optimizer", "weight_decay"]),
    ("grad_clip", ["optimizer", "grad_clip"]),
    ("warmup_steps", ["optimizer", "warmup_steps"]),
    ("monitor_every", ["monitor", "every"]),
    ("monitor_bank", ["monitor", "bank"]),
    ("monitor_queries", ["monitor", "queries"]),
    ("knn_k", ["monitor", "k"]),
    ("knn_temperature", ["monitor", "temperature"]),
];

/// Leaf-by-leaf differences of two JSON values, as `(path, "path A there, B here")`.
fn diff_values(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match (a.as_object(), b.as_object()) {
        (Some(a), Some(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                diff_values(&p, v, b.get(k).unwrap_or(&serde_json::Value::Null), out);
            }
        }
        _ if a != b => out.push((path.to_string(), format!("{path} {a} there, {b} here"))),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_round_trip_through_json_and_toml() {
        let c = PretrainConfig::default();
        c.validate().unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<PretrainConfig>(&json).unwrap(), c);
        let t = PretrainConfig::from_toml("method = \"mocov2\"\ninvariances = \"fixed:0,1\"\noptimizer.lr = 0.01\n[encoder]\nwidth = 0.5\n").unwrap();
        assert_eq!(t.method, Method::Mocov2);
        assert_eq!(t.invariances.to_string(), "fixed:0,1");
        assert_eq!((t.optimizer.lr, t.encoder.width, t.steps), (0.01, 0.5, 300));
        let err = PretrainConfig::from_toml("stepz = 3\n").unwrap_err().to_string();
        assert!(err.contains("stepz"), "{err}");
    }

    #[test]
    fn a_config_json_in_the_flat_layout_still_reads() {
        let flat = r#"{"data": "cifar", "format": "cifar", "image_size": 32, "method": "mocov2", "model": "hyper-resnet18",
            "width": 0.5, "invariances": "fixed:0,1", "steps": 40, "lr": 0.01, "monitor_every": 5, "head_hidden": 64,
            "modality": "image", "augment": {"hflip_p": 0.3}}"#;
        let c = PretrainConfig::from_json(flat).unwrap();
        assert_eq!((c.data.source.as_str(), c.data.format, c.method), ("cifar", DataFormat::Cifar, Method::Mocov2));
        assert_eq!((c.encoder.width, c.optimizer.lr, c.monitor.every, c.heads.hidden, c.steps), (0.5, 0.01, 5, 64, 40));
        assert_eq!((c.invariances.to_string(), c.augment.hflip_p), ("fixed:0,1".to_string(), 0.3));
        let nested = serde_json::to_string(&c).unwrap();
        assert_eq!(PretrainConfig::from_json(&nested).unwrap(), c, "the nested layout reads back unchanged");
        assert!(PretrainConfig::from_json(r#"{"stepz": 1}"#).unwrap_err().to_string().contains("stepz"));
    }

    #[test]
    fn validate_names_the_setting_and_the_fix() {
        let bad = PretrainConfig { batch_size: 6, shards: 4, ..Default::default() };
        let msg = bad.validate().unwrap_err().to_string();
        assert!(msg.contains("--batch-size") && msg.contains("multiple of 2 x shards"), "{msg}");
        let audio = PretrainConfig { modality: Modality::Audio, ..Default::default() };
        assert!(audio.validate().unwrap_err().to_string().contains("use --invariances audio"));
        let lr = PretrainConfig { optimizer: OptimizerSettings { lr: -1.0, ..Default::default() }, ..Default::default() };
        assert!(lr.validate().unwrap_err().to_string().contains("--lr"));
    }

    #[test]
    fn the_monitor_evaluates_a_named_subset_unless_asked_for_all() {
        use crate::sampler::Invariances;
        let named = |inv: &str| MonitoredDescriptors::Named.select(&Invariances::parse(inv).unwrap());
        let text = |d: Vec<crate::Descriptor>| d.iter().map(|d| d.to_string()).collect::<Vec<_>>();
        assert_eq!(named("groups"), crate::Family::Groups.trained(), "K = 2: the three trained descriptors");
        let k5 = text(named("individual"));
        assert_eq!(k5.len(), 11, "{k5:?}");
        for d in ["1,0,0,0,0", "0,0,0,0,1", "1,1,1,1,1", "0,1,1,1,1", "1,1,1,1,0"] {
            assert!(k5.contains(&d.to_string()), "{d} in {k5:?}");
        }
        assert_eq!(named("audio").len(), 15);
        assert_eq!(MonitoredDescriptors::All.select(&Invariances::parse("audio").unwrap()).len(), 120);
        assert_eq!(text(named("fixed:0,1")), vec!["0,1".to_string()]);
    }

    /// The configs EXPERIMENTS.md cites parse and validate; those whose tables report kNN at every
    /// trained descriptor ask the monitor for all of them.
    #[test]
    fn the_documented_configs_load() {
        let dir = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())).join("../../docs/configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let mut config = PretrainConfig::from_toml(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if config.modality == Modality::Audio {
                config.data.source = "fsdd".into(); // given with --data, as the config's comment says
            }
            config.validate().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name == "cifar-simclr-k5.toml" || name == "fsdd-ai-simclr.toml" {
                assert_eq!(config.monitor.descriptors, MonitoredDescriptors::All, "{name}");
            }
            seen += 1;
        }
        assert!(seen >= 7, "{seen} configs in {}", dir.display());
    }

    #[test]
    fn memory_estimates_grow_with_what_allocates() {
        let base = PretrainConfig::default();
        let m = base.memory_estimate();
        assert!((1e7..2e9).contains(&m), "the default run: {m} bytes");
        let wide = PretrainConfig { batch_size: 256, encoder: EncoderSettings { width: 0.5, ..Default::default() }, ..Default::default() };
        assert!(wide.memory_estimate() < 8e9, "EXPERIMENTS' CIFAR run fits a laptop: {}", wide.memory_estimate());
        let head = PretrainConfig { heads: HeadSettings { hidden: 100_000_000_000, ..Default::default() }, ..Default::default() };
        assert!(head.memory_estimate() > 1e13);
        let queue = PretrainConfig { method: Method::Mocov2, queue_size: 100_000_000_000, ..Default::default() };
        assert!(queue.memory_estimate() > 1e13);
        let simclr_queue = PretrainConfig { queue_size: 100_000_000_000, ..Default::default() };
        assert!(simclr_queue.memory_estimate() < 2e9, "SimCLR keeps no queue");
        let large = PretrainConfig { data: DataSettings { image_size: 4096, ..Default::default() }, ..Default::default() };
        assert!(large.memory_estimate() > 1e11, "{}", large.memory_estimate());
    }

    #[test]
    fn fractional_draws_are_refused_where_a_descriptor_needs_its_own_state() {
        let ok = PretrainConfig { fractional_draws: 0.5, ..Default::default() };
        ok.validate().unwrap();
        PretrainConfig { method: Method::Mocov3, ..ok.clone() }.validate().unwrap();
        let err = |c: PretrainConfig| c.validate().unwrap_err().to_string();
        let msg = err(PretrainConfig { fractional_draws: 1.5, ..Default::default() });
        assert!(msg.contains("--fractional-draws") && msg.contains("must be in [0, 1] (got 1.5)"), "{msg}");
        let msg = err(PretrainConfig { method: Method::Mocov2, ..ok.clone() });
        assert!(msg.contains("no queue of negatives") && msg.contains("--method simclr or mocov3"), "{msg}");
        let msg = err(PretrainConfig { invariances: Invariances::parse("fixed:1,1").unwrap(), ..ok.clone() });
        assert!(msg.contains("use --invariances groups or individual"), "{msg}");
        let msg = err(PretrainConfig { heads: HeadSettings { per_descriptor: true, ..Default::default() }, ..ok.clone() });
        assert!(msg.contains("heads.per_descriptor = false"), "{msg}");
        // Configs written before the setting existed read as 0.
        let old = PretrainConfig::from_json(&serde_json::to_string(&PretrainConfig::default()).unwrap().replace("\"fractional_draws\":0.0,", "")).unwrap();
        assert_eq!(old.fractional_draws, 0.0);
    }

    #[test]
    fn differences_name_nested_settings_and_ignore_the_length() {
        let a = PretrainConfig::default();
        let mut b = a.clone();
        b.steps = 1000;
        b.monitor.every = 7;
        assert!(a.differences(&b).is_empty());
        b.optimizer.lr = 0.5;
        let d = a.differences(&b);
        assert_eq!(d.len(), 1);
        assert!(d[0].starts_with("optimizer.lr 0.001 there, 0.5 here"), "{d:?}");
    }
}

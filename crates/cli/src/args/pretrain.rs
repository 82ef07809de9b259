//! `ail pretrain`.

use std::path::PathBuf;

use ail_core::ModelKind;
use ail_core::method::Method;
use ail_core::pretrain::Modality;
use ail_core::sampler::Invariances;
use ail_data::DataFormat;
use ail_data::audio::AudioLabels;
use clap::Args;

impl PretrainArgs {
    /// How many devices run the shards: the `--hosts` count, or `--devices`.
    pub fn replicas(&self) -> usize {
        match &self.hosts {
            Some(h) => h.split(',').filter(|s| !s.trim().is_empty()).count().max(1),
            None => (self.devices as usize).max(1),
        }
    }
}

/// Flags override the `--config` file, which overrides the defaults; unset flags keep the config's.
#[derive(Debug, Args, Default)]
pub struct PretrainArgs {
    /// A TOML file with any setting of config.json (docs/configs/ has examples), e.g. `steps = 2000`
    /// or `optimizer.lr = 0.003`; flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Run directory (config.json, metrics.csv, checkpoints/, summary.json).
    #[arg(long, default_value = "runs/pretrain")]
    pub out: PathBuf,
    /// Continue the run in --out from its latest checkpoint (same config, step, optimiser state,
    /// data order and augmentation draws as an uninterrupted run).
    #[arg(long)]
    pub resume: bool,
    /// Refuse to continue a run: by default, the same command on an --out that holds checkpoints
    /// of the same run continues it.
    #[arg(long, conflicts_with = "resume")]
    pub no_resume: bool,
    /// Replace the files of another run in --out (its config, metrics, checkpoints and summary)
    /// instead of refusing; files that are not a run's are left alone.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Dataset: `builtin`, a CIFAR binary folder, an IDX folder or an ImageFolder.
    #[arg(long)]
    pub data: Option<String>,
    /// Format of --data; `auto` decides from the files present.
    #[arg(long, value_enum)]
    pub format: Option<DataFormat>,
    /// Side of the square images.
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Contrastive method: simclr, mocov2 (momentum encoder, one negative queue per descriptor) or
    /// mocov3 (momentum encoder, predictor, symmetrised loss, cosine momentum).
    #[arg(long, value_enum)]
    pub method: Option<Method>,
    /// Encoder kind (hyper-resnet18, resnet18, prompt-vit-tiny, ...).
    #[arg(long)]
    pub model: Option<ModelKind>,
    /// Width multiplier of ResNets (1.0 = 64 channels in the first stage).
    #[arg(long)]
    pub width: Option<f32>,
    /// groups (K=2), individual (K=5), audio (K=7, with --modality audio), or fixed:<descriptor> for
    /// a plain baseline (fixed:1,1 default set, fixed:0,1 appearance only, fixed:1,0 spatial only,
    /// fixed:1,1,1,1,1,1,1 every audio augmentation).
    #[arg(long)]
    pub invariances: Option<Invariances>,
    /// The share of steps (0-1) whose invariance descriptor is drawn uniformly from [0, 1]^K
    /// instead of from the trained binary set; an entry t scales its augmentations' strength
    /// (magnitudes: crop range, jitter, blur; probabilities: flip, grayscale, solarize). Default 0,
    /// the paper's binary descriptors only. SimCLR or MoCo-v3 with shared heads.
    #[arg(long, value_name = "P")]
    pub fractional_draws: Option<f64>,
    /// Optimisation steps in all.
    #[arg(long, conflicts_with = "epochs")]
    pub steps: Option<u64>,
    /// Passes over the training images (sets --steps).
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Images per step (each gives two views).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Data parallelism: run each batch's shards on this many devices at once (GPUs of the kind
    /// --device picks, numbered 0..N; with --device cpu, N replicas share the CPU). Gradients are
    /// averaged on the first device, which holds the parameters and optimiser. Not part of the
    /// run's config: a run may continue on another number of devices.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub devices: u16,
    /// Split each batch into this many shards (each with its own BatchNorm statistics and SimCLR
    /// negatives; gradients averaged). Default: --devices. Fixed for the run, so that the result does
    /// not depend on the number of devices: 2 shards on 1 device train exactly as on 2 devices.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Multi-node: run the replicas on these machines instead of local devices, one per address,
    /// each running `ail serve --port P`: e.g. `ws://10.0.0.1:3000,ws://10.0.0.2:3000`. The first
    /// holds the parameters and optimiser; this process drives them and writes the run. Needs a
    /// build with `--features remote`.
    #[arg(long, conflicts_with = "devices")]
    pub hosts: Option<String>,
    /// The shared secret of the `--hosts` servers (`ail serve --token-file`): a file whose first
    /// line is the token.
    #[arg(long, value_name = "FILE", requires = "hosts")]
    pub token_file: Option<PathBuf>,
    /// Peak learning rate of AdamW (after linear warm-up, then cosine decay).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Seed of initialisation, data order, descriptor draws and augmentations.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Steps between log lines in metrics.csv.
    #[arg(long)]
    pub log_every: Option<u64>,
    /// Steps between checkpoints (one is always written at the end).
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Steps between kNN evaluations (0: only at the end).
    #[arg(long)]
    pub monitor_every: Option<u64>,
    /// Which descriptors the kNN monitor evaluates: `named` (default: each single augmentation,
    /// all of them, and all but one; 2K + 1 at most) or `all` trained ones (audio: 120 passes).
    #[arg(long, value_enum)]
    pub monitor_descriptors: Option<ail_core::pretrain::MonitoredDescriptors>,
    /// Which BatchNorm statistics the kNN monitor reads each descriptor with: `per-descriptor`
    /// (default: recomputed at the descriptor on 512 bank images, as `ail batchnorm` and every
    /// downstream command read it) or `shared` (the running statistics training keeps, one
    /// average over all descriptors, which understate an amortised encoder).
    #[arg(long, value_enum)]
    pub monitor_batch_norm: Option<ail_core::frozen::BatchNormStatistics>,
    /// `image` (default) or `audio`: --data is then an audio folder (`<class>/<file>.wav`) or FSDD
    /// (`recordings/<digit>_<speaker>_<take>.wav`), views come from the seven CLAR augmentations
    /// (--invariances audio, K = 7, 120 descriptors) and the encoder sees 128-bin log-mel
    /// spectrograms of 1 s clips at 16 kHz.
    #[arg(long, value_enum)]
    pub modality: Option<Modality>,
    /// Audio: the kNN monitor's labels: class (folder; FSDD: digit), digit or speaker.
    #[arg(long, value_enum)]
    pub audio_labels: Option<AudioLabels>,
    /// Audio on FSDD: train on these takes only, e.g. `10-49` (hold the others out).
    #[arg(long)]
    pub takes: Option<String>,
    /// Skip (and count) undecodable image or audio files instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
}

//! Command-line arguments. Values are only parsed here; `common` turns them into real objects.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "ail",
    version,
    about = "Amortised invariance learning for contrastive self-supervision (ICLR 2023)",
    long_about = "Amortised invariance learning for contrastive self-supervision (ICLR 2023).\n\n\
        One encoder, conditioned on an invariance descriptor i in [0,1]^K, is pretrained so that \
        it can be dialled between invariances (K=2: [spatial, appearance]; K=5: [crop, colour \
        jitter, grayscale, blur, solarize]). Run with no command for the built-in demo."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Where to compute: `auto` = a hardware GPU through wgpu if there is one, else the CPU
    /// (burn's flex backend); `cpu`; `wgpu` = any wgpu adapter, software ones (Mesa lavapipe)
    /// included.
    #[arg(long, global = true, default_value = "auto", value_parser = ["auto", "cpu", "wgpu"])]
    pub device: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a PNG grid of augmented views (rows: images; columns: the original, then views) for
    /// one invariance descriptor, to judge an augmentation set by eye.
    AugmentPreview(PreviewArgs),
    /// Measure speed (images/s) against a baseline measured in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Contrastive pretraining (SimCLR, MoCo-v2, MoCo-v3) of an amortised encoder: one descriptor drawn per step, both
    /// views made with its augmentations. Writes config.json, metrics.csv (loss, lr, images/s, kNN
    /// accuracy per descriptor), checkpoints and summary.json into --out.
    Pretrain(PretrainArgs),
    /// Serve this machine's device to `ail pretrain --hosts` on another machine (multi-node data
    /// parallelism through burn's remote backend, WebSocket transport: use it on a trusted network).
    /// Needs a build with `--features remote`. Runs until Ctrl-C.
    Serve(ServeArgs),
    /// Describe an encoder: parameters per part (static convs, generators, embeddings, BN, head)
    /// and the FLOPs of one forward, computed from the config and checked against the built model.
    Info(InfoArgs),
    /// Export a run's encoder for the browser page (`--web`): one file with the description and
    /// the tensors (weights in f16), which the page opens from its file picker.
    Export(crate::export::ExportArgs),
    /// Measure how invariant a checkpoint's features are to each transform (flips, crops,
    /// rotation, colour, ...) at one or more descriptors: Mahalanobis-whitened cosine similarity
    /// of f(x) and f(t(x)) (Ericsson et al. 2022). Writes a CSV, a markdown table and a radar chart.
    Measure(crate::measure::MeasureArgs),
    /// Fit a linear head AND the invariance descriptor i (Adam, projected onto [0,1]) on a frozen
    /// encoder in eval mode, for a classification or regression task; epochs, lr and weight decay
    /// chosen on a validation split; the test split scored once. Writes fit.json.
    Fit(crate::downstream::FitArgs),
    /// N-way K-shot episodes: a readout fitted on the support set alone, with i learned per
    /// episode; mean accuracy with a 95% confidence interval, and the mean learned i.
    Fewshot(crate::downstream::FewShotArgs),
    /// Low-shot regression: train on fractions of the training split over repeated random draws
    /// (ridge readout, i learned through its leave-one-out error); test R^2 with 95% CI.
    Lowshot(crate::downstream::LowShotArgs),
    /// Theorem 5.1's guaranteed error of fitted readouts (amortised and plain linear), each term
    /// printed, from fit.json files.
    Bound(crate::downstream::BoundArgs),
    /// The fine-tuning baseline: train the last 1..4 stages of a ResNet with a linear head,
    /// optionally under a wall-time budget (e.g. an `ail fit` run's). Writes fit.json.
    Finetune(crate::downstream::FineTuneArgs),
    /// Score against parameters updated and against wall time over several fit.json files, with
    /// the Pareto front: a CSV and two SVG plots.
    Pareto(crate::report::ParetoArgs),
    /// One markdown page with the tables and plots of pretraining runs and downstream outputs.
    Report(crate::report::ReportArgs),
    /// Sweep the descriptor i over a grid (11 x 11 for K=2, a line between two corners otherwise)
    /// and measure the invariance to one transform at each point: a heat map or curve plus CSV.
    Interpolate(crate::measure::InterpolateArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum InvariancesArg {
    /// K=2: [spatial, appearance]
    Groups,
    /// K=5: [crop, colour-jitter, grayscale, blur, solarize]
    Individual,
    /// K=7: the CLAR audio augmentations
    Audio,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Encoder: hyper-resnet18|34|50, resnet18|34|50, prompt-vit-tiny|small|base, vit-tiny|small|base.
    #[arg(long, default_value = "hyper-resnet18")]
    pub model: String,
    /// Width multiplier of ResNets (1.0 = 64 channels in the first stage).
    #[arg(long, default_value_t = 1.0)]
    pub width: f32,
    /// Descriptor family, which sets K (plain encoders ignore it).
    #[arg(long, value_enum, default_value_t = InvariancesArg::Groups)]
    pub invariances: InvariancesArg,
    /// Input side in pixels (chooses the ResNet stem: CIFAR up to 64, ImageNet above).
    #[arg(long, default_value_t = 32)]
    pub image_size: usize,
    /// Hidden units of each kernel generator.
    #[arg(long, default_value_t = 32)]
    pub hidden: usize,
    /// Generate the stem's kernel from i too.
    #[arg(long)]
    pub condition_stem: bool,
    /// Add a linear classification head with this many classes to the count.
    #[arg(long, default_value_t = 0)]
    pub num_classes: usize,
}

/// Where the images come from.
#[derive(Debug, Args, Clone)]
pub struct DataArgs {
    /// Dataset: `builtin` (6,000 Fashion-MNIST images shipped with ail), a CIFAR binary folder
    /// (`cifar-10-batches-bin`), an MNIST-style IDX folder, or an ImageFolder (`<root>/<class>/*.png|jpg`).
    #[arg(long, default_value = "builtin")]
    pub data: String,
    /// Format of --data; `auto` decides from the files present.
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    pub format: Format,
    /// Side of the square images fed to the model (images of another size are resized).
    #[arg(long, default_value_t = 32)]
    pub image_size: usize,
    /// Skip (and count) undecodable image files instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Auto,
    Cifar,
    Idx,
    Folder,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum FamilyArg {
    /// K=2: [spatial, appearance]
    Groups,
    /// K=5: [crop, colour-jitter, grayscale, blur, solarize]
    Individual,
}

#[derive(Debug, Args)]
pub struct PreviewArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Invariance descriptor, comma-separated: for K=2 `1,0` spatial, `0,1` appearance, `1,1`
    /// both (the default SimCLR set); for K=5 five values.
    #[arg(long, default_value = "1,1")]
    pub descriptor: String,
    /// Descriptor family: which augmentation each entry switches on.
    #[arg(long, value_enum, default_value_t = FamilyArg::Groups)]
    pub family: FamilyArg,
    /// Output PNG.
    #[arg(long, default_value = "augment-preview.png")]
    pub out: PathBuf,
    /// Number of images (rows).
    #[arg(long, default_value_t = 8)]
    pub images: usize,
    /// Views per image (columns after the original).
    #[arg(long, default_value_t = 6)]
    pub views: usize,
    /// Seed of the image choice and the augmentation parameters.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The full default two-view augmentation pipeline: CPU reference, wgpu kernels, and
    /// torchvision's equivalent when `python3 -c "import torchvision"` works.
    Augment(BenchAugmentArgs),
    /// A plain ResNet-18 (CIFAR stem) training step (forward, cross-entropy, backward, Adam) on
    /// each backend, to compare them: flex on the CPU and wgpu.
    Device(BenchDeviceArgs),
    /// One AI-SimCLR pretraining step (two views augmented on the device, Hyper-ResNet-18, NT-Xent,
    /// AdamW) against the same step written in PyTorch (scripts/bench_pytorch_pretrain.py, with
    /// torchvision's augmentation), measured in the same run: medians, ratio, peak memory.
    Pretrain(BenchPretrainArgs),
    /// Where a pretraining step's time goes, by kind of work (convs, batch norms, kernel
    /// generators, head and loss, optimiser, augmentation; forward and backward), each timed alone
    /// at the step's shapes, next to the same work in PyTorch. Rows are medians of --runs runs
    /// after a warm-up, each waiting for its result.
    Profile(BenchProfileArgs),
    /// One step of the downstream fit (`ail fit`): the frozen encoder (eval-mode BatchNorm) at a
    /// descriptor i that requires a gradient, a linear head, cross-entropy, backward to the head
    /// and to i, AdamW on the head; against the same step in PyTorch.
    Fit(BenchFitArgs),
}

#[derive(Debug, Args)]
pub struct BenchFitArgs {
    /// Width multipliers to measure, comma-separated.
    #[arg(long, default_value = "0.25")]
    pub widths: String,
    /// Images per step, comma-separated.
    #[arg(long, default_value = "256")]
    pub batch_sizes: String,
    #[arg(long, default_value_t = 32)]
    pub image_size: usize,
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[command(flatten)]
    pub torch: TorchArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TCP port to listen on (all interfaces).
    #[arg(long, default_value_t = 3000)]
    pub port: u16,
}

#[derive(Debug, Args)]
pub struct BenchProfileArgs {
    #[arg(long, default_value_t = 0.25)]
    pub width: f32,
    /// Images per step (each gives two views).
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 32)]
    pub image_size: usize,
    /// Timed runs per row (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Skip the PyTorch side.
    #[arg(long)]
    pub no_torch: bool,
    /// Python interpreter for the PyTorch side.
    #[arg(long, default_value = "python3")]
    pub python: String,
}

#[derive(Debug, Args)]
pub struct BenchPretrainArgs {
    /// Width multipliers to measure, comma-separated.
    #[arg(long, default_value = "0.25")]
    pub widths: String,
    /// Batch sizes to measure, comma-separated (each image gives two views).
    #[arg(long, default_value = "64")]
    pub batch_sizes: String,
    #[arg(long, default_value_t = 32)]
    pub image_size: usize,
    /// Timed steps per configuration (median reported), after --warmup steps.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[command(flatten)]
    pub torch: TorchArgs,
    /// Also measure data parallelism on this many devices (see `ail pretrain --devices`): the same
    /// global batch on 1 device, in N shards in turn, and in N shards on N devices.
    #[arg(long, default_value_t = 1)]
    pub devices: usize,
}

/// The PyTorch baseline of `ail bench pretrain` and `ail bench fit`.
#[derive(Debug, Args)]
pub struct TorchArgs {
    /// Skip the PyTorch baseline.
    #[arg(long, conflicts_with = "compare_torch")]
    pub no_torch: bool,
    /// Require the PyTorch baseline (fail if `python3 -c "import torch, torchvision"` does not
    /// work) instead of skipping it with a note.
    #[arg(long)]
    pub compare_torch: bool,
    /// Python interpreter for the PyTorch baseline.
    #[arg(long, default_value = "python3")]
    pub python: String,
}

#[derive(Debug, Args)]
pub struct BenchDeviceArgs {
    /// Width multiplier of the ResNet-18 (0.5 = 32 channels in the first stage).
    #[arg(long, default_value_t = 0.5)]
    pub width: f32,
    /// Images per step (32x32, random).
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Timed steps per backend (the median is reported), after `--warmup` steps.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Untimed steps first (kernel compilation and autotune happen here on wgpu).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Backends to measure, comma-separated: cpu, wgpu.
    #[arg(long, default_value = "cpu,wgpu")]
    pub backends: String,
}

#[derive(Debug, Args)]
pub struct BenchAugmentArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Images per batch (each yields two views).
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Timed runs per pipeline (the median is reported), after one warm-up run.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Skip the torchvision baseline.
    #[arg(long)]
    pub no_torch: bool,
    /// Skip the wgpu measurement.
    #[arg(long)]
    pub no_wgpu: bool,
    /// Python interpreter for the torchvision baseline.
    #[arg(long, default_value = "python3")]
    pub python: String,
}

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
    /// A TOML file with any of the settings below (same names, snake_case), e.g. `steps = 2000`.
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
    /// Dataset: `builtin`, a CIFAR binary folder, an IDX folder or an ImageFolder.
    #[arg(long)]
    pub data: Option<String>,
    /// auto, cifar, idx or folder.
    #[arg(long)]
    pub format: Option<String>,
    /// Side of the square images.
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Contrastive method: simclr, mocov2 (momentum encoder, one negative queue per descriptor) or
    /// mocov3 (momentum encoder, predictor, symmetrised loss, cosine momentum).
    #[arg(long)]
    pub method: Option<String>,
    /// Encoder kind (hyper-resnet18, resnet18, prompt-vit-tiny, ...).
    #[arg(long)]
    pub model: Option<String>,
    /// Width multiplier of ResNets (1.0 = 64 channels in the first stage).
    #[arg(long)]
    pub width: Option<f32>,
    /// groups (K=2), individual (K=5), audio (K=7, with --modality audio), or fixed:<descriptor> for
    /// a plain baseline (fixed:1,1 default set, fixed:0,1 appearance only, fixed:1,0 spatial only,
    /// fixed:1,1,1,1,1,1,1 every audio augmentation).
    #[arg(long)]
    pub invariances: Option<String>,
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
    /// Steps between kNN evaluations of every trained descriptor (0: only at the end).
    #[arg(long)]
    pub monitor_every: Option<u64>,
    /// `image` (default) or `audio`: --data is then an audio folder (`<class>/<file>.wav`) or FSDD
    /// (`recordings/<digit>_<speaker>_<take>.wav`), views come from the seven CLAR augmentations
    /// (--invariances audio, K = 7, 120 descriptors) and the encoder sees 128-bin log-mel
    /// spectrograms of 1 s clips at 16 kHz.
    #[arg(long)]
    pub modality: Option<String>,
    /// Audio: the kNN monitor's labels: class (folder; FSDD: digit), digit or speaker.
    #[arg(long)]
    pub audio_labels: Option<String>,
    /// Audio on FSDD: train on these takes only, e.g. `10-49` (hold the others out).
    #[arg(long)]
    pub takes: Option<String>,
    /// Skip (and count) undecodable image or audio files instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
}

//! Command-line arguments. Values are only parsed here; `common` turns them into real objects.
//!
//! Every clap struct and enum of the command line is defined under this module (the enums of the
//! library's own types, such as `DataFormat` or `Method`, come with them behind their `clap`
//! feature): the arguments of each group of commands in a submodule, all re-exported here. Nothing here refers to a command's module.

use std::path::PathBuf;

use ail_core::Family;
use clap::{Args, Parser, Subcommand};

mod bench;
mod data;
mod downstream;
mod measure;
mod pretrain;
mod report;

pub use bench::{BenchAugmentArgs, BenchCommand, BenchDeviceArgs, BenchFitArgs, BenchPretrainArgs, BenchProfileArgs, TorchArgs};
pub use data::DataArgs;
pub use downstream::{BatchNormArgs, BoundArgs, CompareArgs, EmbedArgs, FewShotArgs, FineTuneArgs, FitArgs, GridArgs, LowShotArgs, PredictArgs, ReadoutArg, SplitArg, TaskArgs};
pub use measure::{InterpolateArgs, MeasureArgs, SourceArgs};
pub use pretrain::PretrainArgs;
pub use report::{ParetoArgs, ReportArgs};

#[derive(Debug, Parser)]
#[command(
    name = "ail",
    version,
    about = "Amortised invariance learning for contrastive self-supervision (ICLR 2023)",
    long_about = "Amortised invariance learning for contrastive self-supervision (ICLR 2023).\n\n\
        One encoder, conditioned on an invariance descriptor i in [0,1]^K, is pretrained so that \
        it can be dialled between invariances (K=2: [spatial, appearance]; K=5: [crop, flip, \
        colour jitter, grayscale, blur]). Run with no command for the built-in demo."
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
    /// Convolution, BatchNorm, kernel-generator and optimiser kernels on the CPU: `own` = ail's
    /// (convolutions with their own backward pass: direct 3x3 kernels on x86-64 with AVX-512 or
    /// AVX2, im2col + GEMM otherwise or with AIL_CONV=im2col in the environment; fused BatchNorm +
    /// ReLU, AdamW in one pass), `burn` = burn's conv2d with its generic backward, BatchNorm from
    /// tensor operations and burn's AdamW (slower; kept for side-by-side measurements). GPUs
    /// always run burn's kernels.
    #[arg(long, global = true, value_enum, default_value_t = ail_core::kernels::CpuKernels::Own)]
    pub cpu_kernels: ail_core::kernels::CpuKernels,
    /// The memory ceiling, in GiB: work whose estimate exceeds it is refused before it starts (a
    /// run: model, optimiser, a step's activations and the training images; a fit: the task's
    /// images and a batch's activations), and inflated or decoded data is bounded by it. Default:
    /// this machine's memory (or the address-space limit, `ulimit -v`, when lower).
    #[arg(long, global = true, value_name = "GIB")]
    pub max_memory: Option<f64>,
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
    /// Export a run's encoder for the browser page (`--web`: one file with the description and the
    /// tensors, weights in f16, which the page opens from its file picker) or for PyTorch
    /// (`--torch`: state_dict names and layouts that python/ail_torch.py loads).
    Export(ExportArgs),
    /// Bring an encoder in from PyTorch: a checkpoint of the authors' release (`--release
    /// PATH.pth.tar`, their MoCo-v2 Hyper-ResNet-50) or an `ail export --torch` directory, written
    /// as an ail checkpoint that every command loads.
    Import(ImportArgs),
    /// Measure how invariant a checkpoint's features are to each transform (flips, crops,
    /// rotation, colour, ...) at one or more descriptors: Mahalanobis-whitened cosine similarity
    /// of f(x) and f(t(x)) (Ericsson et al. 2022). Writes a CSV, a markdown table and a radar chart.
    Measure(MeasureArgs),
    /// Fit a linear head AND the invariance descriptor i (Adam, projected onto [0,1]) on a frozen
    /// encoder in eval mode, for a classification or regression task; epochs, lr and weight decay
    /// chosen on a validation split; the test split scored once. Writes fit.json.
    Fit(FitArgs),
    /// The fair test of a learned i: on one task, with the same epochs and hyper-parameter grid for
    /// every arm and selection on validation only, learned i (from each --starts), the encoder
    /// fixed at each trained descriptor (the best of them chosen on validation), and separately
    /// pretrained plain encoders; over several seeds with 95% intervals. Writes compare.json,
    /// compare.md and compare.svg.
    Compare(CompareArgs),
    /// Features out: every image of a task's split encoded at a descriptor (or at the one an `ail
    /// fit` run learned), written as safetensors and .npy with the labels or targets.
    Embed(EmbedArgs),
    /// Apply a fitted head (`ail fit`'s head.safetensors, at its learned descriptor) to images:
    /// a CSV of predictions, and the score when the images have labels or targets.
    Predict(PredictArgs),
    /// BatchNorm and the descriptor: how far each descriptor's own BatchNorm statistics (computed
    /// on training images at that descriptor) are from the checkpoint's shared running
    /// statistics, per layer, and kNN accuracy per descriptor with each; for a plain encoder, its
    /// one set of running statistics against statistics recomputed on the task's images (its kNN
    /// under the same protocol as an amortised encoder's). Writes batchnorm.json, batchnorm.md
    /// and batchnorm.svg.
    Batchnorm(BatchNormArgs),
    /// N-way K-shot episodes: a readout fitted on the support set alone, with i learned per
    /// episode; mean accuracy with a 95% confidence interval, and the mean learned i.
    Fewshot(FewShotArgs),
    /// Low-shot regression: train on fractions of the training split over repeated random draws
    /// (ridge readout, i learned through its leave-one-out error); test R^2 with 95% CI.
    Lowshot(LowShotArgs),
    /// Theorem 5.1's guaranteed error of fitted readouts (amortised and plain linear), each term
    /// printed, from fit.json files.
    Bound(BoundArgs),
    /// The fine-tuning baseline: train the last 1..4 stages of a ResNet with a linear head,
    /// optionally under a wall-time budget (e.g. an `ail fit` run's). Writes fit.json.
    Finetune(FineTuneArgs),
    /// Score against parameters updated and against wall time over several fit.json files, with
    /// the Pareto front: a CSV and two SVG plots.
    Pareto(ParetoArgs),
    /// One markdown page with the tables and plots of pretraining runs and downstream outputs.
    Report(ReportArgs),
    /// Sweep the descriptor i over a grid (11 x 11 for K=2, a line between two corners otherwise)
    /// and measure the invariance to one transform at each point: a heat map or curve plus CSV.
    Interpolate(InterpolateArgs),
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
    #[arg(long, value_enum, default_value_t = Family::Groups)]
    pub invariances: Family,
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

#[derive(Debug, Args)]
pub struct PreviewArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Invariance descriptor, comma-separated: for K=2 `1,0` spatial, `0,1` appearance, `1,1`
    /// both (the default SimCLR set); for K=5 five values. A fraction t scales its augmentations'
    /// strength (`0.5,0`: milder crops, flips half as often), as pretraining's --fractional-draws.
    #[arg(long, default_value = "1,1")]
    pub descriptor: String,
    /// Descriptor family: which augmentation each entry switches on (groups or individual).
    #[arg(long, value_enum, default_value_t = Family::Groups)]
    pub family: Family,
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

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TCP port to listen on.
    #[arg(long, default_value_t = 3000)]
    pub port: u16,
    /// Address to listen on. The default, 127.0.0.1, accepts clients of this machine only (through
    /// an SSH tunnel, for example); give this machine's address on a trusted network, or 0.0.0.0
    /// for every interface, together with --token-file.
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub bind: std::net::IpAddr,
    /// A file holding a shared secret (its first line); only clients that present it
    /// (`ail pretrain --hosts ... --token-file`) are served. Required for any address other than
    /// loopback. Make one with `head -c 32 /dev/urandom | base64 > token`.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["web", "torch"])))]
pub struct ExportArgs {
    /// The run directory (`ail pretrain --out`, its newest checkpoint) or one checkpoint directory
    /// to export for the browser page.
    #[arg(long, value_name = "RUN")]
    pub web: Option<PathBuf>,
    /// The run directory or checkpoint directory to export in PyTorch's conventions: a directory
    /// with model.safetensors (state_dict names of python/ail_torch.py's modules, Linear weights
    /// `[out, in]`) and config.json.
    #[arg(long, value_name = "RUN")]
    pub torch: Option<PathBuf>,
    /// Where to write: the file for --web (default: encoder.ailweb inside RUN), the directory for
    /// --torch (default: torch/ inside RUN).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["release", "torch"])))]
pub struct ImportArgs {
    /// A checkpoint of the authors' release (`torch.save` of `{'state_dict': ...}`, such as
    /// hyper_resnet50_imagenet100-moco_2_checkpoint_0300.pth.tar): its MoCo-v2 Hyper-ResNet-50
    /// (`module.base_encoder.*`, or a plain ResNet-50 baseline under `module.encoder_q.*`) or
    /// MoCo-v3 Prompt-ViT becomes an ail checkpoint. Every tensor is matched by name and shape; the projection head, the
    /// momentum encoder and the queues are left out.
    #[arg(long, value_name = "PATH")]
    pub release: Option<PathBuf>,
    /// An `ail export --torch` directory (or any directory of the same layout) back into an ail
    /// checkpoint.
    #[arg(long, value_name = "DIR")]
    pub torch: Option<PathBuf>,
    /// The checkpoint directory to write (it must not hold a checkpoint already).
    #[arg(long)]
    pub out: PathBuf,
    /// --release, ResNets: the side of the images the encoder was trained on (224 for ImageNet-100:
    /// the 7x7 stem with max-pool; 64 or less chooses the CIFAR stem). A ViT's follows from its
    /// position embeddings.
    #[arg(long, default_value_t = 224)]
    pub image_size: usize,
}

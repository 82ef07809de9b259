//! `ail bench` and its subcommands.

use clap::{Args, Subcommand};

use super::data::DataArgs;

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

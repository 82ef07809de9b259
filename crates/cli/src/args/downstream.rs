//! The downstream commands: `ail fit`, `ail fewshot`, `ail lowshot`, `ail bound` and `ail finetune`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use ail_core::frozen::BatchNormStatistics;
use ail_core::task::{TaskKind, TaskSpec, parse_takes};
use ail_data::DataFormat;
use ail_data::audio::AudioLabels;

/// Which task, and how to split it.
#[derive(Debug, Clone, Args)]
pub struct TaskArgs {
    #[arg(long, value_enum, default_value_t = TaskKind::Classify)]
    pub task: TaskKind,
    /// The task's data (see --task); `builtin` is the built-in Fashion-MNIST subset.
    #[arg(long, default_value = "builtin")]
    pub data: String,
    /// Format of --data for --task classify.
    #[arg(long, value_enum, default_value_t = DataFormat::Auto)]
    pub format: DataFormat,
    /// Omniglot's strokes zip (strokes_background*.zip), for --task omniglot-pen.
    #[arg(long)]
    pub strokes: Option<PathBuf>,
    /// Fraction of the training data carved out for validation.
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Fraction carved out for testing when the data has no official test split.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Use at most this many training images (after carving validation and test).
    #[arg(long)]
    pub train_size: Option<usize>,
    /// Use at most this many validation images.
    #[arg(long)]
    pub val_size: Option<usize>,
    /// Use at most this many test images.
    #[arg(long)]
    pub test_size: Option<usize>,
    /// Seed of the splits.
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
    /// --task classify: a second dataset with the same classes used whole as the test split,
    /// e.g. the images held out of pretraining (`scripts/cifar-split.sh`: --data
    /// cifar10-split/pretrain --test-data cifar10-split/heldout); --test-fraction is then unused.
    #[arg(long)]
    pub test_data: Option<String>,
    /// --task audio: label clips by `class` (folder name; FSDD: the digit), `digit` or `speaker`.
    #[arg(long, value_enum, default_value_t = AudioLabels::Class)]
    pub audio_labels: AudioLabels,
    /// --task audio on FSDD: only these takes, e.g. `5-9` (recordings held out of pretraining).
    #[arg(long)]
    pub takes: Option<String>,
}

impl TaskArgs {
    /// The task these flags describe.
    pub fn spec(&self) -> Result<TaskSpec, ail_core::CoreError> {
        Ok(TaskSpec {
            task: self.task,
            data: self.data.clone(),
            format: self.format,
            strokes: self.strokes.clone(),
            val_fraction: self.val_fraction,
            test_fraction: self.test_fraction,
            train_size: self.train_size,
            val_size: self.val_size,
            test_size: self.test_size,
            split_seed: self.split_seed,
            audio_labels: self.audio_labels,
            takes: self.takes.as_deref().map(parse_takes).transpose()?,
            test_data: self.test_data.clone(),
        })
    }
}

/// A fit's budget and hyper-parameter grid (`ail fit`, and every arm of `ail compare`).
#[derive(Debug, Clone, Args)]
pub struct GridArgs {
    /// Most epochs; the best epoch on the validation split is kept.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Head learning rates to choose from on the validation split (comma-separated).
    #[arg(long, default_value = "0.001,0.01")]
    pub lrs: String,
    /// Weight decays to choose from on the validation split (comma-separated).
    #[arg(long, default_value = "0,0.0001")]
    pub weight_decays: String,
}

#[derive(Debug, Args)]
pub struct FitArgs {
    /// A pretraining run directory (its newest checkpoint), a checkpoint directory or an encoder file
    /// of `ail export --web`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub task: TaskArgs,
    /// Keep i at this descriptor and fit the head alone (the linear-readout baseline), e.g. 1,1.
    #[arg(long)]
    pub fixed_invariance: Option<String>,
    #[command(flatten)]
    pub grid: GridArgs,
    /// Learning rate of i (Adam).
    #[arg(long, default_value_t = 0.01)]
    pub i_lr: f64,
    /// How the gradient in i treats per-descriptor BatchNorm statistics: `batch-statistics`
    /// (default) normalises each batch with its own statistics kept in the graph, so the gradient
    /// sees them move with i; `held-statistics` holds the descriptor's calibrated statistics fixed
    /// (the partial derivative, which was measured to point away from the right corner in parts
    /// of the dial: EXPERIMENTS.md). Shared statistics do not move with i: both are the same.
    #[arg(long, value_enum, default_value_t = ail_core::fit::DescriptorGradient::default())]
    pub i_gradient: ail_core::fit::DescriptorGradient,
    /// Where learned i starts: `best-corner` (the default), the trained descriptor (corner) whose
    /// fixed readout scores best on validation, found first with the same grid (one grid of
    /// fits per trained descriptor, on features computed once per descriptor: 3 for K = 2, 26 for
    /// the five augmentations, 120 for audio); or a number in [0, 1] for every
    /// entry (the paper: 0.5). Measured on held-out tasks (EXPERIMENTS.md), a start at the best
    /// corner never ended below that corner, while a start at 0.5 sometimes climbed toward the
    /// wrong one.
    #[arg(long, default_value = "best-corner")]
    pub i_init: String,
    /// Train the head alone at the start descriptor for this many epochs (features computed once,
    /// cheap) before the --epochs in which head and i are learned together.
    #[arg(long, default_value_t = 0)]
    pub warm_start_epochs: usize,
    /// After learning i, fit a new head at the learned i alone (i fixed there, features computed
    /// once: the cost of one fixed fit, with the same grid and epochs), and keep it when it scores
    /// better on validation than the head learned with i. The head of a joint fit was trained
    /// while the features moved under it and may lag behind them.
    #[arg(long)]
    pub refit_head: bool,
    /// BatchNorm statistics of the frozen encoder: `per-descriptor` recomputes them at each
    /// descriptor read (on 512 of the task's training images), `shared` uses the checkpoint's
    /// running statistics, one average over every descriptor trained (docs/method.md,
    /// "BatchNorm and the descriptor").
    #[arg(long, value_enum, default_value_t = BatchNormStatistics::default())]
    pub bn_statistics: BatchNormStatistics,
    /// Also score the descriptor quantised to these bits per entry (comma-separated), for `ail bound`.
    #[arg(long, default_value = "1")]
    pub bits: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where fit.json goes.
    #[arg(long, default_value = "runs/fit")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The amortised encoder: a pretraining run directory, a checkpoint directory or an encoder file
    /// of `ail export --web`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Separately pretrained plain encoders to compare with, as NAME=PATH (repeatable), e.g.
    /// `--plain default=runs/simclr-default --plain spatial=runs/simclr-spatial`.
    #[arg(long = "plain", value_name = "NAME=PATH")]
    pub plains: Vec<String>,
    #[command(flatten)]
    pub task: TaskArgs,
    /// The fixed descriptors to read the encoder at (semicolon-separated, e.g. `1,0;0,1;1,1`).
    /// Default: every descriptor the encoder was trained on.
    #[arg(long)]
    pub corners: Option<String>,
    /// Where learned i starts (comma-separated; one learned arm each): a number in [0, 1] for every
    /// entry (the paper: 0.5), or `best-corner`, the corner with the best validation score in the
    /// same seed; `none` runs no learned arm (fixed and plain arms only, which are cheap).
    #[arg(long, default_value = "0.5,best-corner")]
    pub starts: String,
    /// Seeds (head initialisation and data order); scores are reported as mean and 95% interval.
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// The budget and grid of every fit, learned and fixed alike.
    #[command(flatten)]
    pub grid: GridArgs,
    /// Learning rate of i (Adam).
    #[arg(long, default_value_t = 0.01)]
    pub i_lr: f64,
    /// How the gradient in i treats per-descriptor BatchNorm statistics: `batch-statistics`
    /// (default) normalises each batch with its own statistics kept in the graph, so the gradient
    /// sees them move with i; `held-statistics` holds the descriptor's calibrated statistics fixed
    /// (the partial derivative, which was measured to point away from the right corner in parts
    /// of the dial: EXPERIMENTS.md). Shared statistics do not move with i: both are the same.
    #[arg(long, value_enum, default_value_t = ail_core::fit::DescriptorGradient::default())]
    pub i_gradient: ail_core::fit::DescriptorGradient,
    /// BatchNorm statistics of every frozen encoder (see `ail fit --help`).
    #[arg(long, value_enum, default_value_t = BatchNormStatistics::default())]
    pub bn_statistics: BatchNormStatistics,
    /// Where compare.json, compare.md and compare.svg go.
    #[arg(long, default_value = "runs/compare")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct BatchNormArgs {
    /// An amortised encoder: a pretraining run directory, a checkpoint directory or an encoder file of
    /// `ail export --web`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Labelled images (any classification data): the statistics are computed on the training
    /// split, kNN classifies the test split against a bank from the training split.
    #[command(flatten)]
    pub task: TaskArgs,
    /// Descriptors to measure (semicolon-separated). Default: every trained one and the middle.
    #[arg(long)]
    pub descriptors: Option<String>,
    /// Training images whose features form the kNN bank.
    #[arg(long, default_value_t = 2000)]
    pub bank: usize,
    /// Test images classified by kNN.
    #[arg(long, default_value_t = 1000)]
    pub queries: usize,
    #[arg(long, default_value_t = 200)]
    pub k: usize,
    #[arg(long, default_value_t = 0.1)]
    pub temperature: f32,
    /// Where batchnorm.json, batchnorm.md and batchnorm.svg go.
    #[arg(long, default_value = "runs/batchnorm")]
    pub out: PathBuf,
}

/// Which part of a task's data a command reads.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum SplitArg {
    Train,
    Val,
    Test,
    /// Train, validation and test, in that order.
    All,
}

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// A pretraining run directory or a checkpoint directory (optional with --fit, which names one).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// The images (and their labels or targets): the same flags as `ail fit`.
    #[command(flatten)]
    pub task: TaskArgs,
    /// Read the encoder at this descriptor, e.g. 1,1 (default: all ones; plain encoders ignore it).
    #[arg(long, conflicts_with = "fit")]
    pub invariance: Option<String>,
    /// Read the encoder at the descriptor an `ail fit` run learned, with the BatchNorm statistics it
    /// was scored with (its directory or fit.json).
    #[arg(long)]
    pub fit: Option<PathBuf>,
    /// BatchNorm statistics with --invariance (see `ail fit --help`); --fit brings its own.
    #[arg(long, value_enum, default_value_t = BatchNormStatistics::default(), conflicts_with = "fit")]
    pub bn_statistics: BatchNormStatistics,
    /// Which split of the task to embed.
    #[arg(long, value_enum, default_value_t = SplitArg::All)]
    pub split: SplitArg,
    /// Output directory: features.safetensors (`features` [n, D], `labels` [n] or `targets` [n, m]),
    /// features.npy, labels.npy / targets.npy and embed.json (descriptor, class names, split sizes).
    #[arg(long, default_value = "runs/embed")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// An `ail fit` output (its directory or fit.json): the head, the learned descriptor and the
    /// encoder it was fitted on.
    #[arg(long)]
    pub fit: PathBuf,
    /// The encoder, when it is no longer where fit.json says.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// The images: the same flags as `ail fit` (the same flags give the same splits).
    #[command(flatten)]
    pub task: TaskArgs,
    /// Which split to predict.
    #[arg(long, value_enum, default_value_t = SplitArg::Test)]
    pub split: SplitArg,
    /// The CSV of predictions: `index,prediction,target` (classes by name; regression: one
    /// column per output).
    #[arg(long, default_value = "runs/predict/predictions.csv")]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ReadoutArg {
    /// Ridge regression on one-hot targets; i descends its closed-form leave-one-out error.
    Ridge,
    /// A softmax linear head trained on the support set jointly with i.
    Logistic,
}

#[derive(Debug, Args)]
pub struct FewShotArgs {
    /// A pretraining run directory, a checkpoint directory or an encoder file of `ail export --web`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Classes to sample episodes from: `omniglot` (--data images zip), `classify` (any image
    /// dataset) or `audio` (an audio folder or FSDD, with an audio encoder).
    #[arg(long, value_enum, default_value_t = TaskKind::Omniglot)]
    pub task: TaskKind,
    #[arg(long, default_value = "builtin")]
    pub data: String,
    /// --task audio: classes are the `class` (folder; FSDD: digit), the `digit` or the `speaker`.
    #[arg(long, value_enum, default_value_t = AudioLabels::Class)]
    pub audio_labels: AudioLabels,
    /// --task audio on FSDD: only these takes, e.g. `5-9` (recordings held out of pretraining).
    #[arg(long)]
    pub takes: Option<String>,
    /// N: classes per episode.
    #[arg(long, default_value_t = 5)]
    pub ways: usize,
    /// K: support images per class.
    #[arg(long, default_value_t = 1)]
    pub shots: usize,
    /// Q: query images per class.
    #[arg(long, default_value_t = 15)]
    pub queries: usize,
    #[arg(long, default_value_t = 100)]
    pub episodes: usize,
    #[arg(long, value_enum, default_value_t = ReadoutArg::Ridge)]
    pub readout: ReadoutArg,
    /// Adam steps on i per episode.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    #[arg(long, default_value_t = 0.05)]
    pub i_lr: f64,
    /// Where learned i starts in each episode: a number in [0, 1] for every entry (the paper:
    /// 0.5), or `best-corner`, the trained corner (descriptor) whose features give the smallest
    /// leave-one-out error of a ridge readout on the episode's support set (the support set is
    /// all the labelled data an episode has; needs --shots 2 or more, since leaving the one image
    /// of a class out removes the class). With --steps 0, i stays at that corner: the fixed
    /// readout at the corner each episode chooses, the fair baseline of a learned i.
    #[arg(long, default_value = "0.5")]
    pub i_init: String,
    /// Keep i fixed (e.g. 1,1): the baseline of one fixed invariance.
    #[arg(long)]
    pub fixed_invariance: Option<String>,
    /// BatchNorm statistics (see `ail fit --help`); per-descriptor ones are computed on 512 images
    /// of the episode pool, without their labels.
    #[arg(long, value_enum, default_value_t = BatchNormStatistics::default())]
    pub bn_statistics: BatchNormStatistics,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where fewshot.json goes.
    #[arg(long, default_value = "runs/fewshot")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct LowShotArgs {
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub task: TaskArgs,
    /// Fractions of the training split to train on.
    #[arg(long, default_value = "0.05,0.1,0.2")]
    pub fractions: String,
    /// Random draws of the training subset per fraction.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Adam steps on i (through the ridge readout's leave-one-out error).
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    #[arg(long, default_value_t = 0.05)]
    pub i_lr: f64,
    /// Where learned i starts: a number in [0, 1] for every entry (the paper: 0.5), or
    /// `best-corner`, the trained corner whose features give the smallest leave-one-out error of
    /// the ridge readout on the training subset.
    #[arg(long, default_value = "0.5")]
    pub i_init: String,
    #[arg(long)]
    pub fixed_invariance: Option<String>,
    /// BatchNorm statistics (see `ail fit --help`), computed on the task's training split.
    #[arg(long, value_enum, default_value_t = BatchNormStatistics::default())]
    pub bn_statistics: BatchNormStatistics,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "runs/lowshot")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct BoundArgs {
    /// fit.json files of `ail fit` on classification tasks (amortised and plain readouts).
    #[arg(long, required = true, num_args = 1..)]
    pub fit: Vec<PathBuf>,
    /// Confidence 1 - delta.
    #[arg(long, default_value_t = 0.05)]
    pub delta: f64,
}

#[derive(Debug, Args)]
pub struct FineTuneArgs {
    /// A pretraining run directory or a checkpoint directory (a ResNet).
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub task: TaskArgs,
    /// Stages to train, counted from the last (1..=4); earlier stages stay frozen in eval mode.
    #[arg(long, default_value_t = 1)]
    pub stages: usize,
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    /// Stop training after this many seconds.
    #[arg(long, conflicts_with = "budget_from")]
    pub time_budget: Option<f64>,
    /// Use the wall time of this fit.json (an `ail fit` run) as the time budget.
    #[arg(long)]
    pub budget_from: Option<PathBuf>,
    /// Descriptor an amortised encoder is read at while fine-tuning (plain encoders ignore it).
    #[arg(long, default_value = "1,1")]
    pub descriptor: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where fit.json goes (the same format as `ail fit`, for `ail pareto`).
    #[arg(long, default_value = "runs/finetune")]
    pub out: PathBuf,
}

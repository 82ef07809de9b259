//! `ail measure` and `ail interpolate`.

use std::path::PathBuf;

use ail_core::invariance::DEFAULT_RIDGE;
use clap::Args;

use ail_data::DataFormat;

/// The encoder, the images and the comparison, shared by `measure` and `interpolate`.
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// A run directory (the `--out` of `ail pretrain`; its newest checkpoint is used), one
    /// checkpoint directory (holds checkpoint.json) or an encoder file of `ail export --web`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Dataset: `builtin` (6,000 Fashion-MNIST images shipped with ail), a CIFAR binary folder, an
    /// MNIST-style IDX folder, or an ImageFolder (`<root>/<class>/*.png|jpg`).
    #[arg(long, default_value = "builtin")]
    pub data: String,
    /// Format of --data; `auto` decides from the files present.
    #[arg(long, value_enum, default_value_t = DataFormat::Auto)]
    pub format: DataFormat,
    /// Side of the square images fed to the encoder (default: the checkpoint's).
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Skip (and count) undecodable image files instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
    /// Seed of the choice of images.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Compare raw features with plain cosine similarity instead of whitening them first.
    #[arg(long)]
    pub plain_cosine: bool,
    /// Original images whose features give the mean and covariance for whitening (capped at the
    /// data size, at least --images): the first of them, in the order drawn with --seed, are the
    /// measured ones. Costs this many extra forward passes per descriptor; use several times the
    /// feature dimension, as whitening amplifies poorly estimated directions.
    #[arg(long, default_value_t = 2000)]
    pub stats_images: usize,
    /// Ridge added to the feature covariance before whitening, as a fraction of the mean variance
    /// (needed when there are fewer statistics images than feature dimensions).
    #[arg(long, default_value_t = DEFAULT_RIDGE)]
    pub ridge: f64,
}

#[derive(Debug, Args)]
pub struct MeasureArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Images measured (drawn with --seed; the first of the --stats-images).
    #[arg(long, default_value_t = 500)]
    pub images: usize,
    /// A descriptor to measure at, comma-separated (repeat the flag for several). Default: every
    /// descriptor with one entry off, then all ones (K=2: 1,0 0,1 1,1); none for plain encoders.
    #[arg(long = "descriptor")]
    pub descriptors: Vec<String>,
    /// Transforms, comma-separated: resized-crop, h-flip, v-flip, scale, rotation, translation,
    /// shear, grayscale, brightness, contrast, saturation, hue, blur.
    #[arg(long, default_value = "all")]
    pub transforms: String,
    /// Output directory: invariance.csv, invariance.md, radar.svg.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct InterpolateArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// The transform whose invariance is swept (one of `ail measure`'s names, e.g. grayscale).
    #[arg(long)]
    pub transform: String,
    /// Points per axis: a grid x grid sweep of i for K=2, a line of --grid points otherwise.
    #[arg(long, default_value_t = 11)]
    pub grid: usize,
    /// Images measured at each point (drawn with --seed; the first of the --stats-images).
    #[arg(long, default_value_t = 200)]
    pub images: usize,
    /// Start of a line sweep (with --to); default for K>2: the first one-hot descriptor.
    #[arg(long)]
    pub from: Option<String>,
    /// End of a line sweep (with --from); default for K>2: the second one-hot descriptor.
    #[arg(long)]
    pub to: Option<String>,
    /// Output directory: interpolate-<transform>.csv and interpolate-<transform>.svg.
    #[arg(long)]
    pub out: PathBuf,
}

//! `ail measure` and `ail interpolate`: how invariant an encoder's features are to each transform,
//! after Ericsson, Gouk & Hospedales, [Why Do Self-Supervised Models Transfer? Investigating the
//! Impact of Invariance on Downstream Tasks](https://arxiv.org/abs/2111.11398) (2022), as
//! METHOD.md, "Measuring invariance", specifies.
//!
//! For `n` images `x` and a transform `t` with a grid of parameters `p`: features `f(x)` and
//! `f(t_p(x))` at one descriptor `i`; `mu` and `Sigma` are the mean and covariance of the features
//! of `N >= n` original images (`--stats-images`, of which the `n` measured ones, `--images`, are
//! the first), `Sigma = L L^T` its Cholesky factor, and the similarity of an image is the cosine of
//! `L^-1 (f(x) - mu)` and `L^-1 (f(t_p(x)) - mu)`, averaged over the `n` images and the parameters
//! (1 = the features do not move). Every square root of `Sigma^-1` gives the same inner products, so
//! this is METHOD.md's `L = chol(Sigma^-1)` with one triangular solve per vector and no inverse.
//! `--plain-cosine` compares the raw features instead (and needs no statistics). `ail interpolate`
//! repeats one transform's measurement over a grid of descriptors (the paper's Figure 1, right).
//!
//! Deviations and choices:
//! - `mu` and `Sigma` come from a larger set of originals than the measured images (default 2,000,
//!   capped at the data size): whitening amplifies the covariance's smallest directions, which a
//!   few hundred images estimate badly for `D` = 256..512 (a 256-dimensional encoder read 0.22 with
//!   300 images and 0.37 with 1,500 for the same flip when both came from the measured images).
//!   Only originals enter the statistics, so this costs `N` forward passes per descriptor, the
//!   measured images' among them;
//! - `Sigma` gets a ridge of `--ridge` times its mean variance on the diagonal, so the Cholesky
//!   factor exists when there are fewer statistics images than feature dimensions or dead features;
//! - geometric transforms resample bilinearly (zero outside the image), which varies smoothly with
//!   the parameter (torchvision's `rotate`/`affine` default to nearest);
//! - the parameter grids are ours (see [`transform`]), fixed so that runs compare.
//!
//! Whitened similarities still depend on `--stats-images` relative to the feature dimension `D` (a
//! sample covariance underestimates its smallest eigenvalues), far less once it is several times
//! `D`; `--images` only sets how many images are averaged. Compare numbers measured with the same
//! `--stats-images` on encoders of the same `D`.
//!
//! The measurement itself ([`Reference`], [`invariance_table`]) only sees a feature function
//! `(images in [0, 1], n) -> [n, D]`, so it is tested on hand-made functions.

use std::path::{Path, PathBuf};

use ail_augment::Affine;
use ail_augment::affine::affine_reference;
use ail_augment::blur_solarize::blur_pass_reference;
use ail_augment::color_jitter::{
    brightness_reference, contrast_reference, grayscale_reference, hue_reference, saturation_reference,
};
use ail_core::checkpoint;
use ail_core::frozen::{Frozen, channel_statistics, resolve_checkpoint};
use ail_core::io::write_atomic;
use ail_core::linalg::{cholesky, forward_substitute, gram_t};
use ail_core::{CoreError, Descriptor};
use ail_data::epoch_order;
use anyhow::Context;
use burn::prelude::*;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::{DataArgs, Format, Global};
use crate::common;
use crate::svg;

// ---------------------------------------------------------------------------------------------
// Transforms
// ---------------------------------------------------------------------------------------------

/// Every transform, in report order. Names are stable: they key the CSV rows and `--transforms`.
pub const TRANSFORM_NAMES: [&str; 13] = [
    "resized-crop",
    "h-flip",
    "v-flip",
    "scale",
    "rotation",
    "translation",
    "shear",
    "grayscale",
    "brightness",
    "contrast",
    "saturation",
    "hue",
    "blur",
];

/// One setting of a transform, applied to a `[C, H, W]` image in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    /// Any geometric transform (crops, flips, rotation, ...), resampled to the same size.
    Affine(Affine),
    Brightness(f32),
    Contrast(f32),
    Saturation(f32),
    /// Hue shift in turns.
    Hue(f32),
    Grayscale,
    /// Gaussian blur with `2 radius + 1` taps.
    Blur { sigma: f32, radius: usize },
}

impl Op {
    /// The transformed `[C, H, W]` image (same shape).
    pub fn apply(&self, image: &[f32], shape: [usize; 3]) -> Vec<f32> {
        let [c, h, w] = shape;
        let mut out = image.to_vec();
        match *self {
            Op::Affine(affine) => return affine_reference(image, shape, [h, w], &affine),
            Op::Brightness(f) => brightness_reference(&mut out, f),
            Op::Contrast(f) => contrast_reference(&mut out, c, f),
            Op::Saturation(f) => saturation_reference(&mut out, c, f),
            Op::Hue(shift) => hue_reference(&mut out, c, shift),
            Op::Grayscale => grayscale_reference(&mut out, c),
            Op::Blur { sigma, radius } => {
                let rows = blur_pass_reference(image, shape, sigma, radius, false);
                return blur_pass_reference(&rows, shape, sigma, radius, true);
            }
        }
        out
    }

    /// Applies the setting to `num_images` images laid out `[n, C, H, W]`.
    pub fn apply_all(&self, images: &[f32], num_images: usize, shape: [usize; 3]) -> Vec<f32> {
        let len = shape.iter().product::<usize>();
        assert_eq!(images.len(), num_images * len, "images do not match [{num_images}, {shape:?}]");
        images.chunks_exact(len).flat_map(|image| self.apply(image, shape)).collect()
    }
}

/// A named transform with its parameter grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Transform {
    pub name: &'static str,
    pub settings: Vec<Op>,
}

/// The transform called `name` for images of `[C, H, W]`, with its grid:
///
/// | name           | settings                                                                  |
/// |----------------|---------------------------------------------------------------------------|
/// | `resized-crop` | boxes of 25 %, 50 %, 75 % of the area at the centre and the four corners, resized back |
/// | `h-flip`, `v-flip` | the flip                                                              |
/// | `scale`        | zoom 0.6, 0.8, 1.25, 1.5 about the centre                                 |
/// | `rotation`     | +-15, +-30, +-45 degrees                                                  |
/// | `translation`  | 1/8 and 1/4 of the side, left, right, up and down                         |
/// | `shear`        | +-10, +-20 degrees (horizontal)                                           |
/// | `grayscale`    | ITU-R 601 luma                                                            |
/// | `brightness`, `contrast` | factors 0.6, 0.8, 1.2, 1.4                                      |
/// | `saturation`   | factors 0.4, 0.7, 1.3, 1.6                                                |
/// | `hue`          | shifts +-0.1, +-0.2 turns                                                 |
/// | `blur`         | gaussian sigma 0.5, 1, 1.5, 2 pixels (radius 3 sigma)                     |
pub fn transform(name: &str, [_, h, w]: [usize; 3]) -> Option<Transform> {
    let affine = |a: Affine| Op::Affine(a);
    let settings: Vec<Op> = match name {
        "resized-crop" => {
            let mut ops = Vec::new();
            for area in [0.25f64, 0.5, 0.75] {
                let bh = ((area.sqrt() * h as f64).round() as usize).clamp(1, h);
                let bw = ((area.sqrt() * w as f64).round() as usize).clamp(1, w);
                let boxes = [((h - bh) / 2, (w - bw) / 2), (0, 0), (0, w - bw), (h - bh, 0), (h - bh, w - bw)];
                ops.extend(boxes.map(|(top, left)| affine(Affine::crop(top, left, bh, bw, h, w))));
            }
            ops
        }
        "h-flip" => vec![affine(Affine::identity(h, w).then_hflip(w))],
        "v-flip" => vec![affine(Affine::identity(h, w).then_vflip(h))],
        "scale" => [0.6, 0.8, 1.25, 1.5].map(|f| affine(Affine::scale(h, w, f))).to_vec(),
        "rotation" => [-45.0, -30.0, -15.0, 15.0, 30.0, 45.0].map(|d| affine(Affine::rotation(h, w, d))).to_vec(),
        "translation" => {
            let mut ops = Vec::new();
            for fraction in [0.125f32, 0.25] {
                let (dx, dy) = (fraction * w as f32, fraction * h as f32);
                for (x, y) in [(dx, 0.0), (-dx, 0.0), (0.0, dy), (0.0, -dy)] {
                    ops.push(affine(Affine::translation(h, w, x, y)));
                }
            }
            ops
        }
        "shear" => [-20.0, -10.0, 10.0, 20.0].map(|d| affine(Affine::shear(h, w, d))).to_vec(),
        "grayscale" => vec![Op::Grayscale],
        "brightness" => [0.6, 0.8, 1.2, 1.4].map(Op::Brightness).to_vec(),
        "contrast" => [0.6, 0.8, 1.2, 1.4].map(Op::Contrast).to_vec(),
        "saturation" => [0.4, 0.7, 1.3, 1.6].map(Op::Saturation).to_vec(),
        "hue" => [-0.2, -0.1, 0.1, 0.2].map(Op::Hue).to_vec(),
        "blur" => {
            let max_radius = h.min(w).saturating_sub(1);
            [0.5f32, 1.0, 1.5, 2.0]
                .map(|sigma| Op::Blur { sigma, radius: ((3.0 * sigma).ceil() as usize).min(max_radius) })
                .to_vec()
        }
        _ => return None,
    };
    let name = TRANSFORM_NAMES.iter().find(|n| **n == name).expect("every matched name is listed");
    Some(Transform { name, settings })
}

/// Parses a comma-separated list of transform names (`all` or empty: every transform).
pub fn parse_transforms(list: &str, shape: [usize; 3]) -> anyhow::Result<Vec<Transform>> {
    let list = list.trim();
    if list.is_empty() || list == "all" {
        return Ok(TRANSFORM_NAMES.iter().map(|n| transform(n, shape).expect("listed names exist")).collect());
    }
    let mut out: Vec<Transform> = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let t = transform(name, shape).with_context(|| {
            format!("unknown transform `{name}`: use any of {} (comma-separated), or all", TRANSFORM_NAMES.join(", "))
        })?;
        if !out.iter().any(|o| o.name == t.name) {
            out.push(t);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The measurement
// ---------------------------------------------------------------------------------------------

/// How two feature vectors are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Cosine after centring on the originals' mean and whitening by their covariance.
    Mahalanobis,
    /// Cosine of the raw features.
    Cosine,
}

impl Metric {
    /// The name in the CSV's `metric` column.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Mahalanobis => "mahalanobis-cosine",
            Metric::Cosine => "cosine",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Metric::Mahalanobis => "Mahalanobis-whitened cosine similarity",
            Metric::Cosine => "cosine similarity",
        }
    }
}

/// The originals' features, ready to compare transformed features against.
#[derive(Debug, Clone)]
pub struct Reference {
    metric: Metric,
    feature_dim: usize,
    num_images: usize,
    /// `mu`, `[D]` (zeros for plain cosine).
    mean: Vec<f64>,
    /// Lower Cholesky factor `L` of the regularised covariance, `[D, D]` (Mahalanobis only).
    factor: Vec<f64>,
    /// The measured originals, centred and whitened (or raw), `[num_images, D]`.
    originals: Vec<f64>,
}

impl Reference {
    /// From the features `[num_statistics, D]` (row-major) of the statistics images, whose first
    /// `num_images` rows are the measured originals. Mahalanobis takes `mu` and `Sigma` from all
    /// `num_statistics` rows, plain cosine ignores the rows after the measured ones. `ridge`
    /// (Mahalanobis only) adds `ridge * trace(Sigma) / D` to the covariance's diagonal; 0 is allowed
    /// when `Sigma` is full rank.
    pub fn new(
        features: &[f32],
        num_statistics: usize,
        num_images: usize,
        metric: Metric,
        ridge: f64,
    ) -> Result<Self, CoreError> {
        assert!(
            num_statistics > 0 && features.len().is_multiple_of(num_statistics),
            "features do not split into {num_statistics} rows"
        );
        assert!(
            (1..=num_statistics).contains(&num_images),
            "{num_images} measured images are not among the {num_statistics} statistics images"
        );
        let d = features.len() / num_statistics;
        if let Some(bad) = features.iter().find(|v| !v.is_finite()) {
            return Err(CoreError::Numeric(format!("a feature is {bad}: the encoder's outputs are not finite")));
        }
        let mut reference =
            Self { metric, feature_dim: d, num_images, mean: vec![0.0; d], factor: Vec::new(), originals: Vec::new() };
        if metric == Metric::Mahalanobis {
            for row in features.chunks_exact(d) {
                for (m, &v) in reference.mean.iter_mut().zip(row) {
                    *m += v as f64 / num_statistics as f64;
                }
            }
            let centred: Vec<f64> =
                features.chunks_exact(d).flat_map(|row| row.iter().zip(&reference.mean).map(|(&v, m)| v as f64 - m)).collect();
            let mut covariance = gram_t(&centred, num_statistics, d);
            covariance.iter_mut().for_each(|v| *v /= num_statistics as f64);
            let trace: f64 = (0..d).map(|j| covariance[j * d + j]).sum();
            // Constant features (trace 0) would leave nothing to scale the ridge by.
            let added = if trace > 0.0 { ridge * trace / d as f64 } else { ridge.max(1e-12) };
            (0..d).for_each(|j| covariance[j * d + j] += added);
            reference.factor = cholesky(&covariance, d)?;
        }
        reference.originals = features.chunks_exact(d).take(num_images).flat_map(|row| reference.embed(row)).collect();
        Ok(reference)
    }

    /// One feature vector in the space where cosines are taken: `L^-1 (f - mu)` or `f`.
    fn embed(&self, feature: &[f32]) -> Vec<f64> {
        let mut v: Vec<f64> = feature.iter().zip(&self.mean).map(|(&f, m)| f as f64 - m).collect();
        if self.metric == Metric::Mahalanobis {
            forward_substitute(&self.factor, self.feature_dim, &mut v, 1);
        }
        v
    }

    /// The similarity of each original to its transformed version (`[num_images, D]`, the same
    /// image order), averaged over the images.
    pub fn similarity(&self, transformed: &[f32]) -> f64 {
        assert_eq!(transformed.len(), self.num_images * self.feature_dim, "transformed features do not match the originals");
        let total: f64 = transformed
            .chunks_exact(self.feature_dim)
            .zip(self.originals.chunks_exact(self.feature_dim))
            .map(|(t, o)| cosine(o, &self.embed(t)))
            .sum();
        total / self.num_images as f64
    }
}

/// `a . b / (|a| |b|)`; two zero vectors count as equal (1), one zero vector as unrelated (0).
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return if na == nb { 1.0 } else { 0.0 };
    }
    (dot / (na * nb)).clamp(-1.0, 1.0)
}

/// A feature function: `n` images `[n, C, H, W]` in `[0, 1]` -> features `[n, D]` (row-major).
pub type FeatureFn<'a> = dyn Fn(&[f32], usize) -> Vec<f32> + 'a;

/// How many original images a feature function sees for its statistics: all `num_statistics`
/// for Mahalanobis, only the `num_images` measured ones for plain cosine.
fn num_references(metric: Metric, num_statistics: usize, num_images: usize) -> usize {
    match metric {
        Metric::Mahalanobis => num_statistics,
        Metric::Cosine => num_images,
    }
}

/// The invariance of each feature function to each transform, `[function][transform]`: the mean
/// over the measured images and the transform's settings of the similarity of `f(x)` and `f(t(x))`.
///
/// `images` are the statistics images `[num_statistics, C, H, W]` in `[0, 1]`, whose features give
/// the whitening's mean and covariance (originals only); the first `num_images` of them are the
/// measured ones, transformed and compared. Plain cosine only looks at the measured ones. Each
/// transformed batch is made once and fed to every function.
#[allow(clippy::too_many_arguments)]
pub fn invariance_table(
    functions: &[&FeatureFn<'_>],
    images: &[f32],
    num_statistics: usize,
    num_images: usize,
    shape: [usize; 3],
    transforms: &[Transform],
    metric: Metric,
    ridge: f64,
) -> Result<Vec<Vec<f64>>, CoreError> {
    let len = shape.iter().product::<usize>();
    assert_eq!(images.len(), num_statistics * len, "images do not match [{num_statistics}, {shape:?}]");
    assert!(
        (1..=num_statistics).contains(&num_images),
        "{num_images} measured images are not among the {num_statistics} statistics images"
    );
    let rows = num_references(metric, num_statistics, num_images);
    let references = functions
        .iter()
        .map(|f| Reference::new(&f(&images[..rows * len], rows), rows, num_images, metric, ridge))
        .collect::<Result<Vec<_>, _>>()?;
    let measured = &images[..num_images * len];
    let mut table = vec![vec![0.0; transforms.len()]; functions.len()];
    for (t, transform) in transforms.iter().enumerate() {
        for op in &transform.settings {
            let transformed = op.apply_all(measured, num_images, shape);
            for (k, (f, reference)) in functions.iter().zip(&references).enumerate() {
                table[k][t] += reference.similarity(&f(&transformed, num_images)) / transform.settings.len() as f64;
            }
        }
    }
    Ok(table)
}

/// The invariance of one feature function to one transform (see [`invariance_table`]).
#[allow(clippy::too_many_arguments)]
pub fn invariance(
    features: &FeatureFn<'_>,
    images: &[f32],
    num_statistics: usize,
    num_images: usize,
    shape: [usize; 3],
    transform: &Transform,
    metric: Metric,
    ridge: f64,
) -> Result<f64, CoreError> {
    let transforms = std::slice::from_ref(transform);
    Ok(invariance_table(&[features], images, num_statistics, num_images, shape, transforms, metric, ridge)?[0][0])
}

/// How many images `num_functions` feature functions see in [`invariance_table`] (for progress
/// bars): the originals for the statistics, then every setting's transformed measured images.
pub fn num_forwards(
    num_functions: usize,
    num_statistics: usize,
    num_images: usize,
    transforms: &[Transform],
    metric: Metric,
) -> u64 {
    let settings: usize = transforms.iter().map(|t| t.settings.len()).sum();
    (num_functions * (num_references(metric, num_statistics, num_images) + num_images * settings)) as u64
}

// ---------------------------------------------------------------------------------------------
// Command-line arguments
// ---------------------------------------------------------------------------------------------

/// The encoder, the images and the comparison, shared by `measure` and `interpolate`.
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// A run directory (the `--out` of `ail pretrain`; its newest checkpoint is used) or one
    /// checkpoint directory (holds checkpoint.json).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Dataset: `builtin` (6,000 Fashion-MNIST images shipped with ail), a CIFAR binary folder, an
    /// MNIST-style IDX folder, or an ImageFolder (`<root>/<class>/*.png|jpg`).
    #[arg(long, default_value = "builtin")]
    pub data: String,
    /// Format of --data; `auto` decides from the files present.
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    pub format: Format,
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
    #[arg(long, default_value_t = 1e-3)]
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

// ---------------------------------------------------------------------------------------------
// Shared setup: checkpoint, images, descriptors
// ---------------------------------------------------------------------------------------------

/// A loaded encoder and the images it is measured on.
struct Setup {
    frozen: Frozen,
    /// The statistics images, `[num_statistics, C, H, W]` in `[0, 1]`; the first `num_images` are
    /// measured.
    images: Vec<f32>,
    num_statistics: usize,
    num_images: usize,
    shape: [usize; 3],
    metric: Metric,
    ridge: f64,
    data: String,
}

impl Setup {
    fn open(global: &Global, source: &SourceArgs, images: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(images >= 2, "--images must be at least 2 (a mean and covariance need several images)");
        anyhow::ensure!(
            source.ridge.is_finite() && source.ridge >= 0.0,
            "--ridge must be a non-negative number (got {})",
            source.ridge
        );
        let dir = resolve_checkpoint(&source.checkpoint)?;
        let meta = checkpoint::read_meta(&dir)?;
        anyhow::ensure!(
            meta.audio.is_none(),
            "{} is an audio encoder; the measured transforms are image transforms (measure audio encoders through \
             `ail fewshot --task audio` / `ail fit --task audio` instead)",
            dir.display()
        );
        let encoder = &meta.encoder;
        let image_size = source.image_size.unwrap_or(encoder.image_size);
        if image_size != encoder.image_size {
            anyhow::ensure!(
                !encoder.kind.is_vit(),
                "{kind} was trained on {size}x{size} images and its patch grid is fixed: drop --image-size or pass --image-size {size}",
                kind = encoder.kind,
                size = encoder.image_size
            );
            eprintln!("note: the encoder was trained on {0}x{0} images; measuring at {image_size}x{image_size}", encoder.image_size);
        }
        let device = common::device(global)?;
        let data_args =
            DataArgs { data: source.data.clone(), format: source.format, image_size, skip_bad: source.skip_bad };
        let data = std::sync::Arc::unwrap_or_clone(common::load(&data_args)?);
        anyhow::ensure!(data.len() >= 2, "{} holds {} image(s): measuring needs at least 2", source.data, data.len());
        let channels = encoder.in_channels;
        let data = if data.channels == channels {
            data
        } else {
            anyhow::ensure!(
                matches!(channels, 1 | 3),
                "{} takes {channels}-channel images, but the data loads as {}-channel images (ail converts only between grey and RGB)",
                dir.display(),
                data.channels
            );
            eprintln!("note: converting the {}-channel images to the encoder's {channels} channels", data.channels);
            data.to_channels(channels).context("converting the images to the encoder's channels")?
        };
        let frozen = Frozen::open(&dir, &device.device, || channel_statistics(&data.pixels, data.shape()))
            .with_context(|| format!("opening the checkpoint {}", dir.display()))?;
        anyhow::ensure!(
            frozen.input_shape()[0] == data.channels,
            "the encoder takes {}-channel images, the data has {}",
            frozen.input_shape()[0],
            data.channels
        );
        let num_images = images.min(data.len());
        if num_images < images {
            eprintln!("note: {} holds {} images; measuring all of them (--images {images})", source.data, data.len());
        }
        let metric = if source.plain_cosine { Metric::Cosine } else { Metric::Mahalanobis };
        // The measured images are the first statistics images; plain cosine needs no statistics.
        let num_statistics = match metric {
            Metric::Mahalanobis => source.stats_images.max(num_images).min(data.len()),
            Metric::Cosine => num_images,
        };
        let chosen = data.subset(&epoch_order(data.len(), source.seed, 0, true)[..num_statistics]);
        let d = frozen.feature_dim();
        if metric == Metric::Mahalanobis {
            eprintln!("whitening with the mean and covariance of {num_statistics} original images, the {num_images} measured among them");
            if num_statistics <= d {
                let room = if data.len() <= d { format!(" ({} holds only {})", source.data, data.len()) } else { String::new() };
                eprintln!(
                    "note: {num_statistics} statistics images for {d}-dimensional features: the covariance is rank-deficient \
                     and --ridge {} fills the rest; pass --stats-images above {d} for a full-rank estimate{room}",
                    source.ridge
                );
            }
        }
        eprintln!(
            "encoder: {} ({}, K = {}, {}-dimensional features, step {})",
            dir.display(),
            frozen.meta.encoder.kind,
            frozen.num_invariances(),
            frozen.feature_dim(),
            frozen.meta.step
        );
        Ok(Self {
            images: chosen.pixels.iter().map(|&p| p as f32 / 255.0).collect(),
            num_statistics,
            num_images,
            shape: chosen.shape(),
            frozen,
            metric,
            ridge: source.ridge,
            data: source.data.clone(),
        })
    }

    /// [`invariance_table`] on these images, with this comparison.
    fn table(&self, functions: &[&FeatureFn<'_>], transforms: &[Transform]) -> Result<Vec<Vec<f64>>, CoreError> {
        let (images, shape) = (&self.images, self.shape);
        invariance_table(functions, images, self.num_statistics, self.num_images, shape, transforms, self.metric, self.ridge)
    }

    /// How the mean and covariance were estimated, for reports ("" for plain cosine).
    fn statistics_note(&self) -> String {
        match self.metric {
            Metric::Mahalanobis => format!(
                " Mean and covariance from the features of {} original images, the measured ones among them.",
                self.num_statistics
            ),
            Metric::Cosine => String::new(),
        }
    }

    /// The encoder's features at `i`, counting images on `bar`.
    fn features<'a>(&'a self, i: &'a [f32], bar: &'a ProgressBar) -> impl Fn(&[f32], usize) -> Vec<f32> + 'a {
        const CHUNK: usize = 128;
        move |images: &[f32], n: usize| {
            let [c, h, w] = self.shape;
            let len = c * h * w;
            let inner = self.frozen.device().clone().without_autodiff();
            let mut out = Vec::with_capacity(n * self.frozen.feature_dim());
            for s in (0..n).step_by(CHUNK) {
                let e = (s + CHUNK).min(n);
                let x = Tensor::<4>::from_data(TensorData::new(images[s * len..e * len].to_vec(), [e - s, c, h, w]), &inner);
                let f = self.frozen.features(x, i).into_data().convert::<f32>();
                out.extend(f.try_into_vec::<f32>().unwrap_or_else(|e| panic!("features read back as f32: {e:?}")));
                bar.inc((e - s) as u64);
            }
            out
        }
    }

    /// Parses a descriptor for this encoder (length, range), naming the flag on error.
    fn descriptor(&self, input: &str, flag: &str) -> anyhow::Result<Vec<f32>> {
        let k = self.frozen.num_invariances();
        let values = match self.frozen.family().filter(|f| f.num_invariances() == k) {
            Some(family) => Descriptor::parse(input, family)?.0,
            None => input
                .split(',')
                .map(|s| s.trim().parse::<f32>().with_context(|| format!("`{}` is not a number", s.trim())))
                .collect::<anyhow::Result<Vec<f32>>>()?,
        };
        self.frozen.check_descriptor(&values).with_context(|| format!("{flag} {input}"))?;
        Ok(values)
    }

    /// The name of entry `j` of the descriptor (`i[0] spatial`), or just `i[j]`.
    fn entry_label(&self, j: usize) -> String {
        match self.frozen.family().and_then(|f| f.entry_names().get(j).copied()) {
            Some(name) => format!("i[{j}] {name}"),
            None => format!("i[{j}]"),
        }
    }
}

/// The default descriptors for `k` entries: each with one entry off (the last entry first), then
/// all ones. For K=2: `1,0`, `0,1`, `1,1`, the trained set.
pub fn default_descriptors(k: usize) -> Vec<Vec<f32>> {
    let mut out: Vec<Vec<f32>> = (0..k).rev().map(|off| (0..k).map(|j| if j == off { 0.0 } else { 1.0 }).collect()).collect();
    out.push(vec![1.0; k]);
    out
}

/// `1,0` for a descriptor, `plain` for the empty one of a plain encoder.
fn descriptor_label(i: &[f32]) -> String {
    if i.is_empty() { "plain".into() } else { Descriptor(i.to_vec()).to_string() }
}

fn column_label(i: &[f32]) -> String {
    if i.is_empty() { "plain".into() } else { format!("i = [{}]", descriptor_label(i)) }
}

fn progress(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} images [{elapsed}, eta {eta}]").expect("valid template"),
    );
    bar.set_message(what.to_string());
    bar
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    write_atomic(path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

fn create_out(out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating the output directory {}", out.display()))
}

// ---------------------------------------------------------------------------------------------
// ail measure
// ---------------------------------------------------------------------------------------------

pub fn run_measure(global: &Global, args: &MeasureArgs) -> anyhow::Result<()> {
    let setup = Setup::open(global, &args.source, args.images)?;
    let k = setup.frozen.num_invariances();
    let descriptors: Vec<Vec<f32>> = if k == 0 {
        anyhow::ensure!(
            args.descriptors.is_empty(),
            "{} is a plain encoder: it takes no descriptor; drop --descriptor",
            setup.frozen.checkpoint.display()
        );
        vec![Vec::new()]
    } else if args.descriptors.is_empty() {
        default_descriptors(k)
    } else {
        args.descriptors.iter().map(|d| setup.descriptor(d, "--descriptor")).collect::<anyhow::Result<_>>()?
    };
    let transforms = parse_transforms(&args.transforms, setup.shape).context("--transforms")?;
    anyhow::ensure!(!transforms.is_empty(), "--transforms names no transform");
    create_out(&args.out)?;

    // Measure: every descriptor sees the same transformed batches.
    let total = num_forwards(descriptors.len(), setup.num_statistics, setup.num_images, &transforms, setup.metric);
    let bar = progress(total, "measuring");
    let functions: Vec<_> = descriptors.iter().map(|i| setup.features(i, &bar)).collect();
    let refs: Vec<&FeatureFn<'_>> = functions.iter().map(|f| f as &FeatureFn<'_>).collect();
    let table = setup
        .table(&refs, &transforms)
        .context("measuring invariance (if the covariance is singular, raise --ridge or pass --plain-cosine)")?;
    bar.finish_and_clear();

    // Report: CSV, markdown, radar chart.
    let names: Vec<&str> = transforms.iter().map(|t| t.name).collect();
    let mut csv = String::from("descriptor,transform,similarity,metric\n");
    for (i, row) in descriptors.iter().zip(&table) {
        for (name, s) in names.iter().zip(row) {
            csv.push_str(&format!("\"{}\",{name},{s:.6},{}\n", descriptor_label(i), setup.metric.name()));
        }
    }
    let markdown = markdown_table(&descriptors, &names, &table);
    let header = format!(
        "# Invariance of {}\n\n{} of f(x) and f(t(x)), averaged over {} images of `{}` and each transform's \
         parameter grid (1 = invariant).{}\n\n",
        setup.frozen.checkpoint.display(),
        setup.metric.describe(),
        setup.num_images,
        setup.data,
        setup.statistics_note()
    );
    let series: Vec<svg::Series> =
        descriptors.iter().zip(&table).map(|(i, row)| svg::Series { name: column_label(i), values: row.clone() }).collect();
    let lowest = table.iter().flatten().copied().filter(|v| v.is_finite()).fold(0.0f64, f64::min);
    let axes: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let radar = svg::radar(
        &format!("Invariance ({})", setup.metric.name()),
        &axes,
        &series,
        [(lowest * 5.0).floor() / 5.0, 1.0],
    );
    let (csv_path, md_path, svg_path) =
        (args.out.join("invariance.csv"), args.out.join("invariance.md"), args.out.join("radar.svg"));
    write(&csv_path, &csv)?;
    write(&md_path, &format!("{header}{markdown}"))?;
    write(&svg_path, &radar)?;
    println!("{markdown}");
    eprintln!("wrote {}, {} and {}", csv_path.display(), md_path.display(), svg_path.display());
    Ok(())
}

/// Transforms as rows, descriptors as columns, and a final row of column means.
fn markdown_table(descriptors: &[Vec<f32>], names: &[&str], table: &[Vec<f64>]) -> String {
    let mut md = String::from("| transform |");
    for i in descriptors {
        md.push_str(&format!(" {} |", column_label(i)));
    }
    md.push_str("\n|---|");
    md.push_str(&"---:|".repeat(descriptors.len()));
    md.push('\n');
    for (t, name) in names.iter().enumerate() {
        md.push_str(&format!("| {name} |"));
        for row in table {
            md.push_str(&format!(" {:.3} |", row[t]));
        }
        md.push('\n');
    }
    md.push_str("| **mean** |");
    for row in table {
        md.push_str(&format!(" **{:.3}** |", row.iter().sum::<f64>() / row.len().max(1) as f64));
    }
    md.push('\n');
    md
}

// ---------------------------------------------------------------------------------------------
// ail interpolate
// ---------------------------------------------------------------------------------------------

pub fn run_interpolate(global: &Global, args: &InterpolateArgs) -> anyhow::Result<()> {
    anyhow::ensure!((2..=101).contains(&args.grid), "--grid must be between 2 and 101 (got {})", args.grid);
    anyhow::ensure!(
        args.from.is_some() == args.to.is_some(),
        "--from and --to go together: pass both ends of the line, or neither"
    );
    let setup = Setup::open(global, &args.source, args.images)?;
    let k = setup.frozen.num_invariances();
    anyhow::ensure!(
        k > 0,
        "{} is a plain encoder: it has no descriptor to sweep (`ail measure` measures it)",
        setup.frozen.checkpoint.display()
    );
    let transform = transform(&args.transform, setup.shape).with_context(|| {
        format!("unknown --transform `{}`: use one of {}", args.transform, TRANSFORM_NAMES.join(", "))
    })?;
    let g = args.grid;
    let step = |j: usize| j as f32 / (g - 1) as f32;
    let round = |v: f32| (v * 1e6).round() / 1e6;

    // The descriptors to measure at: an i[0] x i[1] grid (rows: i[1]) or a line from -> to.
    let line = if k == 2 && args.from.is_none() {
        None
    } else {
        let (from, to) = match (&args.from, &args.to) {
            (Some(f), Some(t)) => (setup.descriptor(f, "--from")?, setup.descriptor(t, "--to")?),
            _ if k == 1 => (vec![0.0], vec![1.0]),
            _ => {
                let one_hot = |j: usize| (0..k).map(|e| if e == j { 1.0 } else { 0.0 }).collect::<Vec<f32>>();
                (one_hot(0), one_hot(1))
            }
        };
        Some((from, to))
    };
    let points: Vec<Vec<f32>> = match &line {
        None => (0..g).flat_map(|r| (0..g).map(move |c| vec![step(c), step(r)])).collect(),
        Some((from, to)) => {
            (0..g).map(|j| from.iter().zip(to).map(|(a, b)| round(a + (b - a) * step(j))).collect()).collect()
        }
    };
    create_out(&args.out)?;

    let transforms = std::slice::from_ref(&transform);
    let total = num_forwards(points.len(), setup.num_statistics, setup.num_images, transforms, setup.metric);
    let bar = progress(total, &format!("sweeping i ({})", transform.name));
    let mut values = Vec::with_capacity(points.len());
    for i in &points {
        let features = setup.features(i, &bar);
        let (images, shape) = (&setup.images, setup.shape);
        let s = invariance(&features, images, setup.num_statistics, setup.num_images, shape, &transform, setup.metric, setup.ridge)
            .with_context(|| format!("measuring at i = [{}] (raise --ridge or pass --plain-cosine)", descriptor_label(i)))?;
        values.push(s);
    }
    bar.finish_and_clear();

    let stem = format!("interpolate-{}", transform.name);
    let (csv_path, svg_path) = (args.out.join(format!("{stem}.csv")), args.out.join(format!("{stem}.svg")));
    let title = format!("Invariance to {} ({})", transform.name, setup.metric.name());
    let (csv, chart) = match &line {
        None => {
            let mut csv = String::from("i0,i1,similarity\n");
            for (i, s) in points.iter().zip(&values) {
                csv.push_str(&format!("{},{},{s:.6}\n", i[0], i[1]));
            }
            let axis: Vec<f64> = (0..g).map(|j| step(j) as f64).collect();
            let chart = svg::heat_map(&title, &setup.entry_label(0), &setup.entry_label(1), &axis, &axis, &values, "similarity");
            // Print the grid as it is drawn: i[1] rows from the top (1) down, i[0] across.
            println!("{} ({}): rows {} from 1 down to 0, columns {} from 0 to 1", transform.name, setup.metric.name(), setup.entry_label(1), setup.entry_label(0));
            for r in (0..g).rev() {
                let row: Vec<String> = values[r * g..(r + 1) * g].iter().map(|v| format!("{v:6.3}")).collect();
                println!("{:>5.2} | {}", step(r), row.join(" "));
            }
            (csv, chart)
        }
        Some((from, to)) => {
            let mut csv = String::from("t,");
            csv.push_str(&(0..k).map(|j| format!("i{j}")).collect::<Vec<_>>().join(","));
            csv.push_str(",similarity\n");
            let mut curve = Vec::with_capacity(g);
            println!("{} ({}) from i = [{}] (t = 0) to i = [{}] (t = 1):", transform.name, setup.metric.name(), descriptor_label(from), descriptor_label(to));
            for (j, (i, s)) in points.iter().zip(&values).enumerate() {
                let entries: Vec<String> = i.iter().map(|v| v.to_string()).collect();
                csv.push_str(&format!("{},{},{s:.6}\n", step(j), entries.join(",")));
                curve.push((step(j) as f64, *s));
                println!("  t = {:.3}  i = [{}]  {s:.4}", step(j), descriptor_label(i));
            }
            let x_label = format!("t: i = (1 - t) [{}] + t [{}]", descriptor_label(from), descriptor_label(to));
            let chart = svg::line_chart(&title, &x_label, "similarity", &[svg::Curve { name: transform.name.to_string(), points: curve }]);
            (csv, chart)
        }
    };
    write(&csv_path, &csv)?;
    write(&svg_path, &chart)?;
    eprintln!("wrote {} and {}", csv_path.display(), svg_path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` random-looking coloured images `[n, 3, h, w]` in [0, 1] (a fixed LCG).
    fn coloured_images(n: usize, h: usize, w: usize) -> Vec<f32> {
        let mut state = 12345u64;
        (0..n * 3 * h * w)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (state >> 40) as f32 / (1u64 << 24) as f32
            })
            .collect()
    }

    /// A test model that ignores where pixels are: per channel, the mean and five order statistics
    /// of the channel's sorted pixel values. Any permutation of pixel positions (a flip) leaves its
    /// features exactly unchanged; colour changes move them.
    fn geometry_blind(images: &[f32], n: usize) -> Vec<f32> {
        let len = images.len() / n;
        let hw = len / 3;
        let mut out = Vec::new();
        for image in images.chunks_exact(len) {
            for plane in image.chunks_exact(hw) {
                let mut sorted = plane.to_vec();
                sorted.sort_by(f32::total_cmp);
                out.push(plane.iter().sum::<f32>() / hw as f32);
                out.extend([0.1, 0.3, 0.5, 0.7, 0.9].map(|q| sorted[((hw - 1) as f32 * q) as usize]));
            }
        }
        out
    }

    #[test]
    fn a_model_that_ignores_geometry_is_invariant_to_flips_and_not_to_grayscale() {
        let (n, shape) = (48, [3, 8, 8]);
        let images = coloured_images(n, 8, 8);
        let transforms = parse_transforms("h-flip,v-flip,grayscale,rotation", shape).unwrap();
        for metric in [Metric::Mahalanobis, Metric::Cosine] {
            let table = invariance_table(&[&geometry_blind], &images, n, n, shape, &transforms, metric, 1e-3).unwrap();
            let [h_flip, v_flip, grayscale, rotation] = table[0][..] else { panic!("{table:?}") };
            assert!((h_flip - 1.0).abs() < 1e-6, "{metric:?} h-flip {h_flip}");
            assert!((v_flip - 1.0).abs() < 1e-6, "{metric:?} v-flip {v_flip}");
            assert!(grayscale < 0.99, "{metric:?} grayscale {grayscale}");
            // Rotation fills corners with zeros, which changes the pixel distribution.
            assert!(rotation < 1.0 - 1e-6, "{metric:?} rotation {rotation}");
            assert!(table[0].iter().all(|v| (-1.0..=1.0).contains(v)));
        }
        // Whitening makes the colour change stand out far more than the raw cosine does.
        let whitened = invariance(&geometry_blind, &images, n, n, shape, &transforms[2], Metric::Mahalanobis, 1e-3).unwrap();
        let raw = invariance(&geometry_blind, &images, n, n, shape, &transforms[2], Metric::Cosine, 1e-3).unwrap();
        assert!(whitened < raw, "whitened {whitened} raw {raw}");
    }

    #[test]
    fn whitened_cosine_matches_a_hand_computation() {
        // Originals (1, 0), (-1, 0), (0, 2), (0, -2): mean 0, covariance diag(1/2, 2).
        let originals = [1.0, 0.0, -1.0, 0.0, 0.0, 2.0, 0.0, -2.0];
        let reference = Reference::new(&originals, 4, 4, Metric::Mahalanobis, 0.0).unwrap();
        // Image 0 moves to (1, 2): whitened (sqrt 2, 0) and (sqrt 2, sqrt 2), cosine 1/sqrt 2. The
        // others stay put (cosine 1). Mean: (3 + 1/sqrt 2) / 4.
        let transformed = [1.0, 2.0, -1.0, 0.0, 0.0, 2.0, 0.0, -2.0];
        let expected = (3.0 + 0.5f64.sqrt()) / 4.0;
        assert!((reference.similarity(&transformed) - expected).abs() < 1e-12);
        // Plain cosine: (1, 0) . (1, 2) / sqrt 5.
        let plain = Reference::new(&originals, 4, 4, Metric::Cosine, 0.0).unwrap();
        assert!((plain.similarity(&transformed) - (3.0 + 1.0 / 5f64.sqrt()) / 4.0).abs() < 1e-12);

        // A correlated example against the closed-form inverse of a 2x2 covariance,
        // [[a, b], [b, c]]^-1 = [[c, -b], [-b, a]] / (a c - b^2): the cosine in the metric
        // Sigma^-1 is u' Sigma^-1 v / sqrt(u' Sigma^-1 u v' Sigma^-1 v).
        let originals = [2.0f32, 1.5, 0.0, 0.0, 1.0, 3.0, 1.0, -0.5, 3.0, 2.0];
        let n = 5;
        let mean = [1.4f64, 1.2];
        let mut s = [0.0f64; 3]; // s_xx, s_xy, s_yy
        for p in originals.chunks(2) {
            let (x, y) = (p[0] as f64 - mean[0], p[1] as f64 - mean[1]);
            s[0] += x * x / n as f64;
            s[1] += x * y / n as f64;
            s[2] += y * y / n as f64;
        }
        let det = s[0] * s[2] - s[1] * s[1];
        let inv = [s[2] / det, -s[1] / det, s[0] / det]; // [[a, b], [b, c]]
        let form = |u: [f64; 2], v: [f64; 2]| u[0] * inv[0] * v[0] + u[0] * inv[1] * v[1] + u[1] * inv[1] * v[0] + u[1] * inv[2] * v[1];
        let transformed = [2.5f32, 0.5, 0.5, 1.0, 1.0, 2.0, 2.0, -1.0, 2.0, 2.5];
        let mut expected = 0.0;
        for (o, t) in originals.chunks(2).zip(transformed.chunks(2)) {
            let u = [o[0] as f64 - mean[0], o[1] as f64 - mean[1]];
            let v = [t[0] as f64 - mean[0], t[1] as f64 - mean[1]];
            expected += form(u, v) / (form(u, u) * form(v, v)).sqrt() / n as f64;
        }
        let reference = Reference::new(&originals, n, n, Metric::Mahalanobis, 0.0).unwrap();
        let got = reference.similarity(&transformed);
        assert!((got - expected).abs() < 1e-6, "got {got}, expected {expected}");
    }

    #[test]
    fn whitening_statistics_come_from_all_the_statistics_images() {
        // 1x1x2 images whose features are their two pixels. The four statistics images are
        // mu +- u and mu +- v with mu = (0.5, 0.5), u = (0.3, 0.1), v = (0.1, 0.2): mean mu and
        // covariance (u u' + v v') / 2 = [[0.05, 0.025], [0.025, 0.025]], whose inverse is
        // [[40, -40], [-40, 80]]. The first three are measured; the fourth only enters the statistics.
        let shape = [1, 1, 2];
        let images = [0.8f32, 0.6, 0.6, 0.7, 0.2, 0.4, 0.4, 0.3];
        let (num_statistics, num_images) = (4, 3);
        let seen = std::cell::Cell::new(0usize);
        let pixels = |x: &[f32], n: usize| {
            seen.set(seen.get() + n);
            x.to_vec()
        };
        // Brightness 0.5 halves the pixels: t(x) = x / 2.
        let half = Transform { name: "brightness", settings: vec![Op::Brightness(0.5)] };
        let form = |a: [f64; 2], b: [f64; 2]| 40.0 * a[0] * b[0] - 40.0 * (a[0] * b[1] + a[1] * b[0]) + 80.0 * a[1] * b[1];
        let mut expected = 0.0;
        for x in images.chunks(2).take(num_images) {
            let u = [x[0] as f64 - 0.5, x[1] as f64 - 0.5];
            let v = [x[0] as f64 / 2.0 - 0.5, x[1] as f64 / 2.0 - 0.5];
            expected += form(u, v) / (form(u, u) * form(v, v)).sqrt() / num_images as f64;
        }
        let got = invariance(&pixels, &images, num_statistics, num_images, shape, &half, Metric::Mahalanobis, 0.0).unwrap();
        assert!((got - expected).abs() < 1e-6, "got {got}, expected {expected}");
        // The function saw the four originals, then the three transformed images.
        assert_eq!(seen.get(), 4 + 3);
        assert_eq!(num_forwards(1, num_statistics, num_images, std::slice::from_ref(&half), Metric::Mahalanobis), 7);

        // The measured images alone give other statistics, and another similarity.
        let own = invariance(&pixels, &images[..6], 3, 3, shape, &half, Metric::Mahalanobis, 0.0).unwrap();
        assert!((own - expected).abs() > 1e-2, "own {own}, expected {expected}");

        // Plain cosine needs no statistics: the extra image is never fed to the function.
        seen.set(0);
        let plain = invariance(&pixels, &images, num_statistics, num_images, shape, &half, Metric::Cosine, 0.0).unwrap();
        assert!((plain - 1.0).abs() < 1e-6, "halving does not turn the raw features: {plain}");
        assert_eq!(seen.get(), 3 + 3);
        assert_eq!(num_forwards(1, num_statistics, num_images, std::slice::from_ref(&half), Metric::Cosine), 6);
    }

    #[test]
    fn singular_covariance_needs_the_ridge() {
        // The second feature is constant: Sigma is singular without a ridge.
        let originals = [1.0, 5.0, 2.0, 5.0, 3.0, 5.0];
        let err = Reference::new(&originals, 3, 3, Metric::Mahalanobis, 0.0).unwrap_err().to_string();
        assert!(err.contains("not positive definite"), "{err}");
        let reference = Reference::new(&originals, 3, 3, Metric::Mahalanobis, 1e-3).unwrap();
        assert!((reference.similarity(&originals) - 1.0).abs() < 1e-12);
        let nan = Reference::new(&[f32::NAN, 1.0, 2.0, 3.0], 2, 2, Metric::Cosine, 0.0).unwrap_err().to_string();
        assert!(nan.contains("not finite"), "{nan}");
    }

    #[test]
    fn transforms_have_stable_names_and_keep_the_shape() {
        let shape = [3, 8, 6];
        let image: Vec<f32> = (0..3 * 8 * 6).map(|v| (v % 17) as f32 / 16.0).collect();
        for name in TRANSFORM_NAMES {
            let t = transform(name, shape).unwrap();
            assert_eq!(t.name, name);
            assert!(!t.settings.is_empty(), "{name}");
            for op in &t.settings {
                let out = op.apply(&image, shape);
                assert_eq!(out.len(), image.len(), "{name}");
                assert!(out.iter().all(|v| v.is_finite() && (-1e-6..=1.0 + 1e-6).contains(v)), "{name} {op:?}");
            }
        }
        assert_eq!(transform("resized-crop", shape).unwrap().settings.len(), 15);
        assert_eq!(parse_transforms("all", shape).unwrap().len(), TRANSFORM_NAMES.len());
        assert_eq!(parse_transforms(" grayscale , h-flip,grayscale", shape).unwrap().len(), 2);
        let err = format!("{:#}", parse_transforms("h-flip,twirl", shape).unwrap_err());
        assert!(err.contains("unknown transform `twirl`") && err.contains("resized-crop"), "{err}");
    }

    #[test]
    fn default_descriptors_are_the_trained_corners() {
        assert_eq!(default_descriptors(2), vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![1.0, 1.0]]);
        let five = default_descriptors(5);
        assert_eq!(five.len(), 6);
        assert_eq!(five[0], vec![1.0, 1.0, 1.0, 1.0, 0.0]);
        assert_eq!(five[5], vec![1.0; 5]);
    }
}

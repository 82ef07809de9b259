//! The invariance dial: the probe images, the dial's view at one `i` (the invariance measure of
//! `ail measure` per transform, a PCA map and nearest neighbours), one image's views, and the
//! dial shared with a helper worker. Re-exported by [`crate::engine`], the page's computations.

use ail_core::frozen::Frozen;
use ail_core::invariance::{self, Metric, Reference, Transform};
use ail_core::linalg::pca;
use burn::prelude::*;
use serde::Serialize;
use std::cell::RefCell;

use crate::engine::features;

/// The transforms on the page's radar chart: every evaluation transform that moves a grey image
/// (the probe images are Fashion-MNIST, so saturation, hue and grayscale would not change them).
pub const DIAL_TRANSFORMS: [&str; 8] = ["resized-crop", "h-flip", "rotation", "translation", "scale", "brightness", "contrast", "blur"];

/// The images the dial measures, already on the device: `n_stats` originals (whose features give
/// the whitening's mean and covariance and the PCA), the first `n_measure` of which are measured,
/// and every setting of every dial transform applied to those.
pub struct Probe {
    pub shape: [usize; 3],
    pub n_stats: usize,
    pub n_measure: usize,
    pub labels: Vec<u32>,
    pub pixels: Vec<u8>,
    pub transforms: Vec<Transform>,
    originals: Tensor<4>,
    transformed: Tensor<4>,
    transformed_count: usize,
    /// The originals' features at the last `i` they were computed at (the dial and then the
    /// views of one image at the same `i` need them both).
    originals_at: RefCell<Option<(Vec<f32>, Vec<f32>)>>,
}

impl Probe {
    /// `pixels`: `[n_stats, C, H, W]` `u8` images on `device` (the frozen encoder's inner device).
    pub fn new(pixels: Vec<u8>, labels: Vec<u32>, shape: [usize; 3], n_measure: usize, names: &[&str], device: &Device) -> Result<Self, String> {
        let len = shape.iter().product::<usize>();
        let n_stats = pixels.len() / len;
        if n_stats == 0 || !(1..=n_stats).contains(&n_measure) {
            return Err(format!("{n_measure} measured images are not among {n_stats} probe images"));
        }
        let transforms: Vec<Transform> =
            names.iter().map(|n| invariance::transform(n, shape).ok_or_else(|| format!("unknown transform {n}"))).collect::<Result<_, _>>()?;
        let measured: Vec<f32> = pixels[..n_measure * len].iter().map(|&p| p as f32 / 255.0).collect();
        let transformed = invariance::transformed_all(&measured, n_measure, shape, &transforms);
        let transformed_count = transformed.len() / len;
        let device = device.clone().without_autodiff();
        let [c, h, w] = shape;
        let originals = Frozen::upload_u8(&pixels, n_stats, shape, &device);
        let transformed = Tensor::<1>::from_floats(transformed.as_slice(), &device).reshape([transformed_count, c, h, w]);
        Ok(Self { shape, n_stats, n_measure, labels, pixels, transforms, originals, transformed, transformed_count, originals_at: RefCell::new(None) })
    }

    /// Transformed images: every setting of every transform of each measured image.
    pub fn transformed_count(&self) -> usize {
        self.transformed_count
    }

    /// Where a dial shared with a helper ([`dial_shared`]) hands over: the helper takes the
    /// transformed images from here on, so that both put about half of [`Probe::forwards`]
    /// through the encoder (the originals stay with the caller, which needs them first).
    pub fn helper_split(&self) -> usize {
        (self.forwards() / 2).saturating_sub(self.n_stats).min(self.transformed_count)
    }

    /// Images through the encoder per dial update.
    pub fn forwards(&self) -> usize {
        self.n_stats + self.transformed_count
    }
}

/// One position of the dial.
#[derive(Debug, Clone, Serialize)]
pub struct DialView {
    /// Transform names, in radar order.
    pub transforms: Vec<&'static str>,
    /// Whitened cosine similarity of f(x) and f(t(x)) per transform (1 = invariant).
    pub invariance: Vec<f64>,
    /// First two principal coordinates of the probe originals' features, `[n_stats, 2]`.
    pub coords: Vec<f32>,
    /// Variance along each axis.
    pub variance: Vec<f64>,
    /// For each probe original, the [`NEIGHBOURS`] others nearest to it in feature space at this
    /// `i` (cosine of centred features), nearest first: `[n_stats, NEIGHBOURS]`.
    pub neighbours: Vec<u32>,
    /// Whether a helper computed part of it ([`dial_shared`]).
    pub shared: bool,
}

/// Nearest neighbours the dial reports per probe image.
pub const NEIGHBOURS: usize = 5;

/// For each of the `n` rows of `features` (`[n, d]`), the indices of the `k` other rows with the
/// largest cosine similarity after centring (the mean row subtracted), nearest first; ties go to
/// the lower index. `[n, min(k, n - 1)]`.
pub fn nearest(features: &[f32], n: usize, d: usize, k: usize) -> Vec<u32> {
    let k = k.min(n.saturating_sub(1));
    let mut mean = vec![0f64; d];
    for row in features.chunks_exact(d) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64 / n as f64;
        }
    }
    let unit: Vec<Vec<f64>> = features
        .chunks_exact(d)
        .map(|row| {
            let c: Vec<f64> = row.iter().zip(&mean).map(|(&v, m)| v as f64 - m).collect();
            let norm = c.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
            c.into_iter().map(|v| v / norm).collect()
        })
        .collect();
    let mut out = Vec::with_capacity(n * k);
    for a in 0..n {
        let mut sims: Vec<(f64, usize)> =
            (0..n).filter(|&b| b != a).map(|b| (unit[a].iter().zip(&unit[b]).map(|(x, y)| x * y).sum::<f64>(), b)).collect();
        sims.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
        out.extend(sims.iter().take(k).map(|&(_, b)| b as u32));
    }
    out
}

/// The encoder's invariances and embedding at `i`.
pub async fn dial(frozen: &Frozen, probe: &Probe, i: &[f32]) -> Result<DialView, String> {
    dial_shared(frozen, probe, i, None::<(usize, std::future::Ready<Result<Vec<f32>, String>>)>).await
}

/// [`dial`], with the features of the transformed images from `split` on computed elsewhere:
/// `remote` (already started, by another worker holding the same encoder and probe, see
/// [`transformed_features`]) is awaited after this side's share. The result is the same as
/// [`dial`]'s: each image's features do not depend on the others in its batch. When `remote`
/// fails or returns the wrong number of values, its share is computed here.
pub async fn dial_shared<F: Future<Output = Result<Vec<f32>, String>>>(frozen: &Frozen, probe: &Probe, i: &[f32], remote: Option<(usize, F)>) -> Result<DialView, String> {
    frozen.check_descriptor(i).map_err(|e| e.to_string())?;
    let d = frozen.feature_dim();
    let n = probe.transformed_count;
    let split = remote.as_ref().map_or(n, |(split, _)| (*split).min(n));
    let stats = original_features(frozen, probe, i).await?;
    let reference = Reference::new(&stats, probe.n_stats, probe.n_measure, Metric::Mahalanobis, invariance::DEFAULT_RIDGE).map_err(|e| e.to_string())?;
    let mut moved = transformed_features(frozen, probe, i, 0..split).await?;
    let mut shared = false;
    if let Some((_, remote)) = remote {
        match remote.await {
            Ok(rest) if rest.len() == (n - split) * d => {
                moved.extend(rest);
                shared = true;
            }
            _ => moved.extend(transformed_features(frozen, probe, i, split..n).await?),
        }
    }
    let invariance = invariance::similarities_from_features(&reference, &probe.transforms, &moved);
    let (coords, variance) = pca(&stats, probe.n_stats, d, 2);
    let neighbours = nearest(&stats, probe.n_stats, d, NEIGHBOURS);
    Ok(DialView { transforms: probe.transforms.iter().map(|t| t.name).collect(), invariance, coords, variance, neighbours, shared })
}

/// Features (`[n, D]`, host) of the probe originals at `i`: from the last call when `i` is the
/// same.
async fn original_features(frozen: &Frozen, probe: &Probe, i: &[f32]) -> Result<Vec<f32>, String> {
    if let Some((at, f)) = probe.originals_at.borrow().as_ref()
        && at.as_slice() == i
    {
        return Ok(f.clone());
    }
    let f = features(frozen, &probe.originals, i).await?;
    probe.originals_at.replace(Some((i.to_vec(), f.clone())));
    Ok(f)
}

/// Features (`[range.len(), D]`, host) of the probe's transformed images `range` at `i`: a
/// helper's share of a [`dial_shared`].
pub async fn transformed_features(frozen: &Frozen, probe: &Probe, i: &[f32], range: std::ops::Range<usize>) -> Result<Vec<f32>, String> {
    frozen.check_descriptor(i).map_err(|e| e.to_string())?;
    if range.start > range.end || range.end > probe.transformed_count {
        return Err(format!("transformed images {range:?} are not among the probe's {}", probe.transformed_count));
    }
    if range.is_empty() {
        return Ok(Vec::new());
    }
    features(frozen, &probe.transformed.clone().slice(range), i).await
}

/// One probe image under each dial transform at one `i`: its views and how similar each view's
/// features stay to the original's (the dial's measure, for this image alone).
#[derive(Debug, Clone, Serialize)]
pub struct ImageViews {
    /// The probe image's index.
    pub image: usize,
    /// Per transform: its name, the similarity of each setting's view, and their mean.
    pub transforms: Vec<TransformViews>,
    /// Every view as `u8` `[views, C, H, W]`, transform after transform, setting after setting.
    #[serde(skip)]
    pub pixels: Vec<u8>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TransformViews {
    pub name: &'static str,
    pub similarities: Vec<f64>,
    pub mean: f64,
}

/// Probe image `k` under every setting of every dial transform, with the similarity of each view's
/// features to the original's at `i`: the same whitened cosine as [`dial`] (mean and covariance
/// from all probe originals), for one image; the mean over the first `n_measure` images of a
/// transform's `mean` is the dial's value for it.
pub async fn views(frozen: &Frozen, probe: &Probe, k: usize, i: &[f32]) -> Result<ImageViews, String> {
    frozen.check_descriptor(i).map_err(|e| e.to_string())?;
    if k >= probe.n_stats {
        return Err(format!("image {k} is not among the {} probe images", probe.n_stats));
    }
    let d = frozen.feature_dim();
    let len = probe.shape.iter().product::<usize>();
    let stats = original_features(frozen, probe, i).await?;
    // The statistics do not depend on the rows' order; the image measured goes first.
    let mut reordered = stats[k * d..(k + 1) * d].to_vec();
    reordered.extend(stats.chunks_exact(d).enumerate().filter(|&(r, _)| r != k).flat_map(|(_, row)| row.iter().copied()));
    let reference = Reference::new(&reordered, probe.n_stats, 1, Metric::Mahalanobis, invariance::DEFAULT_RIDGE).map_err(|e| e.to_string())?;
    let image: Vec<f32> = probe.pixels[k * len..(k + 1) * len].iter().map(|&p| p as f32 / 255.0).collect();
    let moved = invariance::transformed_all(&image, 1, probe.shape, &probe.transforms);
    let count = moved.len() / len;
    let [c, h, w] = probe.shape;
    let device = frozen.device().clone().without_autodiff();
    let tensor = Tensor::<1>::from_floats(moved.as_slice(), &device).reshape([count, c, h, w]);
    let moved_features = features(frozen, &tensor, i).await?;
    let mut rows = moved_features.chunks_exact(d);
    let transforms = probe
        .transforms
        .iter()
        .map(|t| {
            let similarities: Vec<f64> = t.settings.iter().map(|_| reference.similarity(rows.next().expect("one row per view"))).collect();
            let mean = similarities.iter().sum::<f64>() / similarities.len() as f64;
            TransformViews { name: t.name, similarities, mean }
        })
        .collect();
    let pixels = moved.iter().map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect();
    Ok(ImageViews { image: k, transforms, pixels })
}

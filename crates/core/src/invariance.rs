//! Measuring invariance (docs/method.md, "Measuring invariance"), after Ericsson, Gouk & Hospedales,
//! [Why Do Self-Supervised Models Transfer?](https://arxiv.org/abs/2111.11398) (2022): the
//! (whitened) cosine similarity of an image's features to its transformed version's, averaged over
//! images and each transform's settings. The transforms themselves are
//! `ail_augment::invariance` (re-exported here). `ail measure` / `ail interpolate` (where the
//! choices are explained) and the browser page's invariance dial both use this module, so the two
//! measure the same thing.
//!
//! The measurement only sees features: [`invariance_table`] takes feature functions; callers that
//! compute features asynchronously (the browser) use [`transformed_all`] and [`Reference`] directly.

pub use ail_augment::invariance::{Op, TRANSFORM_NAMES, Transform, parse_transforms, transform, transformed_all};

use crate::CoreError;
use crate::linalg::{cholesky, forward_substitute, gram_t};

// ---------------------------------------------------------------------------------------------
// The measurement
// ---------------------------------------------------------------------------------------------

/// The whitening's default ridge, as a fraction of the mean variance (`ail measure --ridge`, the page).
pub const DEFAULT_RIDGE: f64 = 1e-3;

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

    pub fn describe(self) -> &'static str {
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


/// The invariance to each transform from the features (`[settings * n, D]`, in the order of
/// [`transformed_all`]) of the transformed measured images: the mean similarity over the images
/// and each transform's settings, as [`invariance_table`] computes it.
pub fn similarities_from_features(reference: &Reference, transforms: &[Transform], features: &[f32]) -> Vec<f64> {
    let per_setting = reference.num_images * reference.feature_dim;
    let settings: usize = transforms.iter().map(|t| t.settings.len()).sum();
    assert_eq!(features.len(), settings * per_setting, "features do not match the transformed images");
    let mut chunks = features.chunks_exact(per_setting);
    transforms
        .iter()
        .map(|t| {
            let n = t.settings.len() as f64;
            t.settings.iter().map(|_| reference.similarity(chunks.next().expect("counted")) / n).sum()
        })
        .collect()
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
}

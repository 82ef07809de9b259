//! Downstream scores: accuracy, mean per-class accuracy, R^2 (scikit-learn's `r2_score` with
//! `multioutput="uniform_average"`), the mean with a 95% confidence interval over repeats, and the
//! quantised descriptor `Q(i; b)`.

use serde::{Deserialize, Serialize};

/// Fraction of `predicted[j] == labels[j]`.
pub fn accuracy(predicted: &[u32], labels: &[u32]) -> f64 {
    assert_eq!(predicted.len(), labels.len());
    let hits = predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
    hits as f64 / labels.len().max(1) as f64
}

/// The mean over the classes present in `labels` of each class's accuracy.
pub fn mean_per_class_accuracy(predicted: &[u32], labels: &[u32]) -> f64 {
    assert_eq!(predicted.len(), labels.len());
    let classes = labels.iter().copied().max().map_or(0, |m| m as usize + 1);
    let mut hits = vec![0usize; classes];
    let mut counts = vec![0usize; classes];
    for (&p, &l) in predicted.iter().zip(labels) {
        counts[l as usize] += 1;
        hits[l as usize] += (p == l) as usize;
    }
    let present: Vec<f64> = counts.iter().zip(&hits).filter(|(c, _)| **c > 0).map(|(c, h)| *h as f64 / *c as f64).collect();
    present.iter().sum::<f64>() / present.len().max(1) as f64
}

/// Index of the largest entry of each row of `scores` (`[n, classes]`, row-major).
pub fn argmax_rows(scores: &[f32], classes: usize) -> Vec<u32> {
    scores
        .chunks_exact(classes)
        .map(|row| (0..classes).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap_or(0) as u32)
        .collect()
}

/// R^2 averaged uniformly over outputs, as `sklearn.metrics.r2_score(y, p)`: per output
/// `1 - SS_res / SS_tot`; an output with constant targets scores 1 when predicted exactly, else 0.
/// `targets` and `predictions` are `[n, outputs]`, row-major.
pub fn r2_score(targets: &[f32], predictions: &[f32], outputs: usize) -> f64 {
    assert_eq!(targets.len(), predictions.len());
    let n = targets.len() / outputs.max(1);
    let mut total = 0.0;
    for o in 0..outputs {
        let mean = (0..n).map(|r| targets[r * outputs + o] as f64).sum::<f64>() / n.max(1) as f64;
        let (mut ss_res, mut ss_tot) = (0.0, 0.0);
        for r in 0..n {
            let t = targets[r * outputs + o] as f64;
            ss_res += (t - predictions[r * outputs + o] as f64).powi(2);
            ss_tot += (t - mean).powi(2);
        }
        total += if ss_tot > 0.0 { 1.0 - ss_res / ss_tot } else if ss_res == 0.0 { 1.0 } else { 0.0 };
    }
    total / outputs.max(1) as f64
}

/// A mean with its 95% confidence interval: `mean +- 1.96 s / sqrt(n)`, `s` the sample standard
/// deviation (n - 1), the convention of few-shot papers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanCi {
    pub mean: f64,
    pub ci95: f64,
    pub n: usize,
}

impl MeanCi {
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n.max(1) as f64;
        let ci95 = if n > 1 {
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            1.96 * var.sqrt() / (n as f64).sqrt()
        } else {
            f64::NAN
        };
        Self { mean, ci95, n }
    }
}

impl MeanCi {
    /// As [`MeanCi::of`] with Student's t quantile for `n - 1` degrees of freedom instead of 1.96:
    /// the right interval for a few seeds (4.30 for 3 values, 2.78 for 5).
    pub fn of_few(values: &[f64]) -> Self {
        let mut m = Self::of(values);
        if m.n > 1 {
            m.ci95 *= student_t95(m.n - 1) / 1.96;
        }
        m
    }
}

/// The two-sided 95% quantile of Student's t distribution with `df` degrees of freedom
/// (tabulated to 30, then the Cornish-Fisher expansion, within 1e-3 of the exact value).
pub fn student_t95(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120,
        2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    assert!(df >= 1, "Student's t needs at least one degree of freedom");
    if df <= 30 {
        return TABLE[df - 1];
    }
    let (z, v) = (1.959_964f64, df as f64);
    z + (z.powi(3) + z) / (4.0 * v) + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * v * v)
}

impl std::fmt::Display for MeanCi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.4} +- {:.4} (n = {})", self.mean, self.ci95, self.n)
    }
}

/// `Q(i; b) = round(i (2^b - 1)) / (2^b - 1)`, per entry (docs/method.md).
pub fn quantise(i: &[f32], bits: u32) -> Vec<f32> {
    assert!((1..=24).contains(&bits), "bits must be 1..=24");
    let levels = ((1u32 << bits) - 1) as f32;
    i.iter().map(|v| (v.clamp(0.0, 1.0) * levels).round() / levels).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracies_by_hand() {
        let labels = [0, 0, 0, 1];
        let predicted = [0, 0, 1, 0];
        assert_eq!(accuracy(&predicted, &labels), 0.5);
        // class 0: 2/3, class 1: 0/1 -> mean 1/3
        assert!((mean_per_class_accuracy(&predicted, &labels) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(argmax_rows(&[0.1, 0.9, 0.3, 0.2, 0.5, 0.4], 3), vec![1, 1]);
    }

    #[test]
    fn r2_matches_sklearn_values() {
        // sklearn: r2_score([3, -0.5, 2, 7], [2.5, 0.0, 2, 8]) = 0.9486081370449679
        let r = r2_score(&[3.0, -0.5, 2.0, 7.0], &[2.5, 0.0, 2.0, 8.0], 1);
        assert!((r - 0.948_608_137_044_967_9).abs() < 1e-6, "{r}");
        // sklearn: r2_score([[0.5, 1], [-1, 1], [7, -6]], [[0, 2], [-1, 2], [8, -5]]) = 0.9368005266622779
        let r = r2_score(&[0.5, 1.0, -1.0, 1.0, 7.0, -6.0], &[0.0, 2.0, -1.0, 2.0, 8.0, -5.0], 2);
        assert!((r - 0.936_800_526_662_277_9).abs() < 1e-6, "{r}");
    }

    #[test]
    fn confidence_interval_by_hand() {
        // values 1, 2, 3, 4: mean 2.5, s = sqrt(5/3) = 1.29099, ci = 1.96 * 1.29099 / 2 = 1.26517
        let m = MeanCi::of(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m.mean, 2.5);
        assert!((m.ci95 - 1.265_171).abs() < 1e-5, "{m:?}");
        assert!(MeanCi::of(&[1.0]).ci95.is_nan());
        // Three seeds 1, 2, 3: s = 1, t(2) = 4.303, ci = 4.303 / sqrt(3) = 2.4843
        let m = MeanCi::of_few(&[1.0, 2.0, 3.0]);
        assert!((m.ci95 - 2.484_3).abs() < 1e-3, "{m:?}");
        // The expansion joins the table: t(31) = 2.0395, t(60) = 2.0003, t(120) = 1.9799.
        for (df, t) in [(31, 2.0395), (60, 2.0003), (120, 1.9799)] {
            assert!((student_t95(df) - t).abs() < 1e-3, "t({df}) = {}", student_t95(df));
        }
    }

    #[test]
    fn quantisation_levels() {
        assert_eq!(quantise(&[0.0, 0.3, 0.5, 1.0], 1), vec![0.0, 0.0, 1.0, 1.0]);
        assert_eq!(quantise(&[0.34, 0.6], 2), vec![1.0 / 3.0, 2.0 / 3.0]);
    }
}

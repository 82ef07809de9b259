//! The guaranteed error of Theorem 5.1 (docs/method.md, "Guaranteed error"): for a readout with
//! `||phi|| <= B` on features with `||f(x)|| <= X`, a 1-Lipschitz loss in `[0, M]`, `c` classes and
//! `n` training samples, with probability `1 - delta`
//!
//! `risk <= empirical + 2 sqrt(2c) X B / sqrt(n) + 3 M sqrt(ln(|I| / delta) / (2n))`,
//!
//! `|I| = 2^(b K)` for a descriptor quantised to `b` bits per entry; the plain linear readout (one
//! fixed feature extractor) has `ln(2 / delta)` in the last term instead. The loss used here is the
//! ramp loss of the multi-class margin, `min(1, max(0, 1 - (s_y - max_{j != y} s_j)))`: bounded by
//! `M = 1`, 1-Lipschitz in the margin, and never below the 0-1 error.
//!
//! The paper's proof applies the linear bound with `delta' = delta / |I|`, which gives
//! `ln(2 |I| / delta)`; the theorem as stated (and as computed here) has `ln(|I| / delta)`. The
//! difference is `ln 2` inside the root; [`Bound::union_term`] gives the derived form too.

use serde::{Deserialize, Serialize};

/// What the bound is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BoundInputs {
    /// Empirical risk (mean ramp loss on the training samples).
    pub empirical: f64,
    /// `B`: the Frobenius norm of the head's weights.
    pub weight_norm: f64,
    /// `X`: the largest feature norm over the training samples.
    pub feature_norm: f64,
    /// `M`: the upper end of the loss.
    pub loss_max: f64,
    pub classes: usize,
    pub samples: usize,
    pub delta: f64,
}

/// The three terms and their sum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bound {
    pub empirical: f64,
    pub complexity: f64,
    pub confidence: f64,
    pub total: f64,
}

impl Bound {
    /// `2 sqrt(2c) X B / sqrt(n)`.
    pub fn complexity_term(inputs: &BoundInputs) -> f64 {
        2.0 * (2.0 * inputs.classes as f64).sqrt() * inputs.feature_norm * inputs.weight_norm / (inputs.samples as f64).sqrt()
    }

    fn with_log(inputs: &BoundInputs, log: f64) -> Self {
        let complexity = Self::complexity_term(inputs);
        let confidence = 3.0 * inputs.loss_max * (log / (2.0 * inputs.samples as f64)).sqrt();
        Self { empirical: inputs.empirical, complexity, confidence, total: inputs.empirical + complexity + confidence }
    }

    /// Theorem 5.1 for a `bits`-bit descriptor of `k` entries: `ln(2^(b K) / delta)`.
    pub fn amortised(inputs: &BoundInputs, bits: u32, k: usize) -> Self {
        Self::with_log(inputs, (bits as f64 * k as f64) * std::f64::consts::LN_2 - inputs.delta.ln())
    }

    /// The plain linear readout (Eq. 5): `ln(2 / delta)`.
    pub fn linear(inputs: &BoundInputs) -> Self {
        Self::with_log(inputs, (2.0 / inputs.delta).ln())
    }

    /// The union bound as derived in the proof: `ln(2 |I| / delta)`.
    pub fn union_term(inputs: &BoundInputs, bits: u32, k: usize) -> Self {
        Self::with_log(inputs, (bits as f64 * k as f64 + 1.0) * std::f64::consts::LN_2 - inputs.delta.ln())
    }
}

/// Mean ramp loss of class scores (`[n, classes]`) against labels.
pub fn ramp_risk(scores: &[f32], labels: &[u32], classes: usize) -> f64 {
    let total: f64 = scores
        .chunks_exact(classes)
        .zip(labels)
        .map(|(row, &y)| {
            let other = row.iter().enumerate().filter(|(j, _)| *j != y as usize).map(|(_, &v)| v).fold(f32::NEG_INFINITY, f32::max);
            let margin = (row[y as usize] - other) as f64;
            (1.0 - margin).clamp(0.0, 1.0)
        })
        .sum();
    total / labels.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_by_hand() {
        // c = 10, n = 5000, X = 2, B = 3, M = 1, delta = 0.05, empirical 0.2.
        let inputs = BoundInputs { empirical: 0.2, weight_norm: 3.0, feature_norm: 2.0, loss_max: 1.0, classes: 10, samples: 5000, delta: 0.05 };
        // complexity: 2 * sqrt(20) * 6 / sqrt(5000) = 53.6656 / 70.7107 = 0.758947
        let lin = Bound::linear(&inputs);
        assert!((lin.complexity - 0.758_947).abs() < 1e-5, "{lin:?}");
        // linear: 3 sqrt(ln(40) / 10000) = 3 * sqrt(3.688879 / 10000) = 0.057620
        assert!((lin.confidence - 0.057_620).abs() < 1e-5, "{lin:?}");
        // amortised, b = 1, K = 2: 3 sqrt((2 ln 2 + ln 20) / 10000) = 3 sqrt(4.382027 / 10000) = 0.062800
        let am = Bound::amortised(&inputs, 1, 2);
        assert!((am.confidence - 0.062_800).abs() < 1e-5, "{am:?}");
        assert!((am.total - (0.2 + 0.758_947 + 0.062_800)).abs() < 2e-5);
        // union form: ln(2 * 4 / 0.05) = ln 160 = 5.075174 -> 3 sqrt(5.075174e-4) = 0.067585
        assert!((Bound::union_term(&inputs, 1, 2).confidence - 0.067_585).abs() < 1e-5);
    }

    #[test]
    fn ramp_loss_by_hand() {
        // margins: 2 (loss 0), 0.5 (loss 0.5), -1 (loss 1)
        let scores = [3.0, 1.0, 0.0, 1.0, 0.5, 0.0, 0.0, 1.0, 0.0];
        let r = ramp_risk(&scores, &[0, 0, 0], 3);
        assert!((r - 0.5).abs() < 1e-9, "{r}");
    }
}

//! Contrastive losses (docs/method.md, "Contrastive methods").
//!
//! - [`nt_xent`]: SimCLR's normalised temperature-scaled cross-entropy over the `2N` views of a batch
//!   ([Chen et al. 2020](https://arxiv.org/abs/2002.05709), eq. 1), both directions: every view is an
//!   anchor, its partner the positive, the other `2N - 2` views the negatives.
//! - [`info_nce`]: MoCo's InfoNCE of queries against their keys and a queue of negatives
//!   ([He et al. 2020](https://arxiv.org/abs/1911.05722), eq. 1).
//! - [`mocov3`]: MoCo-v3's symmetrised loss `ctr(q1, k2) + ctr(q2, k1)`, where `ctr` is the
//!   cross-entropy of `q k^T / T` against the diagonal, scaled by `2 T` as in the authors' code
//!   ([Chen et al. 2021](https://arxiv.org/abs/2104.02057), Algorithm 1).
//!
//! Inputs are projections (any scale): each loss L2-normalises them first. All return a scalar
//! tensor `[1]` and stay on the device.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// L2-normalises the rows of `x` (`[N, D]`).
pub fn normalize_rows(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powf_scalar(2.0).sum_dim(1).sqrt().clamp_min(1e-12); // [N, 1]
    x / norm
}

/// Mean cross-entropy of `logits` (`[N, C]`) against class `targets[n]`, given as a one-hot mask
/// (`[N, C]`, 1 at the target).
pub fn cross_entropy_one_hot(logits: Tensor<2>, one_hot: Tensor<2>) -> Tensor<1> {
    let [n, _] = logits.dims();
    -(log_softmax(logits, 1) * one_hot).sum() / n as f32
}

/// SimCLR's NT-Xent over two views `z1`, `z2` (`[N, D]` each; row `n` of both is one image).
///
/// `L = (1 / 2N) sum_a -log( exp(s(a, p(a)) / T) / sum_{b != a} exp(s(a, b) / T) )` over all `2N`
/// anchors `a` with partner `p(a)`, `s` the cosine similarity.
pub fn nt_xent(z1: Tensor<2>, z2: Tensor<2>, temperature: f32) -> Tensor<1> {
    let [n, _] = z1.dims();
    let device = z1.device();
    let z = normalize_rows(Tensor::cat(vec![z1, z2], 0)); // [2N, D]
    let sim = z.clone().matmul(z.transpose()) / temperature; // [2N, 2N]
    // Exclude self-similarity: a large negative on the diagonal (exp underflows to 0).
    let eye = Tensor::<2>::eye(2 * n, &device);
    let logits = sim - eye * 1e9;
    // The positive of row a is a + N (mod 2N): the identity rolled by N columns.
    let positives = Tensor::cat(
        vec![
            Tensor::cat(vec![Tensor::zeros([n, n], &device), Tensor::eye(n, &device)], 1),
            Tensor::cat(vec![Tensor::eye(n, &device), Tensor::zeros([n, n], &device)], 1),
        ],
        0,
    ); // [2N, 2N]
    cross_entropy_one_hot(logits, positives)
}

/// MoCo's InfoNCE: queries `q` (`[N, D]`), their keys `k` (`[N, D]`, no gradient wanted: detach
/// them before), and a queue of negative keys (`[Q, D]`, already normalised).
///
/// `L = (1 / N) sum_n -log( exp(q_n . k_n / T) / (exp(q_n . k_n / T) + sum_j exp(q_n . queue_j / T)) )`.
pub fn info_nce(q: Tensor<2>, k: Tensor<2>, queue: Tensor<2>, temperature: f32) -> Tensor<1> {
    let [n, _] = q.dims();
    let q = normalize_rows(q);
    let k = normalize_rows(k);
    let positive = (q.clone() * k).sum_dim(1); // [N, 1]
    let negative = q.matmul(queue.transpose()); // [N, Q]
    let logits = Tensor::cat(vec![positive, negative], 1) / temperature; // [N, 1 + Q]
    // The positive is column 0 of every row.
    -log_softmax(logits, 1).slice([0..n, 0..1]).sum() / n as f32
}

/// MoCo-v3's contrastive term: cross-entropy of `q k^T / T` against the diagonal, times `2 T`.
fn mocov3_ctr(q: Tensor<2>, k: Tensor<2>, temperature: f32) -> Tensor<1> {
    let [n, _] = q.dims();
    let device = q.device();
    let logits = normalize_rows(q).matmul(normalize_rows(k).transpose()) / temperature; // [N, N]
    cross_entropy_one_hot(logits, Tensor::eye(n, &device)) * (2.0 * temperature)
}

/// MoCo-v3's symmetrised loss: `ctr(q1, k2) + ctr(q2, k1)` (keys from the momentum encoder).
pub fn mocov3(q1: Tensor<2>, q2: Tensor<2>, k1: Tensor<2>, k2: Tensor<2>, temperature: f32) -> Tensor<1> {
    mocov3_ctr(q1, k2, temperature) + mocov3_ctr(q2, k1, temperature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(rows: &[[f32; 2]], device: &Device) -> Tensor<2> {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_data(burn::tensor::TensorData::new(flat, [rows.len(), 2]), device)
    }

    fn close(x: Tensor<1>, expected: f64) {
        let v: f32 = x.into_scalar();
        assert!((v as f64 - expected).abs() < 1e-5, "{v} vs {expected}");
    }

    #[test]
    fn nt_xent_by_hand() {
        let d = Device::flex();
        // Two orthogonal images, identical views. Anchor [1, 0]: positive similarity 1, two
        // negatives of similarity 0 (the other image's two views):
        // -log(e^(1/T) / (e^(1/T) + 2)) = log(1 + 2 e^(-1/T)); every anchor alike.
        let z = [[1.0, 0.0], [0.0, 1.0]];
        close(nt_xent(t(&z, &d), t(&z, &d), 1.0), (1.0 + 2.0 * (-1.0f64).exp()).ln()); // 0.551445
        close(nt_xent(t(&z, &d), t(&z, &d), 0.5), (1.0 + 2.0 * (-2.0f64).exp()).ln()); // 0.239548
        // Scale does not matter (rows are normalised).
        close(nt_xent(t(&[[3.0, 0.0], [0.0, 0.5]], &d), t(&z, &d), 1.0), (1.0 + 2.0 * (-1.0f64).exp()).ln());
    }

    #[test]
    fn nt_xent_counts_both_directions() {
        let d = Device::flex();
        // View 2 of image 0 is [0.6, 0.8]: anchors differ by direction, the loss averages all four.
        let z1 = [[1.0, 0.0], [0.0, 1.0]];
        let z2 = [[0.6, 0.8], [0.0, 1.0]];
        let e = |x: f64| x.exp();
        // similarities: a0=[1,0]: a1 0, b0 0.6, b1 0 | a1=[0,1]: a0 0, b0 0.8, b1 1
        // b0=[.6,.8]: a0 .6, a1 .8, b1 .8 | b1=[0,1]: a0 0, a1 1, b0 .8
        let l_a0 = -(e(0.6) / (e(0.0) + e(0.6) + e(0.0))).ln();
        let l_a1 = -(e(1.0) / (e(0.0) + e(0.8) + e(1.0))).ln();
        let l_b0 = -(e(0.6) / (e(0.6) + e(0.8) + e(0.8))).ln();
        let l_b1 = -(e(1.0) / (e(0.0) + e(1.0) + e(0.8))).ln();
        close(nt_xent(t(&z1, &d), t(&z2, &d), 1.0), (l_a0 + l_a1 + l_b0 + l_b1) / 4.0);
    }

    #[test]
    fn info_nce_by_hand() {
        let d = Device::flex();
        // q = k = [1, 0]; queue [0, 1], [-1, 0]: logits 1, 0, -1 -> log(1 + e^-1 + e^-2).
        let loss = info_nce(t(&[[1.0, 0.0]], &d), t(&[[2.0, 0.0]], &d), t(&[[0.0, 1.0], [-1.0, 0.0]], &d), 1.0);
        close(loss, (1.0 + (-1.0f64).exp() + (-2.0f64).exp()).ln()); // 0.407606
        // Temperature 0.2 sharpens: log(1 + e^-5 + e^-10).
        let loss = info_nce(t(&[[1.0, 0.0]], &d), t(&[[1.0, 0.0]], &d), t(&[[0.0, 1.0], [-1.0, 0.0]], &d), 0.2);
        close(loss, (1.0 + (-5.0f64).exp() + (-10.0f64).exp()).ln());
    }

    #[test]
    fn mocov3_by_hand() {
        let d = Device::flex();
        // q = k = identity rows: each ctr row is -log(e / (e + 1)); times 2T, two terms.
        let i2 = [[1.0, 0.0], [0.0, 1.0]];
        let ctr = (1.0 + (-1.0f64).exp()).ln() * 2.0; // T = 1
        close(mocov3(t(&i2, &d), t(&i2, &d), t(&i2, &d), t(&i2, &d), 1.0), 2.0 * ctr); // 1.253046
        let ctr = (1.0 + (-5.0f64).exp()).ln() * 2.0 * 0.2; // T = 0.2
        close(mocov3(t(&i2, &d), t(&i2, &d), t(&i2, &d), t(&i2, &d), 0.2), 2.0 * ctr);
        // Pairing: q1 pairs with k2 and q2 with k1. With q1 = k2 = I and q2 = k1 = swap, both terms
        // see matching rows (2 ctr(I, I)); the wrong pairing would see crossed rows, where each
        // target logit is 0 against 1: log(1 + e).
        let swap = [[0.0, 1.0], [1.0, 0.0]];
        let ctr = (1.0 + (-1.0f64).exp()).ln() * 2.0;
        close(mocov3(t(&i2, &d), t(&swap, &d), t(&swap, &d), t(&i2, &d), 1.0), 2.0 * ctr);
    }

    #[test]
    fn nt_xent_gradient_matches_central_differences() {
        let d = Device::flex().autodiff();
        let v = [1.0f32, 0.2, 0.1, 1.0];
        let z2 = t(&[[0.5, 0.5], [0.0, 1.0]], &d);
        let z1 = Tensor::<2>::from_data(burn::tensor::TensorData::new(v.to_vec(), [2, 2]), &d).require_grad();
        let grads = nt_xent(z1.clone(), z2.clone(), 0.5).backward();
        let g: Vec<f32> = z1.grad(&grads).unwrap().into_data().try_to_vec().unwrap();
        for k in 0..4 {
            let at = |delta: f32| {
                let mut w = v;
                w[k] += delta;
                let z = Tensor::<2>::from_data(burn::tensor::TensorData::new(w.to_vec(), [2, 2]), &d);
                nt_xent(z, z2.clone(), 0.5).into_scalar::<f32>()
            };
            let numeric = (at(1e-3) - at(-1e-3)) / 2e-3;
            assert!((g[k] - numeric).abs() < 1e-3 + 0.01 * numeric.abs(), "entry {k}: {} vs {numeric}", g[k]);
        }
    }
}

//! Ridge-regression readouts with their closed-form leave-one-out (LOO) error, on the host and as a
//! differentiable loss of the features (so that the descriptor `i` can be learned through it).
//!
//! The design matrix is `X = [F, 1]` (features plus a constant column, penalised like the rest);
//! the fit is `W = (X^T X + lambda I)^-1 X^T Y`. With `H = X (X^T X + lambda I)^-1 X^T` the LOO
//! residual of sample `j` is `(y_j - (H Y)_j) / (1 - H_jj)`; in the dual form, with
//! `M = X X^T + lambda I`, it is `(M^-1 Y)_j / (M^-1)_jj`.
//!
//! The differentiable form needs `M^-1` with gradients. It is computed on the host in f64 (`C`) and
//! entered as `C + C (M0 - M) C` with `M0 = M` detached: its value is exactly `C` and its gradient
//! is `-C dM C`, the derivative of the inverse.

use burn::prelude::*;

use crate::CoreError;
use crate::linalg;

/// `[F, 1]` in f64.
fn design(features: &[f32], n: usize, d: usize) -> Vec<f64> {
    let mut x = Vec::with_capacity(n * (d + 1));
    for row in features.chunks_exact(d).take(n) {
        x.extend(row.iter().map(|&v| v as f64));
        x.push(1.0);
    }
    x
}

fn transpose(x: &[f64], n: usize, d: usize) -> Vec<f64> {
    let mut t = vec![0.0; n * d];
    for i in 0..n {
        for j in 0..d {
            t[j * n + i] = x[i * d + j];
        }
    }
    t
}

/// A fitted ridge readout: `[F, 1] W`.
#[derive(Debug, Clone)]
pub struct Ridge {
    /// `(d + 1) x m`, the last row is the intercept.
    pub weights: Vec<f64>,
    pub dim: usize,
    pub outputs: usize,
}

impl Ridge {
    /// Fits `[n, d]` features to `[n, m]` targets.
    pub fn fit(features: &[f32], targets: &[f32], n: usize, d: usize, m: usize, lambda: f64) -> Result<Self, CoreError> {
        let x = design(features, n, d);
        let mut a = linalg::gram_t(&x, n, d + 1);
        for k in 0..=d {
            a[k * (d + 1) + k] += lambda;
        }
        let y: Vec<f64> = targets.iter().map(|&v| v as f64).collect();
        let xty = linalg::matmul(&transpose(&x, n, d + 1), &y, d + 1, n, m);
        let weights = linalg::solve_spd(&a, d + 1, &xty, m)?;
        Ok(Self { weights, dim: d, outputs: m })
    }

    /// Predictions `[n, m]` for `[n, d]` features.
    pub fn predict(&self, features: &[f32], n: usize) -> Vec<f32> {
        let x = design(features, n, self.dim);
        linalg::matmul(&x, &self.weights, n, self.dim + 1, self.outputs).into_iter().map(|v| v as f32).collect()
    }
}

/// LOO residuals `[n, m]` in closed form (dual form: `(M^-1 Y)_j / (M^-1)_jj`).
pub fn loo_residuals(features: &[f32], targets: &[f32], n: usize, d: usize, m: usize, lambda: f64) -> Result<Vec<f64>, CoreError> {
    let x = design(features, n, d);
    let mut g = linalg::matmul(&x, &transpose(&x, n, d + 1), n, d + 1, n);
    for k in 0..n {
        g[k * n + k] += lambda;
    }
    let inv = linalg::inverse_spd(&g, n)?;
    let y: Vec<f64> = targets.iter().map(|&v| v as f64).collect();
    let a = linalg::matmul(&inv, &y, n, n, m);
    Ok((0..n * m).map(|k| a[k] / inv[(k / m) * n + k / m]).collect())
}

/// LOO residuals by refitting without each sample in turn (the definition; slow, for checks).
pub fn loo_residuals_explicit(features: &[f32], targets: &[f32], n: usize, d: usize, m: usize, lambda: f64) -> Result<Vec<f64>, CoreError> {
    let mut out = Vec::with_capacity(n * m);
    for j in 0..n {
        let keep: Vec<usize> = (0..n).filter(|&k| k != j).collect();
        let f: Vec<f32> = keep.iter().flat_map(|&k| features[k * d..(k + 1) * d].iter().copied()).collect();
        let y: Vec<f32> = keep.iter().flat_map(|&k| targets[k * m..(k + 1) * m].iter().copied()).collect();
        let ridge = Ridge::fit(&f, &y, n - 1, d, m, lambda)?;
        let p = ridge.predict(&features[j * d..(j + 1) * d], 1);
        out.extend((0..m).map(|o| targets[j * m + o] as f64 - p[o] as f64));
    }
    Ok(out)
}

/// The `lambda` of `grid` with the smallest LOO mean squared error, and that error.
pub fn select_lambda(features: &[f32], targets: &[f32], n: usize, d: usize, m: usize, grid: &[f64]) -> Result<(f64, f64), CoreError> {
    let mut best = (f64::NAN, f64::INFINITY);
    for &lambda in grid {
        let r = loo_residuals(features, targets, n, d, m, lambda)?;
        let mse = r.iter().map(|v| v * v).sum::<f64>() / r.len().max(1) as f64;
        if mse < best.1 {
            best = (lambda, mse);
        }
    }
    if best.0.is_nan() {
        return Err(CoreError::Numeric("no ridge penalty gave a finite leave-one-out error".into()));
    }
    Ok(best)
}

fn host_f64(t: Tensor<2>) -> Vec<f64> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 tensor").into_iter().map(|v| v as f64).collect()
}

/// `M^-1` of a symmetric positive-definite `[n, n]` tensor, with the gradient of the inverse.
pub fn inverse_with_grad(m: Tensor<2>) -> Result<Tensor<2>, CoreError> {
    let [n, _] = m.dims();
    let device = m.device();
    let inv = linalg::inverse_spd(&host_f64(m.clone().detach()), n)?;
    let c = Tensor::<1>::from_floats(inv.iter().map(|&v| v as f32).collect::<Vec<_>>().as_slice(), &device).reshape([n, n]);
    let delta = m.clone().detach() - m; // value 0, gradient -dM
    Ok(c.clone() + c.clone().matmul(delta).matmul(c))
}

/// Mean squared LOO error of ridge regression from `features` (`[n, d]`) to `targets` (`[n, m]`),
/// differentiable in `features`.
pub fn loo_mse(features: Tensor<2>, targets: Tensor<2>, lambda: f64) -> Result<Tensor<1>, CoreError> {
    let [n, _] = features.dims();
    let device = features.device();
    let x = Tensor::cat(vec![features, Tensor::ones([n, 1], &device)], 1);
    let eye = Tensor::<2>::eye(n, &device);
    let m = x.clone().matmul(x.transpose()) + eye.clone() * lambda;
    let inv = inverse_with_grad(m)?;
    let diag = (inv.clone() * eye).sum_dim(1); // [n, 1]
    let residual = inv.matmul(targets) / diag;
    Ok(residual.powf_scalar(2.0).mean())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> (Vec<f32>, Vec<f32>) {
        // 6 samples, 3 features, 2 outputs, values spread by a fixed rule.
        let f: Vec<f32> = (0..18).map(|k| ((k * 7 % 11) as f32 - 5.0) / 3.0).collect();
        let y: Vec<f32> = (0..12).map(|k| ((k * 5 % 7) as f32 - 3.0) / 2.0).collect();
        (f, y)
    }

    #[test]
    fn closed_form_loo_matches_refitting_without_each_sample() {
        let (f, y) = data();
        for lambda in [0.01, 0.5, 3.0] {
            let closed = loo_residuals(&f, &y, 6, 3, 2, lambda).unwrap();
            let explicit = loo_residuals_explicit(&f, &y, 6, 3, 2, lambda).unwrap();
            for (a, b) in closed.iter().zip(&explicit) {
                assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()), "lambda {lambda}: {closed:?} vs {explicit:?}");
            }
        }
    }

    #[test]
    fn ridge_by_hand_on_one_feature() {
        // x = [1, 2], y = [1, 3], lambda = 1: X = [[1,1],[2,1]], X^T X + I = [[6,3],[3,3]],
        // X^T y = [7, 4], W = [[6,3],[3,3]]^-1 [7,4] = [1, 1/3].
        let r = Ridge::fit(&[1.0, 2.0], &[1.0, 3.0], 2, 1, 1, 1.0).unwrap();
        assert!((r.weights[0] - 1.0).abs() < 1e-12 && (r.weights[1] - 1.0 / 3.0).abs() < 1e-12, "{:?}", r.weights);
        assert!((r.predict(&[3.0], 1)[0] - (3.0 + 1.0 / 3.0)).abs() < 1e-6);
    }

    #[test]
    fn tensor_loo_matches_host_and_its_gradient_matches_differences() {
        let device = Device::default().autodiff();
        let (f, y) = data();
        let lambda = 0.5;
        let host = loo_residuals(&f, &y, 6, 3, 2, lambda).unwrap();
        let want = host.iter().map(|v| v * v).sum::<f64>() / 12.0;
        let ft = Tensor::<1>::from_floats(f.as_slice(), &device).reshape([6, 3]).require_grad();
        let yt = Tensor::<1>::from_floats(y.as_slice(), &device).reshape([6, 2]);
        let loss = loo_mse(ft.clone(), yt.clone(), lambda).unwrap();
        let got: f32 = loss.clone().into_scalar();
        assert!((got as f64 - want).abs() < 1e-4 * want.max(1.0), "{got} vs {want}");
        let grads = loss.backward();
        let g: Vec<f32> = ft.grad(&grads).unwrap().into_data().try_into_vec::<f32>().unwrap();
        // Central differences of the host LOO error in each feature.
        let h = 1e-3;
        for k in [0, 4, 8, 17] {
            let mut fp = f.clone();
            fp[k] += h;
            let mut fm = f.clone();
            fm[k] -= h;
            let e = |f: &[f32]| loo_residuals(f, &y, 6, 3, 2, lambda).unwrap().iter().map(|v| v * v).sum::<f64>() / 12.0;
            let fd = (e(&fp) - e(&fm)) / (2.0 * h as f64);
            assert!((g[k] as f64 - fd).abs() < 2e-2 * fd.abs().max(0.05), "feature {k}: {} vs {fd}", g[k]);
        }
    }

    #[test]
    fn lambda_selection_prefers_the_smallest_loo_error() {
        let (f, y) = data();
        let grid = [0.001, 0.1, 10.0, 1000.0];
        let (best, mse) = select_lambda(&f, &y, 6, 3, 2, &grid).unwrap();
        for &l in &grid {
            let r = loo_residuals(&f, &y, 6, 3, 2, l).unwrap();
            assert!(mse <= r.iter().map(|v| v * v).sum::<f64>() / 12.0 + 1e-12);
        }
        assert!(grid.contains(&best));
    }
}

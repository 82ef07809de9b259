//! Small dense linear algebra on the host in f64: what downstream readouts and invariance
//! measurement need (Cholesky factors, solves and inverses of symmetric positive-definite matrices of
//! a few hundred rows). Matrices are row-major `n x n` slices.

use crate::CoreError;

/// Lower-triangular `L` with `L L^T = a`; an error names the pivot that failed.
pub fn cholesky(a: &[f64], n: usize) -> Result<Vec<f64>, CoreError> {
    assert_eq!(a.len(), n * n, "cholesky: expected an {n}x{n} matrix");
    let mut l = vec![0.0; n * n];
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= l[j * n + k] * l[j * n + k];
        }
        if !(d > 0.0) || !d.is_finite() {
            return Err(CoreError::Numeric(format!(
                "the matrix is not positive definite (pivot {j} is {d:e}); add regularisation"
            )));
        }
        let d = d.sqrt();
        l[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            l[i * n + j] = s / d;
        }
    }
    Ok(l)
}

/// Solves `L y = b` in place for each of the `m` columns of `b` (`n x m`, row-major).
pub fn forward_substitute(l: &[f64], n: usize, b: &mut [f64], m: usize) {
    for i in 0..n {
        for c in 0..m {
            let mut s = b[i * m + c];
            for k in 0..i {
                s -= l[i * n + k] * b[k * m + c];
            }
            b[i * m + c] = s / l[i * n + i];
        }
    }
}

/// Solves `L^T x = y` in place for each of the `m` columns.
pub fn backward_substitute(l: &[f64], n: usize, b: &mut [f64], m: usize) {
    for i in (0..n).rev() {
        for c in 0..m {
            let mut s = b[i * m + c];
            for k in i + 1..n {
                s -= l[k * n + i] * b[k * m + c];
            }
            b[i * m + c] = s / l[i * n + i];
        }
    }
}

/// `a^-1 b` for symmetric positive-definite `a` (`n x n`) and `b` (`n x m`).
pub fn solve_spd(a: &[f64], n: usize, b: &[f64], m: usize) -> Result<Vec<f64>, CoreError> {
    let l = cholesky(a, n)?;
    let mut x = b.to_vec();
    forward_substitute(&l, n, &mut x, m);
    backward_substitute(&l, n, &mut x, m);
    Ok(x)
}

/// The inverse of a symmetric positive-definite matrix.
pub fn inverse_spd(a: &[f64], n: usize) -> Result<Vec<f64>, CoreError> {
    let mut eye = vec![0.0; n * n];
    for i in 0..n {
        eye[i * n + i] = 1.0;
    }
    let mut inv = solve_spd(a, n, &eye, n)?;
    // Symmetrise away rounding.
    for i in 0..n {
        for j in 0..i {
            let v = 0.5 * (inv[i * n + j] + inv[j * n + i]);
            inv[i * n + j] = v;
            inv[j * n + i] = v;
        }
    }
    Ok(inv)
}

/// `a b` for `a` `n x k` and `b` `k x m`.
pub fn matmul(a: &[f64], b: &[f64], n: usize, k: usize, m: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * m];
    for i in 0..n {
        for p in 0..k {
            let v = a[i * k + p];
            if v != 0.0 {
                for j in 0..m {
                    out[i * m + j] += v * b[p * m + j];
                }
            }
        }
    }
    out
}

/// `x^T x` for `x` `n x d` (a Gram matrix `d x d`).
pub fn gram_t(x: &[f64], n: usize, d: usize) -> Vec<f64> {
    let mut g = vec![0.0; d * d];
    for row in x.chunks_exact(d).take(n) {
        for i in 0..d {
            let v = row[i];
            for j in i..d {
                g[i * d + j] += v * row[j];
            }
        }
    }
    for i in 0..d {
        for j in 0..i {
            g[i * d + j] = g[j * d + i];
        }
    }
    g
}

/// The first `components` principal components of the rows of `x` (`n x d`): each row's
/// coordinates `[n, components]` (row-major) after centring, and the variance each component
/// explains. Power iteration with deflation on the covariance (300 iterations from a fixed start,
/// so the result is deterministic); each axis is signed so that its largest loading is positive,
/// which keeps a plot from flipping when the data moves a little.
pub fn pca(x: &[f32], n: usize, d: usize, components: usize) -> (Vec<f32>, Vec<f64>) {
    assert_eq!(x.len(), n * d, "rows do not match [{n}, {d}]");
    let mut mean = vec![0.0f64; d];
    for row in x.chunks_exact(d) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64 / n.max(1) as f64;
        }
    }
    let centred: Vec<f64> = x.chunks_exact(d).flat_map(|row| row.iter().zip(&mean).map(|(&v, m)| v as f64 - m)).collect();
    let mut cov = gram_t(&centred, n, d);
    cov.iter_mut().for_each(|v| *v /= n.max(1) as f64);
    let mut axes: Vec<Vec<f64>> = Vec::new();
    let mut variances = Vec::new();
    for c in 0..components.min(d) {
        let mut v: Vec<f64> = (0..d).map(|j| 1.0 + ((j * 7 + c * 13) % 11) as f64 / 11.0).collect();
        let mut lambda = 0.0;
        for _ in 0..300 {
            let mut w = matmul(&cov, &v, d, d, 1);
            for a in &axes {
                let dot: f64 = a.iter().zip(&w).map(|(p, q)| p * q).sum();
                w.iter_mut().zip(a).for_each(|(q, p)| *q -= dot * p);
            }
            let norm = w.iter().map(|q| q * q).sum::<f64>().sqrt();
            if norm < 1e-30 {
                lambda = 0.0;
                break;
            }
            lambda = norm;
            v = w.into_iter().map(|q| q / norm).collect();
        }
        let (big, _) = v.iter().enumerate().fold((0, 0.0f64), |acc, (j, q)| if q.abs() > acc.1 { (j, q.abs()) } else { acc });
        if v[big] < 0.0 {
            v.iter_mut().for_each(|q| *q = -*q);
        }
        axes.push(v);
        variances.push(lambda);
    }
    let coords = centred
        .chunks_exact(d)
        .flat_map(|row| axes.iter().map(move |a| row.iter().zip(a).map(|(p, q)| p * q).sum::<f64>() as f32))
        .collect();
    (coords, variances)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_of_a_hand_matrix() {
        // [[4, 2], [2, 3]] = L L^T with L = [[2, 0], [1, sqrt 2]].
        let l = cholesky(&[4.0, 2.0, 2.0, 3.0], 2).unwrap();
        assert_eq!(l[0], 2.0);
        assert_eq!(l[1], 0.0);
        assert_eq!(l[2], 1.0);
        assert!((l[3] - 2f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn inverse_times_matrix_is_identity() {
        let a = [5.0, 1.0, 0.5, 1.0, 4.0, 1.5, 0.5, 1.5, 3.0];
        let inv = inverse_spd(&a, 3).unwrap();
        let eye = matmul(&a, &inv, 3, 3, 3);
        for i in 0..3 {
            for j in 0..3 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((eye[i * 3 + j] - want).abs() < 1e-12, "{eye:?}");
            }
        }
        // [[2, 1], [1, 2]]^-1 = [[2, -1], [-1, 2]] / 3, by hand.
        let inv = inverse_spd(&[2.0, 1.0, 1.0, 2.0], 2).unwrap();
        for (v, w) in inv.iter().zip([2.0 / 3.0, -1.0 / 3.0, -1.0 / 3.0, 2.0 / 3.0]) {
            assert!((v - w).abs() < 1e-12);
        }
    }

    #[test]
    fn indefinite_matrix_is_refused_with_advice() {
        let e = cholesky(&[1.0, 2.0, 2.0, 1.0], 2).unwrap_err().to_string();
        assert!(e.contains("not positive definite") && e.contains("regularisation"), "{e}");
    }

    #[test]
    fn gram_matches_matmul() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // 3 x 2
        let xt = [1.0, 3.0, 5.0, 2.0, 4.0, 6.0]; // 2 x 3
        assert_eq!(gram_t(&x, 3, 2), matmul(&xt, &x, 2, 3, 2));
    }

    #[test]
    fn pca_finds_the_directions_of_largest_variance() {
        // Points on a line along (3, 4, 0) / 5, with a small spread along z that is uncorrelated
        // with the position on the line (symmetric about its middle).
        let n = 50;
        let z = |k: usize| if (13..37).contains(&k) { -0.1f32 } else { 0.1 };
        let x: Vec<f32> = (0..n)
            .flat_map(|k| {
                let t = k as f32 - 24.5;
                [3.0 * t / 5.0 + 1.0, 4.0 * t / 5.0 - 2.0, z(k)]
            })
            .collect();
        let (coords, variances) = pca(&x, n, 3, 2);
        assert_eq!(coords.len(), n * 2);
        let z_mean = (0..n).map(|k| z(k) as f64).sum::<f64>() / n as f64;
        // The first coordinate is the position along the line (signed so that the larger loading, y,
        // is positive), the second the centred z.
        for k in 0..n {
            assert!((coords[k * 2] - (k as f32 - 24.5)).abs() < 1e-3, "{k}: {}", coords[k * 2]);
            assert!((coords[k * 2 + 1] as f64 - (z(k) as f64 - z_mean)).abs() < 1e-3, "{k}: {}", coords[k * 2 + 1]);
        }
        let line_var = (0..n).map(|k| (k as f64 - 24.5).powi(2)).sum::<f64>() / n as f64;
        let z_var = (0..n).map(|k| (z(k) as f64 - z_mean).powi(2)).sum::<f64>() / n as f64;
        assert!((variances[0] - line_var).abs() < 1e-5 * line_var, "{variances:?}");
        assert!((variances[1] - z_var).abs() < 1e-5, "{variances:?}");
    }
}

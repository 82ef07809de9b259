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
}

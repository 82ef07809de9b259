//! Training-mode BatchNorm on contiguous `f32` buffers `[N, C, H·W]`: the batch statistics, the
//! normalisation, and the backward pass, each one sweep over the activation (two for the
//! statistics and the backward pass), parallel over channels or planes with rayon.
//!
//! With `M = N·H·W`, `x̂ = (x - mean_c) / sqrt(var_c + ε)` and `y = γ_c x̂ + β_c`, the backward pass
//! is `dβ_c = Σ dy`, `dγ_c = Σ dy·x̂` and `dx = γ_c / sqrt(var_c + ε) · (dy - dβ_c / M - x̂ dγ_c / M)`:
//! the statistics depend on `x`, as in any training-mode BatchNorm. With `relu`, the ReLU that
//! follows most BatchNorms is fused in: `y = max(γ x̂ + β, 0)`, and `dy` is masked where the
//! pre-activation is not positive before the same formulas.

use rayon::prelude::*;

/// The sizes of an activation `[batch, channels, plane]` (`plane = H·W`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub batch: usize,
    pub channels: usize,
    pub plane: usize,
}

impl Dims {
    fn len(&self) -> usize {
        self.batch * self.channels * self.plane
    }

    /// Values per channel: `M = N·H·W`.
    fn count(&self) -> f64 {
        (self.batch * self.plane) as f64
    }

    /// The planes of channel `c`, one per image.
    fn planes<'a>(&self, x: &'a [f32], c: usize) -> impl Iterator<Item = &'a [f32]> + 'a {
        let (channels, plane) = (self.channels, self.plane);
        (0..self.batch).map(move |n| &x[(n * channels + c) * plane..(n * channels + c + 1) * plane])
    }
}

/// Sum with eight accumulators (vectorises; the planes are short enough for `f32`).
#[inline(always)]
fn sum(values: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = values.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// `Σ f(a_i, b_i)` with eight accumulators.
#[inline(always)]
fn sum_pairs(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let rest: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(&x, &y)| f(x, y)).sum();
    for (xa, xb) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += f(xa[k], xb[k]);
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// Per-channel batch mean and biased variance: `[mean_0 .. mean_{C-1}, var_0 .. var_{C-1}]`.
pub fn stats(x: &[f32], d: Dims) -> Vec<f32> {
    assert_eq!(x.len(), d.len(), "batch norm: input length for {d:?}");
    let per_channel: Vec<(f32, f32)> = (0..d.channels)
        .into_par_iter()
        .map(|c| {
            super::vectorized(#[inline(always)] || {
                let total: f64 = d.planes(x, c).map(|p| sum(p) as f64).sum();
                let mean = (total / d.count()) as f32;
                let squares: f64 = d.planes(x, c).map(|p| sum_pairs(p, p, |v, _| (v - mean) * (v - mean)) as f64).sum();
                (mean, (squares / d.count()) as f32)
            })
        })
        .collect();
    per_channel.iter().map(|s| s.0).chain(per_channel.iter().map(|s| s.1)).collect()
}

/// The fused ReLU's gate of one channel: `dy` where `scale · x + shift > 0`, else 0 (with
/// `scale = 0, shift = 1` without a ReLU: always `dy`).
#[derive(Clone, Copy)]
struct Gate {
    scale: f32,
    shift: f32,
}

impl Gate {
    #[inline(always)]
    fn apply(self, x: f32, dy: f32) -> f32 {
        if x * self.scale + self.shift > 0.0 { dy } else { 0.0 }
    }
}

/// `γ_c / sqrt(var_c + ε)` per channel.
fn inv_std_scaled(stats: &[f32], gamma: &[f32], epsilon: f64) -> Vec<f32> {
    let c = gamma.len();
    (0..c).map(|k| gamma[k] / ((stats[c + k] as f64 + epsilon).sqrt() as f32)).collect()
}

/// `y = γ_c (x - mean_c) / sqrt(var_c + ε) + β_c` with `stats` from [`stats`], then `max(y, 0)`
/// with `relu`.
pub fn forward(x: &[f32], stats: &[f32], gamma: &[f32], beta: &[f32], epsilon: f64, relu: bool, d: Dims) -> Vec<f32> {
    assert_eq!(x.len(), d.len(), "batch norm: input length for {d:?}");
    assert!(stats.len() == 2 * d.channels && gamma.len() == d.channels && beta.len() == d.channels);
    let scale = inv_std_scaled(stats, gamma, epsilon);
    let shift: Vec<f32> = (0..d.channels).map(|c| beta[c] - stats[c] * scale[c]).collect();
    affine(x, &scale, &shift, relu, d)
}

/// `y = scale_c x + shift_c` per channel, then `max(y, 0)` with `relu`: eval-mode BatchNorm (the
/// statistics folded into `scale` and `shift`), and the normalisation of [`forward`].
pub fn affine(x: &[f32], scale: &[f32], shift: &[f32], relu: bool, d: Dims) -> Vec<f32> {
    assert_eq!(x.len(), d.len(), "channel affine: input length for {d:?}");
    assert!(scale.len() == d.channels && shift.len() == d.channels, "channel affine: {} channels", d.channels);
    if d.plane == 0 {
        return vec![0.0f32; x.len()];
    }
    let fill = |y: &mut [std::mem::MaybeUninit<f32>]| {
        y.par_chunks_mut(d.plane).zip(x.par_chunks(d.plane)).enumerate().for_each(|(k, (y, x))| {
            let c = k % d.channels;
            let (s, t) = (scale[c], shift[c]);
            super::vectorized(#[inline(always)] || {
                if relu {
                    for (y, x) in y.iter_mut().zip(x) {
                        y.write((x * s + t).max(0.0));
                    }
                } else {
                    for (y, x) in y.iter_mut().zip(x) {
                        y.write(x * s + t);
                    }
                }
            })
        })
    };
    // SAFETY: the planes cover `y`, and each plane's loop writes every value of it.
    unsafe { super::written_by(x.len(), fill) }
}

/// The gradients of [`affine`] given `dy`: `(dx, dscale, dshift)`, the last two only with
/// `want_params` (empty otherwise). With `relu`, `dy` counts where `scale x + shift > 0`.
pub fn affine_backward(x: &[f32], dy: &[f32], scale: &[f32], shift: &[f32], relu: bool, want_params: bool, d: Dims) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert!(x.len() == d.len() && dy.len() == d.len(), "channel affine: lengths for {d:?}");
    let gate = |c: usize| if relu { Gate { scale: scale[c], shift: shift[c] } } else { Gate { scale: 0.0, shift: 1.0 } };
    let (dscale, dshift) = if want_params {
        let sums: Vec<(f32, f32)> = (0..d.channels)
            .into_par_iter()
            .map(|c| {
                let g = gate(c);
                super::vectorized(#[inline(always)] || {
                    let (mut s1, mut s2) = (0.0f64, 0.0f64);
                    for (xp, dp) in d.planes(x, c).zip(d.planes(dy, c)) {
                        s1 += sum_pairs(xp, dp, |x, dy| g.apply(x, dy) * x) as f64;
                        s2 += sum_pairs(xp, dp, |x, dy| g.apply(x, dy)) as f64;
                    }
                    (s1 as f32, s2 as f32)
                })
            })
            .collect();
        (sums.iter().map(|s| s.0).collect(), sums.iter().map(|s| s.1).collect())
    } else {
        (Vec::new(), Vec::new())
    };
    if d.plane == 0 {
        return (vec![0.0f32; x.len()], dscale, dshift);
    }
    let fill = |dx: &mut [std::mem::MaybeUninit<f32>]| {
        dx.par_chunks_mut(d.plane).zip(x.par_chunks(d.plane).zip(dy.par_chunks(d.plane))).enumerate().for_each(|(k, (dx, (x, dy)))| {
            let c = k % d.channels;
            let (g, s) = (gate(c), scale[c]);
            super::vectorized(#[inline(always)] || {
                for ((o, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
                    o.write(g.apply(x, dy) * s);
                }
            })
        })
    };
    // SAFETY: the planes cover `dx`, and each plane's loop writes every value of it.
    (unsafe { super::written_by(x.len(), fill) }, dscale, dshift)
}

/// `(dx, dγ, dβ)` given the output gradient `dy`, the input, the statistics of the forward pass,
/// `β` and whether a ReLU was fused in (then `dy` counts only where the output is positive).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    dy: &[f32],
    stats: &[f32],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
    relu: bool,
    d: Dims,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert!(x.len() == d.len() && dy.len() == d.len(), "batch norm: lengths for {d:?}");
    let channels = d.channels;
    // The ReLU's gate, folded into both sweeps: `dy` counts where `s_c x + t_c > 0`, the
    // pre-activation γ x̂ + β. Without a ReLU, `s = 0, t = 1` passes every `dy`.
    let (gate_scale, gate_shift): (Vec<f32>, Vec<f32>) = if relu {
        let scale = inv_std_scaled(stats, gamma, epsilon);
        let shift = (0..channels).map(|c| beta[c] - stats[c] * scale[c]).collect();
        (scale, shift)
    } else {
        (vec![0.0; channels], vec![1.0; channels])
    };
    let gated = |c: usize| Gate { scale: gate_scale[c], shift: gate_shift[c] };
    let mean = &stats[..channels];
    // Σ dy and Σ dy (x - mean) per channel (dy gated).
    let sums: Vec<(f32, f32)> = (0..channels)
        .into_par_iter()
        .map(|c| {
            let (m, gate) = (mean[c], gated(c));
            super::vectorized(#[inline(always)] || {
                let (mut s1, mut s2) = (0.0f64, 0.0f64);
                for (xp, dp) in d.planes(x, c).zip(d.planes(dy, c)) {
                    s1 += sum_pairs(xp, dp, |x, g| gate.apply(x, g)) as f64;
                    s2 += sum_pairs(xp, dp, |x, g| (x - m) * gate.apply(x, g)) as f64;
                }
                (s1 as f32, s2 as f32)
            })
        })
        .collect();
    let inv_std: Vec<f32> = (0..channels).map(|c| 1.0 / ((stats[channels + c] as f64 + epsilon).sqrt() as f32)).collect();
    let dbeta: Vec<f32> = sums.iter().map(|s| s.0).collect();
    let dgamma: Vec<f32> = sums.iter().zip(&inv_std).map(|(s, i)| s.1 * i).collect();
    // dx = k1 dy + k2 (x - mean) + k3 per channel.
    let count = d.count() as f32;
    let coefficients: Vec<[f32; 3]> = (0..channels)
        .map(|c| {
            let k1 = gamma[c] * inv_std[c];
            [k1, -k1 * inv_std[c] * inv_std[c] * sums[c].1 / count, -k1 * sums[c].0 / count]
        })
        .collect();
    if d.plane == 0 {
        return (vec![0.0f32; x.len()], dgamma, dbeta);
    }
    let fill = |dx: &mut [std::mem::MaybeUninit<f32>]| {
        dx.par_chunks_mut(d.plane).zip(x.par_chunks(d.plane).zip(dy.par_chunks(d.plane))).enumerate().for_each(
            |(k, (dx, (x, dy)))| {
                let c = k % channels;
                let [k1, k2, k3] = coefficients[c];
                let (m, gate) = (mean[c], gated(c));
                super::vectorized(#[inline(always)] || {
                    for ((o, &x), &g) in dx.iter_mut().zip(x).zip(dy) {
                        o.write(k1 * gate.apply(x, g) + k2 * (x - m) + k3);
                    }
                })
            },
        )
    };
    // SAFETY: the planes cover `dx`, and each plane's loop writes every value of it.
    let dx = unsafe { super::written_by(x.len(), fill) };
    (dx, dgamma, dbeta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len).map(|k| (((k as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 250.0 - 1.5).collect()
    }

    /// The loss `Σ r·y` is differentiated numerically in f64 and compared with [`backward`].
    #[test]
    fn backward_matches_finite_differences() {
        let d = Dims { batch: 3, channels: 2, plane: 5 };
        let x = values(d.len(), 1);
        let r = values(d.len(), 7);
        let gamma = vec![1.3f32, -0.4];
        let beta = vec![0.2f32, 0.5];
        for relu in [false, true] {
        let loss = |x: &[f32], gamma: &[f32], beta: &[f32]| -> f64 {
            let y = forward(x, &stats(x, d), gamma, beta, 1e-5, relu, d);
            y.iter().zip(&r).map(|(a, b)| (a * b) as f64).sum()
        };
        let (dx, dgamma, dbeta) = backward(&x, &r, &stats(&x, d), &gamma, &beta, 1e-5, relu, d);
        let eps = 1e-2f32;
        let numeric = |f: &dyn Fn(f32) -> f64| (f(eps) - f(-eps)) / (2.0 * eps as f64);
        for k in 0..x.len() {
            let n = numeric(&|e| {
                let mut x = x.clone();
                x[k] += e;
                loss(&x, &gamma, &beta)
            });
            assert!((n - dx[k] as f64).abs() < 2e-2 * (1.0 + n.abs()), "dx[{k}]: {} vs {n}", dx[k]);
        }
        for c in 0..2 {
            let n = numeric(&|e| {
                let mut g = gamma.clone();
                g[c] += e;
                loss(&x, &g, &beta)
            });
            assert!((n - dgamma[c] as f64).abs() < 1e-2 * (1.0 + n.abs()), "dgamma[{c}]: {} vs {n}", dgamma[c]);
            let n = numeric(&|e| {
                let mut b = beta.clone();
                b[c] += e;
                loss(&x, &gamma, &b)
            });
            assert!((n - dbeta[c] as f64).abs() < 1e-3 * (1.0 + n.abs()), "dbeta[{c}] (relu {relu}): {} vs {n}", dbeta[c]);
        }
        }
    }

    #[test]
    fn statistics_are_the_batch_mean_and_biased_variance() {
        let d = Dims { batch: 2, channels: 3, plane: 11 };
        let x = values(d.len(), 3);
        let s = stats(&x, d);
        for c in 0..3 {
            let v: Vec<f64> = (0..2).flat_map(|n| x[(n * 3 + c) * 11..(n * 3 + c + 1) * 11].iter().map(|&v| v as f64)).collect();
            let mean = v.iter().sum::<f64>() / 22.0;
            let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 22.0;
            assert!((s[c] as f64 - mean).abs() < 1e-5 && (s[3 + c] as f64 - var).abs() < 1e-5, "channel {c}");
        }
    }
}

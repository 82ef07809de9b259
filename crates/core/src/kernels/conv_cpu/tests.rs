//! The im2col convolution against its definition, its gradients against the adjoint of the
//! forward pass, and helpers the direct convolution's tests share.

use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub(crate) fn random(len: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// The definition, one output value at a time.
fn naive_forward(x: &[f32], w: &[f32], g: &Geometry) -> Vec<f32> {
    let (oh_n, ow_n) = (g.out_h(), g.out_w());
    let mut y = vec![0.0f32; g.batch * g.image_out()];
    for n in 0..g.batch {
        for o in 0..g.out_channels {
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    let mut s = 0.0f64;
                    for c in 0..g.in_channels {
                        for ki in 0..g.kernel_h {
                            for kj in 0..g.kernel_w {
                                let ih = (oh * g.stride[0] + ki) as isize - g.padding[0] as isize;
                                let iw = (ow * g.stride[1] + kj) as isize - g.padding[1] as isize;
                                if ih < 0 || iw < 0 || ih >= g.in_h as isize || iw >= g.in_w as isize {
                                    continue;
                                }
                                let xv = x[((n * g.in_channels + c) * g.in_h + ih as usize) * g.in_w + iw as usize];
                                let wv = w[((o * g.in_channels + c) * g.kernel_h + ki) * g.kernel_w + kj];
                                s += (xv * wv) as f64;
                            }
                        }
                    }
                    y[((n * g.out_channels + o) * oh_n + oh) * ow_n + ow] = s as f32;
                }
            }
        }
    }
    y
}

/// `a` equals `b` within 1e-4 of `b`'s largest magnitude.
pub(crate) fn close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= 1e-4 * scale, "{what}[{i}]: {x} vs {y} (scale {scale})");
    }
}

/// A square-kernel geometry: `(batch, in, height, width, out, kernel, stride, padding)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn geometry(batch: usize, c: usize, h: usize, w: usize, o: usize, k: usize, s: usize, p: usize) -> Geometry {
    Geometry { batch, in_channels: c, in_h: h, in_w: w, out_channels: o, kernel_h: k, kernel_w: k, stride: [s, s], padding: [p, p] }
}

fn geometries() -> Vec<Geometry> {
    let g = geometry;
    vec![
        g(2, 3, 5, 7, 4, 3, 1, 1),
        g(1, 3, 5, 7, 5, 3, 2, 1),
        g(3, 5, 6, 6, 7, 1, 1, 0),
        g(3, 5, 7, 6, 7, 1, 2, 0),
        g(2, 3, 11, 9, 4, 7, 2, 3),
        g(5, 6, 4, 4, 3, 3, 1, 1),
        g(1, 2, 1, 1, 3, 3, 1, 1),
        g(2, 4, 8, 8, 6, 4, 4, 0),
    ]
}

#[test]
fn forward_matches_the_definition() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for g in geometries() {
        let x = random(g.batch * g.image_in(), &mut rng);
        let w = random(g.kernel_len(), &mut rng);
        close(&forward(&x, &w, &g), &naive_forward(&x, &w, &g), &format!("forward {g:?}"));
    }
}

/// `<dy, conv(x, w)>` is linear in `x` and in `w`, so its gradients are exact: compare each
/// entry of both against the change of that inner product under a unit step.
#[test]
fn gradients_are_the_adjoints_of_the_forward() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for g in geometries() {
        let x = random(g.batch * g.image_in(), &mut rng);
        let w = random(g.kernel_len(), &mut rng);
        let dy = random(g.batch * g.image_out(), &mut rng);
        let (dx, dw) = backward(&x, &w, &dy, &g, true, true);
        let (dx, dw) = (dx.unwrap(), dw.unwrap());
        let inner = |x: &[f32], w: &[f32]| -> f64 {
            naive_forward(x, w, &g).iter().zip(&dy).map(|(a, b)| (a * b) as f64).sum()
        };
        let expect_dx: Vec<f32> = (0..x.len())
            .map(|i| {
                let mut e = vec![0.0f32; x.len()];
                e[i] = 1.0;
                inner(&e, &w) as f32
            })
            .collect();
        let expect_dw: Vec<f32> = (0..w.len())
            .map(|i| {
                let mut e = vec![0.0f32; w.len()];
                e[i] = 1.0;
                inner(&x, &e) as f32
            })
            .collect();
        close(&dx, &expect_dx, &format!("dx {g:?}"));
        close(&dw, &expect_dw, &format!("dw {g:?}"));
        let (only_dx, none) = backward(&x, &w, &dy, &g, true, false);
        assert!(none.is_none());
        assert_eq!(only_dx.unwrap(), dx);
    }
}

#[test]
fn valid_range_counts_the_positions_inside_the_image() {
    for (k, pad, stride, size) in [(0, 1, 1, 5), (2, 1, 1, 5), (0, 3, 2, 11), (6, 3, 2, 11), (1, 1, 2, 1)] {
        let out = (size + 2 * pad) / stride + 1;
        let (a, b) = valid_range(k, pad, stride, size, out);
        for o in 0..out {
            let inside = (o * stride + k) >= pad && o * stride + k - pad < size;
            assert_eq!(inside, (a..b).contains(&o), "k {k} pad {pad} stride {stride} size {size} o {o}");
        }
    }
}

/// The kernel gradient's partial sums follow a split of the batch that does not depend on
/// the thread count: results are bitwise the same with 1 and 3 threads.
#[test]
fn results_do_not_depend_on_the_thread_count() {
    let g = Geometry { batch: 13, in_channels: 5, in_h: 9, in_w: 7, out_channels: 6, kernel_h: 3, kernel_w: 3, stride: [1, 1], padding: [1, 1] };
    let x: Vec<f32> = (0..g.batch * g.image_in()).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
    let w: Vec<f32> = (0..g.kernel_len()).map(|i| ((i * 13) % 17) as f32 / 8.0 - 1.0).collect();
    let dy: Vec<f32> = (0..g.batch * g.image_out()).map(|i| ((i * 7) % 23) as f32 / 11.0 - 1.0).collect();
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| (forward(&x, &w, &g), backward(&x, &w, &dy, &g, true, true)))
    };
    assert_eq!(run(1), run(3));
}

//! The direct convolution against im2col, and its timings (ignored tests).

use super::*;
use crate::kernels::conv_cpu;
use crate::kernels::conv_cpu::tests::random;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The direct passes equal the im2col path on every shape, with each ISA this CPU runs.
#[test]
fn direct_passes_equal_im2col() {
    let compared = compare_with_im2col().unwrap_or_else(|e| panic!("{e}"));
    if Isa::detected().is_empty() {
        eprintln!("no AVX2 or AVX-512 here: the direct convolution is not used on this CPU");
        assert_eq!(compared, 0);
    } else {
        // Every shape but the three 1x1 ones is covered, forward and (3x3) kernel gradient.
        assert!(compared >= 30 * Isa::detected().len(), "{compared} comparisons");
    }
}

#[test]
fn coverage() {
    let g = |k, s: [usize; 2]| Geometry { batch: 1, in_channels: 1, in_h: 8, in_w: 8, out_channels: 1, kernel_h: k, kernel_w: k, stride: s, padding: [0, 0] };
    assert!(covers_forward(&g(7, [2, 2])) && !covers_kernel_gradient(&g(7, [2, 2])));
    assert!(covers_kernel_gradient(&g(3, [1, 1])) && covers_kernel_gradient(&g(3, [2, 2])));
    assert!(!covers_forward(&g(1, [2, 2])) && !covers_kernel_gradient(&g(1, [1, 1])));
    assert!(!covers_forward(&g(3, [1, 2])) && !covers_forward(&g(4, [4, 4])));
}

/// Per-shape timings of both paths on a width-0.25 CIFAR ResNet-18's convolutions, batch 128
/// (`cargo test --release -p ail-core --lib conv_direct -- --ignored --nocapture`).
#[test]
#[ignore]
fn timing_per_shape() {
    let Some(isa) = isa() else { return };
    let shapes = [(3, 16, 32, 3, 1), (16, 16, 32, 3, 1), (16, 32, 32, 3, 2), (16, 32, 32, 1, 2), (32, 32, 16, 3, 1), (32, 64, 16, 3, 2), (32, 64, 16, 1, 2), (64, 64, 8, 3, 1), (64, 128, 8, 3, 2), (64, 128, 8, 1, 2), (128, 128, 4, 3, 1)];
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let time = |f: &mut dyn FnMut()| {
        f();
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            f();
            best = best.min(t.elapsed().as_secs_f64() * 1e3);
        }
        best
    };
    let mut sums = [0.0f64; 6];
    for (c, o, side, k, s) in shapes {
        let g = Geometry { batch: 128, in_channels: c, in_h: side, in_w: side, out_channels: o, kernel_h: k, kernel_w: k, stride: [s, s], padding: [k / 2, k / 2] };
        let x = random(g.batch * g.image_in(), &mut rng);
        let w = random(g.kernel_len(), &mut rng);
        let dy = random(g.batch * g.image_out(), &mut rng);
        let t = [
            time(&mut || drop(conv_cpu::forward_im2col(&x, &w, &g))),
            time(&mut || drop(conv_cpu::forward(&x, &w, &g))),
            time(&mut || drop(conv_cpu::backward_im2col(&x, &w, &dy, &g, true, false))),
            time(&mut || drop(conv_cpu::backward(&x, &w, &dy, &g, true, false))),
            time(&mut || drop(conv_cpu::backward_im2col(&x, &w, &dy, &g, false, true))),
            time(&mut || drop(conv_cpu::backward(&x, &w, &dy, &g, false, true))),
        ];
        for (a, b) in sums.iter_mut().zip(t) {
            *a += b;
        }
        println!("{c:>3}->{o:<3} {side:>2}px {k}x{k} s{s}: forward {:7.2} / {:7.2} ms, dx {:7.2} / {:7.2}, dw {:7.2} / {:7.2} (im2col / {isa:?})", t[0], t[1], t[2], t[3], t[4], t[5]);
    }
    println!("sum: forward {:.1} / {:.1} ms, dx {:.1} / {:.1}, dw {:.1} / {:.1}", sums[0], sums[1], sums[2], sums[3], sums[4], sums[5]);
}

/// The forward micro-kernel alone on one image kept in the cache (GFLOP/s on one thread).
#[test]
#[ignore]
fn kernel_alone() {
    let Some(isa) = isa() else { return };
    for (c, side, o) in [(16, 32, 16), (64, 8, 64), (128, 4, 128)] {
        let g = Geometry { batch: 1, in_channels: c, in_h: side, in_w: side, out_channels: o, kernel_h: 3, kernel_w: 3, stride: [1, 1], padding: [1, 1] };
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let x = random(g.image_in(), &mut rng);
        let w = random(g.kernel_len(), &mut rng);
        let packed = pack_kernel(&w, &g, isa.lanes());
        let mut xp = vec![MaybeUninit::new(0.0f32); padded_len(&g)];
        pad_image(&x, &g, &mut xp);
        let xp = unsafe { assume_init(&xp) }.to_vec();
        let shape = Shape::of(&g);
        let mut y = vec![MaybeUninit::new(0.0f32); g.image_out()];
        let reps = 2000;
        let t = std::time::Instant::now();
        for _ in 0..reps {
            let block = g.patch() * isa.lanes();
            for co0 in (0..o).step_by(2 * isa.lanes()) {
                let co_n = (2 * isa.lanes()).min(o - co0);
                unsafe { forward_block(isa, &xp, &shape, &packed[co0 / isa.lanes() * block..], block, &mut y, co0, co_n) };
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let flops = 2.0 * (g.image_out() * g.patch()) as f64 * reps as f64;
        println!("{c}->{o} {side}px: {:.1} GFLOP/s", flops / secs / 1e9);
    }
}

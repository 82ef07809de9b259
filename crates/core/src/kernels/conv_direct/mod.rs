//! A direct convolution for x86-64 CPUs with AVX-512 or AVX2 + FMA, and for WebAssembly with its
//! 128-bit SIMD (the page's CPU backend): the forward pass and the kernel gradient without im2col.
//!
//! im2col + GEMM ([`conv_cpu`](super::conv_cpu)) copies every input value `kh · kw` times into a
//! column matrix, and the GEMM packs that matrix again before its micro-kernels read it; at the
//! narrow widths and small images of CIFAR encoders those copies cost as much as the arithmetic.
//! Here the arithmetic reads the (zero-padded) image directly:
//! - forward: for a block of `L` output channels (`L` = 16 lanes with AVX-512, 8 with AVX2, 4 with
//!   SIMD128) and a tile of `R x T` output pixels, `R · T` vector accumulators; each kernel tap
//!   loads one vector of `L` weights (the kernel is repacked as `[O/L][C][kh][kw][L]`) and multiplies it by each
//!   pixel's input value, broadcast from memory. Rows of a tile are `stride · width` apart, its
//!   columns `stride` apart: with the stride a constant, every address is an immediate offset.
//! - kernel gradient: for a block of `L` output channels, the output gradient transposed to
//!   `[N][O/L][P][L]` (one vector per pixel); for `CB` input channels and every tap, one vector
//!   accumulator each, summed over the pixels of a chunk of images; one partial sum per chunk
//!   (the same fixed split of the batch as the im2col path, so results do not depend on the number
//!   of threads), added at the end.
//!
//! The input gradient of a stride-1 convolution is a forward convolution of the output gradient
//! (see `conv_cpu::backward`), so it runs here too; other strides scatter with col2im there.
//! Strides other than 1 and 2 (both axes alike), 1x1 kernels, and kernel gradients of kernels
//! other than 3x3, take the im2col path. `AIL_CONV=im2col` in the environment turns this path off for
//! the whole process (the benchmarks compare both).

use std::mem::MaybeUninit;
use std::sync::OnceLock;

use rayon::prelude::*;

use crate::kernels::conv_cpu::Geometry;
use crate::kernels::written_by;

mod simd;
#[cfg(test)]
mod tests;

/// The vector instructions the direct convolution runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// 16 lanes of `f32`.
    Avx512,
    /// 8 lanes of `f32`, with FMA.
    Avx2,
    /// 4 lanes of `f32`: WebAssembly's SIMD128 (a module built with `+simd128`, as the page is).
    Simd128,
}

impl Isa {
    /// `f32` lanes per vector.
    pub fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2 => 8,
            Isa::Simd128 => 4,
        }
    }

    /// The ISAs this CPU runs, widest first.
    pub fn detected() -> Vec<Isa> {
        #[cfg(target_arch = "x86_64")]
        {
            let avx512 = is_x86_feature_detected!("avx512f").then_some(Isa::Avx512);
            let avx2 = (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")).then_some(Isa::Avx2);
            [avx512, avx2].into_iter().flatten().collect()
        }
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        {
            vec![Isa::Simd128]
        }
        #[cfg(not(any(target_arch = "x86_64", all(target_arch = "wasm32", target_feature = "simd128"))))]
        Vec::new()
    }
}

/// The ISA the direct convolution uses in this process, `None` when it is off (no AVX2 / AVX-512,
/// another architecture, or `AIL_CONV=im2col`).
pub fn isa() -> Option<Isa> {
    static ISA: OnceLock<Option<Isa>> = OnceLock::new();
    *ISA.get_or_init(|| {
        if std::env::var("AIL_CONV").is_ok_and(|v| v.eq_ignore_ascii_case("im2col")) {
            return None;
        }
        Isa::detected().first().copied()
    })
}

/// Whether the direct forward pass covers `g`: the same stride 1 or 2 on both axes, a kernel
/// larger than 1x1. A 1x1 kernel needs no im2col at stride 1 (the image is its own column
/// matrix) and a cheap one at stride 2, and the GEMM's register blocking is faster there
/// (measured on CIFAR's shortcut shapes, BENCHMARKS.md).
pub fn covers_forward(g: &Geometry) -> bool {
    g.stride[0] == g.stride[1] && matches!(g.stride[0], 1 | 2) && g.kernel_h * g.kernel_w > 1
}

/// Whether the direct kernel gradient covers `g`: as the forward, with a 3x3 kernel.
pub fn covers_kernel_gradient(g: &Geometry) -> bool {
    covers_forward(g) && g.kernel_h == 3 && g.kernel_w == 3
}

/// The image zero-padded by `g.padding`: `[C, H + 2ph, W + 2pw]`, every value of `out` written.
fn pad_image(x: &[f32], g: &Geometry, out: &mut [MaybeUninit<f32>]) {
    let [ph, pw] = g.padding;
    let (hp, wp) = (g.in_h + 2 * ph, g.in_w + 2 * pw);
    let zero = |d: &mut [MaybeUninit<f32>]| d.iter_mut().for_each(|v| {
        v.write(0.0);
    });
    for (src, dst) in x.chunks_exact(g.in_h * g.in_w).zip(out.chunks_exact_mut(hp * wp)) {
        zero(&mut dst[..ph * wp]);
        zero(&mut dst[(ph + g.in_h) * wp..]);
        for (r, row) in src.chunks_exact(g.in_w).enumerate() {
            let d = &mut dst[(ph + r) * wp..(ph + r + 1) * wp];
            zero(&mut d[..pw]);
            for (d, v) in d[pw..pw + g.in_w].iter_mut().zip(row) {
                d.write(*v);
            }
            zero(&mut d[pw + g.in_w..]);
        }
    }
}

/// `values` as initialised values.
///
/// # Safety
/// Every element of `values` was written.
unsafe fn assume_init(values: &[MaybeUninit<f32>]) -> &[f32] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and the caller says each is written.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<f32>(), values.len()) }
}

/// Values of one padded image.
fn padded_len(g: &Geometry) -> usize {
    g.in_channels * (g.in_h + 2 * g.padding[0]) * (g.in_w + 2 * g.padding[1])
}

/// The kernel `[O, C, kh, kw]` as `[O/L][C][kh][kw][L]`, zeros in the lanes past `O`.
fn pack_kernel(w: &[f32], g: &Geometry, lanes: usize) -> Vec<f32> {
    let (o, kk) = (g.out_channels, g.patch());
    let blocks = o.div_ceil(lanes);
    let mut out = vec![0.0f32; blocks * kk * lanes];
    for (co, row) in w.chunks_exact(kk).enumerate() {
        let (b, l) = (co / lanes, co % lanes);
        for (t, v) in row.iter().enumerate() {
            out[(b * kk + t) * lanes + l] = *v;
        }
    }
    out
}

/// The sizes a micro-kernel needs, in values.
#[derive(Clone, Copy)]
#[cfg_attr(not(any(target_arch = "x86_64", target_arch = "wasm32")), allow(dead_code))]
struct Shape {
    channels: usize,
    /// Values between channels of the padded image.
    plane: usize,
    /// Values between rows of the padded image.
    row: usize,
    kernel_h: usize,
    kernel_w: usize,
    out_h: usize,
    out_w: usize,
    stride: usize,
}

impl Shape {
    fn of(g: &Geometry) -> Self {
        let (hp, wp) = (g.in_h + 2 * g.padding[0], g.in_w + 2 * g.padding[1]);
        Self {
            channels: g.in_channels,
            plane: hp * wp,
            row: wp,
            kernel_h: g.kernel_h,
            kernel_w: g.kernel_w,
            out_h: g.out_h(),
            out_w: g.out_w(),
            stride: g.stride[0],
        }
    }
}


/// Calls `$f($args)` of `isa`'s micro-kernel module (`simd::avx512`, `simd::avx2` or
/// `simd::simd128`); an ISA of another architecture is unreachable ([`Isa::detected`] never
/// returns it), and names the arguments so that none is unused there.
macro_rules! on_isa {
    ($isa:expr, $f:ident($($arg:expr),*), $unused:expr) => {
        match $isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => simd::avx512::$f($($arg),*),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => simd::avx2::$f($($arg),*),
            #[cfg(target_arch = "wasm32")]
            Isa::Simd128 => simd::simd128::$f($($arg),*),
            #[allow(unreachable_patterns)]
            other => unreachable!("{other:?} on another architecture {:?}", $unused),
        }
    };
}

/// `forward_block` of `isa`'s micro-kernels.
///
/// # Safety
/// As theirs: the CPU runs `isa`, and the sizes match `s`.
unsafe fn forward_block(isa: Isa, x: &[f32], s: &Shape, w: &[f32], w_block: usize, y: &mut [MaybeUninit<f32>], co0: usize, co_n: usize) {
    // SAFETY: the caller's.
    unsafe { on_isa!(isa, forward_block(x, s, w, w_block, y, co0, co_n), (x.len(), s.channels, w.len(), w_block, y.len(), co0, co_n)) }
}

/// `forward_rows` of `isa`'s micro-kernels.
///
/// # Safety
/// As theirs: the CPU runs `isa`, the sizes match `s`, stride 1, `out_w` a multiple of the lanes.
unsafe fn forward_rows(isa: Isa, x: &[f32], s: &Shape, w: &[f32], o: usize, y: &mut [MaybeUninit<f32>]) {
    // SAFETY: the caller's.
    unsafe { on_isa!(isa, forward_rows(x, s, w, o, y), (x.len(), s.channels, w.len(), o, y.len())) }
}

/// `kernel_gradient_rows` of `isa`'s micro-kernels.
///
/// # Safety
/// As theirs: the CPU runs `isa`, the sizes match `s`, 3x3, stride 1, `out_w` a multiple of the lanes.
unsafe fn kernel_gradient_rows(isa: Isa, x: &[f32], s: &Shape, dy: &[f32], o: usize, acc: &mut [f32]) {
    // SAFETY: the caller's.
    unsafe { on_isa!(isa, kernel_gradient_rows(x, s, dy, o, acc), (x.len(), s.channels, dy.len(), o, acc.len())) }
}

/// The ISA of the row-vector passes for `g`, if any: stride 1 and whole vectors of `isa`'s
/// output pixels per row (CIFAR's 32 and 16 px stages with 16 lanes). On an AVX-512 CPU, the 8 px
/// stage in AVX2's 8 lanes was slower than the channel-lane kernels (BENCHMARKS.md).
fn rows_isa(g: &Geometry, isa: Isa) -> Option<Isa> {
    (g.stride == [1, 1] && g.out_w() % isa.lanes() == 0).then_some(isa)
}

/// `kernel_gradient_image` of `isa`'s micro-kernels.
///
/// # Safety
/// As theirs: the CPU runs `isa`, and the sizes match `s`.
unsafe fn kernel_gradient_image(isa: Isa, x: &[f32], s: &Shape, dy: &[f32], acc: &mut [f32]) {
    // SAFETY: the caller's.
    unsafe { on_isa!(isa, kernel_gradient_image(x, s, dy, acc), (x.len(), s.channels, dy.len(), acc.len())) }
}

/// The direct forward pass with `isa`: `x` `[N, C, H, W]` by `w` `[O, C, kh, kw]`.
///
/// # Panics
/// When `g` is not covered ([`covers_forward`]) or `isa` is not one this CPU runs.
pub fn forward(x: &[f32], w: &[f32], g: &Geometry, isa: Isa) -> Vec<f32> {
    assert!(covers_forward(g) && Isa::detected().contains(&isa), "direct conv: {isa:?} on {g:?}");
    assert!(g.is_valid() && x.len() == g.batch * g.image_in() && w.len() == g.kernel_len(), "direct conv: sizes of {g:?}");
    let lanes = isa.lanes();
    let (o, p) = (g.out_channels, g.pixels_out());
    if g.batch * o * p == 0 || g.image_in() == 0 {
        return vec![0.0f32; g.batch * o * p];
    }
    let packed = pack_kernel(w, g, lanes);
    let shape = Shape::of(g);
    let block_w = g.patch() * lanes;
    let split_blocks = g.batch < rayon::current_num_threads();
    let rows = rows_isa(g, isa);
    // Two blocks of output channels per pass (each input value broadcast once for both).
    let step = 2 * lanes;
    let block = |xp: &[f32], co0: usize, y_b: &mut [MaybeUninit<f32>], base: usize| {
        let co_n = step.min(o - co0);
        let w_b = &packed[co0 / lanes * block_w..][..co_n.div_ceil(lanes) * block_w];
        // SAFETY: `isa` runs on this CPU (asserted); the shape, kernels and output sizes are
        // those `forward_block` requires, by construction above.
        unsafe { forward_block(isa, xp, &shape, w_b, block_w, y_b, co0 - base, co_n) }
    };
    let fill = |y: &mut [MaybeUninit<f32>]| {
        y.par_chunks_mut(o * p).zip(x.par_chunks(g.image_in())).for_each_init(Vec::new, |xp, (y_n, x_n)| {
            xp.resize(padded_len(g), MaybeUninit::new(0.0));
            pad_image(x_n, g, xp);
            // SAFETY: `pad_image` wrote every value.
            let xp = unsafe { assume_init(xp) };
            if let Some(rows) = rows {
                // SAFETY: `rows` runs here, stride 1 and whole vectors per row (`rows_isa`).
                unsafe { forward_rows(rows, xp, &shape, w, o, y_n) };
            } else if split_blocks {
                y_n.par_chunks_mut(step * p).enumerate().for_each(|(b, y_b)| block(xp, b * step, y_b, b * step));
            } else {
                for co0 in (0..o).step_by(step) {
                    block(xp, co0, y_n, 0);
                }
            }
        })
    };
    // SAFETY: the blocks cover every output channel of every image, and `forward_block` writes
    // every pixel of its channels.
    unsafe { written_by(g.batch * o * p, fill) }
}

/// The direct kernel gradient with `isa`: `dW` `[O, C, k, k]` from `x` `[N, C, H, W]` and `dy`
/// `[N, O, out_h, out_w]`, the batch split into `chunks` fixed parts summed in order.
///
/// # Panics
/// When `g` is not covered ([`covers_kernel_gradient`]) or `isa` is not one this CPU runs.
pub fn kernel_gradient(x: &[f32], dy: &[f32], g: &Geometry, isa: Isa, per_chunk: usize) -> Vec<f32> {
    assert!(covers_kernel_gradient(g) && Isa::detected().contains(&isa), "direct conv gradient: {isa:?} on {g:?}");
    assert!(g.is_valid() && x.len() == g.batch * g.image_in() && dy.len() == g.batch * g.image_out(), "direct conv gradient: sizes of {g:?}");
    let lanes = isa.lanes();
    let (o, p, c, kk) = (g.out_channels, g.pixels_out(), g.in_channels, g.kernel_h * g.kernel_w);
    let blocks = o.div_ceil(lanes);
    let per_chunk = per_chunk.max(1);
    let chunks = g.batch.div_ceil(per_chunk).max(1);
    let block_len = c * kk * lanes;
    if g.batch == 0 || p == 0 || c == 0 || o == 0 {
        return vec![0.0f32; g.kernel_len()];
    }
    let plen = padded_len(g);
    if let Some(rows) = rows_isa(g, isa) {
        return kernel_gradient_by_rows(x, dy, g, rows, per_chunk);
    }
    // The padded images and the output gradient as [N][O/L][P][L], once for all tasks.
    let fill_xp = |xp: &mut [MaybeUninit<f32>]| xp.par_chunks_mut(plen).zip(x.par_chunks(g.image_in())).for_each(|(d, s)| pad_image(s, g, d));
    // SAFETY: `pad_image` writes every value of each image's part.
    let xp = unsafe { written_by(g.batch * plen, fill_xp) };
    let fill_dyt = |dyt: &mut [MaybeUninit<f32>]| {
        dyt.par_chunks_mut(blocks * p * lanes).zip(dy.par_chunks(o * p)).for_each(|(d, s)| {
            // By runs of 64 pixels, so that the lines written stay in the L1 cache while every
            // channel of the block fills its lane; lanes past the last channel are zeros.
            for (b, dst) in d.chunks_exact_mut(p * lanes).enumerate() {
                let co_n = lanes.min(o - b * lanes);
                for px0 in (0..p).step_by(64) {
                    let run = 64.min(p - px0);
                    for l in 0..lanes {
                        if l < co_n {
                            let src = &s[(b * lanes + l) * p + px0..][..run];
                            for (k, v) in src.iter().enumerate() {
                                dst[(px0 + k) * lanes + l].write(*v);
                            }
                        } else {
                            for k in 0..run {
                                dst[(px0 + k) * lanes + l].write(0.0);
                            }
                        }
                    }
                }
            }
        })
    };
    // SAFETY: every (pixel, lane) of every block of every image is written above.
    let dyt = unsafe { written_by(g.batch * blocks * p * lanes, fill_dyt) };
    let shape = Shape::of(g);
    // One partial sum per (chunk, block of output channels).
    let mut partial = vec![0.0f32; chunks * blocks * block_len];
    partial.par_chunks_mut(block_len).enumerate().for_each(|(task, acc)| {
        let (chunk, b) = (task / blocks, task % blocks);
        for n in chunk * per_chunk..((chunk + 1) * per_chunk).min(g.batch) {
            let x_n = &xp[n * plen..(n + 1) * plen];
            let dy_nb = &dyt[(n * blocks + b) * p * lanes..][..p * lanes];
            // SAFETY: `isa` runs on this CPU and `g` is covered (asserted); the sizes are those
            // `kernel_gradient_image` requires, by construction above.
            unsafe { kernel_gradient_image(isa, x_n, &shape, dy_nb, acc) }
        }
    });
    // Sum the chunks in order, then [O/L][C][kk][L] -> [O][C][kk].
    let (first, rest) = partial.split_at_mut(blocks * block_len);
    for chunk in rest.chunks_exact(blocks * block_len) {
        for (t, v) in first.iter_mut().zip(chunk) {
            *t += v;
        }
    }
    let mut dw = vec![0.0f32; g.kernel_len()];
    for (co, row) in dw.chunks_exact_mut(c * kk).enumerate() {
        let (b, l) = (co / lanes, co % lanes);
        for (t, v) in row.iter_mut().enumerate() {
            *v = first[(b * c * kk + t) * lanes + l];
        }
    }
    dw
}

/// [`kernel_gradient`] in the row-vector layout (stride 1, whole vectors of output pixels per
/// row): per chunk of the batch, vector partial sums `[O][C][9][L]` of `dy · x` over the chunk's
/// images, reduced across lanes at the end of the chunk; the chunks are added in order.
fn kernel_gradient_by_rows(x: &[f32], dy: &[f32], g: &Geometry, isa: Isa, per_chunk: usize) -> Vec<f32> {
    let lanes = isa.lanes();
    let (o, p, c) = (g.out_channels, g.pixels_out(), g.in_channels);
    let chunks = g.batch.div_ceil(per_chunk).max(1);
    let shape = Shape::of(g);
    let plen = padded_len(g);
    let kernel = o * c * 9;
    let mut partial = vec![0.0f32; chunks * kernel];
    partial.par_chunks_mut(kernel).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(xp, acc), (chunk, out)| {
            xp.resize(plen, MaybeUninit::new(0.0));
            acc.clear();
            acc.resize(kernel * lanes, 0.0f32);
            for n in chunk * per_chunk..((chunk + 1) * per_chunk).min(g.batch) {
                pad_image(&x[n * g.image_in()..(n + 1) * g.image_in()], g, xp);
                // SAFETY: `pad_image` wrote every value; `isa` runs here and `g` is 3x3, stride
                // 1, whole vectors per row (the callers' checks); `acc` holds `o · c · 9 · L`.
                unsafe { kernel_gradient_rows(isa, assume_init(xp), &shape, &dy[n * o * p..(n + 1) * o * p], o, acc) };
            }
            for (v, lanes_of) in out.iter_mut().zip(acc.chunks_exact(lanes)) {
                *v = lanes_of.iter().sum();
            }
        },
    );
    let (first, rest) = partial.split_at_mut(kernel);
    for chunk in rest.chunks_exact(kernel) {
        for (t, v) in first.iter_mut().zip(chunk) {
            *t += v;
        }
    }
    partial.truncate(kernel);
    partial
}

/// Shapes with every tile size and tail: odd sizes, channel counts that are not multiples of the
/// lanes, more than one block of output channels, strides 1 and 2, 1x1, 3x3, 5x5 and 7x7, rows of
/// whole vectors (4, 16, 32 px) and not: `(batch, in, height, width, out, kernel, stride, padding)`.
const CHECKED_SHAPES: [[usize; 8]; 13] = [
    [1, 3, 5, 7, 4, 3, 1, 1],
    [2, 3, 5, 7, 5, 3, 2, 1],
    [3, 5, 6, 6, 7, 1, 1, 0],
    [3, 5, 7, 6, 7, 1, 2, 0],
    [2, 3, 11, 9, 4, 7, 2, 3],
    [2, 20, 9, 13, 33, 3, 1, 1],
    [2, 17, 8, 8, 19, 3, 2, 1],
    [9, 7, 4, 4, 24, 3, 1, 1],
    [1, 18, 32, 32, 16, 3, 1, 1],
    [2, 5, 7, 16, 7, 3, 1, 1],
    [1, 3, 9, 48, 6, 5, 1, 2],
    [2, 16, 31, 19, 17, 1, 2, 0],
    [1, 2, 1, 1, 3, 3, 1, 1],
];

/// Runs the direct passes of every ISA this CPU runs against the im2col path on a grid of shapes
/// (forward, and the kernel gradient with the batch in chunks of 1, 2 and all): `Ok` with the
/// number of comparisons made (0 where no ISA runs), or the first that differs by more than
/// `1e-4` of the largest expected magnitude. Public so that the WebAssembly tests run it in the
/// browser, where the SIMD128 kernels are the ones compared.
pub fn compare_with_im2col() -> Result<usize, String> {
    use super::conv_cpu::{backward_im2col, forward_im2col};
    // A fixed xorshift stream of values in [-1, 1).
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut random = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    };
    let close = |got: &[f32], want: &[f32], what: String| -> Result<(), String> {
        let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        match got.iter().zip(want).position(|(a, b)| (a - b).abs() > 1e-4 * scale) {
            _ if got.len() != want.len() => Err(format!("{what}: {} values, expected {}", got.len(), want.len())),
            Some(k) => Err(format!("{what}[{k}]: {} vs {} (scale {scale})", got[k], want[k])),
            None => Ok(()),
        }
    };
    let mut compared = 0;
    for [batch, c, h, w, o, k, s, p] in CHECKED_SHAPES {
        let g = Geometry { batch, in_channels: c, in_h: h, in_w: w, out_channels: o, kernel_h: k, kernel_w: k, stride: [s, s], padding: [p, p] };
        let (x, kernel, dy) = (random(g.batch * g.image_in()), random(g.kernel_len()), random(g.batch * g.image_out()));
        let expect_y = forward_im2col(&x, &kernel, &g);
        let expect_dw = backward_im2col(&x, &kernel, &dy, &g, false, true).1.expect("asked for");
        for isa in Isa::detected() {
            if covers_forward(&g) {
                close(&forward(&x, &kernel, &g, isa), &expect_y, format!("forward {isa:?} {g:?}"))?;
                compared += 1;
            }
            if covers_kernel_gradient(&g) {
                for per_chunk in [1, 2, g.batch] {
                    close(&kernel_gradient(&x, &dy, &g, isa, per_chunk), &expect_dw, format!("dw {isa:?} {g:?} chunks of {per_chunk}"))?;
                    compared += 1;
                }
            }
        }
    }
    Ok(compared)
}

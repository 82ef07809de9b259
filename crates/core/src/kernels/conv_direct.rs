//! A direct convolution for x86-64 CPUs with AVX-512 or AVX2 + FMA: the forward pass and the kernel
//! gradient without im2col, output channels in vector lanes.
//!
//! im2col + GEMM ([`conv_cpu`](super::conv_cpu)) copies every input value `kh · kw` times into a
//! column matrix, and the GEMM packs that matrix again before its micro-kernels read it; at the
//! narrow widths and small images of CIFAR encoders those copies cost as much as the arithmetic.
//! Here the arithmetic reads the (zero-padded) image directly:
//! - forward: for a block of `L` output channels (`L` = 16 lanes with AVX-512, 8 with AVX2) and a
//!   tile of `R x T` output pixels, `R · T` vector accumulators; each kernel tap loads one vector of
//!   `L` weights (the kernel is repacked as `[O/L][C][kh][kw][L]`) and multiplies it by each
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

use super::conv_cpu::Geometry;
use super::written_by;

/// The vector instructions the direct convolution runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// 16 lanes of `f32`.
    Avx512,
    /// 8 lanes of `f32`, with FMA.
    Avx2,
}

impl Isa {
    /// `f32` lanes per vector.
    pub fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2 => 8,
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
        #[cfg(not(target_arch = "x86_64"))]
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
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
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

/// The micro-kernels of one ISA: `$feat` the target features, `$acc` the vector accumulators a
/// tile may hold.
macro_rules! isa_kernels {
    ($name:ident, $feat:literal, $lanes:literal, $acc:literal, $acc2:literal, $dw3:literal, $dwrows:literal, $rowscb:literal, $vec:ty, $zero:ident, $load:ident, $store:ident, $set1:ident, $fma:ident, $add:ident) => {
        #[cfg(target_arch = "x86_64")]
        mod $name {
            use super::Shape;
            use std::arch::x86_64::*;

            pub const L: usize = $lanes;
            /// Accumulators of a forward tile of one block of output channels, and of two.
            const ACC: usize = $acc;
            const ACC2: usize = $acc2;
            /// Input channels per pass of the kernel gradient (`9 n` accumulators), and output
            /// channels per pass of its row-vector form (`9 n` accumulators).
            const DW_3X3: usize = $dw3;
            const DW_ROWS: usize = $dwrows;
            /// Output channels per tile of the row-vector forward pass (`4 ·` that many
            /// accumulators, plus 4 input vectors and a weight: within the register file).
            const ROWS_CB: usize = $rowscb;

            /// One tile of `R x T` output pixels for `NB` blocks of `L` output channels (each input
            /// value, broadcast once, feeds `NB` FMAs), written to `out` as `[NB][R][T][L]`. `x`
            /// points at the tile's first input value (channel 0); block `b`'s packed kernel starts
            /// at `w + b · w_block`.
            ///
            /// # Safety
            /// Every input value the tile reads, `x + ci · plane + (r · S + i) · row + t · S + j`,
            /// lies in the padded image; each block's kernel holds `channels · kh · kw · L` values
            /// and `out` `NB · R · T · L`.
            #[target_feature(enable = $feat)]
            #[inline]
            unsafe fn tile<const S: usize, const NB: usize, const R: usize, const T: usize>(x: *const f32, s: &Shape, w: *const f32, w_block: usize, out: *mut f32) {
                unsafe {
                    let mut acc: [[[$vec; T]; R]; NB] = [[[$zero(); T]; R]; NB];
                    let mut wp = w;
                    for ci in 0..s.channels {
                        let xc = x.add(ci * s.plane);
                        for i in 0..s.kernel_h {
                            let rows: [*const f32; R] = std::array::from_fn(|r| xc.add((r * S + i) * s.row));
                            for j in 0..s.kernel_w {
                                let wv: [$vec; NB] = std::array::from_fn(|b| $load(wp.add(b * w_block)));
                                wp = wp.add(L);
                                for r in 0..R {
                                    let p = rows[r].add(j);
                                    for t in 0..T {
                                        let xv = $set1(*p.add(t * S));
                                        for b in 0..NB {
                                            acc[b][r][t] = $fma(wv[b], xv, acc[b][r][t]);
                                        }
                                    }
                                }
                            }
                        }
                    }
                    for b in 0..NB {
                        for r in 0..R {
                            for t in 0..T {
                                $store(out.add(((b * R + r) * T + t) * L), acc[b][r][t]);
                            }
                        }
                    }
                }
            }

            /// Runs `tile::<S, NB, R, T>` for runtime `nb`, `r` and `t` (those [`plan`] gives).
            #[target_feature(enable = $feat)]
            #[inline]
            unsafe fn tile_rt<const S: usize>(nb: usize, r: usize, t: usize, x: *const f32, s: &Shape, w: *const f32, w_block: usize, out: *mut f32) {
                unsafe {
                    match (nb, r, t) {
                        (1, 1, 1) => tile::<S, 1, 1, 1>(x, s, w, w_block, out),
                        (1, 1, 2) => tile::<S, 1, 1, 2>(x, s, w, w_block, out),
                        (1, 1, 4) => tile::<S, 1, 1, 4>(x, s, w, w_block, out),
                        (1, 1, 8) => tile::<S, 1, 1, 8>(x, s, w, w_block, out),
                        (1, 1, 16) => tile::<S, 1, 1, 16>(x, s, w, w_block, out),
                        (1, 2, 1) => tile::<S, 1, 2, 1>(x, s, w, w_block, out),
                        (1, 2, 2) => tile::<S, 1, 2, 2>(x, s, w, w_block, out),
                        (1, 2, 4) => tile::<S, 1, 2, 4>(x, s, w, w_block, out),
                        (1, 2, 8) => tile::<S, 1, 2, 8>(x, s, w, w_block, out),
                        (1, 4, 1) => tile::<S, 1, 4, 1>(x, s, w, w_block, out),
                        (1, 4, 2) => tile::<S, 1, 4, 2>(x, s, w, w_block, out),
                        (1, 4, 4) => tile::<S, 1, 4, 4>(x, s, w, w_block, out),
                        (2, 1, 1) => tile::<S, 2, 1, 1>(x, s, w, w_block, out),
                        (2, 1, 2) => tile::<S, 2, 1, 2>(x, s, w, w_block, out),
                        (2, 1, 4) => tile::<S, 2, 1, 4>(x, s, w, w_block, out),
                        (2, 1, 8) => tile::<S, 2, 1, 8>(x, s, w, w_block, out),
                        (2, 2, 1) => tile::<S, 2, 2, 1>(x, s, w, w_block, out),
                        (2, 2, 2) => tile::<S, 2, 2, 2>(x, s, w, w_block, out),
                        (2, 2, 4) => tile::<S, 2, 2, 4>(x, s, w, w_block, out),
                        (2, 4, 1) => tile::<S, 2, 4, 1>(x, s, w, w_block, out),
                        (2, 4, 2) => tile::<S, 2, 4, 2>(x, s, w, w_block, out),
                        _ => unreachable!("tile {nb} x {r} x {t}"),
                    }
                }
            }

            /// The tile for `nb` blocks at a corner with `cols` columns and `rows` rows left: the
            /// widest of 16, 8, 4, 2, 1 columns that fits, then as many rows (4, 2, 1) as keep the
            /// accumulators at `ACC` (one block) or `ACC2` (two).
            fn plan(nb: usize, cols: usize, rows: usize) -> (usize, usize) {
                let cap = if nb == 1 { ACC } else { ACC2 / 2 };
                let t = [16, 8, 4, 2, 1].into_iter().find(|&t| t <= cols && t <= cap).unwrap_or(1);
                let r = [4, 2, 1].into_iter().find(|&r| r <= rows && r * t <= cap).unwrap_or(1);
                (r, t)
            }

            /// Every output pixel of one image for the output channels `co0..co0 + co_n` (at most
            /// `2L`: two blocks when more than `L`): `y` is the image's output `[O][out_h · out_w]`,
            /// `w` the packed kernel of the first block, the second's `w_block` values after it.
            ///
            /// # Safety
            /// The CPU runs `$feat`; `x` is the padded image of `s`, `w` holds the blocks' kernels
            /// (`channels · kh · kw · L` values each); `s.stride` is 1 or 2.
            #[target_feature(enable = $feat)]
            pub unsafe fn forward_block(x: &[f32], s: &Shape, w: &[f32], w_block: usize, y: &mut [std::mem::MaybeUninit<f32>], co0: usize, co_n: usize) {
                let p = s.out_h * s.out_w;
                let nb = if co_n > L { 2 } else { 1 };
                debug_assert!(w.len() >= (nb - 1) * w_block + s.channels * s.kernel_h * s.kernel_w * L);
                debug_assert!(y.len() >= (co0 + co_n) * p && co_n <= 2 * L);
                let mut buf = [0.0f32; ACC2 * L];
                let mut ow = 0;
                while ow < s.out_w {
                    let (_, t) = plan(nb, s.out_w - ow, 1);
                    let mut oh = 0;
                    while oh < s.out_h {
                        let (r, _) = plan(nb, t, s.out_h - oh);
                        let origin = oh * s.stride * s.row + ow * s.stride;
                        // SAFETY: the tile's reads stay inside the padded image (its output pixels
                        // exist), `w` and `buf` are large enough (asserted above).
                        unsafe {
                            let xo = x.as_ptr().add(origin);
                            match s.stride {
                                1 => tile_rt::<1>(nb, r, t, xo, s, w.as_ptr(), w_block, buf.as_mut_ptr()),
                                _ => tile_rt::<2>(nb, r, t, xo, s, w.as_ptr(), w_block, buf.as_mut_ptr()),
                            }
                        }
                        for l in 0..co_n {
                            let (b, lane) = (l / L, l % L);
                            let plane = &mut y[(co0 + l) * p..(co0 + l + 1) * p];
                            for rr in 0..r {
                                let dst = &mut plane[(oh + rr) * s.out_w + ow..][..t];
                                for (tt, d) in dst.iter_mut().enumerate() {
                                    d.write(buf[((b * r + rr) * t + tt) * L + lane]);
                                }
                            }
                        }
                        oh += r;
                    }
                    ow += t;
                }
            }

            /// One tile of the row-vector forward pass (stride 1): `CB` output channels by `R`
            /// rows by `NCH` runs of `L` consecutive pixels, each accumulator a vector of pixels.
            /// Each tap loads `R · NCH` input vectors and broadcasts `CB` weights for `CB · R ·
            /// NCH` FMAs. `x` points at the tile's first input (channel 0, padded coordinates of
            /// its first output pixel), `w` at the kernel of its first output channel (`[C][kh][kw]`,
            /// channels `w_co` apart), `out` at its first output value (channel planes `p` apart).
            ///
            /// # Safety
            /// The reads stay in the padded image and the kernel, the writes in the output.
            #[target_feature(enable = $feat)]
            #[inline]
            unsafe fn rows_tile<const CB: usize, const R: usize, const NCH: usize>(x: *const f32, s: &Shape, w: *const f32, w_co: usize, out: *mut f32, p: usize) {
                unsafe {
                    let mut acc: [[[$vec; NCH]; R]; CB] = [[[$zero(); NCH]; R]; CB];
                    let taps = s.kernel_h * s.kernel_w;
                    for ci in 0..s.channels {
                        let xc = x.add(ci * s.plane);
                        let wc = w.add(ci * taps);
                        for i in 0..s.kernel_h {
                            for j in 0..s.kernel_w {
                                let xv: [[$vec; NCH]; R] = std::array::from_fn(|r| std::array::from_fn(|ch| $load(xc.add((r + i) * s.row + ch * L + j))));
                                for cb in 0..CB {
                                    let wv = $set1(*wc.add(cb * w_co + i * s.kernel_w + j));
                                    for r in 0..R {
                                        for ch in 0..NCH {
                                            acc[cb][r][ch] = $fma(wv, xv[r][ch], acc[cb][r][ch]);
                                        }
                                    }
                                }
                            }
                        }
                    }
                    for cb in 0..CB {
                        for r in 0..R {
                            for ch in 0..NCH {
                                $store(out.add(cb * p + r * s.out_w + ch * L), acc[cb][r][ch]);
                            }
                        }
                    }
                }
            }

            /// The row-vector forward pass of one image (stride 1, `out_w` a multiple of `L`):
            /// every output value of `y` (`[O][out_h · out_w]`) from the padded image `x` and the
            /// kernel `w` in its own layout `[O][C][kh][kw]`. No scatter: each accumulator is `L`
            /// consecutive output pixels of one channel, stored as they are.
            ///
            /// # Safety
            /// The CPU runs `$feat`; `s.stride == 1`, `s.out_w % L == 0`; `x` is the padded image
            /// of `s`, `w` holds `o · channels · kh · kw` values and `y` `o · out_h · out_w`.
            #[target_feature(enable = $feat)]
            pub unsafe fn forward_rows(x: &[f32], s: &Shape, w: &[f32], o: usize, y: &mut [std::mem::MaybeUninit<f32>]) {
                let p = s.out_h * s.out_w;
                let w_co = s.channels * s.kernel_h * s.kernel_w;
                debug_assert!(s.stride == 1 && s.out_w % L == 0 && y.len() >= o * p && w.len() >= o * w_co);
                let chunks = s.out_w / L;
                let yp = y.as_mut_ptr().cast::<f32>();
                let mut co = 0;
                while co < o {
                    let cb = [ROWS_CB, 2, 1].into_iter().find(|&c| c <= o - co).unwrap_or(1);
                    // Two runs of `L` pixels per tile when the rows hold an even number of
                    // them, else one; rows to make 4 vectors per channel.
                    let nch = if chunks % 2 == 0 { 2 } else { 1 };
                    let mut oh = 0;
                    while oh < s.out_h {
                        let r = [4 / nch, 2, 1].into_iter().find(|&r| r <= s.out_h - oh).unwrap_or(1);
                        for ch0 in (0..chunks).step_by(nch) {
                            // SAFETY: the tile's reads (rows oh + r + i, columns up to
                            // (ch0 + nch) · L + kw - 1) lie in the padded image; its writes are
                            // output values of channels co..co + cb.
                            unsafe {
                                let xo = x.as_ptr().add(oh * s.row + ch0 * L);
                                let wo = w.as_ptr().add(co * w_co);
                                let out = yp.add(co * p + oh * s.out_w + ch0 * L);
                                match (cb, r, nch) {
                                    (4, 2, 2) => rows_tile::<4, 2, 2>(xo, s, wo, w_co, out, p),
                                    (4, 1, 2) => rows_tile::<4, 1, 2>(xo, s, wo, w_co, out, p),
                                    (4, 4, 1) => rows_tile::<4, 4, 1>(xo, s, wo, w_co, out, p),
                                    (4, 2, 1) => rows_tile::<4, 2, 1>(xo, s, wo, w_co, out, p),
                                    (4, 1, 1) => rows_tile::<4, 1, 1>(xo, s, wo, w_co, out, p),
                                    (2, 2, 2) => rows_tile::<2, 2, 2>(xo, s, wo, w_co, out, p),
                                    (2, 1, 2) => rows_tile::<2, 1, 2>(xo, s, wo, w_co, out, p),
                                    (2, 4, 1) => rows_tile::<2, 4, 1>(xo, s, wo, w_co, out, p),
                                    (2, 2, 1) => rows_tile::<2, 2, 1>(xo, s, wo, w_co, out, p),
                                    (2, 1, 1) => rows_tile::<2, 1, 1>(xo, s, wo, w_co, out, p),
                                    (1, 2, 2) => rows_tile::<1, 2, 2>(xo, s, wo, w_co, out, p),
                                    (1, 1, 2) => rows_tile::<1, 1, 2>(xo, s, wo, w_co, out, p),
                                    (1, 4, 1) => rows_tile::<1, 4, 1>(xo, s, wo, w_co, out, p),
                                    (1, 2, 1) => rows_tile::<1, 2, 1>(xo, s, wo, w_co, out, p),
                                    (1, 1, 1) => rows_tile::<1, 1, 1>(xo, s, wo, w_co, out, p),
                                    _ => unreachable!("rows tile {cb} x {r} x {nch}"),
                                }
                            }
                        }
                        oh += r;
                    }
                    co += cb;
                }
            }

            /// The row-vector kernel gradient of `CG` output channels and one input channel
            /// over one image (stride 1, 3x3): `3 · 3 · CG` vector accumulators of
            /// `dy[co][pixels] · x[ci][pixels shifted by the tap]`, added to `acc_out`
            /// (`[CG][C][9][L]`, output channels `c_stride` values apart). `x` points at the
            /// input channel in the padded image, `dy` at the first output channel's plane.
            ///
            /// # Safety
            /// The reads stay in the padded image and `dy`, the writes in `acc_out`.
            #[target_feature(enable = $feat)]
            #[inline]
            unsafe fn rows_gradient_tile<const CG: usize>(x: *const f32, s: &Shape, dy: *const f32, p: usize, acc_out: *mut f32, c_stride: usize) {
                unsafe {
                    let mut acc: [[[$vec; 3]; 3]; CG] = [[[$zero(); 3]; 3]; CG];
                    for oh in 0..s.out_h {
                        for ch in 0..s.out_w / L {
                            let d: [$vec; CG] = std::array::from_fn(|c| $load(dy.add(c * p + oh * s.out_w + ch * L)));
                            for i in 0..3 {
                                let row = x.add((oh + i) * s.row + ch * L);
                                for j in 0..3 {
                                    let xv = $load(row.add(j));
                                    for c in 0..CG {
                                        acc[c][i][j] = $fma(d[c], xv, acc[c][i][j]);
                                    }
                                }
                            }
                        }
                    }
                    for c in 0..CG {
                        for i in 0..3 {
                            for j in 0..3 {
                                let o = acc_out.add(c * c_stride + (i * 3 + j) * L);
                                $store(o, $add($load(o), acc[c][i][j]));
                            }
                        }
                    }
                }
            }

            /// Adds the row-vector kernel gradient of one image to `acc_out` (`[O][C][9][L]`,
            /// vector partial sums): `x` the padded image, `dy` the image's output gradient
            /// `[O][out_h · out_w]`.
            ///
            /// # Safety
            /// The CPU runs `$feat`; 3x3 kernel, `s.stride == 1`, `s.out_w % L == 0`; `acc_out`
            /// holds `o · channels · 9 · L` values.
            #[target_feature(enable = $feat)]
            pub unsafe fn kernel_gradient_rows(x: &[f32], s: &Shape, dy: &[f32], o: usize, acc_out: &mut [f32]) {
                let p = s.out_h * s.out_w;
                let c_stride = s.channels * 9 * L;
                debug_assert!(s.stride == 1 && s.out_w % L == 0 && s.kernel_h == 3 && s.kernel_w == 3);
                debug_assert!(dy.len() >= o * p && acc_out.len() >= o * c_stride);
                let mut co = 0;
                while co < o {
                    let cg = [DW_ROWS, 2, 1].into_iter().find(|&c| c <= o - co).unwrap_or(1);
                    for ci in 0..s.channels {
                        // SAFETY: channel ci of the padded image, channels co..co + cg of dy and
                        // of acc_out.
                        unsafe {
                            let (xp, dp) = (x.as_ptr().add(ci * s.plane), dy.as_ptr().add(co * p));
                            let ap = acc_out.as_mut_ptr().add(co * c_stride + ci * 9 * L);
                            match cg {
                                3 => rows_gradient_tile::<3>(xp, s, dp, p, ap, c_stride),
                                2 => rows_gradient_tile::<2>(xp, s, dp, p, ap, c_stride),
                                _ => rows_gradient_tile::<1>(xp, s, dp, p, ap, c_stride),
                            }
                        }
                    }
                    co += cg;
                }
            }

            /// Adds to `acc_out` (`[CB][K][K][L]`) the kernel gradient of `CB` input channels over
            /// one image: `x` points at the first of them in the padded image, `dy` is the image's
            /// output gradient for this block of output channels as `[P][L]`.
            ///
            /// # Safety
            /// As [`forward_block`]; `acc_out` holds `CB · K · K · L` values.
            #[target_feature(enable = $feat)]
            #[inline]
            unsafe fn kernel_gradient_tile<const S: usize, const K: usize, const CB: usize>(x: *const f32, s: &Shape, dy: *const f32, acc_out: *mut f32) {
                unsafe {
                    let mut acc: [[[$vec; K]; K]; CB] = [[[$zero(); K]; K]; CB];
                    let mut d_at = dy;
                    for oh in 0..s.out_h {
                        let row0 = x.add(oh * S * s.row);
                        for ow in 0..s.out_w {
                            let d = $load(d_at);
                            d_at = d_at.add(L);
                            let base = row0.add(ow * S);
                            for cb in 0..CB {
                                for i in 0..K {
                                    let p = base.add(cb * s.plane + i * s.row);
                                    for j in 0..K {
                                        acc[cb][i][j] = $fma(d, $set1(*p.add(j)), acc[cb][i][j]);
                                    }
                                }
                            }
                        }
                    }
                    for cb in 0..CB {
                        for i in 0..K {
                            for j in 0..K {
                                let o = acc_out.add(((cb * K + i) * K + j) * L);
                                $store(o, $add($load(o), acc[cb][i][j]));
                            }
                        }
                    }
                }
            }

            /// Adds the kernel gradient of one image for one block of output channels to `acc_out`
            /// (`[C][3][3][L]`): `x` the padded image, `dy` `[P][L]`.
            ///
            /// # Safety
            /// The CPU runs `$feat`; the kernel is 3x3; `s.stride` 1 or 2; `acc_out` holds
            /// `channels · 9 · L` values and `dy` `out_h · out_w · L`.
            #[target_feature(enable = $feat)]
            pub unsafe fn kernel_gradient_image(x: &[f32], s: &Shape, dy: &[f32], acc_out: &mut [f32]) {
                let k = 3;
                debug_assert!(s.kernel_h == 3 && s.kernel_w == 3);
                debug_assert!(dy.len() >= s.out_h * s.out_w * L && acc_out.len() >= s.channels * k * k * L);
                let mut ci = 0;
                while ci < s.channels {
                    // Input channels per pass: as many as keep the accumulators in registers.
                    let n = [2, 1].into_iter().find(|&n| n <= DW_3X3 && n <= s.channels - ci).unwrap_or(1);
                    // SAFETY: the reads of `n` channels from `ci` stay in the padded image; the
                    // sums go to channels `ci..ci + n` of `acc_out`.
                    unsafe {
                        let (xp, dp, ap) = (x.as_ptr().add(ci * s.plane), dy.as_ptr(), acc_out.as_mut_ptr().add(ci * k * k * L));
                        macro_rules! go {
                            ($s:literal) => {
                                match n {
                                    2 => kernel_gradient_tile::<$s, 3, 2>(xp, s, dp, ap),
                                    _ => kernel_gradient_tile::<$s, 3, 1>(xp, s, dp, ap),
                                }
                            };
                        }
                        if s.stride == 1 {
                            go!(1)
                        } else {
                            go!(2)
                        }
                    }
                    ci += n;
                }
            }
        }
    };
}

isa_kernels!(avx512, "avx512f,fma", 16, 16, 24, 2, 3, 4, __m512, _mm512_setzero_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps);
isa_kernels!(avx2, "avx2,fma", 8, 8, 12, 1, 1, 2, __m256, _mm256_setzero_ps, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps);

/// `forward_block` of `isa`'s micro-kernels.
///
/// # Safety
/// As theirs: the CPU runs `isa`, and the sizes match `s`.
unsafe fn forward_block(isa: Isa, x: &[f32], s: &Shape, w: &[f32], w_block: usize, y: &mut [MaybeUninit<f32>], co0: usize, co_n: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's.
    unsafe {
        match isa {
            Isa::Avx512 => avx512::forward_block(x, s, w, w_block, y, co0, co_n),
            Isa::Avx2 => avx2::forward_block(x, s, w, w_block, y, co0, co_n),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("{isa:?} on another architecture {:?}", (x.len(), s.channels, w.len(), w_block, y.len(), co0, co_n));
}

/// `forward_rows` of `isa`'s micro-kernels.
///
/// # Safety
/// As theirs: the CPU runs `isa`, the sizes match `s`, stride 1, `out_w` a multiple of the lanes.
unsafe fn forward_rows(isa: Isa, x: &[f32], s: &Shape, w: &[f32], o: usize, y: &mut [MaybeUninit<f32>]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's.
    unsafe {
        match isa {
            Isa::Avx512 => avx512::forward_rows(x, s, w, o, y),
            Isa::Avx2 => avx2::forward_rows(x, s, w, o, y),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("{isa:?} on another architecture {:?}", (x.len(), s.channels, w.len(), o, y.len()));
}

/// `kernel_gradient_rows` of `isa`'s micro-kernels.
///
/// # Safety
/// As theirs: the CPU runs `isa`, the sizes match `s`, 3x3, stride 1, `out_w` a multiple of the lanes.
unsafe fn kernel_gradient_rows(isa: Isa, x: &[f32], s: &Shape, dy: &[f32], o: usize, acc: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's.
    unsafe {
        match isa {
            Isa::Avx512 => avx512::kernel_gradient_rows(x, s, dy, o, acc),
            Isa::Avx2 => avx2::kernel_gradient_rows(x, s, dy, o, acc),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("{isa:?} on another architecture {:?}", (x.len(), s.channels, dy.len(), o, acc.len()));
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
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's.
    unsafe {
        match isa {
            Isa::Avx512 => avx512::kernel_gradient_image(x, s, dy, acc),
            Isa::Avx2 => avx2::kernel_gradient_image(x, s, dy, acc),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("{isa:?} on another architecture {:?}", (x.len(), s.channels, dy.len(), acc.len()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv_cpu;
    use crate::kernels::conv_cpu::tests::{close, geometry, random};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Shapes with every tile size and tail: odd sizes, channel counts that are not multiples of
    /// the lanes, more than one block of output channels, strides 1 and 2, 1x1, 3x3 and 7x7.
    fn geometries() -> Vec<Geometry> {
        let g = geometry;
        vec![
            g(1, 3, 5, 7, 4, 3, 1, 1),
            g(2, 3, 5, 7, 5, 3, 2, 1),
            g(3, 5, 6, 6, 7, 1, 1, 0),
            g(3, 5, 7, 6, 7, 1, 2, 0),
            g(2, 3, 11, 9, 4, 7, 2, 3),
            g(2, 20, 9, 13, 33, 3, 1, 1),
            g(2, 17, 8, 8, 19, 3, 2, 1),
            g(9, 7, 4, 4, 24, 3, 1, 1),
            g(1, 18, 32, 32, 16, 3, 1, 1),
            g(2, 5, 7, 16, 7, 3, 1, 1),
            g(1, 3, 9, 48, 6, 5, 1, 2),
            g(2, 16, 31, 19, 17, 1, 2, 0),
            g(1, 2, 1, 1, 3, 3, 1, 1),
        ]
    }

    /// The direct passes equal the im2col path on every shape, with each ISA this CPU runs.
    #[test]
    fn direct_passes_equal_im2col() {
        let isas = Isa::detected();
        if isas.is_empty() {
            eprintln!("no AVX2 or AVX-512 here: the direct convolution is not used on this CPU");
            return;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for g in geometries() {
            let x = random(g.batch * g.image_in(), &mut rng);
            let w = random(g.kernel_len(), &mut rng);
            let dy = random(g.batch * g.image_out(), &mut rng);
            let expect_y = conv_cpu::forward_im2col(&x, &w, &g);
            let (_, expect_dw) = conv_cpu::backward_im2col(&x, &w, &dy, &g, false, true);
            for &isa in &isas {
                if covers_forward(&g) {
                    close(&forward(&x, &w, &g, isa), &expect_y, &format!("forward {isa:?} {g:?}"));
                }
                if covers_kernel_gradient(&g) {
                    for per_chunk in [1, 2, g.batch] {
                        let dw = kernel_gradient(&x, &dy, &g, isa, per_chunk);
                        close(&dw, expect_dw.as_ref().unwrap(), &format!("dw {isa:?} {g:?} chunks of {per_chunk}"));
                    }
                }
            }
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
}

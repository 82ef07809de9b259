//! A 2-D convolution on contiguous `f32` buffers: forward, input gradient and kernel gradient.
//!
//! Every pass is im2col plus one GEMM per image (the `gemm` crate, which packs and tiles for the
//! cache itself), with the batch split into one contiguous chunk per rayon thread:
//! - forward: `Y_n[O, P] = W[O, K] · cols(X_n)[K, P]`;
//! - input gradient: `dcols[K, P] = Wᵀ · dY_n`, scattered back by col2im;
//! - kernel gradient: `dWᵀ[K, O] += cols(X_n) · dY_nᵀ`, one partial sum per chunk, added and
//!   transposed at the end (this orientation runs about twice as fast in the GEMM as
//!   `dY_n · cols(X_n)ᵀ` on the first stage's shapes).
//!
//! where `K = in_channels · kh · kw` and `P = out_h · out_w`. A pointwise conv (1x1, stride 1, no
//! padding) skips im2col: `X_n` is already `[K, P]`. The two gradients share one pass over the
//! batch, so `cols(X_n)` is built once per image in the backward pass. Nothing of the forward pass
//! is kept for the backward one but its inputs: im2col is recomputed, which costs far less than the
//! GEMMs and keeps the memory of a step at the size of the activations.
//!
//! Layouts are NCHW for images and `[out, in, kh, kw]` for kernels, as burn's `conv2d`.

use gemm::Parallelism;
use rayon::prelude::*;

use super::conv_direct as direct;

/// The sizes of one convolution (groups 1, dilation 1, symmetric padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub batch: usize,
    pub in_channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_channels: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    /// `[height, width]`.
    pub stride: [usize; 2],
    /// `[height, width]`, the same on both sides.
    pub padding: [usize; 2],
}

impl Geometry {
    /// Whether the sizes describe a convolution with at least one output pixel.
    pub fn is_valid(&self) -> bool {
        self.stride[0] > 0
            && self.stride[1] > 0
            && self.kernel_h > 0
            && self.kernel_w > 0
            && self.in_h + 2 * self.padding[0] >= self.kernel_h
            && self.in_w + 2 * self.padding[1] >= self.kernel_w
    }

    pub fn out_h(&self) -> usize {
        (self.in_h + 2 * self.padding[0] - self.kernel_h) / self.stride[0] + 1
    }

    pub fn out_w(&self) -> usize {
        (self.in_w + 2 * self.padding[1] - self.kernel_w) / self.stride[1] + 1
    }

    /// Rows of the im2col matrix: `in_channels · kh · kw`.
    pub fn patch(&self) -> usize {
        self.in_channels * self.kernel_h * self.kernel_w
    }

    /// Output pixels per image.
    pub fn pixels_out(&self) -> usize {
        self.out_h() * self.out_w()
    }

    /// Input values per image.
    pub fn image_in(&self) -> usize {
        self.in_channels * self.in_h * self.in_w
    }

    /// Output values per image.
    pub fn image_out(&self) -> usize {
        self.out_channels * self.pixels_out()
    }

    pub fn kernel_len(&self) -> usize {
        self.out_channels * self.patch()
    }

    /// A 1x1 conv with stride 1 and no padding: the image is its own im2col matrix.
    fn is_pointwise(&self) -> bool {
        self.kernel_h == 1 && self.kernel_w == 1 && self.stride == [1, 1] && self.padding == [0, 0]
    }

    /// The batch split into at most [`CHUNKS`] chunks, and how each chunk's GEMMs run: in
    /// parallel themselves when there are fewer chunks than threads (batch 1, for example).
    ///
    /// The split does not depend on the number of threads, so neither do the kernel gradient's
    /// partial sums: results are the same on any machine.
    fn chunks(&self) -> (usize, Parallelism) {
        let threads = rayon::current_num_threads().max(1);
        let chunks = self.batch.clamp(1, CHUNKS);
        let per_chunk = self.batch.div_ceil(chunks).max(1);
        let parallelism = if chunks < threads { Parallelism::Rayon(0) } else { Parallelism::None };
        (per_chunk, parallelism)
    }
}

/// Chunks of the batch processed in parallel (see [`Geometry::chunks`]).
const CHUNKS: usize = 8;

/// Output positions `o` in `0..out` with `0 <= o * stride + k - pad < size`, as a range.
fn valid_range(k: usize, pad: usize, stride: usize, size: usize, out: usize) -> (usize, usize) {
    let first = if k >= pad { 0 } else { (pad - k).div_ceil(stride) };
    let end = if size + pad > k { ((size + pad - k - 1) / stride + 1).min(out) } else { 0 };
    (first.min(end), end)
}

/// `dst = src` for the short rows of im2col (a few dozen values): fixed-size chunks the compiler
/// turns into vector moves, where `copy_from_slice` calls `memmove` once per row.
#[inline]
fn copy_row(dst: &mut [f32], src: &[f32]) {
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (d, s) in (&mut d).zip(&mut s) {
        let s: &[f32; 8] = s.try_into().expect("8 values");
        let d: &mut [f32; 8] = d.try_into().expect("8 values");
        *d = *s;
    }
    for (d, s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = *s;
    }
}

/// `cols[K, T]` from one image `[C, H, W]` for the output rows `rows` (`T = rows.len() · out_w`
/// pixels; zeros where the window leaves the image).
fn im2col(x: &[f32], g: &Geometry, rows: std::ops::Range<usize>, cols: &mut [f32]) {
    let (oh_n, ow_n) = (g.out_h(), g.out_w());
    let t = rows.len() * ow_n;
    let [sh, sw] = g.stride;
    let [ph, pw] = g.padding;
    let plane = g.in_h * g.in_w;
    let mut out_rows = cols[..g.patch() * t].chunks_exact_mut(t);
    for c in 0..g.in_channels {
        let image = &x[c * plane..(c + 1) * plane];
        for ki in 0..g.kernel_h {
            let (oh0, oh1) = valid_range(ki, ph, sh, g.in_h, oh_n);
            let (oh0, oh1) = (oh0.clamp(rows.start, rows.end), oh1.clamp(rows.start, rows.end));
            for kj in 0..g.kernel_w {
                let row = out_rows.next().expect("cols holds K rows");
                let (ow0, ow1) = valid_range(kj, pw, sw, g.in_w, ow_n);
                row[..(oh0 - rows.start) * ow_n].fill(0.0);
                row[(oh1.max(oh0) - rows.start) * ow_n..].fill(0.0);
                for oh in oh0..oh1 {
                    let out = &mut row[(oh - rows.start) * ow_n..(oh - rows.start + 1) * ow_n];
                    let ih = oh * sh + ki - ph;
                    let src = &image[ih * g.in_w..(ih + 1) * g.in_w];
                    out[..ow0].fill(0.0);
                    out[ow1..].fill(0.0);
                    if sw == 1 {
                        let start = ow0 + kj - pw;
                        copy_row(&mut out[ow0..ow1], &src[start..start + (ow1 - ow0)]);
                    } else {
                        for (ow, v) in out[ow0..ow1].iter_mut().enumerate() {
                            *v = src[(ow0 + ow) * sw + kj - pw];
                        }
                    }
                }
            }
        }
    }
}

/// Output rows per band of im2col: a band's columns (`K x T` values) stay within 4 MiB. Measured
/// on CIFAR's shapes (`ail bench pretrain`, 2 cores), bands of 128 KiB or less were slower than
/// whole images (each band's GEMM packs the kernel again and runs on fewer columns), so today a
/// band is a whole image at 32 px and bands only bound the buffer for large images.
fn band_rows(g: &Geometry) -> usize {
    const BAND_VALUES: usize = 1 << 20;
    (BAND_VALUES / (g.patch() * g.out_w()).max(1)).clamp(1, g.out_h().max(1))
}

/// The bands of output rows of `g`.
fn bands(g: &Geometry) -> impl Iterator<Item = std::ops::Range<usize>> {
    let (step, total) = (band_rows(g), g.out_h());
    (0..total).step_by(step).map(move |r| r..(r + step).min(total))
}

/// Adds `cols[K, P]` back into one image's gradient `[C, H, W]` (the adjoint of [`im2col`]).
fn col2im(cols: &[f32], g: &Geometry, dx: &mut [f32]) {
    let (oh_n, ow_n) = (g.out_h(), g.out_w());
    let p = oh_n * ow_n;
    let [sh, sw] = g.stride;
    let [ph, pw] = g.padding;
    let plane = g.in_h * g.in_w;
    let mut rows = cols.chunks_exact(p);
    for c in 0..g.in_channels {
        let image = &mut dx[c * plane..(c + 1) * plane];
        for ki in 0..g.kernel_h {
            let (oh0, oh1) = valid_range(ki, ph, sh, g.in_h, oh_n);
            for kj in 0..g.kernel_w {
                let row = rows.next().expect("cols holds K rows");
                let (ow0, ow1) = valid_range(kj, pw, sw, g.in_w, ow_n);
                for oh in oh0..oh1 {
                    let src = &row[oh * ow_n..(oh + 1) * ow_n];
                    let ih = oh * sh + ki - ph;
                    let dst = &mut image[ih * g.in_w..(ih + 1) * g.in_w];
                    if sw == 1 {
                        let start = ow0 + kj - pw;
                        for (d, s) in dst[start..start + (ow1 - ow0)].iter_mut().zip(&src[ow0..ow1]) {
                            *d += s;
                        }
                    } else {
                        for ow in ow0..ow1 {
                            dst[ow * sw + kj - pw] += src[ow];
                        }
                    }
                }
            }
        }
    }
}

/// A row-major matrix view for [`matmul`]: element `(r, c)` at `ptr + r * row + c * col`.
#[derive(Clone, Copy)]
struct View {
    ptr: *const f32,
    row: isize,
    col: isize,
}

impl View {
    /// A row-major `[_, cols]` matrix.
    fn rows(data: &[f32], cols: usize) -> Self {
        Self { ptr: data.as_ptr(), row: cols as isize, col: 1 }
    }

    /// The transpose of a row-major `[_, cols]` matrix.
    fn transposed(data: &[f32], cols: usize) -> Self {
        Self { ptr: data.as_ptr(), row: 1, col: cols as isize }
    }
}

/// `dst[m, n] (+)= lhs[m, k] · rhs[k, n]`, with `dst` row-major, rows `dst_row` apart.
///
/// The views must address `m x k` and `k x n` elements inside their slices: every caller builds
/// them from slices of at least those sizes.
fn matmul(dst: &mut [f32], dst_row: usize, accumulate: bool, lhs: View, rhs: View, [m, k, n]: [usize; 3], par: Parallelism) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst_row >= n && dst.len() >= (m - 1) * dst_row + n, "matmul destination");
    if k == 0 {
        if !accumulate {
            for row in 0..m {
                dst[row * dst_row..row * dst_row + n].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: see above; the sizes are asserted by the callers' slice lengths.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_row as isize,
            accumulate,
            lhs.ptr,
            lhs.col,
            lhs.row,
            rhs.ptr,
            rhs.col,
            rhs.row,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

fn check(x: &[f32], w: &[f32], g: &Geometry) {
    assert!(g.is_valid(), "conv2d: invalid geometry {g:?}");
    assert_eq!(x.len(), g.batch * g.image_in(), "conv2d: input length for {g:?}");
    assert_eq!(w.len(), g.kernel_len(), "conv2d: kernel length for {g:?}");
}

/// The convolution of `x` (`[N, C, H, W]`) by `w` (`[O, C, kh, kw]`): `[N, O, out_h, out_w]`.
///
/// Direct ([`conv_direct`](super::conv_direct)) where this CPU and the shape allow it, else
/// im2col + GEMM.
pub fn forward(x: &[f32], w: &[f32], g: &Geometry) -> Vec<f32> {
    check(x, w, g);
    match direct::isa() {
        Some(isa) if direct::covers_forward(g) => direct::forward(x, w, g, isa),
        _ => forward_im2col(x, w, g),
    }
}

/// [`forward`] by im2col + GEMM, whatever the CPU.
pub fn forward_im2col(x: &[f32], w: &[f32], g: &Geometry) -> Vec<f32> {
    check(x, w, g);
    let (k, p, o) = (g.patch(), g.pixels_out(), g.out_channels);
    let mut y = vec![0.0f32; g.batch * g.image_out()];
    if y.is_empty() || g.image_in() == 0 {
        return y;
    }
    let (per_chunk, par) = g.chunks();
    let ow = g.out_w();
    let run = |(y_c, x_c): (&mut [f32], &[f32])| {
        let mut cols = if g.is_pointwise() { Vec::new() } else { vec![0.0f32; k * band_rows(g) * ow] };
        for (y_n, x_n) in y_c.chunks_exact_mut(o * p).zip(x_c.chunks_exact(g.image_in())) {
            if g.is_pointwise() {
                matmul(y_n, p, false, View::rows(w, k), View::rows(x_n, p), [o, k, p], par);
                continue;
            }
            for rows in bands(g) {
                let t = rows.len() * ow;
                im2col(x_n, g, rows.clone(), &mut cols);
                matmul(&mut y_n[rows.start * ow..], p, false, View::rows(w, k), View::rows(&cols, t), [o, k, t], par);
            }
        }
    };
    y.par_chunks_mut(per_chunk * o * p).zip(x.par_chunks(per_chunk * g.image_in())).for_each(run);
    y
}

/// Gradients of the convolution, each computed only when asked for: `(dx, dw)` with the shapes of
/// `x` and `w`, given the output gradient `dy` (`[N, O, out_h, out_w]`).
///
/// Direct ([`conv_direct`](super::conv_direct)) where this CPU and the shape allow it: the kernel
/// gradient of 3x3 kernels, and the input gradient of stride-1 convolutions with kernels larger
/// than 1x1 (a forward convolution of `dy`); the rest by im2col + GEMM.
pub fn backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    g: &Geometry,
    want_dx: bool,
    want_dw: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    check(x, w, g);
    let Some(isa) = direct::isa() else {
        return backward_im2col(x, w, dy, g, want_dx, want_dw);
    };
    let direct_dw = want_dw && direct::covers_kernel_gradient(g);
    let direct_dx = want_dx && transposable(g) && direct::covers_forward(g);
    let (mut dx, mut dw) = if (want_dx && !direct_dx) || (want_dw && !direct_dw) {
        backward_im2col(x, w, dy, g, want_dx && !direct_dx, want_dw && !direct_dw)
    } else {
        (None, None)
    };
    if direct_dx {
        let (gt, wt) = transposed_kernel(w, g);
        dx = Some(direct::forward(dy, &wt, &gt, isa));
    }
    if direct_dw {
        assert_eq!(dy.len(), g.batch * g.image_out(), "conv2d: output gradient length for {g:?}");
        dw = Some(direct::kernel_gradient(x, dy, g, isa, g.chunks().0));
    }
    (dx, dw)
}

/// Whether the input gradient of `g` is a forward convolution of the output gradient (stride 1,
/// padding below the kernel size).
fn transposable(g: &Geometry) -> bool {
    g.stride == [1, 1] && g.kernel_h > g.padding[0] && g.kernel_w > g.padding[1]
}

/// [`backward`] by im2col + GEMM, whatever the CPU.
pub fn backward_im2col(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    g: &Geometry,
    want_dx: bool,
    want_dw: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    check(x, w, g);
    assert_eq!(dy.len(), g.batch * g.image_out(), "conv2d: output gradient length for {g:?}");
    let (k, p, o) = (g.patch(), g.pixels_out(), g.out_channels);
    let ow = g.out_w();
    let (per_chunk, par) = g.chunks();
    // With stride 1, the input gradient is itself a convolution: of dY by the kernel flipped in
    // space with in and out swapped, padded by `k - 1 - p`. One GEMM of the forward's shape
    // replaces a GEMM with inner size O plus a col2im scatter, several times dearer on CIFAR's
    // shapes. Other strides scatter with col2im.
    let transposed = (want_dx && !g.is_pointwise() && transposable(g)).then(|| transposed_kernel(w, g));
    let scatter = want_dx && !g.is_pointwise() && transposed.is_none();
    let mut dx = want_dx.then(|| vec![0.0f32; g.batch * g.image_in()]);
    let chunks = g.batch.div_ceil(per_chunk).max(1);
    let dx_chunks: Vec<Option<&mut [f32]>> = match dx.as_mut() {
        Some(dx) if !dx.is_empty() => dx.chunks_mut(per_chunk * g.image_in()).map(Some).collect(),
        _ => (0..chunks).map(|_| None).collect(),
    };
    let partials: Vec<Option<Vec<f32>>> = dx_chunks
        .into_par_iter()
        .enumerate()
        .map(|(c, mut dx_c)| {
            let first = c * per_chunk;
            let images = per_chunk.min(g.batch.saturating_sub(first));
            // dWᵀ[K, O], summed over this chunk's images.
            let mut dw = want_dw.then(|| vec![0.0f32; k * o]);
            let mut cols = if g.is_pointwise() || !want_dw { Vec::new() } else { vec![0.0f32; k * band_rows(g) * ow] };
            let mut full_cols = if scatter { vec![0.0f32; k * p] } else { Vec::new() };
            let mut dy_cols = match &transposed {
                Some((gt, _)) => vec![0.0f32; gt.patch() * band_rows(gt) * gt.out_w()],
                None => Vec::new(),
            };
            for n in first..first + images {
                let x_n = &x[n * g.image_in()..(n + 1) * g.image_in()];
                let dy_n = &dy[n * o * p..(n + 1) * o * p];
                if let Some(dw) = dw.as_mut() {
                    // dWᵀ[K, O] += cols_n[K, P] · dY_nᵀ[P, O] (faster in the GEMM than dY_n · cols_nᵀ),
                    // one band of output pixels at a time.
                    if g.is_pointwise() {
                        matmul(dw, o, n > first, View::rows(x_n, p), View::transposed(dy_n, p), [k, p, o], par);
                    } else {
                        for rows in bands(g) {
                            let t = rows.len() * ow;
                            im2col(x_n, g, rows.clone(), &mut cols);
                            let dy_band = View { ptr: dy_n[rows.start * ow..].as_ptr(), row: 1, col: p as isize };
                            matmul(dw, o, n > first || rows.start > 0, View::rows(&cols, t), dy_band, [k, t, o], par);
                        }
                    }
                }
                if let Some(dx_c) = dx_c.as_mut() {
                    let dx_n = &mut dx_c[(n - first) * g.image_in()..(n - first + 1) * g.image_in()];
                    if let Some((gt, wt)) = &transposed {
                        // dX_n[C, H·W] = Wᵗ[C, O·kh·kw] · cols(dY_n), by bands of input rows.
                        let (kt, pt, wd) = (gt.patch(), gt.pixels_out(), gt.out_w());
                        for rows in bands(gt) {
                            let t = rows.len() * wd;
                            im2col(dy_n, gt, rows.clone(), &mut dy_cols);
                            matmul(&mut dx_n[rows.start * wd..], pt, false, View::rows(wt, kt), View::rows(&dy_cols, t), [g.in_channels, kt, t], par);
                        }
                    } else if g.is_pointwise() {
                        // dX_n[C, P] = Wᵀ[C, O] · dY_n[O, P]
                        matmul(dx_n, p, false, View::transposed(w, k), View::rows(dy_n, p), [k, o, p], par);
                    } else {
                        // dcols[K, P] = Wᵀ[K, O] · dY_n[O, P], scattered back.
                        matmul(&mut full_cols, p, false, View::transposed(w, k), View::rows(dy_n, p), [k, o, p], par);
                        col2im(&full_cols, g, dx_n);
                    }
                }
            }
            dw
        })
        .collect();
    let dw = want_dw.then(|| {
        let mut total = vec![0.0f32; k * o];
        for partial in partials.into_iter().flatten() {
            for (t, v) in total.iter_mut().zip(partial) {
                *t += v;
            }
        }
        // [K, O] -> [O, K]
        let mut dw = vec![0.0f32; o * k];
        for (r, row) in total.chunks_exact(o).enumerate() {
            for (oo, v) in row.iter().enumerate() {
                dw[oo * k + r] = *v;
            }
        }
        dw
    });
    (dx, dw)
}

/// The geometry and kernel of the input gradient of a stride-1 convolution, as a convolution of
/// the output gradient: `Wᵗ[c, o, i, j] = W[o, c, kh-1-i, kw-1-j]`, padding `k - 1 - p`.
fn transposed_kernel(w: &[f32], g: &Geometry) -> (Geometry, Vec<f32>) {
    let (kh, kw) = (g.kernel_h, g.kernel_w);
    let gt = Geometry {
        batch: g.batch,
        in_channels: g.out_channels,
        in_h: g.out_h(),
        in_w: g.out_w(),
        out_channels: g.in_channels,
        kernel_h: kh,
        kernel_w: kw,
        stride: [1, 1],
        padding: [kh - 1 - g.padding[0], kw - 1 - g.padding[1]],
    };
    let mut wt = vec![0.0f32; w.len()];
    for o in 0..g.out_channels {
        for c in 0..g.in_channels {
            for i in 0..kh {
                for j in 0..kw {
                    wt[((c * g.out_channels + o) * kh + i) * kw + j] = w[((o * g.in_channels + c) * kh + (kh - 1 - i)) * kw + (kw - 1 - j)];
                }
            }
        }
    }
    (gt, wt)
}

/// Helpers shared with the direct convolution's tests.
#[cfg(test)]
pub(crate) mod tests;

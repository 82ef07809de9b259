//! The kernel generators' output layer, `k = h · W + b` for one row `h` (`[1, H]`, `W` `[H, N]`,
//! `N = out · in · kh · kw`), as one backend operation on `flex`.
//!
//! `N` reaches millions, so the layer is bound by memory: its forward pass reads `W` once, its
//! backward pass reads `W` once (`dh = W · dk`) and writes `dW = hᵀ dk` once. burn's matmul
//! treats the single row as a general GEMM and its backward pass transposes `W`; here each pass is
//! one sweep over `W` in its storage order, parallel over columns or rows.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension, tensor::FloatTensor};
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use super::{contiguous, flex_tensor, own_kernels_on, slice};

/// Columns per parallel task of the forward pass.
const COLUMNS: usize = 8192;

/// `h · W + b` for one row `h` of length `H`, `W` `[H, N]` row-major.
pub fn forward(h: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    let n = b.len();
    assert_eq!(w.len(), h.len() * n, "generator: weight length");
    let mut out = b.to_vec();
    out.par_chunks_mut(COLUMNS).enumerate().for_each(|(chunk, out)| {
        let start = chunk * COLUMNS;
        super::vectorized(#[inline(always)] || {
            for (i, &hi) in h.iter().enumerate() {
                if hi == 0.0 {
                    continue; // after a ReLU, about half the hidden units are zero
                }
                let row = &w[i * n + start..i * n + start + out.len()];
                for (o, wv) in out.iter_mut().zip(row) {
                    *o += hi * wv;
                }
            }
        })
    });
    out
}

/// `(dh, dW)` given `dk` (`db = dk`).
pub fn backward(h: &[f32], w: &[f32], dk: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let n = dk.len();
    assert_eq!(w.len(), h.len() * n, "generator: weight length");
    if n == 0 {
        return (vec![0.0; h.len()], Vec::new());
    }
    let dh: Vec<f32> = w
        .par_chunks(n)
        .map(|row| {
            super::vectorized(#[inline(always)] || {
                let mut acc = [0.0f32; 8];
                let (rc, dc) = (row.chunks_exact(8), dk.chunks_exact(8));
                let rest: f32 = rc.remainder().iter().zip(dc.remainder()).map(|(a, b)| a * b).sum();
                for (r, d) in rc.zip(dc) {
                    for k in 0..8 {
                        acc[k] += r[k] * d[k];
                    }
                }
                acc.iter().sum::<f32>() + rest
            })
        })
        .collect();
    let mut dw = vec![0.0f32; w.len()];
    dw.par_chunks_mut(n).zip(h.par_iter()).for_each(|(row, &hi)| {
        super::vectorized(#[inline(always)] || {
            for (o, d) in row.iter_mut().zip(dk) {
                *o = hi * d;
            }
        })
    });
    (dh, dw)
}

/// The generator's output layer as a burn backend operation (`flex` and autodiff over it).
#[backend_extension(Flex, Autodiff)]
pub trait GeneratorOps: Backend {
    /// `h · weight + bias` for `h` `[1, H]`, `weight` `[H, N]`, `bias` `[N]` -> `[1, N]`.
    fn ail_row_linear(h: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl GeneratorOps for Flex {
    fn ail_row_linear(h: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        let (h, weight, bias) = (contiguous(&h), contiguous(&weight), contiguous(&bias));
        let k = forward(slice(&h), slice(&weight), slice(&bias));
        let n = k.len();
        flex_tensor(k, [1, n])
    }
}

#[derive(Debug)]
struct RowLinearBackward;

impl Backward<Flex, 3> for RowLinearBackward {
    /// `h` and `weight`.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_h, node_w, node_b] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (h, weight) = ops.state;
        let (h, weight, dk) = (contiguous(&h), contiguous(&weight), contiguous(&grad));
        let (hidden, n) = (slice(&h).len(), slice(&dk).len());
        if node_h.is_some() || node_w.is_some() {
            let (dh, dw) = backward(slice(&h), slice(&weight), slice(&dk));
            if let Some(node) = node_h {
                grads.register::<Flex>(node.id, flex_tensor(dh, [1, hidden]));
            }
            if let Some(node) = node_w {
                grads.register::<Flex>(node.id, flex_tensor(dw, [hidden, n]));
            }
        }
        if let Some(node) = node_b {
            grads.register::<Flex>(node.id, flex_tensor(slice(&dk).to_vec(), [n]));
        }
    }
}

impl<C: CheckpointStrategy> GeneratorOps for Autodiff<Flex, C> {
    fn ail_row_linear(h: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        match RowLinearBackward.prepare::<C>([h.node(), weight.node(), bias.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (h, weight, bias) = (h.into_primitive(), weight.into_primitive(), bias.into_primitive());
                let k = Flex::ail_row_linear(h.clone(), weight.clone(), bias);
                prep.finish((h, weight), k)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(Flex::ail_row_linear(h.into_primitive(), weight.into_primitive(), bias.into_primitive()))
            }
        }
    }
}

/// `linear.forward(h)` for a single row `h` (`[1, H]`), through [`GeneratorOps`] on `flex`.
pub fn row_linear(linear: &Linear, h: Tensor<2>) -> Tensor<2> {
    let weight = linear.weight.val();
    let own = h.dims()[0] == 1 && h.dtype() == DType::F32 && weight.dtype() == DType::F32 && own_kernels_on(&h.device());
    match (&linear.bias, own) {
        (Some(bias), true) => Tensor::<2>::from_dispatch(<Dispatch as GeneratorOps>::ail_row_linear(
            h.into_dispatch(),
            weight.into_dispatch(),
            bias.val().into_dispatch(),
        )),
        _ => linear.forward(h),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_and_backward_match_the_definition() {
        let (hidden, n) = (5, 19);
        let h: Vec<f32> = (0..hidden).map(|i| if i == 2 { 0.0 } else { i as f32 * 0.3 - 0.5 }).collect();
        let w: Vec<f32> = (0..hidden * n).map(|k| ((k * 7) % 11) as f32 * 0.1 - 0.5).collect();
        let b: Vec<f32> = (0..n).map(|j| j as f32 * 0.01).collect();
        let dk: Vec<f32> = (0..n).map(|j| ((j * 3) % 5) as f32 - 2.0).collect();
        let k = forward(&h, &w, &b);
        for j in 0..n {
            let expect: f32 = b[j] + (0..hidden).map(|i| h[i] * w[i * n + j]).sum::<f32>();
            assert!((k[j] - expect).abs() < 1e-5, "k[{j}]");
        }
        let (dh, dw) = backward(&h, &w, &dk);
        for i in 0..hidden {
            let expect: f32 = (0..n).map(|j| w[i * n + j] * dk[j]).sum();
            assert!((dh[i] - expect).abs() < 1e-4, "dh[{i}]");
            for j in 0..n {
                assert_eq!(dw[i * n + j], h[i] * dk[j]);
            }
        }
    }
}

//! The encoders' convolution: on burn's CPU backend (`flex`) our own buffer-level kernels
//! ([`cpu`](super::conv_cpu)), wired into autodiff as one operation; everywhere else burn's `conv2d`.
//!
//! burn 0.22.1 computes a convolution's kernel gradient, for a backend that does not override
//! it, as a convolution of the input by the output gradient after swapping axes, and on `flex`
//! that costs several times the forward pass. Here the whole convolution is a backend
//! extension ([`ConvOps`]): `flex` runs [`cpu::forward`](super::conv_cpu::forward), and autodiff over `flex` registers one
//! backward step that computes both gradients in one pass over the batch ([`cpu::backward`](super::conv_cpu::backward)).
//! Tensors on any other device (wgpu, remote) and convolutions our kernels do not cover
//! (groups, dilation, asymmetric padding, other dtypes) take burn's `conv2d` unchanged, so the
//! model code stays backend-generic: it calls [`conv2d`] whatever the device.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension, tensor::FloatTensor};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::ops::ConvOptions;

use super::conv_cpu::{self as cpu, Geometry};
use super::{contiguous, flex_tensor, own_kernels_on, slice};

/// The convolution as a burn backend operation: implemented for `flex` and for autodiff over it.
#[backend_extension(Flex, Autodiff)]
pub trait ConvOps: Backend {
    /// `x` `[N, C, H, W]` convolved by `weight` `[O, C, kh, kw]` (groups 1, dilation 1, the same
    /// padding on both sides of each axis) -> `[N, O, out_h, out_w]`.
    fn ail_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride_h: usize,
        stride_w: usize,
        pad_h: usize,
        pad_w: usize,
    ) -> FloatTensor<Self>;
}

/// The sizes of `x` convolved by `weight` with the given strides and paddings.
fn geometry(x: &[usize], weight: &[usize], stride: [usize; 2], padding: [usize; 2]) -> Geometry {
    Geometry {
        batch: x[0],
        in_channels: x[1],
        in_h: x[2],
        in_w: x[3],
        out_channels: weight[0],
        kernel_h: weight[2],
        kernel_w: weight[3],
        stride,
        padding,
    }
}

impl ConvOps for Flex {
    fn ail_conv2d(x: FlexTensor, weight: FlexTensor, sh: usize, sw: usize, ph: usize, pw: usize) -> FlexTensor {
        let g = geometry(x.layout().shape(), weight.layout().shape(), [sh, sw], [ph, pw]);
        let (x, weight) = (contiguous(&x), contiguous(&weight));
        let y = cpu::forward(slice(&x), slice(&weight), &g);
        flex_tensor(y, [g.batch, g.out_channels, g.out_h(), g.out_w()])
    }
}

/// The backward step of [`ConvOps::ail_conv2d`] on `flex`: both gradients in one pass.
#[derive(Debug)]
struct ConvBackward;

impl Backward<Flex, 2> for ConvBackward {
    /// The checkpointed input and kernel, and `[stride_h, stride_w, pad_h, pad_w]`.
    type State = (NodeId, NodeId, [usize; 4]);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (x_state, w_state, [sh, sw, ph, pw]) = ops.state;
        let x: FlexTensor = checkpointer.retrieve_node_output(x_state);
        let weight: FlexTensor = checkpointer.retrieve_node_output(w_state);
        let g = geometry(x.layout().shape(), weight.layout().shape(), [sh, sw], [ph, pw]);
        let (x_values, w_values, dy) = (contiguous(&x), contiguous(&weight), contiguous(&grad));
        let (dx, dw) =
            cpu::backward(slice(&x_values), slice(&w_values), slice(&dy), &g, node_x.is_some(), node_w.is_some());
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<Flex>(node.id, flex_tensor(dx, [g.batch, g.in_channels, g.in_h, g.in_w]));
        }
        if let (Some(node), Some(dw)) = (node_w, dw) {
            grads.register::<Flex>(node.id, flex_tensor(dw, [g.out_channels, g.in_channels, g.kernel_h, g.kernel_w]));
        }
    }
}

impl<C: CheckpointStrategy> ConvOps for Autodiff<Flex, C> {
    fn ail_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        sh: usize,
        sw: usize,
        ph: usize,
        pw: usize,
    ) -> FloatTensor<Self> {
        match ConvBackward.prepare::<C>([x.node(), weight.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let w_state = prep.checkpoint(&weight);
                let y = Flex::ail_conv2d(x.into_primitive(), weight.into_primitive(), sh, sw, ph, pw);
                prep.finish((x_state, w_state, [sh, sw, ph, pw]), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(Flex::ail_conv2d(x.into_primitive(), weight.into_primitive(), sh, sw, ph, pw))
            }
        }
    }
}

/// The sizes of the convolution when our kernels cover it, `None` when burn's must run.
fn own_geometry(x: &Tensor<4>, weight: &Tensor<4>, options: &ConvOptions<2>) -> Option<Geometry> {
    let covered = options.groups == 1
        && options.dilation == [1, 1]
        && options.padding.iter().all(|(begin, end)| begin == end)
        && x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && own_kernels_on(&x.device());
    let (xd, wd) = (x.dims(), weight.dims());
    let g = geometry(&xd, &wd, options.stride, options.padding.map(|(begin, _)| begin));
    (covered && xd[1] == wd[1] && g.is_valid()).then_some(g)
}

/// `burn::tensor::module::conv2d`, on our kernels where they apply (see the module docs).
///
/// # Shapes
/// - `x`: `[batch, in, height, width]`, `weight`: `[out, in, kh, kw]`, `bias`: `[out]`
/// - output: `[batch, out, out_h, out_w]`
pub fn conv2d(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>, options: ConvOptions<2>) -> Tensor<4> {
    let Some(g) = own_geometry(&x, &weight, &options) else {
        return burn::tensor::module::conv2d(x, weight, bias, options);
    };
    let [sh, sw] = g.stride;
    let [ph, pw] = g.padding;
    let y = <Dispatch as ConvOps>::ail_conv2d(x.into_dispatch(), weight.into_dispatch(), sh, sw, ph, pw);
    let y = Tensor::<4>::from_dispatch(y);
    match bias {
        Some(bias) => y + bias.reshape([1, g.out_channels, 1, 1]),
        None => y,
    }
}

/// `Conv2d::forward` through [`conv2d`] (burn's own for `Same` padding, which our encoders do
/// not use).
pub fn conv2d_module(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [(0, 0), (0, 0)],
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
        PaddingConfig2d::Same => return conv.forward(x),
    };
    let options = ConvOptions::new_with_padding(conv.stride, padding, conv.dilation, conv.groups);
    conv2d(x, conv.weight.val(), conv.bias.as_ref().map(|b| b.val()), options)
}

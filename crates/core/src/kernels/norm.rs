//! Training-mode BatchNorm as one backend operation on `flex` (see `norm_cpu` for the kernels):
//! the statistics are computed once, outside the graph, and the normalisation registers one
//! backward step for `x`, `γ` and `β` instead of the dozen steps of the composed version.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension, tensor::FloatTensor};
use burn::prelude::*;

use super::norm_cpu::{self as cpu, Dims};
use super::{contiguous, flex_tensor, slice};

/// BatchNorm's training pass as burn backend operations: implemented for `flex` and for
/// autodiff over it.
#[backend_extension(Flex, Autodiff)]
pub trait NormOps: Backend {
    /// Per-channel batch mean and biased variance of `x` `[N, C, H, W]` as `[2, C]` (not
    /// differentiated: a constant of the graph).
    fn ail_channel_stats(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `γ (x - mean) / sqrt(var + ε) + β` with `stats` = [`NormOps::ail_channel_stats`] of `x`,
    /// followed by a ReLU with `relu`; differentiated in `x` (through the statistics too), `γ`
    /// and `β`.
    fn ail_batch_norm(
        x: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> FloatTensor<Self>;

    /// `scale_c x + shift_c` per channel of `x` `[N, C, H, W]`, followed by a ReLU with `relu`:
    /// eval-mode BatchNorm with its statistics folded into `scale` and `shift` (`[C]`);
    /// differentiated in all three.
    fn ail_channel_affine(x: FloatTensor<Self>, scale: FloatTensor<Self>, shift: FloatTensor<Self>, relu: bool) -> FloatTensor<Self>;
}

fn dims(x: &FlexTensor) -> Dims {
    let s = x.layout().shape();
    Dims { batch: s[0], channels: s[1], plane: s[2] * s[3] }
}

impl NormOps for Flex {
    fn ail_channel_stats(x: FlexTensor) -> FlexTensor {
        let d = dims(&x);
        let x = contiguous(&x);
        flex_tensor(cpu::stats(slice(&x), d), [2, d.channels])
    }

    fn ail_batch_norm(x: FlexTensor, stats: FlexTensor, gamma: FlexTensor, beta: FlexTensor, epsilon: f64, relu: bool) -> FlexTensor {
        let d = dims(&x);
        let shape = x.layout().shape().dims::<4>();
        let (x, stats, gamma, beta) = (contiguous(&x), contiguous(&stats), contiguous(&gamma), contiguous(&beta));
        flex_tensor(cpu::forward(slice(&x), slice(&stats), slice(&gamma), slice(&beta), epsilon, relu, d), shape)
    }

    fn ail_channel_affine(x: FlexTensor, scale: FlexTensor, shift: FlexTensor, relu: bool) -> FlexTensor {
        let d = dims(&x);
        let shape = x.layout().shape().dims::<4>();
        let (x, scale, shift) = (contiguous(&x), contiguous(&scale), contiguous(&shift));
        flex_tensor(cpu::affine(slice(&x), slice(&scale), slice(&shift), relu, d), shape)
    }
}

/// The backward step of [`NormOps::ail_channel_affine`]: `dx` in one sweep, `dscale` and
/// `dshift` (when asked for) in another.
#[derive(Debug)]
struct AffineBackward;

impl Backward<Flex, 3> for AffineBackward {
    /// The input, `scale`, `shift` and whether a ReLU is fused in.
    type State = (FlexTensor, FlexTensor, FlexTensor, bool);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x, node_scale, node_shift] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (x, scale, shift, relu) = ops.state;
        let d = dims(&x);
        let shape = x.layout().shape().dims::<4>();
        let (x, scale, shift, dy) = (contiguous(&x), contiguous(&scale), contiguous(&shift), contiguous(&grad));
        let want_params = node_scale.is_some() || node_shift.is_some();
        let (dx, dscale, dshift) = cpu::affine_backward(slice(&x), slice(&dy), slice(&scale), slice(&shift), relu, want_params, d);
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, flex_tensor(dx, shape));
        }
        if let Some(node) = node_scale {
            grads.register::<Flex>(node.id, flex_tensor(dscale, [d.channels]));
        }
        if let Some(node) = node_shift {
            grads.register::<Flex>(node.id, flex_tensor(dshift, [d.channels]));
        }
    }
}

/// A constant of the graph (the statistics): nothing flows back.
#[derive(Debug)]
struct NoBackward;

impl Backward<Flex, 0> for NoBackward {
    type State = ();
    fn backward(self, _ops: Ops<(), 0>, _grads: &mut Gradients, _checkpointer: &mut Checkpointer) {}
}

/// The backward step of [`NormOps::ail_batch_norm`]: `dx`, `dγ` and `dβ` in two sweeps.
#[derive(Debug)]
struct BatchNormBackward;

impl Backward<Flex, 3> for BatchNormBackward {
    /// The input, the statistics, `γ`, `β`, `ε` and whether a ReLU is fused in.
    type State = (FlexTensor, FlexTensor, FlexTensor, FlexTensor, f64, bool);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (x, stats, gamma, beta, epsilon, relu) = ops.state;
        let d = dims(&x);
        let shape = x.layout().shape().dims::<4>();
        let (x, stats, gamma, beta, dy) = (contiguous(&x), contiguous(&stats), contiguous(&gamma), contiguous(&beta), contiguous(&grad));
        let (dx, dgamma, dbeta) =
            cpu::backward(slice(&x), slice(&dy), slice(&stats), slice(&gamma), slice(&beta), epsilon, relu, d);
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, flex_tensor(dx, shape));
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, flex_tensor(dgamma, [d.channels]));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, flex_tensor(dbeta, [d.channels]));
        }
    }
}

impl<C: CheckpointStrategy> NormOps for Autodiff<Flex, C> {
    fn ail_channel_stats(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let stats = Flex::ail_channel_stats(x.into_primitive());
        NoBackward.prepare::<C>([]).compute_bound().stateless(stats)
    }

    fn ail_batch_norm(
        x: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> FloatTensor<Self> {
        let stats = stats.into_primitive();
        match BatchNormBackward.prepare::<C>([x.node(), gamma.node(), beta.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (x, gamma, beta) = (x.into_primitive(), gamma.into_primitive(), beta.into_primitive());
                let y = Flex::ail_batch_norm(x.clone(), stats.clone(), gamma.clone(), beta.clone(), epsilon, relu);
                prep.finish((x, stats, gamma, beta, epsilon, relu), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::ail_batch_norm(
                x.into_primitive(),
                stats,
                gamma.into_primitive(),
                beta.into_primitive(),
                epsilon,
                relu,
            )),
        }
    }

    fn ail_channel_affine(x: FloatTensor<Self>, scale: FloatTensor<Self>, shift: FloatTensor<Self>, relu: bool) -> FloatTensor<Self> {
        match AffineBackward.prepare::<C>([x.node(), scale.node(), shift.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (x, scale, shift) = (x.into_primitive(), scale.into_primitive(), shift.into_primitive());
                let y = Flex::ail_channel_affine(x.clone(), scale.clone(), shift.clone(), relu);
                prep.finish((x, scale, shift, relu), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(Flex::ail_channel_affine(x.into_primitive(), scale.into_primitive(), shift.into_primitive(), relu))
            }
        }
    }
}

/// `scale_c x + shift_c` per channel of `x` `[N, C, H, W]`, then a ReLU with `relu`, as one
/// operation on `flex` (eval-mode BatchNorm; see [`NormOps::ail_channel_affine`]). The caller
/// checks [`super::own_kernels_on`] first.
pub fn channel_affine(x: Tensor<4>, scale: Tensor<1>, shift: Tensor<1>, relu: bool) -> Tensor<4> {
    Tensor::<4>::from_dispatch(<Dispatch as NormOps>::ail_channel_affine(x.into_dispatch(), scale.into_dispatch(), shift.into_dispatch(), relu))
}

/// Training-mode BatchNorm of `x` `[N, C, H, W]` on `flex`, followed by a ReLU with `relu`:
/// `(y, mean, var)`, where `mean` and the biased `var` (`[C]`, outside the graph) are the batch
/// statistics `y` was normalised with. The caller checks [`super::own_kernels_on`] first.
pub fn batch_norm_train(x: Tensor<4>, gamma: Tensor<1>, beta: Tensor<1>, epsilon: f64, relu: bool) -> (Tensor<4>, Tensor<1>, Tensor<1>) {
    let c = x.dims()[1];
    let stats = Tensor::<2>::from_dispatch(<Dispatch as NormOps>::ail_channel_stats(x.clone().detach().into_dispatch()));
    let y = <Dispatch as NormOps>::ail_batch_norm(
        x.into_dispatch(),
        stats.clone().into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        epsilon,
        relu,
    );
    let mean = stats.clone().narrow(0, 0, 1).reshape([c]);
    let var = stats.narrow(0, 1, 1).reshape([c]);
    (Tensor::<4>::from_dispatch(y), mean, var)
}

//! AdamW as one pass over each parameter's buffers on `flex`.
//!
//! burn's AdamW updates a parameter with about a dozen tensor operations (the two moments, their
//! bias corrections, the square root, the division, the decay, the step), each a pass over the
//! whole tensor on one thread. The kernel generators hold 33 parameters per generated weight, so
//! the optimiser is one of the largest elementwise costs of a pretraining step (BENCHMARKS.md).
//! [`AdamW`] does the same arithmetic, in the same order and precision, in one pass split over
//! rayon's threads, writing the parameter and both moments in place when their buffers are not
//! shared. Its state is burn's [`AdamWState`], so optimiser records (and checkpoints written
//! before this existed) load unchanged. On any other device, for other dtypes, or when
//! [`set_cpu_kernels`](super::set_cpu_kernels) chose burn's kernels, it runs burn's AdamW.

use burn::backend::flex::FlexTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension, tensor::FloatTensor};
use burn::optim::{AdamWConfig, AdamWState, AdaptiveMomentumState, LearningRate, ModuleOptimizer, Optimizer};
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use super::{contiguous, own_kernels_on, slice};

/// The constants of one AdamW step, as burn's `AdamWConfig` defines them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWHyper {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
}

impl Default for AdamWHyper {
    /// burn's defaults: β = (0.9, 0.999), ε = 1e-5, weight decay 1e-4.
    fn default() -> Self {
        Self { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-5, weight_decay: 1e-4 }
    }
}

/// Values per parallel task: large enough that scheduling is noise, small enough that both cores
/// share a generator's weights.
const CHUNK: usize = 1 << 14;

/// One AdamW step of the parameter `param` with gradient `grad`, in place; `time` counts this
/// step (1 for the first, when the moments `m` and `v` are only written, not read).
///
/// The arithmetic is burn 0.22.1's, operation for operation in `f32`: `m = β₁m + (1-β₁)g`,
/// `v = β₂v + (1-β₂)g²`, `p = p(1 - lr·λ) - lr · (m / c₁) / (sqrt(v / c₂) + ε)` with
/// `cₖ = 1 - βₖᵗ`, so the results are bitwise equal to burn's.
pub fn adamw_update(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], time: i32, lr: LearningRate, h: &AdamWHyper) {
    assert!(param.len() == grad.len() && m.len() == grad.len() && v.len() == grad.len(), "AdamW buffers of one size");
    let (b1, b2) = (h.beta_1, h.beta_2);
    let (f1, f2) = (1.0 - b1, 1.0 - b2);
    let (c1, c2) = (1f32 - b1.powi(time), 1f32 - b2.powi(time));
    let decay_rate = lr * h.weight_decay as f64;
    let keep = (1.0 - decay_rate) as f32;
    let (lr32, eps) = (lr as f32, h.epsilon);
    let k = Constants { b1, b2, f1, f2, c1, c2, keep, lr: lr32, eps };
    let (first, decay) = (time == 1, decay_rate != 0.0);
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .for_each(|(((p, g), m), v)| {
            // One loop per case, so that the loop has no branch and vectorises.
            super::vectorized(
                #[inline(always)]
                || match (first, decay) {
                    (true, false) => update_chunk::<true, false>(p, g, m, v, &k),
                    (true, true) => update_chunk::<true, true>(p, g, m, v, &k),
                    (false, false) => update_chunk::<false, false>(p, g, m, v, &k),
                    (false, true) => update_chunk::<false, true>(p, g, m, v, &k),
                },
            )
        });
}

/// The constants of one step (see [`adamw_update`]).
struct Constants {
    b1: f32,
    b2: f32,
    f1: f32,
    f2: f32,
    c1: f32,
    c2: f32,
    keep: f32,
    lr: f32,
    eps: f32,
}

/// [`adamw_update`] on one chunk: `FIRST` for the first step (the moments only written), `DECAY`
/// when the weight decay is not zero.
#[inline(always)]
fn update_chunk<const FIRST: bool, const DECAY: bool>(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: &Constants) {
    let n = p.len();
    let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        let gi = g[i];
        let (mi, vi) = if FIRST { (gi * k.f1, (gi * gi) * k.f2) } else { (m[i] * k.b1 + gi * k.f1, v[i] * k.b2 + (gi * gi) * k.f2) };
        m[i] = mi;
        v[i] = vi;
        let delta = (mi / k.c1) / ((vi / k.c2).sqrt() + k.eps);
        let decayed = if DECAY { p[i] * k.keep } else { p[i] };
        p[i] = decayed - delta * k.lr;
    }
}

/// The fused AdamW step as a burn backend operation on `flex`.
#[backend_extension(Flex)]
pub trait AdamWOps: Backend {
    /// One AdamW step: `(param, moment_1, moment_2)` after it. On the first step (`time` 1)
    /// the moments passed in are only buffers to write, their values are not read.
    #[allow(clippy::too_many_arguments)]
    fn ail_adamw(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        time: usize,
        lr: f64,
        beta_1: f32,
        beta_2: f32,
        epsilon: f32,
        weight_decay: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// `tensor` as a contiguous buffer at offset 0 that this step may write: the same buffer when
/// nothing else holds it, a copy otherwise.
fn writable(tensor: FlexTensor) -> FlexTensor {
    match tensor.layout().contiguous_offsets() {
        Some((0, _)) => tensor,
        _ => tensor.to_contiguous(),
    }
}

fn values_mut(tensor: &mut FlexTensor, len: usize) -> &mut [f32] {
    &mut tensor.storage_mut::<f32>()[..len]
}

impl AdamWOps for Flex {
    fn ail_adamw(
        param: FlexTensor,
        grad: FlexTensor,
        moment_1: FlexTensor,
        moment_2: FlexTensor,
        time: usize,
        lr: f64,
        beta_1: f32,
        beta_2: f32,
        epsilon: f32,
        weight_decay: f32,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let shape = param.layout().shape().clone();
        let n = shape.num_elements();
        let grad = contiguous(&grad);
        let mut m = writable(moment_1);
        let mut v = writable(moment_2);
        let mut p = writable(param);
        let h = AdamWHyper { beta_1, beta_2, epsilon, weight_decay };
        let time = i32::try_from(time).unwrap_or(i32::MAX);
        adamw_update(values_mut(&mut p, n), slice(&grad), values_mut(&mut m, n), values_mut(&mut v, n), time, lr, &h);
        (p, m, v)
    }
}

/// AdamW with burn's arithmetic and state, one fused pass per parameter on `flex` (see the
/// module docs); burn's own AdamW elsewhere.
#[derive(Clone)]
pub struct AdamW {
    hyper: AdamWHyper,
    fallback: burn::optim::AdamW,
}

impl AdamW {
    pub fn new(hyper: AdamWHyper) -> Self {
        let fallback = AdamWConfig::new()
            .with_beta_1(hyper.beta_1)
            .with_beta_2(hyper.beta_2)
            .with_epsilon(hyper.epsilon)
            .with_weight_decay(hyper.weight_decay)
            .build();
        Self { hyper, fallback }
    }
}

impl Optimizer for AdamW {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(&self, lr: LearningRate, tensor: Tensor<D>, grad: Tensor<D>, state: Option<AdamWState<D>>) -> (Tensor<D>, Option<AdamWState<D>>) {
        let fused = tensor.dtype() == DType::F32
            && grad.dtype() == DType::F32
            && tensor.dims() == grad.dims()
            && state.as_ref().is_none_or(|s| s.momentum.max_moment_2.is_none())
            && own_kernels_on(&tensor.device());
        if !fused {
            return self.fallback.step(lr, tensor, grad, state);
        }
        let (time, m, v) = match state {
            Some(s) => (s.momentum.time + 1, s.momentum.moment_1, s.momentum.moment_2),
            None => (1, grad.zeros_like(), grad.zeros_like()),
        };
        let h = self.hyper;
        let (p, m, v) = <Dispatch as AdamWOps>::ail_adamw(
            tensor.into_dispatch(),
            grad.into_dispatch(),
            m.into_dispatch(),
            v.into_dispatch(),
            time,
            lr,
            h.beta_1,
            h.beta_2,
            h.epsilon,
            h.weight_decay,
        );
        let momentum = AdaptiveMomentumState::new(time, Tensor::from_dispatch(m), Tensor::from_dispatch(v));
        (Tensor::from_dispatch(p), Some(AdamWState::new(momentum)))
    }

    fn to_device<const D: usize>(state: AdamWState<D>, device: &Device) -> AdamWState<D> {
        <burn::optim::AdamW as Optimizer>::to_device(state, device)
    }
}

/// A whole-module AdamW ([`AdamW`]) with optional gradient clipping: what `AdamWConfig::init`
/// builds, with the fused step.
pub fn adamw(hyper: AdamWHyper, grad_clipping: Option<burn::optim::grad_clipping::GradientClippingConfig>) -> ModuleOptimizer {
    let optim = ModuleOptimizer::from(AdamW::new(hyper));
    match grad_clipping {
        Some(config) => optim.with_grad_clipping(config.init()),
        None => optim,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::GradientsParams;

    fn values(t: Tensor<2>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().expect("f32")
    }

    /// Ten steps of a linear layer with the fused AdamW and with burn's (which never looks at
    /// `set_cpu_kernels`), from the same start and
    /// on the same batches: parameters bitwise equal after every step, and the optimiser records
    /// interchangeable.
    #[test]
    fn fused_adamw_is_burns_adamw_bit_for_bit() {
        let device = Device::flex().autodiff();
        let start: Linear = LinearConfig::new(37, 21).init(&device);
        assert!(own_kernels_on(&device), "the fused step runs on this device");
        for weight_decay in [0.0, 1e-4, 0.05] {
            let hyper = AdamWHyper { weight_decay, ..AdamWHyper::default() };
            let mut fused = adamw(hyper, None);
            let mut burns = AdamWConfig::new().with_weight_decay(weight_decay).init();
            let (mut a, mut b) = (start.clone(), start.clone());
            for step in 0..10 {
                let x = Tensor::<2>::random([8, 37], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
                let lr = 1e-2 / (1.0 + step as f64);
                let ga = GradientsParams::from_grads(a.forward(x.clone()).powf_scalar(2.0).mean().backward(), &a);
                let gb = GradientsParams::from_grads(b.forward(x).powf_scalar(2.0).mean().backward(), &b);
                a = fused.step(lr, a, ga);
                b = burns.step(lr, b, gb);
                assert_eq!(values(a.weight.val()), values(b.weight.val()), "weight after step {step}, decay {weight_decay}");
            }
            assert_ne!(values(a.weight.val()), values(start.weight.val()), "the steps moved the weights");
            // The fused optimiser continues from burn's record, and burn's from the fused one's.
            let mut continued = adamw(hyper, None).load_record(burns.to_record());
            let x = Tensor::<2>::random([8, 37], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
            let ga = GradientsParams::from_grads(a.forward(x.clone()).powf_scalar(2.0).mean().backward(), &a);
            let gb = GradientsParams::from_grads(b.forward(x).powf_scalar(2.0).mean().backward(), &b);
            let a = continued.step(1e-3, a, ga);
            let b = burns.step(1e-3, b, gb);
            assert_eq!(values(a.weight.val()), values(b.weight.val()), "after reloading the record");
        }
    }

    /// A parameter whose buffer is shared (here by a copy of the model) is not written in place:
    /// the copy keeps its values.
    #[test]
    fn a_shared_parameter_buffer_is_left_intact() {
        let device = Device::flex().autodiff();
        let model: Linear = LinearConfig::new(5, 3).init(&device);
        let kept = model.clone();
        let before = values(kept.weight.val());
        let x = Tensor::<2>::ones([2, 5], &device);
        let grads = GradientsParams::from_grads(model.forward(x).sum().backward(), &model);
        let stepped = adamw(AdamWHyper::default(), None).step(0.1, model, grads);
        assert_eq!(values(kept.weight.val()), before);
        assert_ne!(values(stepped.weight.val()), before);
    }
}

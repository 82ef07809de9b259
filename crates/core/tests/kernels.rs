//! Our CPU kernels (`ail_core::kernels`) against burn's own operations. The convolution: forward, input gradient
//! and kernel gradient on the shapes of every encoder and on odd ones, and the gradient that
//! reaches `i` through a generated kernel against finite differences.

use ail_core::kernels::{self as conv, CpuKernels};
use ail_core::hypernet::{HyperConvConfig, descriptor_embedding, embed};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::ops::ConvOptions;
use std::sync::Mutex;

/// Held by the tests that convolve on `flex`, as one of them flips the process-wide switch.
static SWITCH: Mutex<()> = Mutex::new(());

/// `(batch, in, height, width, out, kernel, stride, padding)`.
type Shape = (usize, usize, usize, usize, usize, usize, usize, usize);

const SHAPES: &[Shape] = &[
    // ResNet 3x3, stride 1 and 2, padding 1 (CIFAR stem and BasicBlocks).
    (4, 16, 32, 32, 16, 3, 1, 1),
    (4, 16, 32, 32, 32, 3, 2, 1),
    // 1x1: bottleneck (stride 1) and projection shortcut (stride 2).
    (3, 64, 8, 8, 16, 1, 1, 0),
    (3, 32, 8, 8, 64, 1, 2, 0),
    // The ImageNet stem: 7x7, stride 2, padding 3, on 3 channels.
    (2, 3, 40, 40, 8, 7, 2, 3),
    // The ViT patch embedding: kernel = stride = patch, no padding.
    (2, 3, 16, 16, 12, 4, 4, 0),
    // Batch 1, 5x7 images, 3 channels, counts that are not multiples of 8.
    (1, 3, 5, 7, 5, 3, 1, 1),
    (1, 3, 5, 7, 13, 3, 2, 1),
    (2, 13, 5, 7, 11, 1, 1, 0),
    // A batch larger than any chunking (512) on a small image.
    (512, 3, 4, 4, 5, 3, 1, 1),
    // A 1x1 image with a 3x3 kernel: only the centre tap is inside.
    (2, 5, 1, 1, 3, 3, 1, 1),
];

fn options(s: usize, p: usize) -> ConvOptions<2> {
    ConvOptions::new([s, s], [p, p], [1, 1], 1)
}

/// Largest |a - b| over the largest |b|: the relative error of a whole tensor.
fn relative_error(a: Tensor<4>, b: Tensor<4>) -> f32 {
    let scale = b.clone().abs().max().into_scalar::<f32>().max(1e-6);
    (a - b).abs().max().into_scalar::<f32>() / scale
}

/// `(output, dx, dw)` of `sum(conv(x, w) * r)` through `f`.
fn run(
    f: impl Fn(Tensor<4>, Tensor<4>, ConvOptions<2>) -> Tensor<4>,
    x: &Tensor<4>,
    w: &Tensor<4>,
    r: &Tensor<4>,
    o: ConvOptions<2>,
) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
    let (x, w) = (x.clone().require_grad(), w.clone().require_grad());
    let y = f(x.clone(), w.clone(), o);
    let grads = (y.clone() * r.clone()).sum().backward();
    (y.detach(), x.grad(&grads).expect("dx"), w.grad(&grads).expect("dw"))
}

#[test]
fn forward_and_both_gradients_equal_burns_conv2d() {
    let _switch = SWITCH.lock().unwrap();
    assert_eq!(conv::cpu_kernels(), CpuKernels::Own);
    let device = Device::flex().autodiff();
    device.seed(11);
    for &(n, c, h, wd, out, k, s, p) in SHAPES {
        let x = Tensor::<4>::random([n, c, h, wd], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<4>::random([out, c, k, k], Distribution::Normal(0.0, 0.3), &device);
        let oh = (h + 2 * p - k) / s + 1;
        let ow = (wd + 2 * p - k) / s + 1;
        let r = Tensor::<4>::random([n, out, oh, ow], Distribution::Normal(0.0, 1.0), &device);
        let ours = run(|x, w, o| conv::conv2d(x, w, None, o), &x, &w, &r, options(s, p));
        let burns = run(|x, w, o| burn::tensor::module::conv2d(x, w, None, o), &x, &w, &r, options(s, p));
        assert_eq!(ours.0.dims(), [n, out, oh, ow]);
        for (what, a, b) in [("output", ours.0, burns.0), ("dx", ours.1, burns.1), ("dw", ours.2, burns.2)] {
            let e = relative_error(a, b);
            assert!(e <= 1e-4, "{what} of {n}x{c}x{h}x{wd} * {out}x{c}x{k}x{k} stride {s} pad {p}: relative error {e}");
        }
    }
}

#[test]
fn bias_and_inference_without_autodiff() {
    let _switch = SWITCH.lock().unwrap();
    let device = Device::flex();
    device.seed(12);
    let x = Tensor::<4>::random([2, 3, 6, 5], Distribution::Normal(0.0, 1.0), &device);
    let w = Tensor::<4>::random([4, 3, 3, 3], Distribution::Normal(0.0, 0.3), &device);
    let b = Tensor::<1>::from_floats([0.5, -1.0, 2.0, 0.0], &device);
    let ours = conv::conv2d(x.clone(), w.clone(), Some(b.clone()), options(2, 1));
    let burns = burn::tensor::module::conv2d(x, w, Some(b), options(2, 1));
    assert!(relative_error(ours, burns) <= 1e-5);
}

/// `f(i) = sum(conv(x, kernel(E i)) * r)` and its autodiff gradient against central differences:
/// the gradient that reaches `i` passes through our convolution's kernel gradient.
#[test]
fn gradient_reaching_i_through_a_generated_kernel_matches_finite_differences() {
    let _switch = SWITCH.lock().unwrap();
    let device = Device::flex().autodiff();
    device.seed(13);
    let conv = HyperConvConfig::new(5, 6, 3).with_stride(2).with_hidden(8).init(&device);
    let emb = descriptor_embedding(2, &device);
    let x = Tensor::<4>::random([3, 5, 9, 7], Distribution::Normal(0.0, 1.0), &device);
    let r = Tensor::<4>::random([3, 6, 5, 4], Distribution::Normal(0.0, 1.0), &device);
    let f = |i: [f32; 2]| -> (f64, [f64; 2]) {
        let i = Tensor::<1>::from_floats(i, &device).require_grad();
        let value = (conv.forward(x.clone(), embed(&emb, i.clone())) * r.clone()).sum();
        let grads = value.backward();
        let g: Vec<f32> = i.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
        (value.into_scalar::<f32>() as f64, [g[0] as f64, g[1] as f64])
    };
    for point in [[0.3f32, 0.7], [1.0, 0.0], [0.55, 0.45]] {
        let (_, grad) = f(point);
        for axis in 0..2 {
            let eps = 1e-2f32;
            let (mut up, mut down) = (point, point);
            up[axis] += eps;
            down[axis] -= eps;
            let numeric = (f(up).0 - f(down).0) / (2.0 * eps as f64);
            let scale = numeric.abs().max(grad[axis].abs()).max(1e-3);
            let error = (numeric - grad[axis]).abs() / scale;
            assert!(error < 2e-2, "d f / d i[{axis}] at {point:?}: autodiff {} vs finite difference {numeric}", grad[axis]);
        }
        assert!(grad.iter().any(|g| g.abs() > 1e-3), "the gradient reaching i vanished at {point:?}: {grad:?}");
    }
}

/// Switching to burn's kernels gives the same values (the switch the benchmarks use).
#[test]
fn the_switch_selects_burns_kernels() {
    let _switch = SWITCH.lock().unwrap();
    let device = Device::flex();
    let x = Tensor::<4>::random([1, 2, 4, 4], Distribution::Normal(0.0, 1.0), &device);
    let w = Tensor::<4>::random([3, 2, 3, 3], Distribution::Normal(0.0, 1.0), &device);
    assert!(conv::own_kernels_on(&device) && conv::own_kernels_on(&device.clone().autodiff()));
    let ours = conv::conv2d(x.clone(), w.clone(), None, options(1, 1));
    conv::set_cpu_kernels(CpuKernels::Burn);
    assert_eq!(conv::cpu_kernels(), CpuKernels::Burn);
    assert!(!conv::own_kernels_on(&device), "the switch must take burn's path");
    let burns = conv::conv2d(x, w, None, options(1, 1));
    conv::set_cpu_kernels(CpuKernels::Own);
    assert!(relative_error(ours, burns) <= 1e-5);
}

/// The generators' output layer (`ail_core::kernels::row_linear`) against burn's `Linear`:
/// output and the gradients of its input, weight and bias.
#[test]
fn generator_layer_equals_burns_linear() {
    let _switch = SWITCH.lock().unwrap();
    let device = Device::flex().autodiff();
    device.seed(14);
    let linear = burn::nn::LinearConfig::new(7, 300).init(&device);
    let h = burn::tensor::activation::relu(Tensor::<2>::random([1, 7], Distribution::Normal(0.0, 1.0), &device)).require_grad();
    let r = Tensor::<2>::random([1, 300], Distribution::Normal(0.0, 1.0), &device);
    let run = |f: &dyn Fn(Tensor<2>) -> Tensor<2>| {
        let y = f(h.clone());
        let grads = (y.clone() * r.clone()).sum().backward();
        let w = linear.weight.val().grad(&grads).expect("dW");
        let b = linear.bias.as_ref().unwrap().val().grad(&grads).expect("db");
        (y.detach(), h.grad(&grads).expect("dh"), w, b)
    };
    let ours = run(&|h| conv::row_linear(&linear, h));
    let burns = run(&|h| linear.forward(h));
    let close = |a: Tensor<2>, b: Tensor<2>, what: &str| {
        let e = relative_error(a.unsqueeze(), b.unsqueeze());
        assert!(e <= 1e-5, "{what}: relative error {e}");
    };
    close(ours.0, burns.0, "output");
    close(ours.1, burns.1, "dh");
    close(ours.2, burns.2, "dW");
    close(ours.3.unsqueeze(), burns.3.unsqueeze(), "db");
}

/// `BatchNorm2d` in training: the fused operation (with and without its ReLU) against the same
/// layer composed of tensor operations (`CpuKernels::Burn`, the path every other device takes):
/// output, the gradients of the input, γ and β, and the running statistics.
#[test]
fn fused_batch_norm_equals_the_composed_one() {
    let _switch = SWITCH.lock().unwrap();
    let device = Device::flex().autodiff();
    device.seed(15);
    let x = Tensor::<4>::random([3, 4, 5, 7], Distribution::Normal(0.5, 2.0), &device);
    let r = Tensor::<4>::random([3, 4, 5, 7], Distribution::Normal(0.0, 1.0), &device);
    for relu in [false, true] {
        let run = |kernels: CpuKernels| {
            conv::set_cpu_kernels(kernels);
            let mut bn = ail_core::norm::BatchNorm2dConfig::new(4).init(&device);
            bn.beta = burn::module::Param::from_tensor(Tensor::from_floats([0.3, -0.2, 0.0, 1.0], &device));
            let x = x.clone().require_grad();
            let y = if relu { bn.forward_relu(x.clone()) } else { bn.forward(x.clone()) };
            let grads = (y.clone() * r.clone()).sum().backward();
            conv::set_cpu_kernels(CpuKernels::Own);
            let stats: Tensor<4> = Tensor::cat(vec![bn.running_mean.value_sync(), bn.running_var.value_sync()], 0).reshape([1, 1, 2, 4]);
            let gamma: Tensor<4> = bn.gamma.val().grad(&grads).unwrap().reshape([1, 1, 1, 4]);
            let beta: Tensor<4> = bn.beta.val().grad(&grads).unwrap().reshape([1, 1, 1, 4]);
            (y.detach(), x.grad(&grads).unwrap(), gamma, beta, stats.inner().to_device(&device))
        };
        let (fused, composed) = (run(CpuKernels::Own), run(CpuKernels::Burn));
        for (what, a, b) in [
            ("output", fused.0, composed.0),
            ("dx", fused.1, composed.1),
            ("dgamma", fused.2, composed.2),
            ("dbeta", fused.3, composed.3),
            ("running statistics", fused.4, composed.4),
        ] {
            let e = relative_error(a, b);
            assert!(e <= 1e-4, "{what} (relu {relu}): relative error {e}");
        }
    }
}

/// Eval-mode BatchNorm (running statistics folded into a per-channel scale and shift), with and
/// without the ReLU, as one operation on `flex`: outputs and the gradients of `x`, `γ` and `β`
/// equal the composed tensor operations (`CpuKernels::Burn`).
#[test]
fn fused_eval_batch_norm_equals_the_composed_one() {
    let _switch = SWITCH.lock().unwrap();
    let device = Device::flex().autodiff();
    device.seed(16);
    let x = Tensor::<4>::random([3, 4, 5, 7], Distribution::Normal(0.5, 2.0), &device);
    let r = Tensor::<4>::random([3, 4, 5, 7], Distribution::Normal(0.0, 1.0), &device);
    for relu in [false, true] {
        let run = |kernels: CpuKernels| {
            conv::set_cpu_kernels(kernels);
            let mut bn = ail_core::norm::BatchNorm2dConfig::new(4).init(&device).freeze();
            bn.running_mean = burn::module::RunningState::new(Tensor::from_floats([0.4, -0.1, 0.6, 0.0], &device));
            bn.running_var = burn::module::RunningState::new(Tensor::from_floats([3.0, 0.5, 1.5, 4.0], &device));
            // Trainable again (the layer stays in eval mode): the gradients of the scale and shift.
            bn.gamma = burn::module::Param::from_tensor(Tensor::from_floats([1.2, -0.7, 0.9, 1.0], &device));
            bn.beta = burn::module::Param::from_tensor(Tensor::from_floats([0.3, -0.2, 0.0, 1.0], &device));
            let x = x.clone().require_grad();
            let y = if relu { bn.forward_relu(x.clone()) } else { bn.forward(x.clone()) };
            let grads = (y.clone() * r.clone()).sum().backward();
            conv::set_cpu_kernels(CpuKernels::Own);
            let gamma: Tensor<4> = bn.gamma.val().grad(&grads).unwrap().reshape([1, 1, 1, 4]);
            let beta: Tensor<4> = bn.beta.val().grad(&grads).unwrap().reshape([1, 1, 1, 4]);
            (y.detach(), x.grad(&grads).unwrap(), gamma, beta)
        };
        let (fused, composed) = (run(CpuKernels::Own), run(CpuKernels::Burn));
        assert!(relative_error(fused.0.clone(), fused.0.clone().zeros_like()) > 0.5, "the output is not zero");
        for (what, a, b) in [("output", fused.0, composed.0), ("dx", fused.1, composed.1), ("dgamma", fused.2, composed.2), ("dbeta", fused.3, composed.3)] {
            let e = relative_error(a, b);
            assert!(e <= 1e-5, "eval {what} (relu {relu}): relative error {e}");
        }
    }
}

//! Our own CPU kernels for the operations that dominate a training step: the convolution
//! ([`conv2d`]), training-mode BatchNorm ([`batch_norm_train`]), the kernel generators' output
//! layer ([`row_linear`]) and the optimiser's update ([`AdamW`], [`adamw`]).
//!
//! Each is a burn backend extension implemented for burn's CPU backend (`flex`) and for autodiff
//! over it, with a hand-written backward pass: the kernels read and write contiguous `f32`
//! buffers (`conv_cpu`, `norm_cpu`), parallel over the batch or the channels with rayon. On any
//! other device (wgpu, remote) the callers keep burn's own operations, so model code stays
//! backend-generic. [`set_cpu_kernels`] switches `flex` back to burn's operations for the whole
//! process: the benchmarks measure both side by side, and the tests compare them.

pub mod adamw;
mod conv;
pub mod conv_cpu;
pub mod generator;
mod norm;
pub mod norm_cpu;

use std::sync::atomic::{AtomicBool, Ordering};

use burn::backend::DispatchDevice;
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::TensorData;

pub use adamw::{AdamW, AdamWHyper, adamw};
pub use conv::{ConvOps, conv2d, conv2d_module};
pub use generator::{GeneratorOps, row_linear};
pub use norm::{NormOps, batch_norm_train};

/// Which kernels burn's CPU backend runs for convolutions, BatchNorm, the generators' output layer
/// and AdamW.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum CpuKernels {
    /// Ours (this module): im2col + GEMM convolutions, fused BatchNorm, one-pass AdamW (the default).
    #[default]
    Own,
    /// burn's `conv2d` with its generic backward, BatchNorm composed of tensor operations, burn's AdamW.
    Burn,
}

static USE_BURN: AtomicBool = AtomicBool::new(false);

/// Selects the kernels of burn's CPU backend for the whole process.
pub fn set_cpu_kernels(kind: CpuKernels) {
    USE_BURN.store(kind == CpuKernels::Burn, Ordering::Relaxed);
}

/// The kernels burn's CPU backend runs now.
pub fn cpu_kernels() -> CpuKernels {
    if USE_BURN.load(Ordering::Relaxed) { CpuKernels::Burn } else { CpuKernels::Own }
}

/// Whether our kernels run on `device`: burn's CPU backend (with or without autodiff), unless
/// [`set_cpu_kernels`] chose burn's.
pub fn own_kernels_on(device: &Device) -> bool {
    cpu_kernels() == CpuKernels::Own
        && matches!(device.clone().without_autodiff().as_dispatch(), DispatchDevice::Flex(_))
}

/// `tensor` with a contiguous layout (a copy only when it is strided).
fn contiguous(tensor: &FlexTensor) -> FlexTensor {
    tensor.to_contiguous()
}

/// The values of a contiguous `f32` tensor.
fn slice(tensor: &FlexTensor) -> &[f32] {
    tensor.as_slice::<f32>().expect("a contiguous f32 tensor")
}

fn flex_tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

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
pub mod conv_direct;
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
pub use norm::{NormOps, batch_norm_train, channel_affine};

/// Which kernels burn's CPU backend runs for convolutions, BatchNorm, the generators' output layer
/// and AdamW.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum CpuKernels {
    /// Ours (this module): direct (x86-64 AVX-512 / AVX2) or im2col + GEMM convolutions, fused
    /// BatchNorm, one-pass AdamW (the default).
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

/// Runs `f` compiled for the widest vector instructions this CPU has (AVX-512 or AVX2 + FMA on
/// x86-64; as it is elsewhere), so that the loops LLVM vectorises in it use 512- or 256-bit
/// vectors instead of the 128-bit ones of the baseline target. Call it inside each parallel task:
/// `f` is inlined into a function compiled with those features, code it calls through a pointer
/// (rayon's tasks) is not. The arithmetic is the same: Rust never fuses `a * b + c` into an FMA,
/// and LLVM does not reorder floating-point sums, so the results are bitwise those of `f()`.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static LEVEL: OnceLock<u8> = OnceLock::new();
        let level = *LEVEL.get_or_init(|| {
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") {
                2
            } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                1
            } else {
                0
            }
        });
        #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
        fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU has the features each function is compiled for (detected above).
        match level {
            2 => unsafe { avx512(f) },
            1 => unsafe { avx2(f) },
            _ => f(),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    f()
}

/// `len` values written by `fill`, without first zeroing them (a pass over the whole buffer that
/// the step's large activations would otherwise pay for on every allocation).
///
/// # Safety
/// `fill` writes every element of the slice it is given.
pub(crate) unsafe fn written_by(len: usize, fill: impl FnOnce(&mut [std::mem::MaybeUninit<f32>])) -> Vec<f32> {
    let mut out = Vec::with_capacity(len);
    fill(&mut out.spare_capacity_mut()[..len]);
    // SAFETY: the caller's contract: every one of the `len` values is initialised.
    unsafe { out.set_len(len) };
    out
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

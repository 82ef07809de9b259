//! Batched image augmentation for contrastive pretraining and invariance measurement.
//!
//! Each operation is a WGSL compute kernel in `shaders/` that processes a whole batch on burn's own
//! wgpu tensors, plus a plain-Rust reference with the same formulas (used on the CPU backend and by
//! the tests). Randomness is drawn on the host from a seeded RNG ([`ViewParams::sample`]) and
//! uploaded once per batch, so the kernels are deterministic and GPU and CPU results can be compared.
//!
//! | kernel                        | ops                                                        |
//! |-------------------------------|------------------------------------------------------------|
//! | `shaders/affine.wgsl`         | random resized crop, flips, rotation, translation, scale, shear |
//! | `shaders/color_jitter.wgsl`   | brightness, contrast, saturation, hue (random order), grayscale |
//! | `shaders/blur_solarize.wgsl`  | separable gaussian blur (two passes), solarize             |
//!
//! Semantics follow torchvision (see each module); docs/method.md gives the probabilities.

pub mod affine;
mod descriptor;
mod error;
pub mod audio;
pub mod blur_solarize;
pub mod color_jitter;
pub mod device;
pub mod invariance;
#[cfg(feature = "wgpu")]
pub mod gpu;
mod params;
mod pipeline;

pub use affine::Affine;
pub use descriptor::{Descriptor, Family};
pub use error::AugmentError;
pub use params::{AugmentConfig, OpSet, PARAM_STRIDE, ViewParams, resized_crop_box, sample_views};
pub use pipeline::{Augmenter, augment_reference, pack_params, pack_u8};

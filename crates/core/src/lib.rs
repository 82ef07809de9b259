//! Amortised invariance learning for contrastive self-supervision (Chavhan et al., ICLR 2023).
//!
//! One encoder is conditioned on an invariance descriptor `i` in `[0, 1]^K`; during pretraining `i`
//! is binary and names the augmentations used for a batch, downstream it is continuous and learned.
//! This crate holds what does not depend on a UI or a platform, all on burn tensors: the encoders,
//! losses and methods, pretraining as a library ([`pretrain::pretrain`], with its run directory,
//! kNN monitor and data parallelism), downstream tasks, fitting, few-shot episodes and the
//! invariance measurement. It sits above `ail-augment` (views, descriptors) and `ail-data`
//! (datasets); docs/architecture.md draws the layout.

mod error;
pub mod arrays;
pub mod bound;
pub mod checkpoint;
pub mod encoder;
pub mod fewshot;
pub mod finetune;
pub mod fit;
pub mod frozen;
pub mod head;
pub mod hypernet;
pub mod invariance;
pub mod kernels;
pub mod io;
pub mod knn;
pub mod linalg;
pub mod loss;
pub mod memory;
pub mod method;
pub mod mel;
pub mod metrics;
pub mod norm;
pub mod pretrain;
pub mod queue;
pub mod resnet;
pub mod ridge;
pub mod sampler;
pub mod schedule;
pub mod summary;
pub mod task;
pub mod torch;
pub mod vit;

pub use ail_augment::{Descriptor, Family};
pub use encoder::{Encoder, EncoderConfig, ModelKind};
pub use error::CoreError;

/// Held for the whole body of every test that draws random numbers (this crate's, and other
/// crates' tests): burn's CPU backend has one generator per process and draws weights lazily, at
/// their first use, so tests on parallel threads would otherwise take numbers from each other's
/// seeded sequences and see another model on every run. Not taken by library code (a test holding
/// it may call anything).
#[doc(hidden)]
pub fn serial_draws() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

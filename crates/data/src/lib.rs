//! Dataset readers in the official formats, the built-in demo data, and batching.
//!
//! Every reader yields an [`ImageSet`]: decoded `u8` images laid out `[N, C, H, W]` plus `u32` labels,
//! held in memory. [`BatchLoader`] shuffles deterministically from a seed and assembles batches ahead
//! of time on a prefetch thread, so the device never waits for decoding.
//!
//! Formats:
//! - CIFAR-10 / CIFAR-100 binary (`cifar-10-batches-bin`, `cifar-100-binary`), see [`cifar`];
//! - IDX (MNIST, Fashion-MNIST), gzipped or not, see [`idx`];
//! - ImageFolder (`<root>/<class>/<file>.{png,jpg,jpeg}`), any size, see [`folder`];
//! - Omniglot's official zips (images and strokes), see [`omniglot`].
//!
//! Bad user data never panics: every reader returns a [`DataError`] that names the file, the format
//! it expected and what it found.

pub mod audio;
pub mod builtin;
pub mod cifar;
mod dataset;
mod error;
pub mod folder;
pub mod idx;
pub mod limits;
mod loader;
pub mod omniglot;
pub mod tasks;
mod sniff;
mod source;
pub mod zip;

pub use dataset::ImageSet;
pub use error::DataError;
pub use loader::{Batch, BatchLoader, LoaderConfig, epoch_order};
pub use sniff::describe_bytes;
pub use source::{DataFormat, DataSource, LoadOptions, OfficialSplit, resolve_format};

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, DataError>;

//! Where the images come from: the data arguments several commands share.

use ail_data::DataFormat;
use clap::Args;

/// Where the images come from.
#[derive(Debug, Args, Clone)]
pub struct DataArgs {
    /// Dataset: `builtin` (6,000 Fashion-MNIST images shipped with ail), a CIFAR binary folder
    /// (`cifar-10-batches-bin`), an MNIST-style IDX folder, or an ImageFolder (`<root>/<class>/*.png|jpg`).
    #[arg(long, default_value = "builtin")]
    pub data: String,
    /// Format of --data; `auto` decides from the files present.
    #[arg(long, value_enum, default_value_t = DataFormat::Auto)]
    pub format: DataFormat,
    /// Side of the square images fed to the model (images of another size are resized).
    #[arg(long, default_value_t = 32)]
    pub image_size: usize,
    /// Skip (and count) undecodable image files instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
}


//! The built-in demo data: 6,000 Fashion-MNIST training images (600 per class, MIT licence, see
//! `builtin/COPYRIGHT-fashion-mnist`), compiled into the binary so that the default run needs no
//! download.

use std::path::Path;

use crate::{ImageSet, Result, idx};

const IMAGES: &[u8] = include_bytes!("../builtin/fashion-mnist-6k-images-idx3-ubyte.gz");
const LABELS: &[u8] = include_bytes!("../builtin/fashion-mnist-6k-labels-idx1-ubyte.gz");

/// The name users pass as `--data` to select the built-in set.
pub const NAME: &str = "builtin";

/// How many images the built-in set holds.
pub const LEN: usize = 6000;

/// Decodes the built-in set: 6,000 grey 28x28 images, 10 classes.
pub fn fashion_mnist() -> Result<ImageSet> {
    let images_path = Path::new("builtin:fashion-mnist-6k-images-idx3-ubyte.gz");
    let labels_path = Path::new("builtin:fashion-mnist-6k-labels-idx1-ubyte.gz");
    let imgs = idx::parse(images_path, &idx::gunzip_if_needed(images_path, IMAGES.to_vec())?, 3)?;
    let labs = idx::parse(labels_path, &idx::gunzip_if_needed(labels_path, LABELS.to_vec())?, 1)?;
    let names = idx::FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect();
    idx::from_arrays(images_path, labels_path, imgs, labs, names)
}

#[cfg(test)]
mod tests {
    #[test]
    fn builtin_set_is_balanced_fashion_mnist() {
        let set = super::fashion_mnist().unwrap();
        assert_eq!(set.len(), 6000);
        assert_eq!(set.shape(), [1, 28, 28]);
        assert_eq!(set.class_names[9], "Ankle boot");
        for class in 0..10 {
            assert_eq!(set.labels.iter().filter(|&&l| l == class).count(), 600);
        }
        // Real images, not blanks: Fashion-MNIST has a dark background and bright garments.
        let mean = set.pixels.iter().map(|&p| p as f64).sum::<f64>() / set.pixels.len() as f64;
        assert!((60.0..90.0).contains(&mean), "mean pixel {mean}");
    }
}

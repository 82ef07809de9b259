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

/// File names of the built-in set's two files (the page fetches them under these names).
pub const IMAGES_FILE: &str = "fashion-mnist-6k-images-idx3-ubyte.gz";
pub const LABELS_FILE: &str = "fashion-mnist-6k-labels-idx1-ubyte.gz";

/// Decodes the built-in set: 6,000 grey 28x28 images, 10 classes.
pub fn fashion_mnist() -> Result<ImageSet> {
    fashion_mnist_from(IMAGES, LABELS)
}

/// Decodes the built-in set from its two files' bytes ([`IMAGES_FILE`], [`LABELS_FILE`]), fetched
/// rather than compiled in (the browser page). Errors name the files.
pub fn fashion_mnist_from(images: &[u8], labels: &[u8]) -> Result<ImageSet> {
    let images_path = Path::new("builtin:fashion-mnist-6k-images-idx3-ubyte.gz");
    let labels_path = Path::new("builtin:fashion-mnist-6k-labels-idx1-ubyte.gz");
    let imgs = idx::parse(images_path, &idx::gunzip_if_needed(images_path, images.to_vec())?, 3)?;
    let labs = idx::parse(labels_path, &idx::gunzip_if_needed(labels_path, labels.to_vec())?, 1)?;
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

    #[test]
    fn the_fetched_files_give_the_same_set_and_swapped_ones_are_refused() {
        // The directory as cargo gives it when the test runs (the compile-time one as a fallback): a
        // test binary kept from a build in another checkout of the same target directory still reads
        // this checkout's files.
        let dir = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())).join("builtin");
        let images = std::fs::read(dir.join(super::IMAGES_FILE)).unwrap();
        let labels = std::fs::read(dir.join(super::LABELS_FILE)).unwrap();
        let set = super::fashion_mnist_from(&images, &labels).unwrap();
        assert_eq!(set.pixels, super::fashion_mnist().unwrap().pixels);
        // The page fetches the two files by name: swapped (or replaced by an error page) they are
        // refused with the file named, not read as garbage.
        let err = super::fashion_mnist_from(&labels, &images).unwrap_err().to_string();
        assert!(err.contains("images-idx3-ubyte"), "{err}");
        let err = super::fashion_mnist_from(b"<html>404</html>", &labels).unwrap_err().to_string();
        assert!(err.contains("images-idx3-ubyte"), "{err}");
    }
}

//! Where a dataset comes from (`--data`, `--format`) and how to load it.

use std::path::{Path, PathBuf};

use crate::folder::{FolderOptions, FolderReport};
use crate::{DataError, ImageSet, Result, builtin, cifar, folder, idx};

/// Which split of a dataset that has official splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OfficialSplit {
    #[default]
    Train,
    Test,
}

/// The on-disk format of a dataset (`--format`; `format` in a pretraining config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// Decide from the path's contents.
    #[default]
    Auto,
    /// CIFAR-10/100 binary.
    Cifar,
    /// IDX (MNIST, Fashion-MNIST).
    Idx,
    /// ImageFolder (`<root>/<class>/<image>`).
    Folder,
}

/// A dataset location: the built-in demo data or a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    Builtin,
    Path(PathBuf),
}

impl DataSource {
    /// `builtin` selects the built-in set; anything else is a path.
    pub fn parse(s: &str) -> Self {
        if s == builtin::NAME || s == "builtin:fashion-mnist" {
            DataSource::Builtin
        } else {
            DataSource::Path(PathBuf::from(s))
        }
    }
}

impl std::fmt::Display for DataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSource::Builtin => write!(f, "built-in Fashion-MNIST subset (6,000 images)"),
            DataSource::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// How to load: format, split, and the image shape the model wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    pub format: DataFormat,
    pub split: OfficialSplit,
    /// Side of the square images produced (images of another size are resized); `None` keeps the
    /// source size (ImageFolder then uses 32).
    pub side: Option<usize>,
    /// Channels the model wants (grey sources expand to 3).
    pub channels: usize,
    pub skip_bad: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            format: DataFormat::Auto,
            split: OfficialSplit::Train,
            side: None,
            channels: 3,
            skip_bad: false,
        }
    }
}

impl DataSource {
    /// How many training images loading this source would give, from file sizes, headers and
    /// directory listings alone (nothing is decoded); `None` when that cannot be told. A memory
    /// estimate uses it before anything large is allocated.
    pub fn count_images(&self, format: DataFormat) -> Option<usize> {
        match self {
            DataSource::Builtin => Some(builtin::LEN),
            DataSource::Path(path) => match resolve_format(path, format).ok()? {
                DataFormat::Cifar => cifar::count(path, OfficialSplit::Train),
                DataFormat::Idx => idx::count(path, OfficialSplit::Train),
                _ => folder::list(path).ok().map(|(files, _)| files.len()),
            },
        }
    }

    /// Loads, converts to `options.channels` and resizes to `options.side`. `on_progress` receives the
    /// number of files decoded so far (ImageFolder only).
    pub fn load(
        &self,
        options: LoadOptions,
        on_progress: &(dyn Fn(usize) + Sync),
    ) -> Result<(ImageSet, FolderReport)> {
        let (set, report) = match self {
            DataSource::Builtin => (builtin::fashion_mnist()?, FolderReport::default()),
            DataSource::Path(path) => {
                if !path.exists() {
                    return Err(DataError::io(
                        path,
                        std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
                    ));
                }
                match resolve_format(path, options.format)? {
                    DataFormat::Cifar => (cifar::read(path, options.split)?, FolderReport::default()),
                    DataFormat::Idx => (idx::read(path, options.split)?, FolderReport::default()),
                    _ => folder::read(
                        path,
                        FolderOptions {
                            side: options.side.unwrap_or(32),
                            channels: options.channels,
                            skip_bad: options.skip_bad,
                        },
                        on_progress,
                    )?,
                }
            }
        };
        let set = set.to_channels(options.channels)?;
        let set = match options.side {
            Some(side) => set.resized(side, side)?,
            None => set,
        };
        Ok((set, report))
    }
}

/// Decides the format of `path` when `format` is `Auto`.
pub fn resolve_format(path: &Path, format: DataFormat) -> Result<DataFormat> {
    if format != DataFormat::Auto {
        return Ok(format);
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if path.is_file() {
        return if name.contains("idx3-ubyte") {
            Ok(DataFormat::Idx)
        } else if name.ends_with(".bin") {
            Ok(DataFormat::Cifar)
        } else {
            Err(DataError::InvalidOption(format!(
                "cannot tell the format of {}: pass --format cifar|idx|folder",
                path.display()
            )))
        };
    }
    let has = |n: &str| path.join(n).exists();
    if has("data_batch_1.bin") || has("train.bin") || has("test_batch.bin") {
        Ok(DataFormat::Cifar)
    } else if ["train", "t10k"].iter().any(|p| {
        has(&format!("{p}-images-idx3-ubyte")) || has(&format!("{p}-images-idx3-ubyte.gz"))
    }) {
        Ok(DataFormat::Idx)
    } else {
        Ok(DataFormat::Folder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_counts_come_from_sizes_headers_and_listings_without_decoding() {
        use std::io::Write;
        assert_eq!(DataSource::parse("builtin").count_images(DataFormat::Auto), Some(6000));
        let dir = tempfile::tempdir().unwrap();
        // CIFAR-10: five batches of 3073-byte records (the pixels are never read).
        std::fs::create_dir_all(dir.path().join("cifar")).unwrap();
        for b in 1..=5 {
            std::fs::write(dir.path().join(format!("cifar/data_batch_{b}.bin")), vec![0u8; 3073 * (b + 1)]).unwrap();
        }
        assert_eq!(DataSource::parse(dir.path().join("cifar").to_str().unwrap()).count_images(DataFormat::Auto), Some(2 + 3 + 4 + 5 + 6));
        // IDX, gzipped: the header's count, even when the body is missing.
        std::fs::create_dir_all(dir.path().join("idx")).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&idx::encode(&[123_456, 28, 28], &[])).unwrap();
        std::fs::write(dir.path().join("idx/train-images-idx3-ubyte.gz"), gz.finish().unwrap()).unwrap();
        std::fs::write(dir.path().join("idx/train-labels-idx1-ubyte"), idx::encode(&[1], &[0])).unwrap();
        assert_eq!(DataSource::parse(dir.path().join("idx").to_str().unwrap()).count_images(DataFormat::Auto), Some(123_456));
        // An ImageFolder: its listing.
        for (class, n) in [("a", 3), ("b", 2)] {
            std::fs::create_dir_all(dir.path().join("folder").join(class)).unwrap();
            for k in 0..n {
                std::fs::write(dir.path().join("folder").join(class).join(format!("{k}.png")), b"not decoded").unwrap();
            }
        }
        assert_eq!(DataSource::parse(dir.path().join("folder").to_str().unwrap()).count_images(DataFormat::Folder), Some(5));
        assert_eq!(DataSource::parse(dir.path().join("missing").to_str().unwrap()).count_images(DataFormat::Auto), None);
    }

    #[test]
    fn builtin_loads_as_rgb_at_the_requested_side() {
        let opts = LoadOptions { side: Some(32), ..Default::default() };
        let (set, _) = DataSource::parse("builtin").load(opts, &|_| {}).unwrap();
        assert_eq!(set.shape(), [3, 32, 32]);
        assert_eq!(set.len(), 6000);
        // Grey expanded: the three planes are equal.
        let img = set.image(5);
        assert_eq!(img[..1024], img[1024..2048]);
    }

    #[test]
    fn missing_path_is_a_clear_error() {
        let err = DataSource::parse("/nonexistent/data").load(LoadOptions::default(), &|_| {});
        let msg = err.unwrap_err().to_string();
        assert!(msg.contains("/nonexistent/data") && msg.contains("no such file"), "{msg}");
    }

    #[test]
    fn formats_are_detected_from_contents() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(resolve_format(dir.path(), DataFormat::Auto).unwrap(), DataFormat::Folder);
        std::fs::write(dir.path().join("train-images-idx3-ubyte.gz"), b"").unwrap();
        assert_eq!(resolve_format(dir.path(), DataFormat::Auto).unwrap(), DataFormat::Idx);
        std::fs::write(dir.path().join("data_batch_1.bin"), b"").unwrap();
        assert_eq!(resolve_format(dir.path(), DataFormat::Auto).unwrap(), DataFormat::Cifar);
        assert_eq!(resolve_format(dir.path(), DataFormat::Folder).unwrap(), DataFormat::Folder);
    }
}

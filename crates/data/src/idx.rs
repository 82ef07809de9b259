//! IDX files (MNIST, Fashion-MNIST: <http://yann.lecun.com/exdb/mnist/>), gzipped or not.
//!
//! Header: two zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions, then one
//! big-endian `u32` per dimension; the data follow, row-major. Images are `[N, H, W]`, labels `[N]`.

use std::path::{Path, PathBuf};

use crate::{DataError, ImageSet, Result, OfficialSplit, describe_bytes};

pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// A parsed IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads a file, transparently gunzipping it when it starts with the gzip magic.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = crate::limits::read_data_file(path).map_err(|e| DataError::io(path, e))?;
    gunzip_if_needed(path, raw)
}

/// Largest decompressed size accepted (a guard against gzip bombs).
pub const MAX_DECOMPRESSED: u64 = crate::limits::MAX_INFLATED;

pub fn gunzip_if_needed(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    crate::limits::read_bounded(flate2::read::MultiGzDecoder::new(&raw[..]), MAX_DECOMPRESSED).map_err(|why| DataError::WrongFormat {
        path: path.to_path_buf(),
        expected: "a complete gzip stream of a size this machine can hold".into(),
        found: match why {
            crate::limits::Unbounded::Damaged(e) => format!("a damaged or truncated gzip file ({e})"),
            crate::limits::Unbounded::TooLarge(e) => format!("a gzip file that {e}"),
        },
    })
}

/// Parses IDX bytes whose element type must be unsigned byte and whose rank must be `rank`.
pub fn parse(path: &Path, bytes: &[u8], rank: usize) -> Result<IdxArray> {
    let expected = format!("an IDX file of unsigned bytes with {rank} dimension(s)");
    let wrong = |found: String| DataError::WrongFormat {
        path: path.to_path_buf(),
        expected: expected.clone(),
        found,
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(wrong(format!("{} (no IDX magic)", describe_bytes(bytes))));
    }
    if bytes[2] != 0x08 {
        return Err(wrong(format!("an IDX file of element type 0x{:02x}", bytes[2])));
    }
    let found_rank = bytes[3] as usize;
    if found_rank != rank {
        return Err(wrong(format!("an IDX file with {found_rank} dimension(s)")));
    }
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            format: "the IDX header".into(),
            expected: header,
            found: bytes.len(),
        });
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| wrong(format!("dimensions {dims:?} whose product overflows")))?;
    if let Some(&side) = dims.iter().skip(1).find(|&&d| d as u64 > crate::limits::MAX_IMAGE_SIDE) {
        return Err(wrong(format!(
            "images with a side of {side} pixels ({}); at most {} are accepted",
            dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x"),
            crate::limits::MAX_IMAGE_SIDE
        )));
    }
    let body = &bytes[header..];
    if body.len() < count {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            format: format!(
                "an IDX array of {} bytes",
                dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")
            ),
            expected: header + count,
            found: bytes.len(),
        });
    }
    if body.len() > count {
        return Err(wrong(format!(
            "{} trailing bytes after the {count} announced by the header",
            body.len() - count
        )));
    }
    Ok(IdxArray {
        dims,
        data: body.to_vec(),
    })
}

/// Reads an image file and its label file into a 1-channel [`ImageSet`].
pub fn read_pair(images: &Path, labels: &Path, class_names: Vec<String>) -> Result<ImageSet> {
    let imgs = parse(images, &read_maybe_gz(images)?, 3)?;
    let labs = parse(labels, &read_maybe_gz(labels)?, 1)?;
    from_arrays(images, labels, imgs, labs, class_names)
}

pub fn from_arrays(
    images: &Path,
    labels: &Path,
    imgs: IdxArray,
    labs: IdxArray,
    class_names: Vec<String>,
) -> Result<ImageSet> {
    let (n, h, w) = (imgs.dims[0], imgs.dims[1], imgs.dims[2]);
    if labs.dims[0] != n {
        return Err(DataError::InvalidOption(format!(
            "{} holds {n} images but {} holds {} labels",
            images.display(),
            labels.display(),
            labs.dims[0]
        )));
    }
    if n == 0 {
        return Err(DataError::Empty {
            path: images.to_path_buf(),
            reason: "the IDX header announces 0 images".into(),
        });
    }
    let max_label = labs.data.iter().copied().max().unwrap_or(0) as usize;
    let class_names = if max_label < class_names.len() {
        class_names
    } else {
        (0..=max_label).map(|i| i.to_string()).collect()
    };
    ImageSet::new(
        imgs.data,
        labs.data.iter().map(|&l| l as u32).collect(),
        class_names,
        [1, h, w],
    )?
    .with_sources((0..n).map(|k| format!("{}#{k}", images.display())).collect())
}

/// Reads the `split` of an MNIST-style directory (`train-images-idx3-ubyte[.gz]`,
/// `train-labels-idx1-ubyte[.gz]`, `t10k-*` for test), or an images file whose label file sits
/// beside it (`*-images-idx3-ubyte*` -> `*-labels-idx1-ubyte*`).
pub fn read(path: &Path, split: OfficialSplit) -> Result<ImageSet> {
    let (images, labels) = if path.is_dir() {
        let prefix = match split {
            OfficialSplit::Train => "train",
            OfficialSplit::Test => "t10k",
        };
        let images = find(path, &format!("{prefix}-images-idx3-ubyte"))?;
        let labels = find(path, &format!("{prefix}-labels-idx1-ubyte"))?;
        (images, labels)
    } else {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if !name.contains("images-idx3") {
            return Err(DataError::InvalidOption(format!(
                "{}: pass an MNIST-style directory or a `*-images-idx3-ubyte[.gz]` file with its \
                 `*-labels-idx1-ubyte[.gz]` beside it",
                path.display()
            )));
        }
        let labels = path.with_file_name(name.replace("images-idx3", "labels-idx1"));
        (path.to_path_buf(), labels)
    };
    let fashion = path
        .to_string_lossy()
        .to_ascii_lowercase()
        .contains("fashion");
    let names = if fashion {
        FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect()
    } else {
        (0..10).map(|i| i.to_string()).collect()
    };
    read_pair(&images, &labels, names)
}

/// How many images the `split` of an IDX source holds, from its header alone (the first 8 bytes,
/// inflated when gzipped); `None` when the header cannot be read.
pub fn count(path: &Path, split: OfficialSplit) -> Option<usize> {
    use std::io::Read;
    let images = if path.is_dir() {
        let prefix = match split {
            OfficialSplit::Train => "train",
            OfficialSplit::Test => "t10k",
        };
        find(path, &format!("{prefix}-images-idx3-ubyte")).ok()?
    } else {
        path.to_path_buf()
    };
    let mut file = std::io::BufReader::new(std::fs::File::open(&images).ok()?);
    let gzipped = std::io::BufRead::fill_buf(&mut file).ok()?.starts_with(&[0x1f, 0x8b]);
    let mut head = [0u8; 8];
    if gzipped {
        flate2::read::MultiGzDecoder::new(file).read_exact(&mut head).ok()?;
    } else {
        file.read_exact(&mut head).ok()?;
    }
    (head[..4] == [0, 0, 0x08, 3]).then(|| u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize)
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    [stem.to_string(), format!("{stem}.gz")]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.exists())
        .ok_or_else(|| DataError::Empty {
            path: dir.to_path_buf(),
            reason: format!(
                "{stem}[.gz] not found (expected the official MNIST / Fashion-MNIST file names)"
            ),
        })
}

/// Encodes an unsigned-byte IDX array (used to write test data and the built-in subset).
pub fn encode(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn reads_gzipped_and_plain_pairs_identically() {
        let dir = tempfile::tempdir().unwrap();
        let pixels: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8).collect();
        let imgs = encode(&[2, 3, 4], &pixels);
        let labs = encode(&[2], &[9, 4]);
        std::fs::write(dir.path().join("train-images-idx3-ubyte.gz"), gz(&imgs)).unwrap();
        std::fs::write(dir.path().join("train-labels-idx1-ubyte.gz"), gz(&labs)).unwrap();
        let a = read(dir.path(), OfficialSplit::Train).unwrap();
        assert_eq!(a.shape(), [1, 3, 4]);
        assert_eq!(a.labels, vec![9, 4]);
        assert_eq!(a.image(1), &pixels[12..]);

        let plain = dir.path().join("plain");
        std::fs::create_dir(&plain).unwrap();
        std::fs::write(plain.join("train-images-idx3-ubyte"), &imgs).unwrap();
        std::fs::write(plain.join("train-labels-idx1-ubyte"), &labs).unwrap();
        let b = read(&plain, OfficialSplit::Train).unwrap();
        assert_eq!((&b.pixels, &b.labels, &b.class_names, b.shape()), (&a.pixels, &a.labels, &a.class_names, a.shape()));
        // Each image names its file and record.
        assert!(a.sources[1].ends_with("train-images-idx3-ubyte.gz#1") && b.sources[0].ends_with("plain/train-images-idx3-ubyte#0"), "{:?} {:?}", a.sources, b.sources);
    }

    #[test]
    fn truncated_body_names_expected_and_found_sizes() {
        let mut bytes = encode(&[2, 3, 4], &[0; 24]);
        bytes.truncate(bytes.len() - 5);
        let err = parse(Path::new("x"), &bytes, 3).unwrap_err().to_string();
        assert!(err.contains("truncated") && err.contains("2x3x4") && err.contains("needs 40"), "{err}");
    }

    #[test]
    fn wrong_magic_rank_and_type_are_named() {
        let err = parse(Path::new("x.png"), b"\x89PNG\r\n\x1a\nxxxx", 3).unwrap_err().to_string();
        assert!(err.contains("a PNG image") && err.contains("IDX"), "{err}");
        let err = parse(Path::new("l"), &encode(&[2], &[0, 1]), 3).unwrap_err().to_string();
        assert!(err.contains("with 1 dimension(s)"), "{err}");
        let mut floats = encode(&[1], &[0]);
        floats[2] = 0x0d;
        let err = parse(Path::new("f"), &floats, 1).unwrap_err().to_string();
        assert!(err.contains("element type 0x0d"), "{err}");
    }

    #[test]
    fn damaged_gzip_is_reported_not_panicked() {
        let dir = tempfile::tempdir().unwrap();
        let mut z = gz(&encode(&[1], &[3]));
        z.truncate(z.len() / 2);
        let path = dir.path().join("t.gz");
        std::fs::write(&path, z).unwrap();
        let err = read_maybe_gz(&path).unwrap_err().to_string();
        assert!(err.contains("damaged or truncated gzip"), "{err}");
    }

    #[test]
    fn mismatched_counts_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("train-images-idx3-ubyte"), encode(&[2, 1, 1], &[0, 0])).unwrap();
        std::fs::write(dir.path().join("train-labels-idx1-ubyte"), encode(&[3], &[0, 0, 0])).unwrap();
        let err = read(dir.path(), OfficialSplit::Train).unwrap_err().to_string();
        assert!(err.contains("2 images") && err.contains("3 labels"), "{err}");
    }
}

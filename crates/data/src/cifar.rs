//! CIFAR-10 / CIFAR-100 binary version (<https://www.cs.toronto.edu/~kriz/cifar.html>).
//!
//! CIFAR-10 (`cifar-10-batches-bin/`): `data_batch_{1..5}.bin` (train) and `test_batch.bin`, each a
//! sequence of 3073-byte records: 1 label byte, then 1024 red, 1024 green and 1024 blue bytes of a
//! 32x32 image, row-major. CIFAR-100 (`cifar-100-binary/`): `train.bin` and `test.bin` with 3074-byte
//! records (coarse label, fine label, pixels); we use the fine label (100 classes).

use std::path::{Path, PathBuf};

use crate::{DataError, ImageSet, Result, OfficialSplit, describe_bytes};

const SIDE: usize = 32;
const PIXELS: usize = 3 * SIDE * SIDE;

pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Which of the two binary layouts a file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Cifar10,
    Cifar100,
}

impl Variant {
    fn record_len(self) -> usize {
        match self {
            Variant::Cifar10 => 1 + PIXELS,
            Variant::Cifar100 => 2 + PIXELS,
        }
    }
    fn num_classes(self) -> usize {
        match self {
            Variant::Cifar10 => 10,
            Variant::Cifar100 => 100,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Variant::Cifar10 => "CIFAR-10 binary (3073-byte records: 1 label byte + 3x32x32 pixels)",
            Variant::Cifar100 => {
                "CIFAR-100 binary (3074-byte records: coarse label, fine label, 3x32x32 pixels)"
            }
        }
    }
}

/// Reads the `split` of a CIFAR directory (`cifar-10-batches-bin` or `cifar-100-binary`), or a
/// single batch file (then `split` is ignored).
pub fn read(path: &Path, split: OfficialSplit) -> Result<ImageSet> {
    let (variant, files) = if path.is_dir() {
        locate(path, split)?
    } else {
        let variant = if path.file_name().is_some_and(|n| n == "train.bin" || n == "test.bin") {
            Variant::Cifar100
        } else {
            Variant::Cifar10
        };
        (variant, vec![path.to_path_buf()])
    };
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let mut sources = Vec::new();
    for file in &files {
        let bytes = crate::limits::read_data_file(file).map_err(|e| DataError::io(file, e))?;
        let before = labels.len();
        parse_records(file, &bytes, variant, &mut pixels, &mut labels)?;
        sources.extend((0..labels.len() - before).map(|k| format!("{}#{k}", file.display())));
    }
    let class_names = class_names(path, variant);
    ImageSet::new(pixels, labels, class_names, [3, SIDE, SIDE])?.with_sources(sources)
}

/// How many images `read` would return, from the files' sizes alone (nothing is read).
pub fn count(path: &Path, split: OfficialSplit) -> Option<usize> {
    let (variant, files) = if path.is_dir() {
        locate(path, split).ok()?
    } else {
        let variant = if path.file_name().is_some_and(|n| n == "train.bin" || n == "test.bin") { Variant::Cifar100 } else { Variant::Cifar10 };
        (variant, vec![path.to_path_buf()])
    };
    files.iter().map(|f| std::fs::metadata(f).ok().map(|m| m.len() as usize / variant.record_len())).sum()
}

fn locate(dir: &Path, split: OfficialSplit) -> Result<(Variant, Vec<PathBuf>)> {
    let names10: Vec<String> = match split {
        OfficialSplit::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        OfficialSplit::Test => vec!["test_batch.bin".to_string()],
    };
    let name100 = match split {
        OfficialSplit::Train => "train.bin",
        OfficialSplit::Test => "test.bin",
    };
    if dir.join(&names10[0]).exists() {
        let files: Vec<PathBuf> = names10.iter().map(|n| dir.join(n)).collect();
        if let Some(missing) = files.iter().find(|f| !f.exists()) {
            return Err(DataError::Empty {
                path: dir.to_path_buf(),
                reason: format!("CIFAR-10 batch {} is missing", missing.display()),
            });
        }
        Ok((Variant::Cifar10, files))
    } else if dir.join(name100).exists() {
        Ok((Variant::Cifar100, vec![dir.join(name100)]))
    } else {
        Err(DataError::Empty {
            path: dir.to_path_buf(),
            reason: format!(
                "expected the CIFAR binary layout ({} for CIFAR-10, or {name100} for CIFAR-100); \
                 download `cifar-10-binary.tar.gz` from https://www.cs.toronto.edu/~kriz/cifar.html \
                 and pass the extracted cifar-10-batches-bin folder",
                names10.join(", ")
            ),
        })
    }
}

/// Appends the records of one file; fails on anything that is not a whole number of records with
/// valid labels.
pub fn parse_records(
    path: &Path,
    bytes: &[u8],
    variant: Variant,
    pixels: &mut Vec<u8>,
    labels: &mut Vec<u32>,
) -> Result<()> {
    let record = variant.record_len();
    let wrong = |found: String| DataError::WrongFormat {
        path: path.to_path_buf(),
        expected: variant.name().to_string(),
        found,
    };
    if bytes.is_empty() || bytes.len() % record != 0 {
        let what = describe_bytes(bytes);
        return Err(wrong(format!(
            "{} bytes ({what}), which is not a whole number of {record}-byte records",
            bytes.len()
        )));
    }
    let label_offset = record - PIXELS - 1;
    for (n, rec) in bytes.chunks_exact(record).enumerate() {
        if variant == Variant::Cifar100 && rec[0] >= 20 {
            return Err(wrong(format!(
                "coarse label {} in record {n} (must be < 20); the file looks like {}",
                rec[0],
                describe_bytes(bytes)
            )));
        }
        let label = rec[label_offset] as usize;
        if label >= variant.num_classes() {
            let what = describe_bytes(bytes);
            return Err(wrong(format!(
                "label {label} in record {n} (must be < {}); the file looks like {what}",
                variant.num_classes()
            )));
        }
        labels.push(label as u32);
        pixels.extend_from_slice(&rec[record - PIXELS..]);
    }
    Ok(())
}

fn class_names(path: &Path, variant: Variant) -> Vec<String> {
    let dir = if path.is_dir() { path } else { path.parent().unwrap_or(path) };
    let meta = match variant {
        Variant::Cifar10 => "batches.meta.txt",
        Variant::Cifar100 => "fine_label_names.txt",
    };
    let from_file: Vec<String> = crate::limits::read_text(&dir.join(meta), crate::limits::MAX_TEXT_FILE)
        .map(|s| s.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
        .unwrap_or_default();
    if from_file.len() == variant.num_classes() {
        from_file
    } else if variant == Variant::Cifar10 {
        CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()
    } else {
        (0..variant.num_classes()).map(|i| format!("class{i}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record10(label: u8, fill: u8) -> Vec<u8> {
        let mut r = vec![label];
        r.extend(std::iter::repeat_n(fill, PIXELS));
        r
    }

    #[test]
    fn reads_records_of_a_single_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data_batch_1.bin");
        let mut bytes = record10(3, 9);
        bytes.extend(record10(7, 200));
        std::fs::write(&file, bytes).unwrap();
        let set = read(&file, OfficialSplit::Train).unwrap();
        assert_eq!(set.labels, vec![3, 7]);
        assert_eq!(set.shape(), [3, 32, 32]);
        assert!(set.image(1).iter().all(|&p| p == 200));
        assert_eq!(set.class_names[3], "cat");
    }

    #[test]
    fn reads_the_five_training_batches_of_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        for i in 1..=5u8 {
            std::fs::write(dir.path().join(format!("data_batch_{i}.bin")), record10(i, i)).unwrap();
        }
        std::fs::write(dir.path().join("test_batch.bin"), record10(0, 0)).unwrap();
        let train = read(dir.path(), OfficialSplit::Train).unwrap();
        assert_eq!(train.labels, vec![1, 2, 3, 4, 5]);
        let test = read(dir.path(), OfficialSplit::Test).unwrap();
        assert_eq!(test.labels, vec![0]);
    }

    #[test]
    fn cifar100_uses_the_fine_label() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = vec![4u8, 42u8];
        rec.extend(std::iter::repeat_n(1u8, PIXELS));
        std::fs::write(dir.path().join("train.bin"), rec).unwrap();
        let set = read(dir.path(), OfficialSplit::Train).unwrap();
        assert_eq!(set.labels, vec![42]);
        assert_eq!(set.num_classes(), 100);
    }

    #[test]
    fn png_passed_as_cifar_names_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data_batch_1.bin");
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.resize(100, 0);
        std::fs::write(&file, png).unwrap();
        let msg = read(&file, OfficialSplit::Train).unwrap_err().to_string();
        assert!(msg.contains("is not CIFAR-10 binary"), "{msg}");
        assert!(msg.contains("a PNG image"), "{msg}");
    }

    #[test]
    fn truncated_record_and_bad_label_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data_batch_1.bin");
        let mut bytes = record10(1, 1);
        bytes.pop();
        std::fs::write(&file, &bytes).unwrap();
        let msg = read(&file, OfficialSplit::Train).unwrap_err().to_string();
        assert!(msg.contains("3072 bytes") && msg.contains("3073-byte records"), "{msg}");

        std::fs::write(&file, record10(10, 1)).unwrap();
        let msg = read(&file, OfficialSplit::Train).unwrap_err().to_string();
        assert!(msg.contains("label 10 in record 0"), "{msg}");
    }

    #[test]
    fn empty_directory_explains_the_expected_layout() {
        let dir = tempfile::tempdir().unwrap();
        let msg = read(dir.path(), OfficialSplit::Train).unwrap_err().to_string();
        assert!(msg.contains("data_batch_1.bin") && msg.contains("cifar-10-batches-bin"), "{msg}");
    }
}

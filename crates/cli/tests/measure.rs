//! `ail measure` and `ail interpolate` end to end, on tiny checkpoints the tests write and on tiny
//! image folders (and the built-in data), on the CPU.

use std::path::Path;
mod common;
use common::{ail, stderr, stdout};

use ail_core::checkpoint::{self, CheckpointMeta};
use ail_core::{EncoderConfig, Family, ModelKind};
use burn::tensor::Device;

/// Writes a freshly initialised tiny encoder as `run/checkpoints/step-00000000` under `dir`, the
/// layout `ail pretrain --out run` leaves (no recorded normalisation: the data's is used).
///
/// The weights are drawn from `seed`, under the draw lock held until they are saved: the backend's generator
/// is one per process and the tests run on parallel threads, so an unseeded (or unlocked) draw would
/// give each run other weights, and a rare draw a network whose features ignore its input.
fn tiny_checkpoint(dir: &Path, run: &str, seed: u64, kind: ModelKind, in_channels: usize) {
    let family = Family::Groups;
    let mut config = EncoderConfig::new(kind, family.num_invariances()).with_width(0.0625).with_image_size(8);
    config.hidden = 8;
    config.in_channels = in_channels;
    let device = Device::flex();
    let meta = CheckpointMeta { encoder: config.clone(), family: kind.is_amortised().then_some(family), step: 0, normalization: None, audio: None };
    // burn draws most weights lazily, at their first use: here, in the save.
    let _draw = ail_core::serial_draws();
    device.seed(seed);
    let encoder = config.init(&device).unwrap();
    checkpoint::save(&dir.join(run).join("checkpoints").join("step-00000000"), &encoder, &meta, None).unwrap();
}

/// A 4-class ImageFolder of 16 coloured, patterned 8x8 images per class.
fn coloured_folder(dir: &Path) {
    for c in 0..4u32 {
        let class = dir.join("imgs").join(format!("c{c}"));
        std::fs::create_dir_all(&class).unwrap();
        for k in 0..16u32 {
            let img = image::RgbImage::from_fn(8, 8, |x, y| {
                let on = ((x + 2 * c) % 8 < 4) ^ ((y + k) % 8 < 4);
                image::Rgb([if on { 200 } else { 30 }, (40 * c + 20 + 3 * x) as u8, ((x * 31 + y * 17 + k * 7) % 256) as u8])
            });
            img.save(class.join(format!("{k}.png"))).unwrap();
        }
    }
}

/// The rows of a CSV after checking its header; descriptors are quoted (they hold commas).
fn csv_rows(path: &Path, header: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(header), "{}", path.display());
    lines
        .map(|line| {
            let mut fields = Vec::new();
            let mut rest = line;
            while !rest.is_empty() {
                if let Some(quoted) = rest.strip_prefix('"') {
                    let end = quoted.find('"').expect("closing quote");
                    fields.push(quoted[..end].to_string());
                    rest = quoted[end + 1..].strip_prefix(',').unwrap_or("");
                } else {
                    let (field, tail) = rest.split_once(',').unwrap_or((rest, ""));
                    fields.push(field.to_string());
                    rest = tail;
                }
            }
            fields
        })
        .collect()
}

fn similarity(field: &str) -> f64 {
    let s: f64 = field.parse().unwrap_or_else(|_| panic!("`{field}` is not a number"));
    assert!((-1.0..=1.0).contains(&s), "similarity {s} outside [-1, 1]");
    s
}

fn assert_svg(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(text.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""), "{text}");
    assert!(text.trim_end().ends_with("</svg>"), "{text}");
    assert!(!text.contains("NaN") && !text.contains("inf"), "{text}");
    assert_eq!(text.matches("<text").count(), text.matches("</text>").count());
    text
}

#[test]
fn measure_and_interpolate_a_tiny_amortised_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    tiny_checkpoint(root, "run", 1, ModelKind::HyperResnet18, 3);
    coloured_folder(root);

    // Every transform at the default descriptors (K=2: 1,0 0,1 1,1).
    let out = ail(&["measure", "--device", "cpu", "--checkpoint", "run", "--data", "imgs", "--images", "16", "--out", "m"], root);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("64 images of 3x8x8"), "the data is loaded at the checkpoint's size: {}", stderr(&out));
    // --stats-images defaults to 2,000, capped at the data: all 64 images give the statistics.
    assert!(stderr(&out).contains("covariance of 64 original images, the 16 measured among them"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("rank-deficient"), "64 images for 32-dimensional features: {}", stderr(&out));
    let rows = csv_rows(&root.join("m/invariance.csv"), "descriptor,transform,similarity,metric");
    assert_eq!(rows.len(), 3 * 13);
    for (k, descriptor) in ["1,0", "0,1", "1,1"].iter().enumerate() {
        let block = &rows[13 * k..13 * (k + 1)];
        assert!(block.iter().all(|r| r[0] == *descriptor && r[3] == "mahalanobis-cosine"), "{block:?}");
        assert_eq!(block[1][1], "h-flip");
        for row in block {
            similarity(&row[2]);
        }
    }
    let table = std::fs::read_to_string(root.join("m/invariance.md")).unwrap();
    assert!(table.contains("| transform | i = [1,0] | i = [0,1] | i = [1,1] |"), "{table}");
    assert!(table.contains("| v-flip |") && table.contains("| **mean** |"), "{table}");
    assert!(stdout(&out).contains("| grayscale |"), "the table is printed: {}", stdout(&out));
    let radar = assert_svg(&root.join("m/radar.svg"));
    assert_eq!(radar.matches("stroke-width=\"2\"").count(), 3, "one polygon per descriptor");
    assert!(radar.contains("i = [0,1]") && radar.contains("resized-crop"));

    // Statistics from the 16 measured images only: other numbers, and a note on the rank.
    let out = ail(
        &["measure", "--device", "cpu", "--checkpoint", "run", "--data", "imgs", "--images", "16", "--stats-images", "16", "--descriptor", "1,0", "--transforms", "h-flip,grayscale", "--out", "s"],
        root,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("pass --stats-images above 32"), "{}", stderr(&out));
    let own = csv_rows(&root.join("s/invariance.csv"), "descriptor,transform,similarity,metric");
    let all: Vec<&Vec<String>> = rows[..13].iter().filter(|r| r[1] == "h-flip" || r[1] == "grayscale").collect();
    assert_eq!(own.len(), 2);
    for (o, a) in own.iter().zip(&all) {
        assert_eq!(o[..2], a[..2]);
        assert_ne!(similarity(&o[2]), similarity(&a[2]), "the statistics images change the whitening: {o:?} {a:?}");
    }
    let md = std::fs::read_to_string(root.join("s/invariance.md")).unwrap();
    assert!(md.contains("Mean and covariance from the features of 16 original images"), "{md}");

    // A 3 x 3 grid over i for K=2: heat map with the entries' names.
    let out = ail(
        &["interpolate", "--device", "cpu", "--checkpoint", "run", "--data", "imgs", "--transform", "grayscale", "--grid", "3", "--images", "16", "--out", "i"],
        root,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = csv_rows(&root.join("i/interpolate-grayscale.csv"), "i0,i1,similarity");
    let points: Vec<(String, String)> = rows.iter().map(|r| (r[0].clone(), r[1].clone())).collect();
    assert_eq!(points.len(), 9);
    assert_eq!(points[0], ("0".into(), "0".into()));
    assert_eq!(points[1], ("0.5".into(), "0".into()));
    assert_eq!(points[8], ("1".into(), "1".into()));
    for r in &rows {
        similarity(&r[2]);
    }
    let heat = assert_svg(&root.join("i/interpolate-grayscale.svg"));
    assert!(heat.contains("i[0] spatial") && heat.contains("i[1] appearance") && heat.contains("similarity"), "{heat}");

    // A line between two descriptors: curve.
    let out = ail(
        &["interpolate", "--device", "cpu", "--checkpoint", "run", "--data", "imgs", "--transform", "h-flip", "--from", "1,0", "--to", "0,1", "--grid", "3", "--images", "16", "--plain-cosine", "--out", "i"],
        root,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("whitening"), "plain cosine needs no statistics: {}", stderr(&out));
    let rows = csv_rows(&root.join("i/interpolate-h-flip.csv"), "t,i0,i1,similarity");
    let line: Vec<[&str; 3]> = rows.iter().map(|r| [r[0].as_str(), r[1].as_str(), r[2].as_str()]).collect();
    assert_eq!(line, [["0", "1", "0"], ["0.5", "0.5", "0.5"], ["1", "0", "1"]]);
    for r in &rows {
        similarity(&r[3]);
    }
    let curve = assert_svg(&root.join("i/interpolate-h-flip.svg"));
    assert!(curve.contains("<polyline") && curve.matches("<circle").count() == 3, "{curve}");
}

#[test]
fn measure_a_plain_and_a_grey_encoder_on_builtin_data() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    tiny_checkpoint(root, "plain", 2, ModelKind::Resnet18, 3);
    tiny_checkpoint(root, "grey", 3, ModelKind::HyperResnet18, 1);

    let args = ["measure", "--device", "cpu", "--checkpoint", "plain", "--images", "16", "--stats-images", "64", "--transforms", "h-flip,grayscale", "--out", "p"];
    let out = ail(&args, root);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = csv_rows(&root.join("p/invariance.csv"), "descriptor,transform,similarity,metric");
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0][0].as_str(), rows[0][1].as_str()), ("plain", "h-flip"));
    // Fashion-MNIST is grey: grayscale only scales it by 0.2989 + 0.587 + 0.114 = 0.9999, so the
    // features barely move (a flip moves them far more in a random network).
    assert_eq!(rows[1][1], "grayscale");
    assert!(similarity(&rows[1][2]) > 0.999, "{rows:?}");
    assert!(similarity(&rows[0][2]) < similarity(&rows[1][2]), "{rows:?}");

    // A one-channel encoder gets the RGB data converted to grey.
    let args = ["measure", "--device", "cpu", "--checkpoint", "grey", "--images", "8", "--stats-images", "4", "--transforms", "v-flip", "--descriptor", "0.5,1", "--out", "g"];
    let out = ail(&args, root);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("converting the 3-channel images to the encoder's 1 channels"), "{}", stderr(&out));
    // Fewer --stats-images than --images: the measured images still give the statistics.
    assert!(stderr(&out).contains("covariance of 8 original images, the 8 measured among them"), "{}", stderr(&out));
    let rows = csv_rows(&root.join("g/invariance.csv"), "descriptor,transform,similarity,metric");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][0], "0.5,1");
    similarity(&rows[0][2]);
}

#[test]
fn bad_arguments_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    tiny_checkpoint(root, "run", 1, ModelKind::HyperResnet18, 3);
    tiny_checkpoint(root, "plain", 2, ModelKind::Resnet18, 3);
    let base = |cmd: &'static str, ckpt: &'static str| vec![cmd, "--device", "cpu", "--checkpoint", ckpt, "--images", "4", "--out", "o"];
    let with = |mut v: Vec<&'static str>, extra: &[&'static str]| {
        v.extend_from_slice(extra);
        v
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (with(base("measure", "run"), &["--descriptor", "1,0,1"]), "expected 2 comma-separated values for [spatial, appearance]"),
        (with(base("measure", "run"), &["--descriptor", "1,2"]), "2 is outside [0, 1]"),
        (with(base("measure", "run"), &["--transforms", "h-flip,twirl"]), "unknown transform `twirl`"),
        (vec!["measure", "--device", "cpu", "--checkpoint", "run", "--images", "1", "--out", "o"], "--images must be at least 2"),
        (with(base("measure", "plain"), &["--descriptor", "1,0"]), "plain encoder: it takes no descriptor"),
        (with(base("measure", "missing"), &[]), "pass the --out of `ail pretrain`"),
        (with(base("interpolate", "plain"), &["--transform", "grayscale"]), "no descriptor to sweep"),
        (with(base("interpolate", "run"), &["--transform", "twirl"]), "unknown --transform `twirl`"),
        (with(base("interpolate", "run"), &["--transform", "hue", "--from", "1,0"]), "--from and --to go together"),
        (with(base("interpolate", "run"), &["--transform", "hue", "--grid", "1"]), "--grid must be between 2 and 101"),
    ];
    for (args, expected) in cases {
        let out = ail(&args, root);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = stderr(&out);
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

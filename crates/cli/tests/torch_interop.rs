//! PyTorch in and out, checked against features PyTorch computed (tests/fixtures/torch, written by
//! python/make_fixtures.py; PyTorch is not needed here):
//! - `ail import --torch` reads a directory in `ail export --torch`'s layout, and our features at
//!   five descriptors equal those of python/ail_torch.py within 1e-4; `ail export --torch` writes
//!   the same tensors back;
//! - the same for a Prompt-ViT, whose weights come from a formula both sides compute;
//! - `ail import --release` reads a `torch.save` checkpoint laid out as the authors' release saves
//!   its MoCo-v2 Hyper-ResNet-50, and gives PyTorch's features too.

use std::path::{Path, PathBuf};

use ail_core::arrays::{Array, read_safetensors};
use ail_core::frozen::Frozen;
use burn::prelude::*;

mod common;
use common::{ail, stderr};

fn fixture(path: &str) -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())).join("../../tests/fixtures/torch").join(path)
}

fn arrays(path: &Path) -> Vec<Array> {
    read_safetensors(&std::fs::read(path).unwrap(), &path.display().to_string()).unwrap().0
}

fn find<'a>(arrays: &'a [Array], name: &str) -> &'a Array {
    arrays.iter().find(|a| a.name == name).unwrap_or_else(|| panic!("no `{name}`"))
}

/// Our features of the fixture's images at each of its descriptors against PyTorch's.
fn assert_features_match(checkpoint: &Path, fixture_dir: &str) {
    let inputs = arrays(&fixture(&format!("{fixture_dir}/inputs.safetensors")));
    let expected = arrays(&fixture(&format!("{fixture_dir}/features.safetensors")));
    let (images, descriptors, expected) = (find(&inputs, "images"), find(&inputs, "descriptors"), find(&expected, "features"));
    let device = Device::flex();
    let frozen = Frozen::open(checkpoint, &device, || panic!("the import records its normalisation")).unwrap();
    let [n, c, h, w] = images.shape[..] else { panic!("images are [n, c, h, w]") };
    let x = Tensor::<4>::from_data(TensorData::new(images.as_f32().unwrap().to_vec(), [n, c, h, w]), &device);
    let k = descriptors.shape[1];
    let d = expected.shape[2];
    let mut worst = 0f32;
    for (t, i) in descriptors.as_f32().unwrap().chunks(k).enumerate() {
        let ours: Vec<f32> = frozen.features(x.clone(), i).into_data().try_to_vec().unwrap();
        let theirs = &expected.as_f32().unwrap()[t * n * d..(t + 1) * n * d];
        assert_eq!(ours.len(), theirs.len());
        let scale = theirs.iter().fold(1f32, |m, v| m.max(v.abs()));
        for (a, b) in ours.iter().zip(theirs) {
            worst = worst.max((a - b).abs() / scale);
        }
        // The descriptor matters: features at different descriptors differ.
        assert!(t == 0 || theirs != &expected.as_f32().unwrap()[..n * d]);
    }
    assert!(worst < 1e-4, "{fixture_dir}: features differ from PyTorch's by {worst} (relative to the largest)");
}

#[test]
fn torch_export_layout_round_trips_with_pytorch_features() {
    let dir = tempfile::tempdir().unwrap();
    let imported = dir.path().join("imported");
    let o = ail(&["import", "--torch", fixture("export").to_str().unwrap(), "--out", imported.to_str().unwrap()], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_features_match(&imported, "export");

    // Exported again: the same tensors, names and description.
    let again = dir.path().join("again");
    let o = ail(&["export", "--torch", imported.to_str().unwrap(), "--out", again.to_str().unwrap()], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let sorted = |mut v: Vec<Array>| {
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    };
    assert_eq!(sorted(arrays(&again.join("model.safetensors"))), sorted(arrays(&fixture("export/model.safetensors"))));
    let json = |p: PathBuf| serde_json::from_slice::<serde_json::Value>(&std::fs::read(p).unwrap()).unwrap();
    assert_eq!(json(again.join("config.json")), json(fixture("export/config.json")));

    // The same directory is not written twice.
    let o = ail(&["import", "--torch", fixture("export").to_str().unwrap(), "--out", imported.to_str().unwrap()], dir.path());
    assert!(!o.status.success() && stderr(&o).contains("holds a checkpoint already"), "{}", stderr(&o));
}

#[test]
fn release_checkpoint_imports_with_pytorch_features() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("release");
    let file = fixture("release/hyper_resnet50_tiny-moco_2_checkpoint_0300.pth.tar");
    let o = ail(&["import", "--release", file.to_str().unwrap(), "--image-size", "72", "--out", out.to_str().unwrap()], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let meta = ail_core::checkpoint::read_meta(&out).unwrap();
    assert_eq!((meta.encoder.kind, meta.encoder.num_invariances, meta.family), (ail_core::ModelKind::HyperResnet50, 2, Some(ail_core::Family::Groups)));
    assert_features_match(&out, "release");

    // A stem that does not fit the image size is named, with the fix.
    let o = ail(&["import", "--release", file.to_str().unwrap(), "--image-size", "32", "--out", dir.path().join("x").to_str().unwrap()], dir.path());
    assert!(!o.status.success() && stderr(&o).contains("the stem is 7x7") && stderr(&o).contains("--image-size"), "{}", stderr(&o));
    // Something that is not a PyTorch file is named.
    let junk = dir.path().join("junk.pth.tar");
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    let o = ail(&["import", "--release", junk.to_str().unwrap(), "--out", dir.path().join("y").to_str().unwrap()], dir.path());
    assert!(!o.status.success() && stderr(&o).contains("junk.pth.tar"), "{}", stderr(&o));
}

/// python/make_fixtures.py's `formula_value`: `a (2 u - 1)` with `u = fract(43758.5453 sin(0.37 k
/// + s))`, `s` a checksum of the name, `a` the tensor role's scale.
fn formula_value(name: &str, shape: &[usize]) -> Vec<f32> {
    let s = (name.bytes().enumerate().map(|(j, b)| (j + 1) * b as usize).sum::<usize>() % 1000) as f64;
    let n: usize = shape.iter().product();
    let norm = name.ends_with("norm1.weight") || name.ends_with("norm2.weight") || name == "norm.weight";
    let small = name.ends_with(".bias") || name == "cls_token" || name == "pos_embed";
    let scale = (3.0 / (n / shape[0]) as f64).sqrt();
    (0..n)
        .map(|k| {
            let h = (0.37 * k as f64 + s).sin() * 43758.5453;
            let wave = 2.0 * (h - h.floor()) - 1.0;
            let v = if norm {
                1.0 + 0.1 * wave
            } else if small {
                0.1 * wave
            } else {
                scale * wave
            };
            (if name.starts_with("inv_fc.") { 10.0 * v } else { v }) as f32
        })
        .collect()
}

#[test]
fn prompt_vit_export_layout_gives_pytorch_features() {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export-vit");
    std::fs::create_dir_all(&export).unwrap();
    std::fs::copy(fixture("export-vit/config.json"), export.join("config.json")).unwrap();
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(export.join("config.json")).unwrap()).unwrap();
    let encoder: ail_core::EncoderConfig = serde_json::from_value(config["encoder"].clone()).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let tensors: Vec<Array> = ail_core::torch::tensor_names(&encoder)
        .into_iter()
        .filter(|n| seen.insert(n.torch.clone()))
        .map(|n| Array::f32(&n.torch, &n.torch_shape, formula_value(&n.torch, &n.torch_shape)))
        .collect();
    std::fs::write(export.join("model.safetensors"), ail_core::arrays::safetensors_bytes(&tensors, &Default::default())).unwrap();
    let imported = dir.path().join("imported");
    let o = ail(&["import", "--torch", export.to_str().unwrap(), "--out", imported.to_str().unwrap()], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_features_match(&imported, "export-vit");
    // And out again: the same tensors.
    let again = dir.path().join("again");
    let o = ail(&["export", "--torch", imported.to_str().unwrap(), "--out", again.to_str().unwrap()], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let mut back = arrays(&again.join("model.safetensors"));
    back.sort_by(|a, b| a.name.cmp(&b.name));
    let mut sent = tensors;
    sent.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(back, sent);
}


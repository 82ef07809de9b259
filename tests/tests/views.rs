//! Files in official formats -> readers -> augmentation, checking what the descriptors promise:
//! spatial views change only geometry, appearance views only colour.

use std::sync::Arc;

use ail_augment::{AugmentConfig, Augmenter, OpSet, sample_views};
use ail_core::{Descriptor, Family};
use ail_data::{BatchLoader, DataSource, LoadOptions, LoaderConfig};
use burn::tensor::Device;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const SIDE: usize = 32;

/// Writes a CIFAR-10 binary batch of `n` images: left half dark, right half bright, with a fixed
/// chroma (R = G / 2, B = G / 4) that only colour operations can change.
fn cifar_file(dir: &std::path::Path, n: usize) -> std::path::PathBuf {
    let mut bytes = Vec::new();
    for k in 0..n {
        bytes.push((k % 10) as u8);
        let (dark, bright) = (40 + 4 * k as u32, 200 + (k as u32 % 40));
        for channel_div in [2, 1, 4] {
            for _y in 0..SIDE {
                for x in 0..SIDE {
                    let g = if x < SIDE / 2 { dark } else { bright };
                    bytes.push((g / channel_div) as u8);
                }
            }
        }
    }
    let path = dir.join("data_batch_1.bin");
    std::fs::write(&path, bytes).unwrap();
    path
}

fn views_for(descriptor: [f32; 2], num_views: usize, seed: u64) -> (Vec<f32>, Vec<u8>, usize) {
    views_of(Family::Groups, &descriptor, num_views, seed)
}

fn views_of(family: Family, descriptor: &[f32], num_views: usize, seed: u64) -> (Vec<f32>, Vec<u8>, usize) {
    let dir = tempfile::tempdir().unwrap();
    let file = cifar_file(dir.path(), 16);
    let (set, _) = DataSource::Path(file).load(LoadOptions::default(), &|_| {}).unwrap();
    let mut loader = BatchLoader::new(Arc::new(set), LoaderConfig::new(8, seed)).unwrap();
    let batch = loader.next().unwrap();
    let ops = OpSet::from_descriptor(family, &Descriptor(descriptor.to_vec()));
    let config = AugmentConfig::default();
    let views = sample_views(ops, &config, [8, SIDE, SIDE], num_views, &mut ChaCha8Rng::seed_from_u64(seed));
    let out = Augmenter::new(&Device::flex())
        .apply(&batch.pixels, batch.shape, &views, config.blur_radius(SIDE))
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    (out, batch.pixels, views.len())
}

#[test]
fn spatial_views_keep_every_pixels_colour_relation() {
    // Bilinear resampling mixes pixels, but a mix of pixels with R = G/2 and B = G/4 keeps it.
    let (out, _, num) = views_for([1.0, 0.0], 4, 1);
    let hw = SIDE * SIDE;
    let mut moved = 0;
    for s in 0..num {
        let v = &out[s * 3 * hw..(s + 1) * 3 * hw];
        for p in 0..hw {
            let (r, g, b) = (v[p], v[hw + p], v[2 * hw + p]);
            // u8 rounding of G/2 and G/4 in the source: within 1/255.
            assert!((r - g / 2.0).abs() <= 1.0 / 255.0 && (b - g / 4.0).abs() <= 1.0 / 255.0, "view {s} pixel {p}: {r} {g} {b}");
        }
        // ...while the geometry does change: the dark/bright boundary is no longer at column 16.
        let row0: Vec<f32> = (0..SIDE).map(|x| v[hw + x]).collect();
        if (row0[15] - row0[16]).abs() < 0.3 {
            moved += 1;
        }
    }
    assert!(moved > 0, "no spatial view moved the boundary");
}

#[test]
fn appearance_views_keep_the_geometry() {
    // Per-pixel colour ops map equal pixels to equal pixels; blur (radius 1 at 32 px) only touches
    // the columns next to the boundary. So away from it, each half stays uniform.
    let (out, _, num) = views_for([0.0, 1.0], 6, 2);
    let hw = SIDE * SIDE;
    let mut recoloured = 0;
    for s in 0..num {
        let v = &out[s * 3 * hw..(s + 1) * 3 * hw];
        for c in 0..3 {
            let plane = &v[c * hw..(c + 1) * hw];
            for (lo, hi) in [(0, SIDE / 2 - 2), (SIDE / 2 + 2, SIDE)] {
                let first = plane[lo];
                for y in 0..SIDE {
                    for x in lo..hi {
                        assert!((plane[y * SIDE + x] - first).abs() < 1e-5, "view {s} channel {c} ({x}, {y})");
                    }
                }
            }
        }
        let (r, g) = (v[SIDE - 1], v[hw + SIDE - 1]);
        if (r - g / 2.0).abs() > 0.02 {
            recoloured += 1;
        }
    }
    assert!(recoloured > num / 3, "only {recoloured} of {num} appearance views changed colour");
}

#[test]
fn fashion_mnist_builtin_feeds_the_pipeline() {
    let (set, _) = DataSource::Builtin
        .load(LoadOptions { side: Some(SIDE), ..Default::default() }, &|_| {})
        .unwrap();
    let mut loader = BatchLoader::new(Arc::new(set), LoaderConfig::new(4, 3)).unwrap();
    let batch = loader.next().unwrap();
    let views = sample_views(
        OpSet::from_descriptor(Family::Groups, &Descriptor(vec![1.0, 1.0])),
        &AugmentConfig::default(),
        [4, SIDE, SIDE],
        2,
        &mut ChaCha8Rng::seed_from_u64(0),
    );
    let out = Augmenter::new(&Device::flex()).apply(&batch.pixels, batch.shape, &views, 1).unwrap();
    assert_eq!(out.dims(), [8, 3, SIDE, SIDE]);
    let values = out.into_data().try_to_vec::<f32>().unwrap();
    assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));
    // Two views of one image differ (with overwhelming probability under the default set).
    let len = 3 * SIDE * SIDE;
    assert_ne!(&values[..len], &values[4 * len..5 * len]);
}

#[test]
fn the_individual_flip_entry_only_mirrors() {
    // K = 5, [crop, flip, colour jitter, grayscale, blur] = [0, 1, 0, 0, 0]: every view is the image
    // itself or its exact mirror image, and both occur.
    let (out, pixels, num) = views_of(Family::Individual, &[0.0, 1.0, 0.0, 0.0, 0.0], 4, 5);
    let hw = SIDE * SIDE;
    let images = pixels.len() / (3 * hw);
    let (mut same, mut mirrored) = (0, 0);
    for s in 0..num {
        let v = &out[s * 3 * hw..(s + 1) * 3 * hw];
        let image = &pixels[(s % images) * 3 * hw..(s % images + 1) * 3 * hw];
        let source = |c: usize, y: usize, x: usize| image[c * hw + y * SIDE + x] as f32 / 255.0;
        let matches = |flip: bool| {
            (0..3).all(|c| {
                (0..SIDE).all(|y| (0..SIDE).all(|x| (v[c * hw + y * SIDE + x] - source(c, y, if flip { SIDE - 1 - x } else { x })).abs() < 1e-5))
            })
        };
        match (matches(false), matches(true)) {
            (true, false) => same += 1,
            (false, true) => mirrored += 1,
            other => panic!("view {s} is neither the image nor its mirror: {other:?}"),
        }
    }
    assert!(same > 0 && mirrored > 0, "{same} unchanged, {mirrored} mirrored views");
}

//! The browser page's computations (`web/src/engine.rs`) run natively on the CPU backend: the
//! reference the browser tests compare against (`web/tests/fixtures/expected.json`), the export
//! round trip, the built-in tasks, and the messages for bad exports and too few images.
//!
//! `AIL_BLESS=1 cargo test --release -p ail-tests --test web_engine` rewrites the tiny export and
//! the expected results (after a deliberate change to the computations).

use std::future::Future;
use std::path::PathBuf;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use ail_core::checkpoint::{CheckpointMeta, Normalization, export_web, load_web, param_values};
use ail_core::fewshot::StepFit;
use ail_core::fit::Targets;
use ail_core::{EncoderConfig, Family, ModelKind};
use ail_web::{engine, fixture};
use burn::module::Module;
use burn::tensor::Device;

/// Runs a future whose reads complete at once (the CPU backend's do).
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// Every test holds this for its whole body: burn's CPU backend has one random generator per
/// process and draws weights lazily, at their first use, so tests on parallel threads would
/// otherwise take numbers from each other's seeded sequences.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../web/tests/fixtures")
}

/// A tiny Hyper-ResNet-18 (width 1/16, 16 px inputs, K = 2) with seeded weights.
fn tiny_export() -> Vec<u8> {
    let device = Device::flex();
    device.seed(7);
    let config = EncoderConfig::new(ModelKind::HyperResnet18, 2).with_width(0.0625).with_image_size(16);
    let encoder = config.init(&device).unwrap();
    let meta = CheckpointMeta {
        encoder: config,
        family: Some(Family::Groups),
        step: 0,
        normalization: Some(Normalization { mean: vec![0.2, 0.15, 0.2], std: vec![0.3, 0.25, 0.3] }),
        audio: None,
    };
    export_web(&encoder, &meta).unwrap()
}

#[test]
fn the_tiny_case_matches_what_the_browser_tests_expect() {
    let _serial = serial();
    let dir = fixtures();
    let bless = std::env::var_os("AIL_BLESS").is_some();
    if bless {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tiny.ailweb"), tiny_export()).unwrap();
    }
    let bytes = std::fs::read(dir.join("tiny.ailweb")).expect("web/tests/fixtures/tiny.ailweb: run with AIL_BLESS=1 to create it");
    let got = block_on(fixture::run(&bytes, &Device::flex(), &Device::flex())).unwrap();
    // Real numbers, not degenerate ones: the case must be able to tell backends apart.
    assert_eq!(got.invariance.len(), fixture::TRANSFORMS.len());
    assert!(got.invariance.iter().all(|v| v.is_finite() && (-1.0..=1.0).contains(v)), "{:?}", got.invariance);
    assert!(got.invariance.iter().any(|v| *v < 0.999), "nothing moves the features: {:?}", got.invariance);
    assert_eq!(got.coords.len(), fixture::IMAGES * 2);
    assert!(got.coords.iter().any(|v| v.abs() > 1e-3));
    assert_eq!(got.losses.len(), fixture::FIT_STEPS);
    assert!(got.losses.last() < got.losses.first(), "the fit does not learn: {:?}", got.losses);
    assert_ne!(got.i, vec![0.5, 0.5], "i did not move");
    let path = dir.join("expected.json");
    if bless {
        std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap()).unwrap();
    }
    let want: fixture::Outcome = serde_json::from_str(&std::fs::read_to_string(&path).expect("expected.json: run with AIL_BLESS=1")).unwrap();
    let diff = fixture::differences(&got, &want, 1e-4);
    assert!(diff.is_empty(), "the page's computations changed (rerun with AIL_BLESS=1 if meant): {diff:?}");
}

#[test]
fn a_web_export_round_trips_within_f16_rounding_and_bad_files_are_named() {
    let _serial = serial();
    let device = Device::flex();
    device.seed(3);
    let config = EncoderConfig::new(ModelKind::HyperResnet18, 2).with_width(0.0625).with_image_size(16);
    let encoder = config.init(&device).unwrap();
    let mut meta = CheckpointMeta { encoder: config, family: Some(Family::Groups), step: 5, normalization: None, audio: None };
    let err = export_web(&encoder, &meta).unwrap_err().to_string();
    assert!(err.contains("no input normalisation"), "{err}");
    meta.normalization = Some(Normalization { mean: vec![0.5; 3], std: vec![0.25; 3] });
    let bytes = export_web(&encoder, &meta).unwrap();
    let (back, back_meta) = load_web(&bytes, "x.ailweb", &device).unwrap();
    assert_eq!(back_meta, meta);
    let (a, b) = (param_values(&encoder.valid()), param_values(&back));
    assert_eq!(a.len(), b.len());
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs() / x.abs().max(1e-3)).fold(0f32, f32::max);
    assert!(worst < 1e-3, "f16 storage lost more than rounding: {worst}");
    assert!(a.iter().zip(&b).any(|(x, y)| x != y), "nothing was stored in f16");
    // Weights in f16: well under the f32 size.
    let f32_bytes = a.len() * 4;
    assert!(bytes.len() < f32_bytes * 7 / 10, "{} bytes for {} f32 bytes", bytes.len(), f32_bytes);

    let msg = |b: &[u8]| load_web(b, "x.ailweb", &device).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg(b"PK\x03\x04 a zip").contains("not an encoder export for the page"), "{}", msg(b"PK"));
    let mut other = bytes.clone();
    other[6] = 9;
    assert!(msg(&other).contains("layout version 9"), "{}", msg(&other));
    assert!(msg(&bytes[..bytes.len() / 2]).contains("truncated"), "{}", msg(&bytes[..bytes.len() / 2]));
    assert!(msg(&bytes[..20]).contains("truncated"), "{}", msg(&bytes[..20]));
    let opened = engine::open(&bytes[..bytes.len() - 100], "cut.ailweb", &device).err().unwrap();
    assert!(opened.contains("cut.ailweb"), "{opened}");
}

#[test]
fn a_plain_encoder_cannot_be_dialled() {
    let _serial = serial();
    let device = Device::flex();
    let config = EncoderConfig::new(ModelKind::Resnet18, 0).with_width(0.0625).with_image_size(16);
    let encoder = config.init(&device).unwrap();
    let meta = CheckpointMeta { encoder: config, family: None, step: 0, normalization: Some(Normalization { mean: vec![0.5; 3], std: vec![0.25; 3] }), audio: None };
    let err = engine::open(&export_web(&encoder, &meta).unwrap(), "plain.ailweb", &device).err().unwrap();
    assert!(err.contains("no invariance descriptor to dial"), "{err}");
}

#[test]
fn built_in_tasks_have_the_promised_shape_and_fit_on_the_builtin_encoder() {
    let _serial = serial();
    let device = Device::flex();
    let frozen = engine::open(ail_web::BUILTIN_EXPORT, "built-in", &device).unwrap();
    assert_eq!(frozen.num_invariances(), 2);
    let set = ail_data::builtin::fashion_mnist().unwrap();
    let five = engine::five_way(&set, &frozen).unwrap();
    assert_eq!(five.support.shape, frozen.input_shape());
    assert_eq!((five.support.len(), five.query.len()), (25, 50));
    assert_eq!(five.labels.len(), 5);
    let Targets::Classes { labels, classes: 5 } = &five.support.targets else { panic!("five-way has classes") };
    for c in 0..5 {
        assert_eq!(labels.iter().filter(|&&l| l == c).count(), 5);
    }
    let position = engine::position(&set, &frozen).unwrap();
    assert!(position.is_regression());
    assert_eq!((position.support.len(), position.query.len()), (25, 50));
    let Targets::Values { values, outputs: 2 } = &position.query.targets else { panic!("two outputs") };
    assert!(values.iter().all(|v| (0.2..=0.8).contains(v)), "centres of half-size items lie in [0.25, 0.75]");

    // The whole page fit on the built-in encoder: learned i against i fixed at [1, 1].
    let run = |fixed: Option<Vec<f32>>| {
        let mut fit = StepFit::new(&frozen, &five.support, &engine::fit_config(fixed), 0).unwrap();
        let mut losses = Vec::new();
        while let Some(r) = block_on(engine::step(&frozen, &mut fit)).unwrap() {
            losses.push(r.loss);
        }
        let scores = block_on(engine::evaluate(&frozen, &fit, &five.query)).unwrap();
        (losses, scores, fit.i().to_vec())
    };
    let (losses, learned, i) = run(None);
    assert_eq!(losses.len(), 100);
    assert!(losses[99] < losses[0] * 0.8, "{:?}", &losses[..5]);
    assert_ne!(i, vec![0.5, 0.5]);
    let (_, fixed, fixed_i) = run(Some(vec![1.0, 1.0]));
    assert_eq!(fixed_i, vec![1.0, 1.0]);
    // Both readouts beat chance (20%) by far on the built-in encoder.
    for s in [learned, fixed] {
        assert!(s.accuracy.unwrap() > 0.5, "{s:?}");
    }
    eprintln!("built-in 5-way 5-shot: learned i {i:?} -> {:?}; fixed [1, 1] -> {:?}", learned.accuracy, fixed.accuracy);
}

#[test]
fn user_tasks_need_two_classes_of_three_images() {
    let _serial = serial();
    let shape = [3, 4, 4];
    let img = vec![7u8; 48];
    let class = |name: &str, n: usize| (name.to_string(), vec![img.clone(); n]);
    let err = engine::custom(&[class("cats", 5)], shape).unwrap_err();
    assert!(err.contains("at least two class boxes"), "{err}");
    let err = engine::custom(&[class("cats", 5), class("dogs", 2)], shape).unwrap_err();
    assert!(err.contains("\"dogs\" has 2 image(s)") && err.contains("at least 3"), "{err}");
    let t = engine::custom(&[class("cats", 5), class("dogs", 3), class("empty", 0)], shape).unwrap();
    // Every third image of a class is a query: cats 0,1,3,4 / 2; dogs 0,1 / 2.
    assert_eq!((t.support.len(), t.query.len()), (6, 2));
    assert_eq!(t.labels, vec!["cats", "dogs"]);
    assert_eq!(t.query.targets, Targets::Classes { labels: vec![0, 1], classes: 2 });
}

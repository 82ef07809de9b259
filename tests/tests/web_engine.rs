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
use ail_core::fewshot::{EpisodeConfig, FewShotReadout, StepFit};
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

fn fixtures() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())).join("../web/tests/fixtures")
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
    let _serial = ail_core::serial_draws();
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
    let _serial = ail_core::serial_draws();
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
    let _serial = ail_core::serial_draws();
    let device = Device::flex();
    let config = EncoderConfig::new(ModelKind::Resnet18, 0).with_width(0.0625).with_image_size(16);
    let encoder = config.init(&device).unwrap();
    let meta = CheckpointMeta { encoder: config, family: None, step: 0, normalization: Some(Normalization { mean: vec![0.5; 3], std: vec![0.25; 3] }), audio: None };
    let err = engine::open(&export_web(&encoder, &meta).unwrap(), "plain.ailweb", &device).err().unwrap();
    assert!(err.contains("no invariance descriptor to dial"), "{err}");
}

#[test]
fn built_in_tasks_have_the_promised_shape_and_fit_on_the_builtin_encoder() {
    let _serial = ail_core::serial_draws();
    let frozen = builtin_frozen();
    assert_eq!(frozen.num_invariances(), 2);
    let set = ail_data::builtin::fashion_mnist().unwrap();
    let five = engine::five_way(&set, &frozen, 0).unwrap();
    assert_eq!(five.support.shape, frozen.input_shape());
    assert_eq!((five.support.len(), five.query.len()), (25, 50));
    assert_eq!(five.labels.len(), 5);
    let Targets::Classes { labels, classes: 5 } = &five.support.targets else { panic!("five-way has classes") };
    for c in 0..5 {
        assert_eq!(labels.iter().filter(|&&l| l == c).count(), 5);
    }
    let position = engine::position(&set, &frozen, engine::POSITION_SIZES, 0).unwrap();
    assert!(position.is_regression());
    assert_eq!((position.support.len(), position.query.len()), (100, 100));
    let Targets::Values { values, outputs: 2 } = &position.query.targets else { panic!("two outputs") };
    assert!(values.iter().all(|v| (0.2..=0.8).contains(v)), "centres of half-size items lie in [0.25, 0.75]");
    let tint = engine::tint(&set, &frozen, engine::TINT_SIZES, 0).unwrap();
    assert_eq!((tint.support.len(), tint.query.len()), engine::TINT_SIZES);
    let Targets::Classes { labels, classes: 3 } = &tint.query.targets else { panic!("three tints") };
    assert_eq!(labels.iter().filter(|&&l| l == 2).count(), engine::TINT_SIZES.1 / 3);

    // The whole page fit on the built-in encoder: learned i against i fixed at [1, 1].
    let run = |task: &engine::Task, fixed: Option<Vec<f32>>| {
        let mut fit = StepFit::new(&frozen, &task.support, &engine::fit_config(&frozen, &task.support, fixed.clone()), 0).unwrap();
        let mut losses = Vec::new();
        while let Some(r) = block_on(engine::step(&frozen, &mut fit)).unwrap() {
            losses.push(r.loss);
        }
        let scores = block_on(engine::evaluate(&frozen, &fit, &task.query)).unwrap();
        assert!(fixed.is_some() || [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]].iter().any(|c| fit.start() == c), "a learned i starts at a trained corner: {:?}", fit.start());
        (losses, scores, fit.i().to_vec())
    };
    // The page's readout is the ridge of `ail fewshot`: a learned i descends the leave-one-out
    // error for 20 steps, one more step measures it at the final i; a fixed i takes that step only.
    let (losses, learned, i) = run(&five, None);
    assert_eq!(losses.len(), 21);
    // (The last error is computed on the host in f64, the first on the device: equal up to
    // rounding when `i` does not move.)
    assert!(losses[20] <= losses[0] * (1.0 + 1e-5), "the descent does not raise the error it descends: {losses:?}");
    let (fixed_losses, fixed, fixed_i) = run(&five, Some(vec![1.0, 1.0]));
    assert_eq!((fixed_i, fixed_losses.len()), (vec![1.0, 1.0], 1));
    // Both readouts beat chance (20%) by far on the built-in encoder.
    for s in [&learned, &fixed] {
        assert!(s.accuracy.unwrap() > 0.5, "{s:?}");
    }
    eprintln!("built-in 5-way 5-shot: learned i {i:?} -> {:?}; fixed [1, 1] -> {:?}", learned.accuracy, fixed.accuracy);

    // The position regression fits too: both readouts predict the query items' positions better
    // than their mean does (R² > 0).
    let (losses, learned, i) = run(&position, None);
    let (_, fixed, _) = run(&position, Some(vec![1.0, 1.0]));
    eprintln!("position: learned i {i:?} -> R² {:?}; fixed [1, 1] -> R² {:?}; loss {} -> {}", learned.r2, fixed.r2, losses[0], losses[20]);
    assert!(losses[20] <= losses[0] * (1.0 + 1e-5), "{losses:?}");
    for s in [&learned, &fixed] {
        assert!(s.accuracy.is_none() && (0.05..=1.0).contains(&s.r2.unwrap()), "{s:?}");
    }
}

/// The demo encoder's position information at the trained corners and at the learned `i`, for three
/// support sizes (the page's task, `engine::position`, with 100 query items): the table in EXPERIMENTS.md ("the page's position task").
/// `cargo test --release --workspace --test web_engine -- --ignored --nocapture`
#[test]
#[ignore = "a measurement (about a minute), not a check"]
fn position_task_by_descriptor_and_support_size() {
    let _serial = ail_core::serial_draws();
    let (frozen, set) = (builtin_frozen(), ail_data::builtin::fashion_mnist().unwrap());
    println!("| support | i | support R² | query R² |\n|---:|---|---:|---:|");
    for n in [25usize, 100, 200] {
        let engine::Task { support, query, .. } = engine::position(&set, &frozen, (n, 100), 0).unwrap();
        for fixed in [Some(vec![0.0, 1.0]), Some(vec![1.0, 0.0]), Some(vec![1.0, 1.0]), Some(vec![0.0, 0.0]), None] {
            let mut fit = StepFit::new(&frozen, &support, &engine::fit_config(&frozen, &support, fixed.clone()), 0).unwrap();
            while block_on(engine::step(&frozen, &mut fit)).unwrap().is_some() {}
            let q = block_on(engine::evaluate(&frozen, &fit, &query)).unwrap().r2.unwrap();
            let s = block_on(engine::evaluate(&frozen, &fit, &support)).unwrap().r2.unwrap();
            let i = fit.i().iter().map(|v| format!("{v:.2}")).collect::<Vec<_>>().join(", ");
            let how = if fixed.is_some() { "fixed" } else { "learned" };
            println!("| {n} | [{i}] {how} | {s:.3} | {q:.3} |");
        }
    }
}

/// The page's former head against the converged linear readout on the position task: at each
/// trained corner, a ridge regression on the same unit-norm features and standardised targets
/// (penalty by closed-form leave-one-out error, as `ail fewshot --readout ridge` chooses it) next to
/// the logistic head the page used before (100 AdamW steps, outputs scaled by 10) with `i` fixed
/// there. For EXPERIMENTS.md ("The browser page's built-in tasks").
/// `cargo test --release --workspace --test web_engine -- --ignored --nocapture position_task_head`
#[test]
#[ignore = "a measurement (seconds), not a check"]
fn position_task_head_against_ridge_by_corner() {
    let _serial = ail_core::serial_draws();
    let (frozen, set) = (builtin_frozen(), ail_data::builtin::fashion_mnist().unwrap());
    let (lambdas, d) = ([0.001, 0.01, 0.1, 1.0, 10.0], frozen.feature_dim());
    println!("| support | i | ridge: penalty, LOO MSE | ridge: support / query R² | former page head: support / query R² |\n|---:|---|---|---|---|");
    for n in [100usize, 200] {
        let engine::Task { support, query, .. } = engine::position(&set, &frozen, (n, 100), 0).unwrap();
        let (mean, std) = ail_core::fit::standardisation(&support.targets);
        let (ys, yq) = (ail_core::fit::target_rows(&support.targets, &mean, &std), ail_core::fit::target_rows(&query.targets, &mean, &std));
        for corner in [vec![0.0, 1.0], vec![1.0, 0.0], vec![1.0, 1.0]] {
            let (fs, fq) = (ail_core::fewshot::normalised_features(&frozen, &support, &corner), ail_core::fewshot::normalised_features(&frozen, &query, &corner));
            let (lambda, loo) = ail_core::ridge::select_lambda(&fs, &ys, n, d, 2, &lambdas).unwrap();
            let ridge = ail_core::ridge::Ridge::fit(&fs, &ys, n, d, 2, lambda).unwrap();
            let r2 = |y: &[f32], f: &[f32], rows| ail_core::metrics::r2_score(y, &ridge.predict(f, rows), 2);
            let former = EpisodeConfig { readout: FewShotReadout::Logistic, steps: 30, lr: 0.01, fixed: Some(corner.clone()), ..EpisodeConfig::default() };
            let mut fit = StepFit::new(&frozen, &support, &former, 0).unwrap();
            while block_on(engine::step(&frozen, &mut fit)).unwrap().is_some() {}
            let head = |split| block_on(engine::evaluate(&frozen, &fit, split)).unwrap().r2.unwrap();
            println!("| {n} | {corner:?} | {lambda}, {loo:.3} | {:.3} / {:.3} | {:.3} / {:.3} |", r2(&ys, &fs, n), r2(&yq, &fq, query.len()), head(&support), head(&query));
        }
    }
}

/// The built-in encoder on each built-in task, at every trained corner and with `i` learned, for
/// EXPERIMENTS.md ("The browser page's built-in tasks").
/// `cargo test --release --workspace --test web_engine -- --ignored --nocapture`
#[test]
#[ignore = "a measurement (about a minute), not a check"]
fn built_in_tasks_by_descriptor() {
    let _serial = ail_core::serial_draws();
    let (frozen, set) = (builtin_frozen(), ail_data::builtin::fashion_mnist().unwrap());
    let tasks = [
        ("five-way", engine::five_way(&set, &frozen, 0).unwrap()),
        ("position", engine::position(&set, &frozen, engine::POSITION_SIZES, 0).unwrap()),
        ("tint", engine::tint(&set, &frozen, engine::TINT_SIZES, 0).unwrap()),
    ];
    println!("| task | i | query score |\n|---|---|---:|");
    for (name, task) in &tasks {
        for fixed in [Some(vec![0.0, 1.0]), Some(vec![1.0, 0.0]), Some(vec![1.0, 1.0]), None] {
            let mut fit = StepFit::new(&frozen, &task.support, &engine::fit_config(&frozen, &task.support, fixed.clone()), 0).unwrap();
            while block_on(engine::step(&frozen, &mut fit)).unwrap().is_some() {}
            let s = block_on(engine::evaluate(&frozen, &fit, &task.query)).unwrap();
            let i = fit.i().iter().map(|v| format!("{v:.2}")).collect::<Vec<_>>().join(", ");
            let how = if fixed.is_some() { "fixed".to_string() } else { format!("learned from {:?}", fit.start()) };
            let score = s.accuracy.map(|a| format!("{:.1}%", 100.0 * a)).unwrap_or_else(|| format!("R² {:.3}", s.r2.unwrap()));
            println!("| {name} | [{i}] {how} | {score} |");
        }
    }
}

/// Transforms of [`small_probe`].
const SMALL_PROBE_TRANSFORMS: [&str; 3] = ["h-flip", "translation", "brightness"];

/// The built-in encoder with a small probe: 24 built-in images, the first 4 measured under
/// [`SMALL_PROBE_TRANSFORMS`] (1 flip, 8 translations, 4 brightness factors).
fn small_probe() -> (ail_core::frozen::Frozen, engine::Probe) {
    let (frozen, set) = (builtin_frozen(), ail_data::builtin::fashion_mnist().unwrap());
    let idx: Vec<usize> = (0..24).map(|k| 250 * k).collect();
    let subset = engine::to_input(set.subset(&idx), &frozen).unwrap();
    let probe = engine::Probe::new(subset.pixels, subset.labels, frozen.input_shape(), 4, &SMALL_PROBE_TRANSFORMS, frozen.device()).unwrap();
    (frozen, probe)
}

#[test]
fn one_images_views_average_to_the_dial() {
    // The views of each measured image, averaged over the measured images, are the dial's values:
    // the per-image measure is the dial's, one image at a time.
    let _serial = ail_core::serial_draws();
    let (frozen, probe) = small_probe();
    let names = SMALL_PROBE_TRANSFORMS;
    let i = [0.7, 0.2];
    let dial = block_on(engine::dial(&frozen, &probe, &i)).unwrap();
    let views: Vec<engine::ImageViews> = (0..4).map(|k| block_on(engine::views(&frozen, &probe, k, &i)).unwrap()).collect();
    for (t, name) in names.iter().enumerate() {
        let mean = views.iter().map(|v| v.transforms[t].mean).sum::<f64>() / 4.0;
        assert!((mean - dial.invariance[t]).abs() < 1e-6, "{name}: views {mean} vs dial {}", dial.invariance[t]);
        assert_eq!(views[0].transforms[t].name, *name);
    }
    // One view per setting: 1 flip, 8 translations, 4 brightness factors; pixels for each.
    let v = &views[1];
    assert_eq!(v.transforms.iter().map(|t| t.similarities.len()).collect::<Vec<_>>(), vec![1, 8, 4]);
    assert_eq!(v.pixels.len(), 13 * frozen.input_shape().iter().product::<usize>());
    assert!(v.transforms.iter().flat_map(|t| &t.similarities).all(|s| (-1.0 - 1e-9..=1.0 + 1e-9).contains(s)));
    // A probe image that does not exist is named.
    let err = block_on(engine::views(&frozen, &probe, 24, &i)).unwrap_err();
    assert!(err.contains("image 24") && err.contains("24 probe images"), "{err}");
}

#[test]
fn a_dial_shared_with_a_helper_equals_the_dial_alone() {
    // The page's worker hands the transformed images from `helper_split` on to a second worker
    // (`Session::dial` with a helper); the result must be the dial's, value for value, and a
    // helper that fails or answers with the wrong size must not change it either.
    let _serial = ail_core::serial_draws();
    let (frozen, probe) = small_probe();
    let i = [0.3, 0.9];
    let alone = block_on(engine::dial(&frozen, &probe, &i)).unwrap();
    assert!(!alone.shared);
    // 24 originals + 4 images x 13 settings = 76 forwards: the helper takes 38 - 24 = 14 onwards.
    let (split, n) = (probe.helper_split(), probe.transformed_count());
    assert_eq!((split, n), (14, 52));
    // The helper's share, as another worker with the same encoder and probe computes it.
    let rest = block_on(engine::transformed_features(&frozen, &probe, &i, split..n)).unwrap();
    assert_eq!(rest.len(), (n - split) * frozen.feature_dim());
    let shared = block_on(engine::dial_shared(&frozen, &probe, &i, Some((split, std::future::ready(Ok(rest.clone())))))).unwrap();
    assert!(shared.shared);
    assert_eq!(shared.invariance, alone.invariance);
    assert_eq!((shared.coords.clone(), shared.neighbours.clone()), (alone.coords.clone(), alone.neighbours.clone()));
    for bad in [Err("the helper failed".to_string()), Ok(rest[1..].to_vec())] {
        let fallback = block_on(engine::dial_shared(&frozen, &probe, &i, Some((split, std::future::ready(bad))))).unwrap();
        assert!(!fallback.shared);
        assert_eq!(fallback.invariance, alone.invariance);
    }
    // A range outside the probe is named.
    let err = block_on(engine::transformed_features(&frozen, &probe, &i, 50..53)).unwrap_err();
    assert!(err.contains("50..53") && err.contains("52"), "{err}");
}

/// A second worker in this process for `engine::step_shared`: all of a fit's support images, as
/// the page's helper holds them (`FitShare`), and the part of the last forward until its
/// backward. `fail` makes its forward (1) or its backward (2) fail; `slow` adds to the
/// milliseconds it reports for each image (a helper on a busier core).
struct InProcessHelper {
    frozen: ail_core::frozen::Frozen,
    x: burn::tensor::Tensor<4>,
    part: std::cell::RefCell<Option<ail_core::fewshot::FeaturePart>>,
    fail: u8,
    slow: f64,
}

impl engine::FitHelper for InProcessHelper {
    fn forward(&self, i: &[f32], rows: std::ops::Range<usize>) -> impl Future<Output = Result<(Vec<f32>, f64), String>> + 'static {
        let t0 = engine::now_ms();
        let part = ail_core::fewshot::FeaturePart::new(&self.frozen, self.x.clone().slice([rows.clone()]), i);
        let features = block_on(engine::read(part.features()));
        *self.part.borrow_mut() = Some(part);
        let ms = engine::now_ms() - t0 + self.slow * rows.len() as f64;
        std::future::ready(if self.fail == 1 { Err("the helper stopped".to_string()) } else { features.map(|f| (f, ms)) })
    }

    fn backward(&self, grad: Vec<f32>) -> impl Future<Output = Result<(Vec<f32>, f64), String>> + 'static {
        let t0 = engine::now_ms();
        let part = self.part.borrow_mut().take().expect("forward before backward");
        let g = block_on(engine::read(part.backward(&grad).unwrap()));
        let ms = engine::now_ms() - t0;
        std::future::ready(if self.fail == 2 { Err("the helper stopped".to_string()) } else { g.map(|g| (g, ms)) })
    }
}

#[test]
fn a_fit_shared_with_a_helper_takes_the_steps_of_the_fit_alone() {
    // The page's learned fit splits each descending step with the second worker (`Fit::step`
    // with a helper): its losses and path of i must be the fit's alone, to float rounding, and a
    // helper that fails in either half must not change them either. A slower helper is given
    // fewer images from step to step.
    let _serial = ail_core::serial_draws();
    let frozen = builtin_frozen();
    let set = ail_data::builtin::fashion_mnist().unwrap();
    let task = engine::five_way(&set, &frozen, 0).unwrap();
    let config = engine::fit_config(&frozen, &task.support, None);
    let run = |helper: Option<(u8, f64)>| {
        let mut fit = StepFit::new(&frozen, &task.support, &config, 0).unwrap();
        let helper = helper.map(|(fail, slow)| {
            let n = fit.shareable_rows().expect("a learned ridge fit can be shared").end;
            let (pixels, shape) = fit.support_pixels(0..n).unwrap();
            let x = ail_core::frozen::Frozen::upload_u8(pixels, n, shape, frozen.device());
            InProcessHelper { frozen: engine::open(&builtin_export(), "built-in", &Device::flex()).unwrap(), x, part: Default::default(), fail, slow }
        });
        let mut split = engine::SharedSplit::always(task.support.len());
        let mut reports = Vec::new();
        let mut splits = Vec::new();
        while let Some(r) = block_on(engine::step_shared(&frozen, &mut fit, helper.as_ref(), &mut split)).unwrap() {
            reports.push(r);
            splits.push(split.from);
        }
        let scores = block_on(engine::evaluate(&frozen, &fit, &task.query)).unwrap();
        (reports, scores.accuracy.unwrap(), splits)
    };
    let (alone, alone_accuracy, _) = run(None);
    assert_eq!(alone.len(), 21);
    assert!(alone.iter().all(|r| !r.shared));
    for (fail, slow) in [(0, 0.0), (1, 0.0), (2, 0.0), (0, 50.0)] {
        let (shared, accuracy, splits) = run(Some((fail, slow)));
        assert_eq!(shared.len(), 21);
        for (k, (a, b)) in shared.iter().zip(&alone).enumerate() {
            assert_eq!(a.shared, fail == 0 && k < 20, "step {k}: shared only with a working helper, and not the last step");
            assert!((a.loss - b.loss).abs() <= 1e-4 * b.loss.abs().max(1e-3), "helper failing at {fail}, step {k}: loss {} against {}", a.loss, b.loss);
            // Splits of other sizes sum the kernel gradients in another order; Adam's step on i
            // (0.05 a step, normalised by the gradient's size) carries that rounding forward.
            for (x, y) in a.i.iter().zip(&b.i) {
                assert!((x - y).abs() <= 2e-3, "helper failing at {fail}, step {k}: i {:?} against {:?}", a.i, b.i);
            }
        }
        assert!((accuracy - alone_accuracy).abs() <= 1.0 / 50.0 + 1e-9, "accuracy {accuracy} against {alone_accuracy}");
        if fail != 0 {
            assert_eq!(splits[0], 12, "a failed share does not move the split");
        }
        if slow > 0.0 {
            // 50 ms more per image than this worker: the helper keeps one or two of 25.
            assert!(splits[0] > 12 && splits.iter().all(|&f| f < 25) && splits[19] >= 23, "the split moves to this worker: {splits:?}");
        }
    }
}

#[test]
fn the_shared_split_follows_the_workers_speeds_and_is_kept_only_when_it_pays() {
    use engine::{SharedSplit, TRIALS};
    let s = SharedSplit::always(25);
    assert_eq!((s.from, s.n), (12, 25));
    // Equal speeds per image (12 images in 48 ms here, 13 in 52 there): half each, 12.5 rounded.
    assert_eq!(s.next(48.0, 52.0), 13);
    // The helper half as fast: this worker takes two thirds.
    assert_eq!(s.next(48.0, 104.0), 17);
    // Each keeps at least one image; no measurement leaves the split as it is.
    assert_eq!(s.next(1.0, 1e6), 24);
    assert_eq!(s.next(1e6, 1.0), 1);
    assert_eq!(s.next(0.0, 10.0), 12);
    assert!(!SharedSplit::always(1).shares_next(), "one image cannot be split");

    // Trying both ways: a warm-up step alone, then alone and shared in turn, then the faster.
    let trial = |alone: f64, shared: f64| {
        let mut s = SharedSplit::new(25);
        let mut ways = Vec::new();
        for _ in 0..1 + 2 * TRIALS + 2 {
            let share = s.shares_next();
            ways.push(share);
            s.record(share, if share { shared } else { alone });
        }
        (ways, s.dropped())
    };
    let tried = [vec![false], [false, true].repeat(TRIALS)].concat();
    assert_eq!(trial(100.0, 60.0), ([tried.clone(), vec![true, true]].concat(), false), "faster shared: kept");
    assert_eq!(trial(100.0, 110.0), ([tried, vec![false, false]].concat(), true), "slower shared: dropped");
    // The medians decide: one slow step does not.
    assert!(SharedSplit::decide(&[100.0, 90.0, 95.0], &[80.0, 300.0, 85.0]));
    assert!(!SharedSplit::decide(&[100.0, 80.0, 60.0], &[85.0, 90.0, 60.0]));
    assert!(!SharedSplit::decide(&[], &[1.0]));
}

#[test]
fn user_tasks_need_two_classes_of_three_images() {
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

/// The page's protocol over 18 draws of each built-in task (draw 0 is the page's own; each draw
/// new support and query images): every trained corner fixed, the corner the support set chooses
/// (leave-one-out ridge error, `i` kept there), `i` learned from that corner (the page's fit) and
/// learned from 0.5. Mean and 95% interval (Student's t) of each arm, and of the paired differences
/// that matter: learned minus the chosen corner, and learned minus the corner best on average over
/// the draws (chosen with the query scores: the strongest fixed baseline, favoured by the choice).
/// For EXPERIMENTS.md ("The browser page's built-in tasks over 18 draws").
/// `cargo test --release --workspace --test web_engine -- --ignored --nocapture built_in_tasks_over_draws`
#[test]
#[ignore = "a measurement (a few minutes), not a check"]
fn built_in_tasks_over_draws() {
    use ail_core::metrics::MeanCi;
    let _serial = ail_core::serial_draws();
    let (frozen, set) = (builtin_frozen(), ail_data::builtin::fashion_mnist().unwrap());
    let corners = [vec![0.0, 1.0], vec![1.0, 0.0], vec![1.0, 1.0]];
    let draws = 18; // the most disjoint garment draws the second half of the built-in set holds (279 images of its rarest class)
    let ci = |v: &[f64]| {
        let m = MeanCi::of_few(v);
        format!("{:.3} ± {:.3}", m.mean, m.ci95)
    };
    println!("| task | arm | query score, mean ± 95% (18 draws) |\n|---|---|---:|");
    for name in ["five-way", "position", "tint"] {
        // Arms: the corners fixed, the chosen corner, learned from it, learned from 0.5.
        let mut scores = vec![Vec::new(); corners.len() + 3];
        let mut chosen = vec![0usize; corners.len()];
        for draw in 0..draws {
            let task = match name {
                "five-way" => engine::five_way(&set, &frozen, draw),
                "position" => engine::position(&set, &frozen, engine::POSITION_SIZES, draw),
                _ => engine::tint(&set, &frozen, engine::TINT_SIZES, draw),
            }
            .unwrap();
            let page = engine::fit_config(&frozen, &task.support, None);
            let configs: Vec<EpisodeConfig> = corners
                .iter()
                .map(|c| engine::fit_config(&frozen, &task.support, Some(c.clone())))
                .chain([EpisodeConfig { steps: 0, ..page.clone() }, page.clone(), EpisodeConfig { start_corners: None, ..page }])
                .collect();
            for (arm, config) in configs.iter().enumerate() {
                let mut fit = StepFit::new(&frozen, &task.support, config, 0).unwrap();
                while block_on(engine::step(&frozen, &mut fit)).unwrap().is_some() {}
                let s = block_on(engine::evaluate(&frozen, &fit, &task.query)).unwrap();
                scores[arm].push(s.accuracy.unwrap_or_else(|| s.r2.unwrap()));
                if arm == corners.len() {
                    chosen[corners.iter().position(|c| c.as_slice() == fit.i()).unwrap()] += 1;
                }
            }
        }
        let labels: Vec<String> = corners
            .iter()
            .map(|c| format!("fixed at {c:?}"))
            .chain([format!("chosen corner (times chosen: {chosen:?})"), "learned from the chosen corner (the page)".into(), "learned from 0.5".into()])
            .collect();
        for (label, v) in labels.iter().zip(&scores) {
            println!("| {name} | {label} | {} |", ci(v));
        }
        let mean = |v: &Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
        let best = (0..corners.len()).fold(0, |b, k| if mean(&scores[k]) > mean(&scores[b]) { k } else { b });
        let diff = |a: usize, b: usize| scores[a].iter().zip(&scores[b]).map(|(x, y)| x - y).collect::<Vec<f64>>();
        let learned = corners.len() + 1;
        println!("| {name} | learned minus the chosen corner, paired | {} |", ci(&diff(learned, corners.len())));
        println!("| {name} | learned minus fixed at {:?} (best on average), paired | {} |", corners[best], ci(&diff(learned, best)));
        println!("| {name} | learned from the corner minus learned from 0.5, paired | {} |", ci(&diff(learned, learned + 1)));
    }
}

/// The page's built-in encoder, opened on the CPU backend as the page opens it.
fn builtin_frozen() -> ail_core::frozen::Frozen {
    engine::open(&builtin_export(), "built-in", &Device::flex()).unwrap()
}

/// The page's built-in encoder, as the page fetches it.
fn builtin_export() -> Vec<u8> {
    let path = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())).join("../web/assets").join(ail_web::BUILTIN_EXPORT_FILE);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

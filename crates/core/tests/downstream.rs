//! Downstream fitting on a tiny amortised encoder: the descriptor's gradient against finite
//! differences, the direction and projection of the `i` update, eval mode (batch-norm statistics
//! untouched), the linear-readout baseline, and few-shot episodes end to end.

use ail_core::checkpoint::{self, CheckpointMeta, Normalization};
use ail_core::fewshot::{EpisodeConfig, FewShotReadout, run_episode};
use ail_core::fit::{DescriptorAdam, DescriptorGradient, FitConfig, Readout, Split, Targets, fit, fit_from, loss_and_descriptor_gradient};
use ail_core::frozen::Frozen;
use ail_core::{EncoderConfig, Family, ModelKind};
use burn::nn::LinearConfig;
use burn::prelude::*;
use burn::tensor::Distribution;

/// A tiny Hyper-ResNet-18 whose batch norms have seen data (non-trivial running statistics),
/// saved as a checkpoint and opened frozen.
fn frozen(dir: &std::path::Path) -> Frozen {
    let mut config = EncoderConfig::new(ModelKind::HyperResnet18, 2).with_width(0.0625).with_image_size(8);
    config.hidden = 4;
    let device = Device::flex().autodiff();
    device.seed(3);
    let model = config.init(&device).unwrap();
    // Train-mode forwards move the running statistics away from (0, 1).
    for _ in 0..3 {
        let x = Tensor::<4>::random([6, 3, 8, 8], Distribution::Normal(0.5, 2.0), &device);
        let _ = model.forward_features(x, Tensor::from_floats([1.0, 0.0], &device));
    }
    let meta = CheckpointMeta {
        encoder: config,
        family: Some(Family::Groups),
        step: 1,
        normalization: Some(Normalization { mean: vec![0.4, 0.5, 0.6], std: vec![0.2, 0.25, 0.3] }),
        audio: None,
    };
    checkpoint::save(dir, &model, &meta, None).unwrap();
    Frozen::open(dir, &Device::flex(), || unreachable!("the checkpoint records its normalisation")).unwrap()
}

/// `n` noisy images of two classes: reddish (class 0) and bluish (class 1).
fn split(n: usize, seed: u64) -> Split {
    let mut pixels = Vec::with_capacity(n * 192);
    let mut labels = Vec::with_capacity(n);
    let mut s = seed;
    for k in 0..n {
        let class = (k % 2) as u32;
        for p in 0..192 {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let noise = (s >> 57) as u8; // 0..127
            let channel = p / 64;
            let base = match (class, channel) {
                (0, 0) | (1, 2) => 128,
                _ => 0,
            };
            pixels.push(base + noise);
        }
        labels.push(class);
    }
    Split::new(pixels, [3, 8, 8], Targets::Classes { labels, classes: 2 })
}

fn head(frozen: &Frozen, seed: u64) -> Readout {
    frozen.device().seed(seed);
    Readout { head: LinearConfig::new(frozen.feature_dim(), 2).init(frozen.device()), i: vec![0.5, 0.5], target_mean: vec![], target_std: vec![] }
}

/// Checks each entry of the back-propagated `g` against central differences of `loss` around `i0`
/// at two step sizes (it must match one of them: a step that straddles a ReLU kink is off).
fn assert_matches_central_differences(g: &[f32], i0: &[f32; 2], loss: impl Fn(&[f32]) -> f64, steps: [f32; 2], what: &str) {
    for k in 0..2 {
        let fd = |h: f32| {
            let (mut ip, mut im) = (*i0, *i0);
            ip[k] += h;
            im[k] -= h;
            (loss(&ip) - loss(&im)) / (2.0 * h as f64)
        };
        let (wide, narrow) = (fd(steps[0]), fd(steps[1]));
        let err = (g[k] as f64 - wide).abs().min((g[k] as f64 - narrow).abs());
        assert!(
            err <= 0.05 * wide.abs().max(g[k].abs() as f64) + 1e-4,
            "entry {k}: back-propagated {} vs finite differences {wide} / {narrow}{what}",
            g[k]
        );
    }
}

#[test]
fn descriptor_gradient_matches_finite_differences_and_the_step_lowers_the_loss() {
    let _serial = ail_core::serial_draws();
    let dir = tempfile::tempdir().unwrap();
    let frozen = frozen(dir.path());
    let train = split(8, 1);
    let seed = 5;
    let readout = head(&frozen, seed);
    let i0 = [0.5f32, 0.5];
    let (loss0, g) = loss_and_descriptor_gradient(&frozen, &readout, &train, &i0, DescriptorGradient::default());
    // Central differences at two step sizes: one that straddles a ReLU kink is off.
    let loss = |i: &[f32]| loss_and_descriptor_gradient(&frozen, &readout, &train, i, DescriptorGradient::default()).0;
    assert_matches_central_differences(&g, &i0, loss, [1e-3, 5e-4], "");
    for k in 0..2 {
        assert!(g[k].abs() > 1e-6, "the loss must depend on i[{k}] for this check to mean anything");
    }
    // One step of fit (one batch, a head learning rate too small to matter): Adam's first step moves
    // each entry by i_lr against the sign of its gradient, and the loss falls.
    let config = FitConfig { epochs: 1, batch_size: 8, lr: 1e-12, i_lr: 0.01, seed, ..Default::default() };
    let run = fit_from(&frozen, &train, &split(4, 2), &config, Some(&readout), &mut |_, _, _| {}).unwrap();
    assert!(run.learned_i);
    let i1 = &run.trajectory[1];
    for k in 0..2 {
        let want = i0[k] - 0.01 * g[k].signum();
        assert!((i1[k] - want).abs() < 1e-4, "entry {k}: {} vs {want}", i1[k]);
    }
    let (loss1, _) = loss_and_descriptor_gradient(&frozen, &readout, &train, i1, DescriptorGradient::default());
    assert!(loss1 < loss0, "the step on i must lower the training loss: {loss0} -> {loss1}");
}

/// With per-descriptor statistics, the gradient a fit follows is that of the loss with the
/// statistics recomputed at `i`: on a batch that is the calibration set itself, the features it
/// differentiates are the ones scores are read with, its derivative matches central differences
/// of that loss, and it differs from the derivative with the statistics held.
#[test]
fn with_per_descriptor_statistics_the_descriptor_gradient_sees_them_move() {
    use ail_core::frozen::BatchNormStatistics;
    let _serial = ail_core::serial_draws();
    let dir = tempfile::tempdir().unwrap();
    let mut frozen = frozen(dir.path());
    let train = split(24, 7);
    frozen.set_batch_norm_statistics(BatchNormStatistics::PerDescriptor, &train.pixels, train.len(), train.shape);
    let readout = head(&frozen, 11);
    let i0 = [0.5f32, 0.5]; // a lattice point: its calibrated statistics are those of exactly i0

    // The batch-statistics features at i0 are the calibrated ones (all 24 images are one batch).
    let x = Frozen::upload_u8(&train.pixels, train.len(), train.shape, frozen.device());
    let i_t = Tensor::<1>::from_floats(i0, frozen.device());
    let through: Vec<f32> = frozen.features_with_grad_through_statistics(x, i_t, &i0).into_data().try_to_vec().unwrap();
    let scored = frozen.features_u8(&train.pixels, train.len(), train.shape, &i0);
    let gap = through.iter().zip(&scored).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let scale = scored.iter().map(|v| v.abs()).fold(0f32, f32::max);
    assert!(gap <= 1e-4 * scale.max(1.0), "features differentiated and features scored differ by {gap} (scale {scale})");

    let (_, batch) = loss_and_descriptor_gradient(&frozen, &readout, &train, &i0, DescriptorGradient::BatchStatistics);
    let (_, held) = loss_and_descriptor_gradient(&frozen, &readout, &train, &i0, DescriptorGradient::HeldStatistics);
    // The loss bends sharply in i here (at 1e-3 the differences are still off by 2x on one
    // entry); at 2e-4 they settle.
    let loss = |i: &[f32]| loss_and_descriptor_gradient(&frozen, &readout, &train, i, DescriptorGradient::BatchStatistics).0;
    assert_matches_central_differences(&batch, &i0, loss, [5e-4, 2e-4], " (statistics recomputed)");
    let diff = batch.iter().zip(&held).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let size = batch.iter().chain(&held).map(|v| v.abs()).fold(0f32, f32::max);
    assert!(diff > 0.02 * size, "holding the statistics changed nothing here ({batch:?} vs {held:?}): the check means nothing");

    // Shared statistics do not move with i: both kinds are the same gradient.
    frozen.set_batch_norm_statistics(BatchNormStatistics::Shared, &train.pixels, train.len(), train.shape);
    let (_, a) = loss_and_descriptor_gradient(&frozen, &readout, &train, &i0, DescriptorGradient::BatchStatistics);
    let (_, b) = loss_and_descriptor_gradient(&frozen, &readout, &train, &i0, DescriptorGradient::HeldStatistics);
    assert_eq!(a, b);
}

#[test]
fn warm_start_trains_the_head_alone_first() {
    let _serial = ail_core::serial_draws();
    let dir = tempfile::tempdir().unwrap();
    let frozen = frozen(dir.path());
    let config = FitConfig { epochs: 2, batch_size: 8, lr: 0.01, warm_start_epochs: 3, ..Default::default() };
    let run = fit(&frozen, &split(8, 12), &split(4, 13), &config, &mut |_, _, _| {}).unwrap();
    assert_eq!(run.trajectory.len(), 6);
    assert!(run.trajectory[..4].iter().all(|i| i == &vec![0.5, 0.5]), "{:?}", run.trajectory);
    assert!(run.trajectory[4..].iter().all(|i| i != &vec![0.5, 0.5]), "{:?}", run.trajectory);
    assert_eq!(run.train_loss.len(), 5);
    assert!(run.learned_i);
}

#[test]
fn a_diverging_fit_stops_with_the_epoch_and_the_fix() {
    let _serial = ail_core::serial_draws();
    let dir = tempfile::tempdir().unwrap();
    let frozen = frozen(dir.path());
    let config = FitConfig { epochs: 3, batch_size: 4, lr: 3e38, fixed: Some(vec![1.0, 1.0]), ..Default::default() };
    let e = fit(&frozen, &split(8, 30), &split(4, 31), &config, &mut |_, _, _| {}).unwrap_err().to_string();
    assert!(e.contains("training loss became") && e.contains("epoch") && e.contains("lower --lr"), "{e}");
}

#[test]
fn descriptor_stays_in_the_unit_box() {
    let _serial = ail_core::serial_draws();
    let mut adam = DescriptorAdam::new(2, 0.1);
    let mut i = [0.99f32, 0.01];
    adam.step(&mut i, &[-1.0, 1.0]);
    assert_eq!(i, [1.0, 0.0]);
    let dir = tempfile::tempdir().unwrap();
    let frozen = frozen(dir.path());
    // A huge step size from the corner: every recorded i stays inside [0, 1].
    let config = FitConfig { epochs: 3, batch_size: 4, i_lr: 5.0, i_init: 1.0, ..Default::default() };
    let run = fit(&frozen, &split(8, 3), &split(4, 4), &config, &mut |_, _, _| {}).unwrap();
    assert_eq!(run.trajectory.len(), 4);
    assert!(run.trajectory.iter().flatten().all(|v| (0.0..=1.0).contains(v)), "{:?}", run.trajectory);
    assert!(run.trajectory.iter().flatten().any(|v| *v == 0.0 || *v == 1.0), "a step of 5 must hit a bound: {:?}", run.trajectory);
}

/// Each tensor's bytes by name (the header's metadata order is not stable, so files are compared
/// tensor by tensor).
fn tensors(path: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    header
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            let o = &v["data_offsets"];
            let (a, b) = (o[0].as_u64().unwrap() as usize, o[1].as_u64().unwrap() as usize);
            (k.clone(), data[a..b].to_vec())
        })
        .collect()
}

#[test]
fn fitting_uses_eval_mode_and_leaves_the_encoder_untouched() {
    let _serial = ail_core::serial_draws();
    let dir = tempfile::tempdir().unwrap();
    let frozen = frozen(dir.path());
    let snapshot = |f: &Frozen| {
        let d = tempfile::tempdir().unwrap();
        checkpoint::save(d.path(), &f.encoder, &f.meta, None).unwrap();
        tensors(&d.path().join(checkpoint::TENSORS_FILE))
    };
    let before = snapshot(&frozen);
    let probe = split(3, 9);
    let features = |f: &Frozen| f.compute_features_u8(&probe.pixels, 3, probe.shape, &[0.3, 0.7]);
    let f0 = features(&frozen);
    let config = FitConfig { epochs: 2, batch_size: 4, lr: 0.01, ..Default::default() };
    let run = fit(&frozen, &split(8, 5), &split(4, 6), &config, &mut |_, _, _| {}).unwrap();
    assert!(run.trajectory.last().unwrap() != &vec![0.5, 0.5], "i must have been learned");
    // The frozen encoder's tensors, running statistics included, are what the checkpoint holds.
    assert!(before.keys().any(|k| k.contains("running_var")), "the snapshot must hold the running statistics");
    assert!(before == snapshot(&frozen), "fitting changed the encoder's tensors (batch-norm statistics updated?)");
    assert_eq!(f0, features(&frozen));
}

#[test]
fn cached_features_equal_computed_ones_and_depend_on_the_images_and_i() {
    let _serial = ail_core::serial_draws();
    let dir = tempfile::tempdir().unwrap();
    let frozen = frozen(dir.path());
    let (a, b) = (split(4, 20), split(4, 21));
    let computed = frozen.compute_features_u8(&a.pixels, 4, a.shape, &[0.2, 0.9]);
    assert_eq!(frozen.features_u8(&a.pixels, 4, a.shape, &[0.2, 0.9]), computed);
    assert_eq!(frozen.features_u8(&a.pixels, 4, a.shape, &[0.2, 0.9]), computed); // from the cache
    assert_ne!(frozen.features_u8(&b.pixels, 4, b.shape, &[0.2, 0.9]), computed);
    assert_ne!(frozen.features_u8(&a.pixels, 4, a.shape, &[0.9, 0.2]), computed);
}

#[test]
fn fixed_descriptor_trains_the_head_alone_and_learns_the_task() {
    let _serial = ail_core::serial_draws();
    let dir = tempfile::tempdir().unwrap();
    let frozen = frozen(dir.path());
    let config = FitConfig { epochs: 30, batch_size: 16, lr: 0.05, fixed: Some(vec![1.0, 1.0]), ..Default::default() };
    let (train, val) = (split(32, 7), split(16, 8));
    let run = fit(&frozen, &train, &val, &config, &mut |_, _, _| {}).unwrap();
    assert!(!run.learned_i);
    assert!(run.trajectory.iter().all(|i| i == &vec![1.0, 1.0]));
    assert!(run.train_loss.last().unwrap() < &run.train_loss[0], "{:?}", run.train_loss);
    let scores = run.best.score(&frozen, &val, None);
    assert!(scores.accuracy.unwrap() >= 0.75, "two easy classes: {scores:?}");
    assert_eq!(run.best.head_parameters(), frozen.feature_dim() * 2 + 2);
}

#[test]
fn few_shot_episode_with_ridge_and_logistic_readouts() {
    let _serial = ail_core::serial_draws();
    let dir = tempfile::tempdir().unwrap();
    let frozen = frozen(dir.path());
    let (support, query) = (split(10, 10), split(20, 11));
    for readout in [FewShotReadout::Ridge, FewShotReadout::Logistic] {
        let config = EpisodeConfig { ways: 2, shots: 5, queries: 10, readout, steps: 3, ..Default::default() };
        let r = run_episode(&frozen, &support, &query, &config, 1).unwrap();
        assert!(r.accuracy >= 0.7, "{readout:?}: {r:?}");
        assert!(r.i.iter().all(|v| (0.0..=1.0).contains(v)) && r.i != vec![0.5, 0.5], "{readout:?}: i must move: {r:?}");
        assert_eq!(r.lambda.is_some(), readout == FewShotReadout::Ridge);
    }
}


//! Does the gradient reach `i` usefully? A task whose best descriptor is known by construction: on
//! a frozen amortised encoder, the regression target is a direction of the features at `[0, 1]`
//! with half of what the features at `[1, 0]` can express (linearly) removed. A linear head at
//! `[0, 1]` reads it well, one at `[1, 0]` much less (the test checks the gap first). A learned `i`
//! that starts in the middle must walk to the `[0, 1]` corner and score as well as a head fixed
//! there; with the step on `i` switched off the same check must fail (it stays in the middle and
//! scores less).

use ail_core::checkpoint::{CheckpointMeta, Normalization};
use ail_core::fit::{FitConfig, FitRun, Split, Targets, fit};
use ail_core::frozen::{BatchNormStatistics, Frozen};
use ail_core::{EncoderConfig, Family, ModelKind};
use burn::prelude::*;
use burn::tensor::Distribution;

const SIDE: usize = 16;

/// A small random Hyper-ResNet-18 (K = 2) whose running statistics have seen the descriptors
/// trained in pretraining, frozen.
fn frozen() -> Frozen {
    let mut config = EncoderConfig::new(ModelKind::HyperResnet18, 2).with_width(0.125).with_image_size(SIDE);
    config.hidden = 8;
    let device = Device::flex().autodiff();
    device.seed(11);
    let model = config.init(&device).unwrap();
    // Train-mode forwards at the three trained descriptors move the running statistics (shared by
    // all descriptors, as pretraining leaves them).
    for step in 0..30 {
        let x = Tensor::<4>::random([16, 3, SIDE, SIDE], Distribution::Normal(0.0, 1.0), &device);
        let i = [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]][step % 3];
        let _ = model.forward_features(x, Tensor::from_floats(i, &device));
    }
    let meta = CheckpointMeta {
        encoder: config,
        family: Some(Family::Groups),
        step: 30,
        normalization: Some(Normalization { mean: vec![0.5; 3], std: vec![0.25; 3] }),
        audio: None,
    };
    Frozen::from_encoder(model, meta, "synthetic".into()).unwrap()
}

/// `n` images of uniform noise.
fn images(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..n * 3 * SIDE * SIDE)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 56) as u8
        })
        .collect()
}

/// Least-squares residual of `y` on the columns of `x` (`[n, d]`, row-major) and a constant.
fn residual(y: &[f64], x: &[f32], n: usize, d: usize) -> Vec<f64> {
    let cols = d + 1;
    let row = |r: usize, c: usize| if c == d { 1.0 } else { x[r * d + c] as f64 };
    // Normal equations with a tiny ridge, solved by Cholesky.
    let mut a = vec![0f64; cols * cols];
    let mut b = vec![0f64; cols];
    for r in 0..n {
        for i in 0..cols {
            b[i] += row(r, i) * y[r];
            for j in 0..cols {
                a[i * cols + j] += row(r, i) * row(r, j);
            }
        }
    }
    let trace: f64 = (0..cols).map(|i| a[i * cols + i]).sum();
    (0..cols).for_each(|i| a[i * cols + i] += 1e-9 * trace / cols as f64);
    let mut l = vec![0f64; cols * cols];
    for i in 0..cols {
        for j in 0..=i {
            let s: f64 = a[i * cols + j] - (0..j).map(|k| l[i * cols + k] * l[j * cols + k]).sum::<f64>();
            l[i * cols + j] = if i == j { s.max(1e-300).sqrt() } else { s / l[j * cols + j] };
        }
    }
    let mut z = vec![0f64; cols];
    for i in 0..cols {
        z[i] = (b[i] - (0..i).map(|k| l[i * cols + k] * z[k]).sum::<f64>()) / l[i * cols + i];
    }
    let mut beta = vec![0f64; cols];
    for i in (0..cols).rev() {
        beta[i] = (z[i] - (i + 1..cols).map(|k| l[k * cols + i] * beta[k]).sum::<f64>()) / l[i * cols + i];
    }
    (0..n).map(|r| y[r] - (0..cols).map(|c| row(r, c) * beta[c]).sum::<f64>()).collect()
}

/// The task: train and validation splits whose target the `[0, 1]` features carry (linearly) and
/// the `[1, 0]` features carry much less of.
fn task(frozen: &Frozen) -> (Split, Split) {
    let (n_train, n_val) = (384, 256);
    let n = n_train + n_val;
    let shape = [3, SIDE, SIDE];
    let pixels = images(n, 7);
    let d = frozen.feature_dim();
    let at = |i: &[f32]| frozen.compute_features_u8(&pixels, n, shape, i);
    let (f01, f10) = (at(&[0.0, 1.0]), at(&[1.0, 0.0]));
    // A fixed direction of the [0, 1] features, then what [1, 0] explains of it removed.
    let w: Vec<f64> = (0..d).map(|k| (k as f64 * 2.399).sin()).collect();
    let y: Vec<f64> = (0..n).map(|r| (0..d).map(|k| f01[r * d + k] as f64 * w[k]).sum()).collect();
    // Half of what the [1, 0] features explain of it is removed: the target stays a linear
    // function of the [0, 1] features plus a part the [1, 0] features cannot express.
    let r = residual(&y, &f10, n, d);
    let y: Vec<f64> = y.iter().zip(&r).map(|(a, b)| 0.5 * a + 0.5 * b).collect();
    let split = |range: std::ops::Range<usize>| {
        let len = 3 * SIDE * SIDE;
        Split::new(
            pixels[range.start * len..range.end * len].to_vec(),
            shape,
            Targets::Values { values: range.map(|r| y[r] as f32).collect(), outputs: 1 },
        )
    };
    (split(0..n_train), split(n_train..n))
}

fn run(frozen: &Frozen, train: &Split, val: &Split, fixed: Option<Vec<f32>>, i_lr: f64) -> FitRun {
    let config = FitConfig { epochs: 30, batch_size: 64, lr: 0.01, weight_decay: 0.0, i_lr, i_init: 0.5, i_start: None, fixed, seed: 3, warm_start_epochs: 0, i_gradient: Default::default() };
    fit(frozen, train, val, &config, &mut |_, _, _| {}).unwrap()
}

fn check(bn: BatchNormStatistics) {
    let _serial = ail_core::serial_draws();
    let mut frozen = frozen();
    let (train, val) = task(&frozen);
    frozen.set_batch_norm_statistics(bn, &train.pixels, train.len(), train.shape);
    let r2 = |r: &FitRun| r.val.r2.unwrap();
    let corner01 = run(&frozen, &train, &val, Some(vec![0.0, 1.0]), 0.0);
    let corner10 = run(&frozen, &train, &val, Some(vec![1.0, 0.0]), 0.0);
    // The construction: [0, 1] carries the target, [1, 0] does not.
    assert!(r2(&corner01) > 0.6 && r2(&corner01) > r2(&corner10) + 0.15, "{bn:?}: R^2 at [0,1] {} and [1,0] {}", r2(&corner01), r2(&corner10));

    let goes_to_the_corner = |r: &FitRun| {
        let i = &r.best.i;
        i[1] >= 0.9 && i[0] <= 0.3 && r2(r) >= r2(&corner01) - 0.05
    };
    let learned = run(&frozen, &train, &val, None, 0.05);
    eprintln!(
        "{bn:?}: R^2 at [0,1] {:.3}, at [1,0] {:.3}; learned i {:?} with R^2 {:.3}; trajectory {:?}",
        r2(&corner01),
        r2(&corner10),
        learned.best.i,
        r2(&learned),
        learned.trajectory
    );
    assert!(
        goes_to_the_corner(&learned),
        "{bn:?}: learned i {:?} (trajectory {:?}) with R^2 {}, against {} at [0,1]",
        learned.best.i,
        learned.trajectory,
        r2(&learned),
        r2(&corner01)
    );
    // The same check fails when nothing reaches i: it stays where it started, and scores less.
    let cut = run(&frozen, &train, &val, None, 0.0);
    assert_eq!(cut.best.i, vec![0.5, 0.5]);
    assert!(!goes_to_the_corner(&cut), "{bn:?}: R^2 {} at i = [0.5, 0.5] already matches the corner's {}", r2(&cut), r2(&corner01));
}

#[test]
fn learned_descriptor_walks_to_the_corner_that_carries_the_target_with_shared_statistics() {
    check(BatchNormStatistics::Shared);
}

#[test]
fn learned_descriptor_walks_to_the_corner_that_carries_the_target_with_per_descriptor_statistics() {
    check(BatchNormStatistics::PerDescriptor);
}

/// 60 training images of [`task`], as a small labelled set would be, the test split, and the 60
/// images' standardised targets.
fn small_task(frozen: &Frozen) -> (Split, Split, Vec<f32>) {
    let (train, test) = task(frozen);
    let small = train.subset(&(0..60).collect::<Vec<_>>());
    let (mean, std) = ail_core::fit::standardisation(&small.targets);
    let y = ail_core::fit::target_rows(&small.targets, &mean, &std);
    (small, test, y)
}

/// The few-shot start (`--i-init best-corner` of `fewshot` / `lowshot`): of the trained corners,
/// the one whose features give the smallest leave-one-out ridge error on the training images
/// alone is the one that carries the target; a learned fit started from it reports that start,
/// and a fixed one reports none.
#[test]
fn the_start_chosen_by_leaving_one_out_is_the_corner_that_carries_the_target() {
    use ail_core::fewshot::{EpisodeConfig, FewShotReadout, LearnedRidge, StepFit, best_loo_start, learn_ridge};
    let _serial = ail_core::serial_draws();
    let frozen = frozen();
    let (small, _, y) = small_task(&frozen);
    let corners = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![1.0, 1.0]];
    let lambdas = [0.01, 0.1, 1.0];
    let (best, errors) = best_loo_start(&frozen, &small, &y, 1, &corners, &lambdas).unwrap();
    eprintln!("leave-one-out errors at {corners:?}: {errors:?}");
    assert_eq!(best, vec![0.0, 1.0], "errors {errors:?}");
    assert!(errors[1] < 0.8 * errors[0], "the corner that carries the target is clearly ahead: {errors:?}");
    // Each error is the ridge's own leave-one-out error at that corner, with its best penalty.
    let f = ail_core::fewshot::normalised_features(&frozen, &small, &corners[2]);
    let (_, e2) = ail_core::ridge::select_lambda(&f, &y, small.len(), frozen.feature_dim(), 1, &lambdas).unwrap();
    assert_eq!(errors[2], e2);
    assert!(best_loo_start(&frozen, &small, &y, 1, &[], &lambdas).is_err());
    assert!(best_loo_start(&frozen, &small, &y, 1, &[vec![1.0]], &lambdas).unwrap_err().to_string().contains("2 entries"));

    // Ridge and logistic readouts start where the choice says; a start of 0.5 otherwise.
    let config = EpisodeConfig { readout: FewShotReadout::Ridge, steps: 2, start_corners: Some(corners.clone()), lambdas: lambdas.to_vec(), ..Default::default() };
    let LearnedRidge { start, i, .. } = learn_ridge(&frozen, &small, &y, 1, &config).unwrap();
    assert_eq!(start, vec![0.0, 1.0]);
    assert!(i[1] >= 0.9 && i[0] <= 0.1, "from the corner that carries the target, i stays near it: {i:?}");
    let fit = StepFit::new(&frozen, &small, &EpisodeConfig { readout: FewShotReadout::Logistic, ..config.clone() }, 0).unwrap();
    assert_eq!(fit.start(), &[0.0, 1.0]);
    let fit = StepFit::new(&frozen, &small, &EpisodeConfig { start_corners: None, ..config.clone() }, 0).unwrap();
    assert_eq!(fit.start(), &[0.5, 0.5]);
    let fixed = StepFit::new(&frozen, &small, &EpisodeConfig { fixed: Some(vec![1.0, 0.0]), ..config }, 0).unwrap();
    assert_eq!(fixed.start(), &[1.0, 0.0], "a fixed descriptor is not replaced by a chosen corner");
}

/// The ridge readout step by step (the browser page's fit, and `learn_ridge`): a fixed `i` takes
/// one step, whose loss is the closed-form leave-one-out error at the penalty chosen, and whose
/// readout is the ridge solved on those features; a learned `i` takes `steps` descending steps and
/// that last one, lowers the error it descends, and ends where `learn_ridge` ends.
#[test]
fn the_ridge_readout_step_by_step_is_the_closed_form_one() {
    use ail_core::fewshot::{EpisodeConfig, FewShotReadout, StepFit, learn_ridge, normalised_features};
    let _serial = ail_core::serial_draws();
    let frozen = frozen();
    let (small, test, y) = small_task(&frozen);
    let (n, d) = (small.len(), frozen.feature_dim());
    let lambdas = vec![0.01, 0.1, 1.0];
    let fixed_i = vec![1.0, 0.0];
    let config = EpisodeConfig { readout: FewShotReadout::Ridge, steps: 5, fixed: Some(fixed_i.clone()), lambdas: lambdas.clone(), ..Default::default() };

    let mut fit = StepFit::new(&frozen, &small, &config, 0).unwrap();
    assert_eq!(fit.progress(), (0, 1), "a fixed i takes one step");
    let mut losses = Vec::new();
    while fit.step(&frozen).unwrap() {
        losses.push(fit.progress().0);
    }
    assert_eq!(losses, vec![1]);
    let f = normalised_features(&frozen, &small, &fixed_i);
    let (lambda, loo) = ail_core::ridge::select_lambda(&f, &y, n, d, 1, &lambdas).unwrap();
    assert_eq!(fit.lambda(), Some(lambda));
    // The step's loss is that leave-one-out error.
    let mut again = StepFit::new(&frozen, &small, &config, 0).unwrap();
    let pending = again.start_step(&frozen).unwrap().unwrap();
    let step_loss = pending.loss.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()[0] as f64;
    assert!((step_loss - loo).abs() <= 1e-6 * loo.max(1.0), "{step_loss} against {loo}");
    // Its predictions are the closed-form ridge's on the query features.
    let want = ail_core::ridge::Ridge::fit(&f, &y, n, d, 1, lambda).unwrap().predict(&normalised_features(&frozen, &test, &fixed_i), test.len());
    let got = fit.predict(&frozen, &test).unwrap().into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    assert_eq!(got, want);

    // Learned from 0.5: 5 descending steps and the last, the error lowered, the end `learn_ridge`'s.
    let config = EpisodeConfig { fixed: None, ..config };
    let mut fit = StepFit::new(&frozen, &small, &config, 0).unwrap();
    assert_eq!(fit.progress(), (0, 6));
    let mut losses = Vec::new();
    loop {
        let joint = fit.is_joint();
        let Some(pending) = fit.start_step(&frozen).unwrap() else { break };
        losses.push(pending.loss.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()[0]);
        assert_eq!(pending.i_grad.is_some(), joint, "only the descending steps have a gradient in i");
        let g = pending.i_grad.map(|g| g.into_data().convert::<f32>().try_to_vec::<f32>().unwrap());
        fit.finish_step(g.as_deref());
    }
    assert_eq!(losses.len(), 6);
    assert!(losses[5] < losses[0], "the descent lowers the leave-one-out error: {losses:?}");
    assert_ne!(fit.i(), &[0.5, 0.5]);
    let learned = learn_ridge(&frozen, &small, &y, 1, &config).unwrap();
    assert_eq!(learned.i.as_slice(), fit.i());
    assert_eq!(Some(learned.lambda), fit.lambda());
    assert_eq!(learned.readout.weights, fit.ridge_readout(&frozen).unwrap().weights);
}

/// A joint step split between two workers (the browser page's fit, `StepFit::start_shared`): the
/// rows `n / 2..` computed as a separate `FeaturePart` (as the second worker does, from the support
/// pixels the fit hands it), the loss and the two parts' gradients in `i` summed, gives the step
/// that `start_step` computes on all rows at once, to float rounding, at every step of a fit; a
/// share of the wrong size and a split at the wrong row are named.
#[test]
fn a_joint_step_shared_between_two_workers_is_the_whole_step() {
    use ail_core::fewshot::{EpisodeConfig, FeaturePart, FewShotReadout, StepFit};
    let _serial = ail_core::serial_draws();
    let frozen = frozen();
    let (small, _, _) = small_task(&frozen);
    let small = small.subset(&(0..25).collect::<Vec<_>>());
    let config = EpisodeConfig { readout: FewShotReadout::Ridge, steps: 4, i_lr: 0.05, lambdas: vec![0.01, 0.1, 1.0], ..Default::default() };
    let read = |t: Tensor<1>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();

    let mut whole = StepFit::new(&frozen, &small, &config, 0).unwrap();
    let mut shared = StepFit::new(&frozen, &small, &config, 0).unwrap();
    assert_eq!(shared.shareable_rows(), Some(12..25));
    let mut steps = 0;
    while let Some(rows) = shared.shareable_rows() {
        let pending = whole.start_step(&frozen).unwrap().unwrap();
        let (want_loss, want_grad) = (read(pending.loss)[0], read(pending.i_grad.unwrap()));
        // The second worker's share: its own upload of the pixels it was handed.
        let (pixels, shape) = shared.support_pixels(rows.clone()).unwrap();
        let x = ail_core::frozen::Frozen::upload_u8(pixels, rows.len(), shape, frozen.device());
        let remote = FeaturePart::new(&frozen, x, shared.i());
        let local = shared.start_shared(&frozen, rows.start).unwrap();
        let remote_features = remote.features().into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let loss = shared.shared_loss(&local, &remote_features).unwrap();
        assert!(shared.shared_loss(&local, &remote_features[1..]).unwrap_err().to_string().contains("expected"), "a share of the wrong size is named");
        let g: Vec<f32> = read(local.backward(&loss.local).unwrap()).iter().zip(read(remote.backward(&loss.remote).unwrap())).map(|(a, b)| a + b).collect();
        let got_loss = read(loss.loss)[0];
        assert!((got_loss - want_loss).abs() <= 1e-5 * want_loss.abs().max(1.0), "step {steps}: loss {got_loss} against {want_loss}");
        for (a, b) in g.iter().zip(&want_grad) {
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1e-3), "step {steps}: gradient {g:?} against {want_grad:?}");
        }
        whole.finish_step(Some(&want_grad));
        shared.finish_step(Some(&g));
        for (a, b) in shared.i().iter().zip(whole.i()) {
            assert!((a - b).abs() <= 1e-5, "step {steps}: i {:?} against {:?}", shared.i(), whole.i());
        }
        steps += 1;
    }
    assert_eq!(steps, 4, "every descending step can be shared");
    assert_eq!(shared.progress(), (4, 5), "the last step (the readout's solve) is not shared");
    assert!(shared.start_shared(&frozen, 12).unwrap_err().to_string().contains("only a joint step"));
    let mut again = StepFit::new(&frozen, &small, &config, 0).unwrap();
    assert!(again.start_shared(&frozen, 25).unwrap_err().to_string().contains("rows 1..25"));
    let fixed = StepFit::new(&frozen, &small, &EpisodeConfig { fixed: Some(vec![1.0, 0.0]), ..config }, 0).unwrap();
    assert_eq!(fixed.shareable_rows(), None, "a fixed i has no joint step");
}

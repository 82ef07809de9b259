//! Few-shot episodes (docs/method.md, "Downstream"): N-way K-shot with Q queries per class, the readout
//! fitted on the N*K support images alone and the descriptor `i` learned per episode (start 0.5).
//!
//! Where a learned `i` starts: `i_init` in every entry (the paper: 0.5), or, with `start_corners`,
//! the corner whose features give the smallest closed-form leave-one-out error of a ridge readout
//! on the support set itself: the few-shot counterpart of choosing the start on a validation split
//! (`ail fit --i-init best-corner`), which a support set of a few images per class cannot spare.
//! With one image per class leaving one out removes its class, so the choice needs two shots.
//!
//! Readouts:
//! - `Ridge`: ridge regression on one-hot targets over L2-normalised features; `i` descends the
//!   closed-form leave-one-out error of that regression (differentiable through the features), the
//!   penalty is chosen from a grid by the same LOO error at the start of the episode;
//! - `Logistic`: a linear softmax head trained on the support set jointly with `i` (Adam) for
//!   `steps` steps, then alone (100 steps in all at least).

use serde::{Deserialize, Serialize};

use crate::CoreError;
use crate::fit::{Split, Targets, permutation};
use crate::frozen::Frozen;
use crate::{metrics, ridge};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FewShotReadout {
    Ridge,
    Logistic,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeConfig {
    pub ways: usize,
    pub shots: usize,
    pub queries: usize,
    pub readout: FewShotReadout,
    /// Adam steps on `i` per episode (0 keeps the start value).
    pub steps: usize,
    pub i_lr: f64,
    pub i_init: f32,
    /// Start `i` at the one of these descriptors (the trained corners) with the smallest
    /// leave-one-out ridge error on the support set, and learn it from there (with `steps` 0 it
    /// stays: the corner chosen per episode); overrides `i_init` (see [`best_loo_start`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_corners: Option<Vec<Vec<f32>>>,
    /// Keep `i` fixed at this value.
    pub fixed: Option<Vec<f32>>,
    /// Ridge penalties to choose from by LOO error.
    pub lambdas: Vec<f64>,
    /// Logistic head: learning rate.
    pub lr: f64,
}

impl Default for EpisodeConfig {
    fn default() -> Self {
        Self {
            ways: 5,
            shots: 1,
            queries: 15,
            readout: FewShotReadout::Ridge,
            steps: 20,
            i_lr: 0.05,
            i_init: 0.5,
            start_corners: None,
            fixed: None,
            lambdas: vec![0.01, 0.1, 1.0, 10.0],
            lr: 0.01,
        }
    }
}

/// One episode's images: indices into the data set and episode labels `0..ways`.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    pub support: Vec<usize>,
    pub support_labels: Vec<u32>,
    pub query: Vec<usize>,
    pub query_labels: Vec<u32>,
}

/// Draws episode `index` of `seed`: `ways` classes with at least `shots + queries` images each,
/// then `shots` support and `queries` query images from each.
pub fn sample_episode(labels: &[u32], ways: usize, shots: usize, queries: usize, seed: u64, index: u64) -> Result<Episode, CoreError> {
    let classes = labels.iter().copied().max().map_or(0, |m| m as usize + 1);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        members[l as usize].push(i);
    }
    let eligible: Vec<usize> = (0..classes).filter(|&c| members[c].len() >= shots + queries).collect();
    if eligible.len() < ways || shots == 0 || queries == 0 {
        return Err(CoreError::Config(format!(
            "{ways}-way {shots}-shot episodes with {queries} queries need {ways} classes of at least {} images; the data has {} such classes",
            shots + queries,
            eligible.len()
        )));
    }
    let seed = seed ^ 0xe915_0de5;
    let chosen = permutation(eligible.len(), seed, index);
    let mut e = Episode { support: Vec::new(), support_labels: Vec::new(), query: Vec::new(), query_labels: Vec::new() };
    for (w, &c) in chosen[..ways].iter().enumerate() {
        let class = &members[eligible[c]];
        let order = permutation(class.len(), seed ^ (eligible[c] as u64 + 1).wrapping_mul(0x9e37_79b9), index);
        for (k, &o) in order[..shots + queries].iter().enumerate() {
            if k < shots {
                e.support.push(class[o]);
                e.support_labels.push(w as u32);
            } else {
                e.query.push(class[o]);
                e.query_labels.push(w as u32);
            }
        }
    }
    Ok(e)
}

/// What one episode gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeResult {
    pub accuracy: f64,
    /// The descriptor the readout used (learned or fixed).
    pub i: Vec<f32>,
    /// The corner chosen for this episode among `start_corners`, where `i` started (and stayed,
    /// with no steps on `i`); absent when no corner was chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Vec<f32>>,
    /// Ridge penalty (ridge readout).
    pub lambda: Option<f64>,
}

fn normalised(f: &mut [f32], d: usize) {
    for row in f.chunks_exact_mut(d) {
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= n);
    }
}

/// Ridge regression from L2-normalised features of `split` to `y` (`[n, m]`), with `i` learned by
/// descending the closed-form LOO error (`config.steps` Adam steps from the start, unless
/// `config.fixed`) and the penalty chosen from `config.lambdas` by LOO error at the start: a
/// [`StepFit`] with the ridge readout, run to its end.
pub fn learn_ridge(frozen: &Frozen, split: &Split, y: &[f32], m: usize, config: &EpisodeConfig) -> Result<LearnedRidge, CoreError> {
    let config = EpisodeConfig { readout: FewShotReadout::Ridge, ..config.clone() };
    let mut fit = StepFit::with_rows(frozen, split, y.to_vec(), m, &config, 0)?;
    while fit.step(frozen)? {}
    let (readout, lambda) = (fit.ridge_readout(frozen)?, fit.lambda().expect("a ridge fit"));
    Ok(LearnedRidge { i: fit.i().to_vec(), start: fit.start().to_vec(), lambda, readout })
}

/// What [`learn_ridge`] gives: the descriptor, where it started, the penalty and the readout
/// (fitted at that descriptor).
pub struct LearnedRidge {
    pub i: Vec<f32>,
    pub start: Vec<f32>,
    pub lambda: f64,
    pub readout: ridge::Ridge,
}

/// The start to report: the one chosen per episode among `start_corners`, if any was.
fn chosen(config: &EpisodeConfig, start: Vec<f32>) -> Option<Vec<f32>> {
    (config.start_corners.is_some() && config.fixed.is_none() && !start.is_empty()).then_some(start)
}

/// Where `i` starts on `split` (targets `y`, `[n, m]`): the fixed descriptor, the best of
/// `config.start_corners` by [`best_loo_start`] (with no steps on `i`, it stays there: the
/// corner chosen on the support set, the fixed readout's fair baseline), or `config.i_init`.
fn start(frozen: &Frozen, split: &Split, y: &[f32], m: usize, config: &EpisodeConfig) -> Result<Vec<f32>, CoreError> {
    match &config.start_corners {
        Some(corners) if config.fixed.is_none() && frozen.num_invariances() > 0 => Ok(best_loo_start(frozen, split, y, m, corners, &config.lambdas)?.0),
        _ => frozen.start_descriptor(config.fixed.as_deref(), config.i_init),
    }
}

/// Of `candidates`, the descriptor at which a ridge readout of `split`'s features to `y` (`[n, m]`)
/// has the smallest closed-form leave-one-out mean squared error (each candidate with its own best
/// penalty of `lambdas`); returns it with every candidate's error, in order. Ties go to the first.
pub fn best_loo_start(frozen: &Frozen, split: &Split, y: &[f32], m: usize, candidates: &[Vec<f32>], lambdas: &[f64]) -> Result<(Vec<f32>, Vec<f64>), CoreError> {
    if candidates.is_empty() {
        return Err(CoreError::Config("no descriptors to choose a start from".into()));
    }
    let (n, d) = (split.len(), frozen.feature_dim());
    let mut errors = Vec::with_capacity(candidates.len());
    for c in candidates {
        frozen.check_descriptor(c)?;
        errors.push(ridge::select_lambda(&normalised_features(frozen, split, c), y, n, d, m, lambdas)?.1);
    }
    let best = (0..candidates.len()).fold(0, |b, j| if errors[j] < errors[b] { j } else { b });
    Ok((candidates[best].clone(), errors))
}

/// L2-normalised features of `split` at `i` (`[n, D]` on the host), as the ridge readouts use them.
pub fn normalised_features(frozen: &Frozen, split: &Split, i: &[f32]) -> Vec<f32> {
    let mut f = frozen.features_u8(&split.pixels, split.len(), split.shape, i);
    normalised(&mut f, frozen.feature_dim());
    f
}

/// Runs one episode on `support` and `query` (targets: episode classes `0..ways`).
pub fn run_episode(frozen: &Frozen, support: &Split, query: &Split, config: &EpisodeConfig, seed: u64) -> Result<EpisodeResult, CoreError> {
    let ways = support.targets.outputs();
    let (Targets::Classes { .. }, Targets::Classes { labels: query_labels, .. }) = (&support.targets, &query.targets) else {
        return Err(CoreError::Config("few-shot episodes need class targets".into()));
    };
    // One-hot targets: the class rows `StepFit::new` makes.
    let mut fit = StepFit::new(frozen, support, config, seed)?;
    while fit.step(frozen)? {}
    let scores: Vec<f32> = fit.predict(frozen, query)?.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 scores");
    let predicted = metrics::argmax_rows(&scores, ways);
    Ok(EpisodeResult { accuracy: metrics::accuracy(&predicted, query_labels), i: fit.i().to_vec(), start: chosen(config, fit.start().to_vec()), lambda: fit.lambda() })
}

mod step;
pub use step::{FeaturePart, PendingStep, SharedLoss, StepFit};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn episodes_are_disjoint_balanced_and_reproducible() {
        // 6 classes of 5 images, one class too small.
        let mut labels: Vec<u32> = (0..30).map(|i| (i / 5) as u32).collect();
        labels.push(6);
        let e = sample_episode(&labels, 3, 2, 3, 7, 0).unwrap();
        assert_eq!(e.support.len(), 6);
        assert_eq!(e.query.len(), 9);
        for w in 0..3u32 {
            assert_eq!(e.support_labels.iter().filter(|&&l| l == w).count(), 2);
            assert_eq!(e.query_labels.iter().filter(|&&l| l == w).count(), 3);
        }
        // Support and query never share an image; each episode class maps to one data class.
        assert!(e.support.iter().all(|s| !e.query.contains(s)));
        for (idx, l) in e.support.iter().zip(&e.support_labels).chain(e.query.iter().zip(&e.query_labels)) {
            let first = e.support[(*l as usize) * 2];
            assert_eq!(labels[*idx], labels[first]);
            assert_ne!(labels[*idx], 6);
        }
        assert_eq!(e, sample_episode(&labels, 3, 2, 3, 7, 0).unwrap());
        assert_ne!(e, sample_episode(&labels, 3, 2, 3, 7, 1).unwrap());
        let err = sample_episode(&labels, 7, 2, 3, 7, 0).unwrap_err().to_string();
        assert!(err.contains("6 such classes"), "{err}");
    }
}

//! Downstream fitting (docs/method.md, "Downstream"): a linear head and the descriptor `i` learned
//! jointly on a frozen encoder, with the head trained by AdamW and `i` by Adam (lr 0.01, start 0.5,
//! projected onto [0, 1] after every step). Gradients reach `i` through the generated weights of
//! every block, so each step back-propagates through the frozen backbone. With a fixed descriptor
//! (or a plain encoder) the features are computed once and only the head is trained: the linear
//! readout baseline.
//!
//! The epoch is chosen on the validation split: the state (head and `i`) after the epoch with the
//! best validation score is kept.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::CoreError;
use crate::frozen::Frozen;
use crate::loss::cross_entropy_one_hot;
use crate::metrics;

/// What a task predicts.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// One class per sample.
    Classes { labels: Vec<u32>, classes: usize },
    /// `outputs` real values per sample, row-major.
    Values { values: Vec<f32>, outputs: usize },
}

impl Targets {
    pub fn len(&self) -> usize {
        match self {
            Targets::Classes { labels, .. } => labels.len(),
            Targets::Values { values, outputs } => values.len() / outputs.max(&1),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Outputs of the head: classes or regression outputs.
    pub fn outputs(&self) -> usize {
        match self {
            Targets::Classes { classes, .. } => *classes,
            Targets::Values { outputs, .. } => *outputs,
        }
    }

    pub fn subset(&self, indices: &[usize]) -> Self {
        match self {
            Targets::Classes { labels, classes } => {
                Targets::Classes { labels: indices.iter().map(|&i| labels[i]).collect(), classes: *classes }
            }
            Targets::Values { values, outputs } => Targets::Values {
                values: indices.iter().flat_map(|&i| values[i * outputs..(i + 1) * outputs].iter().copied()).collect(),
                outputs: *outputs,
            },
        }
    }
}

/// Images (`u8`, `[n, C, H, W]`) with their targets.
#[derive(Debug, Clone)]
pub struct Split {
    pub pixels: Vec<u8>,
    pub shape: [usize; 3],
    pub targets: Targets,
    /// Where each image came from (file path, zip entry, `file#record`), one per image; empty
    /// when unknown.
    pub sources: Vec<String>,
}

impl Split {
    /// A split whose images' sources are not recorded.
    pub fn new(pixels: Vec<u8>, shape: [usize; 3], targets: Targets) -> Self {
        Self { pixels, shape, targets, sources: Vec::new() }
    }

    /// Where image `index` came from (`#index` when unknown).
    pub fn source(&self, index: usize) -> String {
        self.sources.get(index).cloned().unwrap_or_else(|| format!("#{index}"))
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The splits one after the other (one shape and one kind of target; `parts` not empty).
    pub fn concat(parts: &[&Split]) -> Self {
        let first = parts.first().expect("at least one split");
        assert!(parts.iter().all(|p| p.shape == first.shape), "splits of one shape");
        let targets = match &first.targets {
            Targets::Classes { classes, .. } => Targets::Classes {
                labels: parts
                    .iter()
                    .flat_map(|p| match &p.targets {
                        Targets::Classes { labels, .. } => labels.iter().copied(),
                        Targets::Values { .. } => panic!("splits of one kind of target"),
                    })
                    .collect(),
                classes: *classes,
            },
            Targets::Values { outputs, .. } => Targets::Values {
                values: parts
                    .iter()
                    .flat_map(|p| match &p.targets {
                        Targets::Values { values, .. } => values.iter().copied(),
                        Targets::Classes { .. } => panic!("splits of one kind of target"),
                    })
                    .collect(),
                outputs: *outputs,
            },
        };
        let sources =
            if parts.iter().all(|p| p.sources.len() == p.len()) { parts.iter().flat_map(|p| p.sources.iter().cloned()).collect() } else { Vec::new() };
        Self { pixels: parts.iter().flat_map(|p| p.pixels.iter().copied()).collect(), shape: first.shape, targets, sources }
    }

    pub fn subset(&self, indices: &[usize]) -> Self {
        let len = self.shape.iter().product::<usize>();
        Self {
            pixels: indices.iter().flat_map(|&i| self.pixels[i * len..(i + 1) * len].iter().copied()).collect(),
            shape: self.shape,
            targets: self.targets.subset(indices),
            sources: if self.sources.is_empty() { Vec::new() } else { indices.iter().map(|&i| self.sources[i].clone()).collect() },
        }
    }
}

/// Settings of one fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Learning rate of the head (AdamW).
    pub lr: f64,
    pub weight_decay: f64,
    /// Learning rate of `i` (Adam).
    pub i_lr: f64,
    /// Initial value of every entry of `i`.
    pub i_init: f32,
    /// Where `i` starts when learned, entry by entry (overrides `i_init`): a corner chosen on
    /// validation, say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub i_start: Option<Vec<f32>>,
    /// Keep `i` at this value and train the head alone.
    pub fixed: Option<Vec<f32>>,
    pub seed: u64,
    /// Epochs of the head alone at the start descriptor (features computed once) before the joint
    /// epochs; 0 learns both from the first step.
    #[serde(default)]
    pub warm_start_epochs: usize,
    /// How the gradient in `i` treats per-descriptor BatchNorm statistics (fits saved before the
    /// choice existed held them).
    #[serde(default = "DescriptorGradient::held")]
    pub i_gradient: DescriptorGradient,
}

/// How a joint fit's gradient in `i` treats BatchNorm statistics that are recomputed at each
/// descriptor (with shared statistics, which do not move with `i`, both are the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum DescriptorGradient {
    /// Each batch is normalised with its own statistics, computed in the graph: the derivative
    /// includes how the statistics move with `i`. Scores are still read with the calibrated
    /// per-descriptor statistics.
    #[default]
    BatchStatistics,
    /// The statistics of `i`'s lattice point are held fixed: the partial derivative, blind to the
    /// statistics (which is how fits were computed before; measured to point away from the
    /// right corner in parts of the dial).
    HeldStatistics,
}

impl DescriptorGradient {
    fn held() -> Self {
        DescriptorGradient::HeldStatistics
    }

    /// `frozen`'s features of `x01` at `i_t` (value `i`) for a gradient in `i` of this kind.
    pub fn features(self, frozen: &Frozen, x01: Tensor<4>, i_t: Tensor<1>, i: &[f32]) -> Tensor<2> {
        match self {
            DescriptorGradient::BatchStatistics => frozen.features_with_grad_through_statistics(x01, i_t, i),
            DescriptorGradient::HeldStatistics => frozen.features_with_grad(x01, i_t, i),
        }
    }
}

impl Default for FitConfig {
    fn default() -> Self {
        Self { epochs: 10, batch_size: 128, lr: 1e-3, weight_decay: 0.0, i_lr: 0.01, i_init: 0.5, i_start: None, fixed: None, seed: 0, warm_start_epochs: 0, i_gradient: DescriptorGradient::default() }
    }
}

/// Scores of a head on a split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub loss: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_per_class_accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r2: Option<f64>,
}

impl Scores {
    /// The number model selection maximises: accuracy, or R^2.
    pub fn primary(&self) -> f64 {
        self.accuracy.or(self.r2).unwrap_or(f64::NEG_INFINITY)
    }
}

/// Adam on a few host values (the descriptor), then the projection onto [0, 1].
#[derive(Debug, Clone)]
pub struct DescriptorAdam {
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
    lr: f64,
}

impl DescriptorAdam {
    pub fn new(k: usize, lr: f64) -> Self {
        Self { m: vec![0.0; k], v: vec![0.0; k], t: 0, lr }
    }

    /// One step of Adam (beta 0.9 / 0.999, eps 1e-8) on `i` with gradient `g`, then clamps to [0, 1].
    pub fn step(&mut self, i: &mut [f32], g: &[f32]) {
        self.t += 1;
        let (b1, b2) = (0.9f64, 0.999f64);
        for k in 0..i.len() {
            let g = g[k] as f64;
            self.m[k] = b1 * self.m[k] + (1.0 - b1) * g;
            self.v[k] = b2 * self.v[k] + (1.0 - b2) * g * g;
            let m = self.m[k] / (1.0 - b1.powi(self.t));
            let v = self.v[k] / (1.0 - b2.powi(self.t));
            i[k] = (i[k] as f64 - self.lr * m / (v.sqrt() + 1e-8)).clamp(0.0, 1.0) as f32;
        }
    }
}

/// A fitted readout: the head and the descriptor it reads the encoder at.
#[derive(Debug, Clone)]
pub struct Readout {
    /// On the autodiff device.
    pub head: Linear,
    pub i: Vec<f32>,
    /// Regression targets are standardised for training: `(y - mean) / std` per output.
    pub target_mean: Vec<f32>,
    pub target_std: Vec<f32>,
}

impl Readout {
    /// Head outputs on the host (`[n, outputs]`): logits, or predictions in target units. `i`
    /// overrides the readout's descriptor (to score a quantised one).
    pub fn predict(&self, frozen: &Frozen, split: &Split, i: Option<&[f32]>) -> Vec<f32> {
        let i = i.unwrap_or(&self.i);
        let features = frozen.features_u8(&split.pixels, split.len(), split.shape, i);
        self.predict_features(&features, split.len(), frozen.device())
    }

    /// Head outputs (as [`Readout::predict`]) from features already computed (`[n, D]`).
    pub fn predict_features(&self, features: &[f32], n: usize, device: &Device) -> Vec<f32> {
        let head = self.head.valid();
        let inner = device.clone().without_autodiff();
        let x = Tensor::<1>::from_floats(features, &inner).reshape([n, features.len() / n.max(1)]);
        let mut out: Vec<f32> = head.forward(x).into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 outputs");
        if !self.target_mean.is_empty() {
            let m = self.target_mean.len();
            for (k, v) in out.iter_mut().enumerate() {
                *v = *v * self.target_std[k % m] + self.target_mean[k % m];
            }
        }
        out
    }

    /// Loss and metrics on `split` (at `i`, or the readout's own descriptor).
    pub fn score(&self, frozen: &Frozen, split: &Split, i: Option<&[f32]>) -> Scores {
        let out = self.predict(frozen, split, i);
        score_outputs(&out, &split.targets, &self.target_std)
    }

    /// The head's weights and biases (a fit that learns `i` updates `K` more).
    pub fn head_parameters(&self) -> usize {
        self.head.num_params()
    }

    /// The head as `(weight [outputs, features], bias [outputs])`, row-major: PyTorch's
    /// `nn.Linear` layout (burn keeps the transpose).
    pub fn weights(&self) -> (Vec<f32>, Vec<f32>) {
        let host = |t: Tensor<2>| t.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 weights");
        let w = host(self.head.weight.val().transpose());
        let b = self.head.bias.as_ref().map(|b| b.val().into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 bias"));
        let outputs = self.head.weight.dims()[1];
        (w, b.unwrap_or_else(|| vec![0.0; outputs]))
    }

    /// A readout from [`Readout::weights`]' layout, on `device`.
    pub fn from_weights(weight: &[f32], bias: &[f32], i: Vec<f32>, target_mean: Vec<f32>, target_std: Vec<f32>, device: &Device) -> Result<Self, CoreError> {
        let outputs = bias.len();
        if outputs == 0 || !weight.len().is_multiple_of(outputs) {
            return Err(CoreError::Config(format!("a head of {} weights and {outputs} biases has no [outputs, features] shape", weight.len())));
        }
        let features = weight.len() / outputs;
        let mut head = LinearConfig::new(features, outputs).init(device);
        let w = Tensor::<2>::from_data(TensorData::new(weight.to_vec(), [outputs, features]), device).transpose();
        head.weight = burn::module::Param::from_tensor(w);
        head.bias = Some(burn::module::Param::from_tensor(Tensor::<1>::from_data(TensorData::new(bias.to_vec(), [outputs]), device)));
        Ok(Self { head, i, target_mean, target_std })
    }
}

/// Scores of head outputs (logits, or predictions in target units).
pub fn score_outputs(out: &[f32], targets: &Targets, std: &[f32]) -> Scores {
    match targets {
        Targets::Classes { labels, classes } => {
            let predicted = metrics::argmax_rows(out, *classes);
            let loss = out
                .chunks_exact(*classes)
                .zip(labels)
                .map(|(row, &l)| {
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                    let lse = max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
                    lse - row[l as usize] as f64
                })
                .sum::<f64>()
                / labels.len().max(1) as f64;
            Scores {
                loss,
                accuracy: Some(metrics::accuracy(&predicted, labels)),
                mean_per_class_accuracy: Some(metrics::mean_per_class_accuracy(&predicted, labels)),
                r2: None,
            }
        }
        Targets::Values { values, outputs } => {
            // The loss is the MSE in standardised units, as trained.
            let loss = out
                .iter()
                .zip(values)
                .enumerate()
                .map(|(k, (p, t))| (((p - t) / std.get(k % outputs).copied().unwrap_or(1.0)) as f64).powi(2))
                .sum::<f64>()
                / values.len().max(1) as f64;
            Scores { loss, accuracy: None, mean_per_class_accuracy: None, r2: Some(metrics::r2_score(values, out, *outputs)) }
        }
    }
}

/// The result of [`fit`].
#[derive(Debug, Clone)]
pub struct FitRun {
    /// The state after the best validation epoch.
    pub best: Readout,
    /// 1-based epoch of `best`.
    pub best_epoch: usize,
    pub val: Scores,
    /// `i` after each epoch (the first entry is the start).
    pub trajectory: Vec<Vec<f32>>,
    /// Mean training loss of each epoch.
    pub train_loss: Vec<f64>,
    /// Validation score (accuracy or R^2) after each epoch.
    pub val_scores: Vec<f64>,
    /// Whether `i` was learned.
    pub learned_i: bool,
}

/// Deterministic permutation of `0..n` for `(seed, epoch)` (Fisher-Yates on splitmix64).
pub fn permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = crate::sampler::splitmix64(seed ^ crate::sampler::splitmix64(epoch.wrapping_add(0x9e37)));
    for k in (1..n).rev() {
        state = crate::sampler::splitmix64(state);
        order.swap(k, (state % (k as u64 + 1)) as usize);
    }
    order
}

/// The training targets as `[n, outputs]` rows (row-major): one-hot classes, or values
/// standardised with `mean` and `std`.
pub fn target_rows(targets: &Targets, mean: &[f32], std: &[f32]) -> Vec<f32> {
    match targets {
        Targets::Classes { labels, classes } => {
            let mut rows = vec![0f32; labels.len() * classes];
            for (r, &l) in labels.iter().enumerate() {
                rows[r * classes + l as usize] = 1.0;
            }
            rows
        }
        Targets::Values { values, outputs } => {
            values.iter().enumerate().map(|(k, v)| (v - mean[k % outputs]) / std[k % outputs]).collect()
        }
    }
}

/// Per-output mean and standard deviation of regression targets (empty for classes): targets are
/// trained as `(y - mean) / std`.
pub fn standardisation(targets: &Targets) -> (Vec<f32>, Vec<f32>) {
    match targets {
        Targets::Classes { .. } => (Vec::new(), Vec::new()),
        Targets::Values { values, outputs } => {
            let n = targets.len().max(1) as f64;
            (0..*outputs)
                .map(|o| {
                    let col: Vec<f64> = values.iter().skip(o).step_by(*outputs).map(|&v| v as f64).collect();
                    let mean = col.iter().sum::<f64>() / n;
                    let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
                    (mean as f32, var.sqrt().max(1e-6) as f32)
                })
                .unzip()
        }
    }
}

/// Loss of the head on a batch of features against its target rows.
fn batch_loss(targets: &Targets, out: Tensor<2>, rows: Tensor<2>) -> Tensor<1> {
    match targets {
        Targets::Classes { .. } => cross_entropy_one_hot(out, rows),
        Targets::Values { .. } => (out - rows).powf_scalar(2.0).mean(),
    }
}

/// The training loss of `readout` on `split` (one batch) at descriptor `i`, and its gradient in
/// `i` (by back-propagation through the frozen encoder), as a joint fit computes them with `kind`.
pub fn loss_and_descriptor_gradient(frozen: &Frozen, readout: &Readout, split: &Split, i: &[f32], kind: DescriptorGradient) -> (f64, Vec<f32>) {
    let device = frozen.device();
    let rows = target_rows(&split.targets, &readout.target_mean, &readout.target_std);
    let m = split.targets.outputs();
    let rows = Tensor::<1>::from_floats(rows.as_slice(), device).reshape([split.len(), m]);
    let i_t = Tensor::<1>::from_floats(i, device).require_grad();
    let x = Frozen::upload_u8(&split.pixels, split.len(), split.shape, device);
    let out = readout.head.forward(kind.features(frozen, x, i_t.clone(), i));
    let loss = batch_loss(&split.targets, out, rows);
    let value = loss.clone().into_scalar::<f32>() as f64;
    let grads = loss.backward();
    let g = i_t.grad(&grads).map(|g| g.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 grad")).unwrap_or_else(|| vec![0.0; i.len()]);
    (value, g)
}

/// Fits a head (and `i`, unless `config.fixed` or a plain encoder) on `train`, choosing the epoch on
/// `val`. `progress(epoch, batches done in the epoch, batches per epoch)` is called after each batch.
pub fn fit(
    frozen: &Frozen,
    train: &Split,
    val: &Split,
    config: &FitConfig,
    progress: &mut dyn FnMut(usize, usize, usize),
) -> Result<FitRun, CoreError> {
    fit_from(frozen, train, val, config, None, progress)
}

/// [`fit`] starting from a given head (its `i` is ignored: `config` sets the start) instead of a
/// freshly initialised one.
pub fn fit_from(
    frozen: &Frozen,
    train: &Split,
    val: &Split,
    config: &FitConfig,
    initial: Option<&Readout>,
    progress: &mut dyn FnMut(usize, usize, usize),
) -> Result<FitRun, CoreError> {
    let bad = |m: String| CoreError::Config(m);
    if train.is_empty() || val.is_empty() {
        return Err(bad(format!("fitting needs training and validation samples (got {} and {})", train.len(), val.len())));
    }
    if config.epochs == 0 || config.batch_size == 0 {
        return Err(bad("epochs and batch size must be at least 1".into()));
    }
    let k = frozen.num_invariances();
    let learn = config.fixed.is_none() && k > 0;
    let mut i = match (&config.fixed, &config.i_start) {
        (None, Some(start)) if k > 0 => {
            frozen.check_descriptor(start)?;
            start.clone()
        }
        _ => frozen.start_descriptor(config.fixed.as_deref(), config.i_init)?,
    };
    let device = frozen.device().clone();
    device.seed(config.seed);
    let (d, m) = (frozen.feature_dim(), train.targets.outputs());
    let (mean, std) = standardisation(&train.targets);
    let mut head = match initial {
        Some(r) => r.head.clone(),
        None => LinearConfig::new(d, m).init(&device),
    };
    let mut optim = crate::kernels::adamw(crate::kernels::AdamWHyper { weight_decay: config.weight_decay as f32, ..Default::default() }, None);
    let mut adam = DescriptorAdam::new(k, config.i_lr);
    let rows_all = target_rows(&train.targets, &mean, &std);
    // Fixed descriptor: features once.
    // Features at the start descriptor, computed once, for the epochs that train the head alone
    // (all of them with a fixed descriptor; the warm start otherwise).
    let warm = if learn { config.warm_start_epochs } else { 0 };
    let head_alone = !learn || warm > 0;
    let cached = head_alone.then(|| frozen.features_u8(&train.pixels, train.len(), train.shape, &i));
    let val_cached = head_alone.then(|| frozen.features_u8(&val.pixels, val.len(), val.shape, &i));
    let len = train.shape.iter().product::<usize>();
    let batches = train.len().div_ceil(config.batch_size);
    let mut run = FitRun {
        best: Readout { head: head.clone(), i: i.clone(), target_mean: mean.clone(), target_std: std.clone() },
        best_epoch: 0,
        val: Scores { loss: f64::INFINITY, accuracy: None, mean_per_class_accuracy: None, r2: None },
        trajectory: vec![i.clone()],
        train_loss: Vec::new(),
        val_scores: Vec::new(),
        learned_i: learn,
    };
    let mut best_score = f64::NEG_INFINITY;
    for epoch in 1..=warm + config.epochs {
        let joint = learn && epoch > warm;
        let order = permutation(train.len(), config.seed, epoch as u64);
        // The loss stays on the device until the epoch ends (one host read per epoch).
        let mut total = Tensor::<1>::zeros([1], &device);
        for (b, chunk) in order.chunks(config.batch_size).enumerate() {
            let rows: Vec<f32> = chunk.iter().flat_map(|&r| rows_all[r * m..(r + 1) * m].iter().copied()).collect();
            let rows = Tensor::<1>::from_floats(rows.as_slice(), &device).reshape([chunk.len(), m]);
            let i_t = Tensor::<1>::from_floats(i.as_slice(), &device).require_grad();
            let features = match cached.as_ref().filter(|_| !joint) {
                Some(f) => {
                    let sel: Vec<f32> = chunk.iter().flat_map(|&r| f[r * d..(r + 1) * d].iter().copied()).collect();
                    Tensor::<1>::from_floats(sel.as_slice(), &device).reshape([chunk.len(), d])
                }
                None => {
                    let pixels: Vec<u8> = chunk.iter().flat_map(|&r| train.pixels[r * len..(r + 1) * len].iter().copied()).collect();
                    let x = Frozen::upload_u8(&pixels, chunk.len(), train.shape, &device);
                    config.i_gradient.features(frozen, x, i_t.clone(), &i)
                }
            };
            let loss = batch_loss(&train.targets, head.forward(features), rows);
            total = total + loss.clone().detach() * chunk.len() as f32;
            let mut grads = loss.backward();
            if joint {
                if let Some(g) = i_t.grad_remove(&mut grads) {
                    let g: Vec<f32> = g.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 grad");
                    adam.step(&mut i, &g);
                }
            }
            let head_grads = GradientsParams::from_grads(grads, &head);
            head = optim.step(config.lr, head, head_grads);
            progress(epoch, b + 1, batches);
        }
        let total = total.into_scalar::<f32>() as f64;
        if !total.is_finite() {
            return Err(CoreError::Numeric(format!("the training loss became {total} in epoch {epoch}: lower --lr (now {})", config.lr)));
        }
        run.train_loss.push(total / train.len() as f64);
        run.trajectory.push(i.clone());
        let readout = Readout { head: head.clone(), i: i.clone(), target_mean: mean.clone(), target_std: std.clone() };
        let scores = match val_cached.as_ref().filter(|_| !joint) {
            Some(f) => score_outputs(&readout.predict_features(f, val.len(), &device), &val.targets, &std),
            None => readout.score(frozen, val, None),
        };
        run.val_scores.push(scores.primary());
        if scores.primary() > best_score {
            best_score = scores.primary();
            run.best = readout;
            run.best_epoch = epoch;
            run.val = scores;
        }
    }
    if run.best_epoch == 0 {
        return Err(CoreError::Numeric(format!(
            "no epoch gave a finite validation score (the last: {:?}): lower --lr (now {})",
            run.val_scores.last(),
            config.lr
        )));
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenated_splits_keep_every_image_with_its_target_in_order() {
        let a = Split {
            sources: vec!["a0.png".into(), "a1.png".into()],
            ..Split::new(vec![1, 2, 3, 4], [1, 1, 2], Targets::Classes { labels: vec![0, 2], classes: 3 })
        };
        let b = Split { sources: vec!["b0.png".into()], ..Split::new(vec![5, 6], [1, 1, 2], Targets::Classes { labels: vec![1], classes: 3 }) };
        let all = Split::concat(&[&a, &b]);
        assert_eq!(all.pixels, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(all.targets, Targets::Classes { labels: vec![0, 2, 1], classes: 3 });
        assert_eq!(all.sources, vec!["a0.png", "a1.png", "b0.png"]);
        assert_eq!(all.subset(&[2]).pixels, b.pixels);
        assert_eq!(all.subset(&[2, 0]).sources, vec!["b0.png", "a0.png"]);
        let v = Split::new(vec![9, 9], [1, 1, 2], Targets::Values { values: vec![0.5, -1.0], outputs: 2 });
        let c = Split::new(vec![7, 7], [1, 1, 2], Targets::Classes { labels: vec![0], classes: 3 });
        assert_eq!(Split::concat(&[&a, &c]).sources, Vec::<String>::new(), "unknown sources stay unknown");
        assert_eq!(v.source(0), "#0");
        assert_eq!(Split::concat(&[&v, &v]).targets, Targets::Values { values: vec![0.5, -1.0, 0.5, -1.0], outputs: 2 });
    }
}

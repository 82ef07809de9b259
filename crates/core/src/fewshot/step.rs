//! A few-shot readout one step at a time ([`StepFit`]: the browser page's fit, and
//! [`super::run_episode`]'s), and a joint step shared between two workers ([`FeaturePart`],
//! [`StepFit::start_shared`]).

use burn::module::Module;
use burn::nn::LinearConfig;
use burn::optim::GradientsParams;
use burn::prelude::*;

use super::{EpisodeConfig, FewShotReadout, normalised_features, start};
use crate::CoreError;
use crate::fit::{DescriptorAdam, Split, Targets};
use crate::frozen::Frozen;
use crate::loss::{cross_entropy_one_hot, normalize_rows};
use crate::ridge;

/// The tensors one [`StepFit`] step leaves to read: the batch loss, and the gradient in `i` while
/// `i` is learned. A caller that cannot block (a browser page) reads them asynchronously and hands
/// the gradient to [`StepFit::finish_step`].
pub struct PendingStep {
    pub loss: Tensor<1>,
    pub i_grad: Option<Tensor<1>>,
}

/// An episode's readout, one step at a time, on the L2-normalised features of the support set:
/// - logistic ([`FewShotReadout::Logistic`]): a linear head (outputs scaled by 10) trained by AdamW,
///   jointly with `i` (Adam, projected onto [0, 1]) for `config.steps` steps, then alone on the
///   features at the final `i` until 100 steps in all. Class targets train by cross-entropy; value
///   targets (a regression episode) by mean squared error on targets standardised with the
///   support's mean and deviation.
/// - ridge ([`FewShotReadout::Ridge`]): `i` descends the closed-form leave-one-out error of a ridge
///   readout (the penalty chosen from `config.lambdas` by that error at the start) for
///   `config.steps` steps; one last step measures that error at the final `i`, where the readout is
///   then solved in closed form. A fixed `i` takes that last step only.
///
/// Each step's loss is the readout's training loss (ridge: the leave-one-out error, which the
/// support set alone gives). [`run_episode`] runs a fit to the end; the browser page runs it step by
/// step, drawing as it goes.
pub struct StepFit {
    learn: bool,
    joint_steps: usize,
    total: usize,
    done: usize,
    i: Vec<f32>,
    start: Vec<f32>,
    adam: DescriptorAdam,
    head: Head,
    /// The support images on the device, for the steps that compute features with a graph (a
    /// learned `i`, or the logistic head's settled features); a fixed ridge fit reads host features.
    x: Option<Tensor<4>>,
    y: Tensor<2>,
    classes: bool,
    mean: Vec<f32>,
    std: Vec<f32>,
    settled: Option<Tensor<2>>,
    pending: bool,
}

/// The readout a [`StepFit`] trains.
enum Head {
    Logistic { head: burn::nn::Linear, optim: burn::optim::ModuleOptimizer, lr: f64 },
    /// The support split and its targets on the host (`[n, m]`), for the closed-form readout, and
    /// that readout once solved at the final `i`.
    Ridge { lambda: f64, support: Box<Split>, rows: Vec<f32>, readout: Option<ridge::Ridge> },
}

/// The fixed scale of the head's outputs on unit-norm features.
const LOGIT_SCALE: f32 = 10.0;

impl StepFit {
    /// A fit on `support` (class or value targets) under `config` (`readout`, `steps`, `i_lr`,
    /// `i_init`, `start_corners`, `fixed`, `lr`, `lambdas`), a logistic head initialised from `seed`.
    pub fn new(frozen: &Frozen, support: &Split, config: &EpisodeConfig, seed: u64) -> Result<Self, CoreError> {
        let (mean, std) = crate::fit::standardisation(&support.targets);
        let rows = crate::fit::target_rows(&support.targets, &mean, &std);
        Self::with_rows(frozen, support, rows, support.targets.outputs(), config, seed)
    }

    /// [`StepFit::new`] with the training targets given (`[n, m]`: one-hot classes, or values
    /// standardised with the support's mean and deviation).
    pub(super) fn with_rows(frozen: &Frozen, support: &Split, rows: Vec<f32>, m: usize, config: &EpisodeConfig, seed: u64) -> Result<Self, CoreError> {
        if support.is_empty() {
            return Err(CoreError::Config("the support set is empty".into()));
        }
        let k = frozen.num_invariances();
        let learn = config.fixed.is_none() && k > 0 && config.steps > 0;
        let device = frozen.device().clone();
        let (d, n) = (frozen.feature_dim(), support.len());
        let (mean, std) = crate::fit::standardisation(&support.targets);
        let i = start(frozen, support, &rows, m, config)?;
        let y = Tensor::<1>::from_floats(rows.as_slice(), &device).reshape([n, m]);
        let joint_steps = if learn { config.steps } else { 0 };
        let (head, total) = match config.readout {
            FewShotReadout::Ridge => {
                let (lambda, _) = ridge::select_lambda(&normalised_features(frozen, support, &i), &rows, n, d, m, &config.lambdas)?;
                (Head::Ridge { lambda, support: Box::new(support.clone()), rows, readout: None }, joint_steps + 1)
            }
            FewShotReadout::Logistic => {
                // The head is drawn on the CPU backend and moved: the same start on every backend
                // (a GPU's random numbers differ from the CPU's), so that fits compare across
                // devices. burn draws a parameter lazily, at its first use, from the backend's one
                // generator per process: the draw is forced here (weight, then bias, the order of a
                // first forward), right after the seed and under a lock, so that neither a later
                // device nor another thread's draws change it.
                let head = {
                    static DRAW: std::sync::Mutex<()> = std::sync::Mutex::new(());
                    let _draw = DRAW.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    Device::flex().seed(seed);
                    let head = LinearConfig::new(d, m).init(&Device::flex().autodiff());
                    let _ = head.weight.val();
                    let _ = head.bias.as_ref().map(|b| b.val());
                    head
                }
                .fork(&device);
                let optim = crate::kernels::adamw(Default::default(), None);
                (Head::Logistic { head, optim, lr: config.lr }, config.steps.max(100))
            }
        };
        let x = (learn || config.readout == FewShotReadout::Logistic).then(|| Frozen::upload_u8(&support.pixels, n, support.shape, &device));
        let mut fit = Self {
            learn,
            joint_steps,
            total,
            done: 0,
            start: i.clone(),
            i,
            adam: DescriptorAdam::new(k, config.i_lr),
            head,
            x,
            y,
            classes: matches!(support.targets, Targets::Classes { .. }),
            mean,
            std,
            settled: None,
            pending: false,
        };
        if !learn && matches!(fit.head, Head::Logistic { .. }) {
            fit.settle(frozen);
        }
        Ok(fit)
    }

    fn support_images(&self) -> Tensor<4> {
        self.x.clone().expect("the support images are uploaded for a learned i or a logistic head")
    }

    /// Features at the current `i`, computed once for the steps that train the head alone.
    fn settle(&mut self, frozen: &Frozen) {
        let i = frozen.descriptor(&self.i, frozen.device());
        self.settled = Some(normalize_rows(frozen.features_with_grad(self.support_images(), i, &self.i)).detach());
    }

    /// The descriptor now.
    pub fn i(&self) -> &[f32] {
        &self.i
    }

    /// Where `i` started.
    pub fn start(&self) -> &[f32] {
        &self.start
    }

    /// Steps taken, and in all.
    pub fn progress(&self) -> (usize, usize) {
        (self.done, self.total)
    }

    /// Whether the next step moves `i`.
    pub fn is_joint(&self) -> bool {
        self.done < self.joint_steps
    }

    /// The ridge penalty, for a ridge fit.
    pub fn lambda(&self) -> Option<f64> {
        match &self.head {
            Head::Ridge { lambda, .. } => Some(*lambda),
            Head::Logistic { .. } => None,
        }
    }

    /// One step; `None` once all steps are done. Logistic: the head takes an AdamW step (on the
    /// features at the current `i`, with their gradient to `i` during the joint steps). Ridge: a
    /// joint step gives the leave-one-out error and its gradient to `i`; the last step measures
    /// that error at the final `i` and solves the readout there. `i` is updated by
    /// [`StepFit::finish_step`] with the gradient read.
    pub fn start_step(&mut self, frozen: &Frozen) -> Result<Option<PendingStep>, CoreError> {
        if self.done >= self.total {
            return Ok(None);
        }
        assert!(!self.pending, "finish_step must follow start_step");
        let joint = self.is_joint();
        if matches!(self.head, Head::Logistic { .. }) && !joint && self.settled.is_none() {
            self.settle(frozen);
        }
        let device = frozen.device().clone();
        // `i` as a tensor with a gradient, and the support's features through it (joint steps only).
        let i_t = || Tensor::<1>::from_floats(self.i.as_slice(), &device).require_grad();
        let joint_features = |fit: &Self, i_t: &Tensor<1>| normalize_rows(frozen.features_with_grad(fit.support_images(), i_t.clone(), &fit.i));
        let (loss, i_grad) = match &mut self.head {
            Head::Ridge { lambda, support, rows, readout } if !joint => {
                // The last step: the leave-one-out error at the final `i` (the host features the
                // readout is solved on), and the readout.
                let (n, d, m) = (support.len(), frozen.feature_dim(), self.y.dims()[1]);
                let f = normalised_features(frozen, support, &self.i);
                let r = ridge::loo_residuals(&f, rows, n, d, m, *lambda)?;
                let mse = r.iter().map(|v| v * v).sum::<f64>() / r.len().max(1) as f64;
                *readout = Some(ridge::Ridge::fit(&f, rows, n, d, m, *lambda)?);
                (Tensor::<1>::from_floats([mse as f32], &device.clone().without_autodiff()), None)
            }
            Head::Ridge { lambda, .. } => {
                let (lambda, i_t) = (*lambda, i_t());
                let loss = ridge::loo_mse(joint_features(self, &i_t), self.y.clone(), lambda)?;
                let mut grads = loss.backward();
                (loss.detach(), i_t.grad_remove(&mut grads).map(|g| g.detach()))
            }
            Head::Logistic { .. } => {
                let i_t = joint.then(i_t);
                let f = match (&self.settled, &i_t) {
                    (Some(f), None) => f.clone(),
                    (_, Some(i_t)) => joint_features(self, i_t),
                    (None, None) => unreachable!("settled above"),
                };
                let Head::Logistic { head, optim, lr } = &mut self.head else { unreachable!() };
                let out = head.forward(f) * LOGIT_SCALE;
                let loss = if self.classes { cross_entropy_one_hot(out, self.y.clone()) } else { (out - self.y.clone()).powf_scalar(2.0).mean() };
                let mut grads = loss.backward();
                let i_grad = i_t.and_then(|i_t| i_t.grad_remove(&mut grads)).map(|g| g.detach());
                let hg = GradientsParams::from_grads(grads, &*head);
                *head = optim.step(*lr, head.clone(), hg);
                (loss.detach(), i_grad)
            }
        };
        self.pending = true;
        Ok(Some(PendingStep { loss, i_grad }))
    }

    /// Completes the step [`StepFit::start_step`] began: `i_grad` (read from its `i_grad`) moves `i`.
    pub fn finish_step(&mut self, i_grad: Option<&[f32]>) {
        assert!(std::mem::take(&mut self.pending), "finish_step without start_step");
        if let Some(g) = i_grad.filter(|_| self.learn && self.done < self.joint_steps) {
            self.adam.step(&mut self.i, g);
        }
        self.done += 1;
    }

    /// One whole step, reading the gradient synchronously (native backends); false once done.
    pub fn step(&mut self, frozen: &Frozen) -> Result<bool, CoreError> {
        let Some(pending) = self.start_step(frozen)? else { return Ok(false) };
        let g = pending.i_grad.map(|g| g.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 grad"));
        self.finish_step(g.as_deref());
        Ok(true)
    }

    /// The support rows a second worker may compute in the next step: `Some(n / 2..n)` when that
    /// step is a joint step of a ridge fit on two images or more ([`StepFit::start_shared`]),
    /// `None` otherwise (a logistic fit, a fixed `i`, the last step, a finished fit).
    pub fn shareable_rows(&self) -> Option<std::ops::Range<usize>> {
        let Head::Ridge { support, .. } = &self.head else { return None };
        let n = support.len();
        (self.learn && self.is_joint() && !self.pending && n >= 2).then_some(n / 2..n)
    }

    /// A ridge fit's support images of `rows` as stored (`u8`, `[rows, C, H, W]`), with the shape
    /// of one image: what a second worker uploads to compute its share of the joint steps.
    pub fn support_pixels(&self, rows: std::ops::Range<usize>) -> Option<(&[u8], [usize; 3])> {
        let Head::Ridge { support, .. } = &self.head else { return None };
        let len: usize = support.shape.iter().product();
        (rows.start <= rows.end && rows.end <= support.len()).then(|| (&support.pixels[rows.start * len..rows.end * len], support.shape))
    }

    /// Begins a joint ridge step whose support rows `from..n` another worker computes (a
    /// [`FeaturePart`] of the same encoder and images at [`StepFit::i`]): returns this worker's
    /// part, the rows `..from`, with its graph to `i`. Then [`StepFit::shared_loss`] gives each part
    /// the gradient of the leave-one-out error in its features, each part's
    /// [`FeaturePart::backward`] turns it into a gradient in `i` (the two at the same time, one per
    /// worker), and [`StepFit::finish_step`] takes their sum: the step of [`StepFit::start_step`],
    /// computed in two halves.
    pub fn start_shared(&mut self, frozen: &Frozen, from: usize) -> Result<FeaturePart, CoreError> {
        let rows = self.shareable_rows().ok_or_else(|| CoreError::Config("only a joint step of a ridge fit can be shared".into()))?;
        if from == 0 || from >= rows.end {
            return Err(CoreError::Config(format!("a shared step splits the {} support images in two: rows 1..{} may start the second part, not {from}", rows.end, rows.end)));
        }
        let part = FeaturePart::new(frozen, self.support_images().slice([0..from]), &self.i);
        self.pending = true;
        Ok(part)
    }

    /// The leave-one-out error of a shared step ([`StepFit::start_shared`]) from this worker's
    /// `local` part and the other worker's features of the remaining rows (`remote`, `[n - from,
    /// D]` row-major, as [`FeaturePart::features`] gives them), with its gradient in each part's
    /// features. The error is the one [`StepFit::start_step`] computes on all rows at once.
    pub fn shared_loss(&self, local: &FeaturePart, remote: &[f32]) -> Result<SharedLoss, CoreError> {
        let Head::Ridge { lambda, .. } = &self.head else {
            return Err(CoreError::Config("only a joint step of a ridge fit can be shared".into()));
        };
        let ([from, d], n) = (local.features.dims(), self.y.dims()[0]);
        if remote.len() != (n - from) * d {
            return Err(CoreError::Config(format!(
                "the other worker's share: {} feature values, expected {} ({} images of {d})",
                remote.len(),
                (n - from) * d,
                n - from
            )));
        }
        let device = self.y.device();
        let a = local.features().require_grad();
        let b = Tensor::<1>::from_floats(remote, &device).reshape([n - from, d]).require_grad();
        let loss = ridge::loo_mse(Tensor::cat(vec![a.clone(), b.clone()], 0), self.y.clone(), *lambda)?;
        let mut grads = loss.backward();
        let host = |t: Option<Tensor<2>>| -> Result<Vec<f32>, CoreError> {
            let t = t.ok_or_else(|| CoreError::Config("no gradient reached the features of a shared step".into()))?;
            Ok(t.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 gradient"))
        };
        let local_grad = host(a.grad_remove(&mut grads))?;
        let remote_grad = host(b.grad_remove(&mut grads))?;
        Ok(SharedLoss { loss: loss.detach(), local: local_grad, remote: remote_grad })
    }

    /// A ridge fit's readout at the current `i` (solved by its last step, after which `i` no longer
    /// moves; solved now if that step has not been taken).
    pub fn ridge_readout(&self, frozen: &Frozen) -> Result<ridge::Ridge, CoreError> {
        let Head::Ridge { lambda, support, rows, readout } = &self.head else {
            return Err(CoreError::Config("a logistic fit has no ridge readout".into()));
        };
        match readout {
            Some(r) => Ok(r.clone()),
            None => {
                let (n, d, m) = (support.len(), frozen.feature_dim(), self.y.dims()[1]);
                ridge::Ridge::fit(&normalised_features(frozen, support, &self.i), rows, n, d, m, *lambda)
            }
        }
    }

    /// The readout's raw outputs on `query` at the current `i` (`[n, outputs]` on the inner
    /// device): logits or ridge scores, or standardised values ([`StepFit::scores`] turns them into
    /// scores).
    pub fn predict(&self, frozen: &Frozen, query: &Split) -> Result<Tensor<2>, CoreError> {
        let inner = frozen.device().clone().without_autodiff();
        match &self.head {
            Head::Logistic { head, .. } => {
                let x = Frozen::upload_u8(&query.pixels, query.len(), query.shape, &inner);
                let f = normalize_rows(frozen.features(x, &self.i));
                Ok(head.valid().forward(f) * LOGIT_SCALE)
            }
            Head::Ridge { .. } => {
                let out = self.ridge_readout(frozen)?.predict(&normalised_features(frozen, query, &self.i), query.len());
                Ok(Tensor::<1>::from_floats(out.as_slice(), &inner).reshape([query.len(), self.y.dims()[1]]))
            }
        }
    }

    /// Predictions in target units from [`StepFit::predict`]'s outputs (read to the host).
    pub fn predictions(&self, raw: &[f32]) -> Vec<f32> {
        if self.classes {
            return raw.to_vec();
        }
        let m = self.mean.len();
        raw.iter().enumerate().map(|(k, v)| v * self.std[k % m] + self.mean[k % m]).collect()
    }

    /// Accuracy, or R^2, of [`StepFit::predict`]'s outputs against `targets`.
    pub fn scores(&self, raw: &[f32], targets: &Targets) -> crate::fit::Scores {
        crate::fit::score_outputs(&self.predictions(raw), targets, &self.std)
    }
}

/// What [`StepFit::shared_loss`] gives: the leave-one-out error, and its gradient in the features
/// of this worker's rows (`local`) and of the other worker's (`remote`), row-major on the host.
#[derive(Debug)]
pub struct SharedLoss {
    pub loss: Tensor<1>,
    pub local: Vec<f32>,
    pub remote: Vec<f32>,
}

/// The L2-normalised features of some support images at `i`, with their graph to `i`: one
/// worker's share of a ridge fit's joint step ([`StepFit::start_shared`]). Each image's features
/// depend on that image alone (the encoder is frozen, BatchNorm in eval mode), so the rows can be
/// computed anywhere the same encoder is open.
#[derive(Debug)]
pub struct FeaturePart {
    i_t: Tensor<1>,
    features: Tensor<2>,
}

impl FeaturePart {
    /// The features of `x01` (`[n, C, H, W]` in [0, 1], on `frozen`'s device) at `i`.
    pub fn new(frozen: &Frozen, x01: Tensor<4>, i: &[f32]) -> Self {
        let i_t = Tensor::<1>::from_floats(i, frozen.device()).require_grad();
        let features = normalize_rows(frozen.features_with_grad(x01, i_t.clone(), i));
        Self { i_t, features }
    }

    /// The features without their graph (`[n, D]`).
    pub fn features(&self) -> Tensor<2> {
        self.features.clone().detach()
    }

    /// The gradient in `i` of `sum(features * grad)`, `grad` being the gradient of a loss in these
    /// features (`[n, D]` row-major, from [`StepFit::shared_loss`]): this part's share of the
    /// loss's gradient in `i`.
    pub fn backward(self, grad: &[f32]) -> Result<Tensor<1>, CoreError> {
        let [n, d] = self.features.dims();
        if grad.len() != n * d {
            return Err(CoreError::Config(format!("a gradient of {} values for features of {n} images of {d}", grad.len())));
        }
        let g = Tensor::<1>::from_floats(grad, &self.features.device()).reshape([n, d]);
        let mut grads = (self.features * g).sum().backward();
        self.i_t.grad_remove(&mut grads).map(|g| g.detach()).ok_or_else(|| CoreError::Config("no gradient reached i".into()))
    }
}

//! One optimisation step of pretraining (docs/method.md, "Pretraining"): the step's descriptor
//! (from seed and step) -> its two views, on the device -> encoder(views, i) -> projection head ->
//! the method's loss -> backward -> AdamW with warm-up + cosine learning rate. Nothing returns to
//! the host inside a step. Every random choice of step `s` derives from `(seed, s)`, so a resumed
//! run replays exactly.

use std::sync::Arc;

use ail_augment::audio::AudioViewParams;
use ail_augment::{Augmenter, sample_views};
use burn::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::config::PretrainConfig;
use super::parallel::{Job, Objective, Replicas, combine, split_views};
use crate::checkpoint::Normalization;
use crate::method::{ContrastiveModel, ema_update};
use crate::queue::DescriptorQueues;
use crate::sampler::Invariances;
use crate::schedule::warmup_cosine;
use crate::{CoreError, Descriptor};

/// What a step returns besides the new model.
pub struct StepResult {
    /// The loss, still on the device (reading it is a host round trip).
    pub loss: Tensor<1>,
    pub lr: f64,
    /// The index of the step's descriptor in the trained set.
    pub descriptor: usize,
    /// The step's descriptor when it was drawn from `[0, 1]^K` instead (`fractional_draws`).
    pub fractional: Option<Descriptor>,
}

/// One optimisation step of pretraining; holds MoCo's momentum model and per-descriptor queues.
pub struct Stepper {
    config: PretrainConfig,
    /// MoCo's key model (momentum copy of the model).
    pub key: Option<ContrastiveModel>,
    /// MoCo-v2's negatives, one queue per trained descriptor.
    pub queues: Option<DescriptorQueues>,
    invariances: Invariances,
    /// The trained descriptors (indexed by [`Invariances::draw`]) and each as a device tensor,
    /// built once: a step only picks one.
    trained: Vec<Descriptor>,
    descriptors: Vec<Tensor<1>>,
    augmenter: Augmenter,
    stats: (Tensor<4>, Tensor<4>),
    radius: usize,
    shape: [usize; 4],
    /// Audio runs: the training clips (indexed like the loader's images) and the log-mel front-end.
    audio: Option<(Arc<Vec<Arc<Vec<f32>>>>, crate::mel::LogMel)>,
    /// Several devices: their worker threads (see [`super::parallel`]).
    replicas: Option<Replicas>,
}

impl Stepper {
    /// `device` must be an autodiff device; `normalization` the per-channel input statistics;
    /// `image` `[C, H, W]`; `model` seeds MoCo's key model.
    pub fn new(config: &PretrainConfig, device: &Device, normalization: &Normalization, [c, h, w]: [usize; 3], model: &ContrastiveModel) -> Self {
        let invariances = config.invariances.clone();
        let trained = invariances.trained();
        let method = config.method;
        Self {
            // The key model never uses MoCo-v3's predictor: leave it out.
            key: method.uses_key_model().then(|| {
                let mut key = ema_update(model.clone(), model, 0.0).no_grad();
                key.predictor = None;
                key
            }),
            queues: method
                .uses_queues()
                .then(|| DescriptorQueues::new(trained.len(), config.queue_size, config.heads.output, device)),
            descriptors: trained.iter().map(|d| config.encoder.model.descriptor_input(d.values(), device)).collect(),
            trained,
            invariances,
            augmenter: Augmenter::new(device),
            stats: stats_tensors(normalization, device),
            radius: config.augment.blur_radius(config.data.image_size),
            shape: [config.batch_size, c, h, w],
            config: config.clone(),
            audio: None,
            replicas: None,
        }
    }

    /// Runs the shards of every batch on these replicas (all devices at once) instead of in turn
    /// on the main device.
    pub fn with_replicas(mut self, replicas: Replicas) -> Self {
        self.replicas = (replicas.len() > 1).then_some(replicas);
        self
    }

    /// Makes the views of an audio run from `clips` (the training clips, in the order of the
    /// loader's images) with the CLAR augmentations and the log-mel front-end.
    pub fn with_audio(mut self, clips: Arc<Vec<Arc<Vec<f32>>>>, device: &Device) -> Self {
        self.audio = Some((clips, crate::mel::LogMel::new(&self.config.audio.mel, device)));
        self
    }

    /// The two views of a batch, normalised, `[2B, C, H, W]` (first views, then second views).
    fn views(&self, descriptor: &Descriptor, pixels: &[u8], indices: &[usize], rng: &mut ChaCha8Rng) -> Result<Tensor<4>, CoreError> {
        let c = &self.config;
        let x = match &self.audio {
            Some((clips, front)) => {
                let on: [bool; 7] = std::array::from_fn(|j| descriptor.is_on(j));
                let batch: Vec<Arc<Vec<f32>>> = indices.iter().map(|&i| clips[i].clone()).collect();
                let views: Vec<AudioViewParams> = (0..2 * batch.len()).map(|_| AudioViewParams::sample(on, &c.audio.augment, rng)).collect();
                let len = c.audio.front_end().clip_samples;
                let wave = ail_augment::audio::augment_batch(&batch, &views, len);
                let device = self.stats.0.device();
                front.forward(Tensor::<1>::from_floats(wave.as_slice(), &device).reshape([views.len(), len]))
            }
            None => {
                let (ops, at) = c.augment.at_descriptor(self.invariances.family(), descriptor);
                let [b, _, h, w] = self.shape;
                let views = sample_views(ops, &at, [b, h, w], 2, rng);
                self.augmenter.apply(pixels, self.shape, &views, self.radius)? // [2B, C, H, W]
            }
        };
        Ok((x - self.stats.0.clone()) / self.stats.1.clone())
    }

    /// [`Stepper::step`] on a loader's batch (audio runs read its indices).
    pub fn step_batch(
        &mut self,
        model: ContrastiveModel,
        optim: &mut burn::optim::ModuleOptimizer,
        batch: &ail_data::Batch,
        step: u64,
    ) -> Result<(ContrastiveModel, StepResult), CoreError> {
        self.step_indexed(model, optim, &batch.pixels, &batch.indices, step)
    }

    /// Step `step` on the `u8` batch `pixels` (`[B, C, H, W]`).
    pub fn step(
        &mut self,
        model: ContrastiveModel,
        optim: &mut burn::optim::ModuleOptimizer,
        pixels: &[u8],
        step: u64,
    ) -> Result<(ContrastiveModel, StepResult), CoreError> {
        self.step_indexed(model, optim, pixels, &[], step)
    }

    fn step_indexed(
        &mut self,
        model: ContrastiveModel,
        optim: &mut burn::optim::ModuleOptimizer,
        pixels: &[u8],
        indices: &[usize],
        step: u64,
    ) -> Result<(ContrastiveModel, StepResult), CoreError> {
        // views: the step's descriptor, its augmentations
        let c = &self.config;
        let index = self.invariances.draw(c.seed, step);
        let fractional = self.invariances.draw_fractional(c.seed, step, c.fractional_draws);
        let mut rng = ChaCha8Rng::seed_from_u64(c.seed);
        rng.set_stream(step);
        let x = self.views(fractional.as_ref().unwrap_or(&self.trained[index]), pixels, indices, &mut rng)?;
        // forward, loss, step
        let i = match &fractional {
            Some(d) => c.encoder.model.descriptor_input(d.values(), &self.stats.0.device()),
            None => self.descriptors[index].clone(),
        };
        // MoCo: update the key model first, then compute keys with it (MoCo's order).
        let momentum = c.method.key_momentum(step, c.steps, c.momentum);
        if let Some(key) = self.key.take() {
            // The predictor is the query side's alone (the key has none).
            let source = ContrastiveModel { predictor: None, ..model.clone() };
            self.key = Some(ema_update(key, &source, momentum as f32));
        }
        let job = Job {
            model: model.clone(),
            key: self.key.clone(),
            shards: split_views(x, c.batch_size, c.shards).into_iter().enumerate().collect(),
            i,
            index,
            queue: self.queues.as_ref().map(|q| q.queue(index)),
            objective: Objective { method: c.method, temperature: c.temperature, scale: 1.0 / c.shards as f32 },
        };
        // One device: the shards in turn on this thread; several: all devices at once.
        let out = match &self.replicas {
            Some(replicas) => replicas.run(job)?,
            None => {
                let main = self.stats.0.device();
                combine(&model, job.run(&main, &main))
            }
        };
        let lr = warmup_cosine(step, c.steps, c.optimizer.warmup_steps, c.optimizer.lr, c.optimizer.min_lr);
        let model = optim.step(lr, model, out.grads);
        if let (Some(queues), Some(keys)) = (self.queues.as_mut(), out.keys) {
            queues.enqueue(index, keys);
        }
        Ok((model, StepResult { loss: out.loss, lr, descriptor: index, fractional }))
    }
}

/// AdamW with the run's weight decay and optional gradient clipping (fused on the CPU:
/// [`crate::kernels::AdamW`]).
pub fn optimizer(config: &PretrainConfig) -> burn::optim::ModuleOptimizer {
    let clip = config.optimizer.grad_clip.map(burn::optim::grad_clipping::GradientClippingConfig::Norm);
    let hyper = crate::kernels::AdamWHyper { weight_decay: config.optimizer.weight_decay, ..Default::default() };
    crate::kernels::adamw(hyper, clip)
}

/// Per-channel mean and std as `[1, C, 1, 1]` tensors.
pub fn stats_tensors(n: &Normalization, device: &Device) -> (Tensor<4>, Tensor<4>) {
    let c = n.mean.len();
    let t = |v: &[f32]| Tensor::<1>::from_floats(v, device).reshape([1, c, 1, 1]);
    (t(&n.mean), t(&n.std))
}


//! The fine-tuning baseline (docs/method.md, "Baselines"): the last 1..4 stages of a ResNet trained with
//! a linear head, the earlier stages frozen in eval mode, optionally under a wall-time budget (the
//! time an `ail fit` run took). The encoder reads a fixed descriptor (plain encoders read none).

use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::prelude::*;

use crate::checkpoint::{Checkpoint, Normalization};
use crate::fit::{Scores, Split, Targets, permutation, score_outputs};
use crate::frozen::Frozen;
use crate::loss::cross_entropy_one_hot;
use crate::{CoreError, Encoder};

/// The encoder (partly trainable) and the head, trained together.
#[derive(Module, Debug)]
pub struct FineTuned {
    pub encoder: Encoder,
    pub head: Linear,
}

struct CountTrainable(usize);

impl ModuleVisitor for CountTrainable {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let v = param.val();
        if v.is_require_grad() {
            self.0 += v.shape().num_elements();
        }
    }
}

/// Values that receive gradients (frozen parameters and batch-norm statistics excluded).
pub fn trainable_parameters<M: Module>(module: &M) -> usize {
    let mut count = CountTrainable(0);
    module.visit(&mut count);
    count.0
}

#[derive(Debug, Clone)]
pub struct FineTuneConfig {
    /// Stages to train, counted from the last (1..=4).
    pub stages: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Stop after this many seconds of training (checked after each batch).
    pub time_budget_s: Option<f64>,
    /// The descriptor an amortised encoder is read at (ignored by plain encoders).
    pub descriptor: Vec<f32>,
    pub seed: u64,
}

/// What a fine-tuning run gives.
pub struct FineTuneRun {
    pub model: FineTuned,
    pub best_epoch: usize,
    pub val: Scores,
    pub epochs_done: usize,
    pub stopped_by_budget: bool,
    pub trainable: usize,
}

/// Head outputs of `model` on `split` (eval mode), on the host.
pub fn outputs(model: &FineTuned, split: &Split, normalization: &Normalization, i: &[f32], device: &Device) -> Vec<f32> {
    let model = model.valid();
    let inner = device.clone().without_autodiff();
    let len = split.shape.iter().product::<usize>();
    let it = if i.is_empty() { Tensor::<1>::zeros([0], &inner) } else { Tensor::from_floats(i, &inner) };
    let mut out = Vec::new();
    for s in (0..split.len()).step_by(256) {
        let e = (s + 256).min(split.len());
        let x = normalization.apply(Frozen::upload_u8(&split.pixels[s * len..e * len], e - s, split.shape, &inner));
        let y = model.head.forward(model.encoder.forward_features(x, it.clone()));
        out.extend(y.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 outputs"));
    }
    out
}

/// Fine-tunes `checkpoint`'s encoder (loaded on an autodiff device) on a classification split.
pub fn finetune(
    checkpoint: Checkpoint,
    normalization: &Normalization,
    train: &Split,
    val: &Split,
    config: &FineTuneConfig,
    progress: &mut dyn FnMut(usize, usize, usize),
) -> Result<FineTuneRun, CoreError> {
    let Targets::Classes { labels, classes } = &train.targets else {
        return Err(CoreError::Config("fine-tuning is implemented for classification tasks".into()));
    };
    if !(1..=4).contains(&config.stages) {
        return Err(CoreError::Config(format!("--stages {} must be 1..=4", config.stages)));
    }
    let Encoder::ResNet(resnet) = checkpoint.encoder else {
        return Err(CoreError::Config("fine-tuning the last stages needs a ResNet encoder".into()));
    };
    let device = resnet.devices().first().cloned().ok_or_else(|| CoreError::Config("the encoder has no device".into()))?;
    let k = checkpoint.meta.encoder.input_invariances();
    let i: Vec<f32> = if k == 0 { Vec::new() } else { config.descriptor.clone() };
    if i.len() != k {
        return Err(CoreError::Config(format!("the encoder takes a descriptor of {k} entries (got {})", i.len())));
    }
    device.seed(config.seed);
    let mut model = FineTuned {
        encoder: Encoder::ResNet(resnet.train_last_stages(config.stages)),
        head: LinearConfig::new(checkpoint.meta.encoder.feature_dim(), *classes).init(&device),
    };
    let trainable = trainable_parameters(&model);
    let mut optim = crate::kernels::adamw(crate::kernels::AdamWHyper { weight_decay: config.weight_decay as f32, ..Default::default() }, None);
    let it = checkpoint.meta.encoder.kind.descriptor_input(&i, &device);
    let len = train.shape.iter().product::<usize>();
    let batches = train.len().div_ceil(config.batch_size);
    let start = Instant::now();
    let mut best: Option<(FineTuned, usize, Scores)> = None;
    let mut epochs_done = 0;
    let mut stopped = false;
    for epoch in 1..=config.epochs {
        let order = permutation(train.len(), config.seed, epoch as u64);
        // The loss stays on the device until the epoch ends (one host read per epoch).
        let mut epoch_loss = Tensor::<1>::zeros([1], &device);
        for (b, chunk) in order.chunks(config.batch_size).enumerate() {
            let pixels: Vec<u8> = chunk.iter().flat_map(|&r| train.pixels[r * len..(r + 1) * len].iter().copied()).collect();
            let x = normalization.apply(Frozen::upload_u8(&pixels, chunk.len(), train.shape, &device));
            let mut rows = vec![0f32; chunk.len() * classes];
            for (r, &idx) in chunk.iter().enumerate() {
                rows[r * classes + labels[idx] as usize] = 1.0;
            }
            let rows = Tensor::<1>::from_floats(rows.as_slice(), &device).reshape([chunk.len(), *classes]);
            let loss = cross_entropy_one_hot(model.head.forward(model.encoder.forward_features(x, it.clone())), rows);
            epoch_loss = epoch_loss + loss.clone().detach();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(config.lr, model, grads);
            progress(epoch, b + 1, batches);
            if config.time_budget_s.is_some_and(|t| start.elapsed().as_secs_f64() > t) {
                stopped = true;
                break;
            }
        }
        let value = epoch_loss.into_scalar::<f32>();
        if !value.is_finite() {
            return Err(CoreError::Numeric(format!("the fine-tuning loss became {value} in epoch {epoch}: lower --lr (now {})", config.lr)));
        }
        epochs_done = epoch;
        let out = outputs(&model, val, normalization, &i, &device);
        let scores = score_outputs(&out, &val.targets, &[]);
        if best.as_ref().is_none_or(|b| scores.primary() > b.2.primary()) {
            best = Some((model.clone(), epoch, scores));
        }
        if stopped {
            break;
        }
    }
    let (model, best_epoch, val) = best.ok_or_else(|| CoreError::Config("no epoch ran".into()))?;
    Ok(FineTuneRun { model, best_epoch, val, epochs_done, stopped_by_budget: stopped, trainable })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resnet::ResNetConfig;

    #[test]
    fn last_stages_train_and_the_rest_is_frozen() {
        let _serial = crate::serial_draws();
        let device = Device::flex().autodiff();
        let config = ResNetConfig::resnet18(0.0625);
        let model = config.init(&device);
        assert_eq!(model.block_stages(), vec![0, 0, 1, 1, 2, 2, 3, 3]);
        let all = trainable_parameters(&model);
        let one = trainable_parameters(&model.clone().train_last_stages(1));
        let four = trainable_parameters(&model.clone().train_last_stages(4));
        assert!(one > 0 && one < four && four < all, "{one} {four} {all}");
        // Stage 4 of a ResNet-18 at width 1/16: 16 -> 32 channels. Block 1: two 3x3 convs
        // (16*32*9 + 32*32*9) + projection (16*32) + 3 BNs (2*32 each); block 2: 2 * 32*32*9 + 2 BNs.
        let want = (16 * 32 * 9 + 32 * 32 * 9 + 16 * 32 + 3 * 64) + (2 * 32 * 32 * 9 + 2 * 64);
        assert_eq!(one, want);
        // The stem and its batch norm are frozen in all four cases: `all - four` is exactly them.
        assert_eq!(all - four, 3 * 4 * 9 + 2 * 4);
    }
}

//! A contrastive learner: the encoder plus its projection head(s) (and MoCo-v3's predictor), and the
//! objectives of one step whose two views were made with one descriptor (docs/method.md): SimCLR's
//! NT-Xent, MoCo-v2's InfoNCE against the descriptor's own queue, MoCo-v3's symmetrised loss. The
//! momentum (key) model is a copy updated by [`ema_update`].

use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

use crate::head::{Heads, ProjectionHead, ProjectionHeadConfig};
use crate::{CoreError, Encoder, EncoderConfig};

/// Encoder + projection heads (+ MoCo-v3's predictor).
#[derive(Module, Debug)]
pub struct ContrastiveModel {
    pub encoder: Encoder,
    pub heads: Heads,
    pub predictor: Option<ProjectionHead>,
}

impl ContrastiveModel {
    /// `num_descriptors` heads when `per_descriptor_heads`, one shared head otherwise.
    pub fn new(
        encoder: &EncoderConfig,
        head: &ProjectionHeadConfig,
        num_descriptors: usize,
        per_descriptor_heads: bool,
        device: &Device,
    ) -> Result<Self, CoreError> {
        Ok(Self {
            encoder: encoder.init(device)?,
            heads: Heads::new(head, num_descriptors, per_descriptor_heads, device),
            predictor: None,
        })
    }

    /// Adds MoCo-v3's predictor (`output_dim -> hidden -> output_dim`).
    pub fn with_predictor(mut self, head: &ProjectionHeadConfig, device: &Device) -> Self {
        let config = ProjectionHeadConfig::new(head.output_dim).with_hidden_dim(head.hidden_dim).with_output_dim(head.output_dim);
        self.predictor = Some(config.init(device));
        self
    }

    /// MoCo-v2's loss: queries from view 1, keys from view 2 through the momentum model `key`
    /// (no gradient), negatives from the descriptor's queue `[Q, D]`. Returns the loss and the
    /// keys to enqueue.
    pub fn mocov2_loss(&self, key: &ContrastiveModel, views: Tensor<4>, i: Tensor<1>, index: usize, queue: Tensor<2>, temperature: f32) -> (Tensor<1>, Tensor<2>) {
        let (v1, v2) = split_views(views);
        let q = self.project(v1, i.clone(), index);
        let k = key.project(v2, i, index).detach();
        (crate::loss::info_nce(q, k.clone(), queue, temperature), k)
    }

    /// MoCo-v3's symmetrised loss: predictions of both views against the momentum model's
    /// projections of the other view.
    pub fn mocov3_loss(&self, key: &ContrastiveModel, views: Tensor<4>, i: Tensor<1>, index: usize, temperature: f32) -> Tensor<1> {
        let predictor = self.predictor.as_ref().expect("MoCo-v3 needs a model built with_predictor");
        let (v1, v2) = split_views(views);
        let q1 = predictor.forward(self.project(v1.clone(), i.clone(), index));
        let q2 = predictor.forward(self.project(v2.clone(), i.clone(), index));
        let k1 = key.project(v1, i.clone(), index).detach();
        let k2 = key.project(v2, i, index).detach();
        crate::loss::mocov3(q1, q2, k1, k2, temperature)
    }

    /// Projections of `views` at descriptor `i` through the head of descriptor `index`.
    ///
    /// # Shapes
    /// - `views`: `[batch, C, H, W]`, `i`: `[K]` -> `[batch, output_dim]`
    pub fn project(&self, views: Tensor<4>, i: Tensor<1>, index: usize) -> Tensor<2> {
        self.heads.forward(self.encoder.forward_features(views, i), index)
    }

    /// SimCLR's NT-Xent of one step: `views` holds the first views of a batch, then the second views
    /// (`[2N, C, H, W]`, as the augmenter produces them), all made with descriptor `i`.
    pub fn simclr_loss(&self, views: Tensor<4>, i: Tensor<1>, index: usize, temperature: f32) -> Tensor<1> {
        let [two_n, _, _, _] = views.dims();
        let n = two_n / 2;
        let z = self.project(views, i, index); // [2N, output_dim]
        let [_, d] = z.dims();
        crate::loss::nt_xent(z.clone().slice([0..n, 0..d]), z.slice([n..2 * n, 0..d]), temperature)
    }
}

/// The contrastive method of a pretraining run (docs/method.md, "Pretraining"), with what each needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// SimCLR: NT-Xent between the two views of each image, the batch's other views as negatives.
    #[default]
    Simclr,
    /// MoCo-v2: a momentum (key) encoder and one negative queue per trained descriptor.
    Mocov2,
    /// MoCo-v3: a momentum encoder, a predictor, a symmetrised loss and a cosine momentum schedule.
    Mocov3,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Simclr => "simclr",
            Method::Mocov2 => "mocov2",
            Method::Mocov3 => "mocov3",
        }
    }

    /// Whether the method keeps a momentum copy of the model for its keys.
    pub fn uses_key_model(self) -> bool {
        self != Method::Simclr
    }

    /// Whether the method keeps negative queues (one per trained descriptor).
    pub fn uses_queues(self) -> bool {
        self == Method::Mocov2
    }

    /// Whether the query side has a predictor head.
    pub fn uses_predictor(self) -> bool {
        self == Method::Mocov3
    }

    /// The key model's momentum at `step` of `steps`: constant for MoCo-v2, raised to 1 along a
    /// cosine for MoCo-v3.
    pub fn key_momentum(self, step: u64, steps: u64, base: f64) -> f64 {
        match self {
            Method::Mocov3 => cosine_momentum(step, steps, base),
            _ => base,
        }
    }

    /// The loss of `views` (`[2b, C, H, W]`: first views, then second views) at descriptor `i`
    /// (head `index`), and for MoCo-v2 the keys to enqueue. `key` must be given for the MoCo
    /// methods and `queue` (the descriptor's negatives `[Q, D]`) for MoCo-v2.
    #[allow(clippy::too_many_arguments)]
    pub fn loss(
        self,
        model: &ContrastiveModel,
        key: Option<&ContrastiveModel>,
        views: Tensor<4>,
        i: Tensor<1>,
        index: usize,
        queue: Option<Tensor<2>>,
        temperature: f32,
    ) -> (Tensor<1>, Option<Tensor<2>>) {
        match self {
            Method::Simclr => (model.simclr_loss(views, i, index, temperature), None),
            Method::Mocov2 => {
                let key = key.expect("MoCo-v2 needs its key model");
                let queue = queue.expect("MoCo-v2 needs the descriptor's queue");
                let (loss, keys) = model.mocov2_loss(key, views, i, index, queue, temperature);
                (loss, Some(keys))
            }
            Method::Mocov3 => (model.mocov3_loss(key.expect("MoCo-v3 needs its key model"), views, i, index, temperature), None),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Method {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        match s {
            "simclr" => Ok(Method::Simclr),
            "mocov2" => Ok(Method::Mocov2),
            "mocov3" => Ok(Method::Mocov3),
            other => Err(CoreError::setting(format!("--method {other}"), "is not a method: use simclr, mocov2 or mocov3")),
        }
    }
}

/// `[2N, ...]` -> the first and second views.
fn split_views(views: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
    let [two_n, _, _, _] = views.dims();
    let n = two_n / 2;
    (views.clone().slice([0..n]), views.slice([n..2 * n]))
}

/// MoCo-v3's momentum schedule: from `base` at step 0 to 1 at the end, along a half cosine.
pub fn cosine_momentum(step: u64, total: u64, base: f64) -> f64 {
    let progress = step as f64 / total.max(1) as f64;
    1.0 - (1.0 - base) * (1.0 + (std::f64::consts::PI * progress).cos()) / 2.0
}

/// `target = momentum * target + (1 - momentum) * source`, parameter by parameter (the momentum
/// encoder's update; the structures must match). BatchNorm running statistics are blended as well,
/// but burn replaces them with the target's own pending update at its next training forward, so in
/// effect the key model keeps its own statistics (it always normalises with batch statistics).
pub fn ema_update<M: Module>(target: M, source: &M, momentum: f32) -> M {
    struct Collect(Vec<Tensor<1>>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let t = param.val().detach();
            let n = t.shape().num_elements();
            self.0.push(t.reshape([n]));
        }
    }
    struct Blend {
        sources: std::vec::IntoIter<Tensor<1>>,
        momentum: f32,
    }
    impl ModuleMapper for Blend {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let source = self.sources.next().expect("ema_update: target and source have the same parameters");
            let m = self.momentum;
            param.map(|t| {
                let shape = t.shape();
                (t.detach() * m + source.reshape(shape) * (1.0 - m)).detach()
            })
        }
    }
    let mut collect = Collect(Vec::new());
    source.visit(&mut collect);
    let mut blend = Blend { sources: collect.0.into_iter(), momentum };
    target.map(&mut blend)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelKind;
    use burn::optim::{AdamWConfig, GradientsParams};
    use burn::tensor::Distribution;

    #[test]
    fn a_few_simclr_steps_lower_the_loss() {
        let _serial = crate::serial_draws();
        let device = Device::flex().autodiff();
        device.seed(0);
        let mut config = EncoderConfig::new(ModelKind::HyperResnet18, 2).with_width(0.0625).with_image_size(8);
        config.hidden = 4;
        let head = ProjectionHeadConfig::new(config.feature_dim()).with_hidden_dim(16).with_output_dim(8);
        let mut model = ContrastiveModel::new(&config, &head, 3, false, &device).unwrap();
        let mut optim = AdamWConfig::new().init();
        // Eight images; the second view is the first plus small noise (a fixed, easy task).
        let x = Tensor::<4>::random([8, 3, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let noise = Tensor::<4>::random([8, 3, 8, 8], Distribution::Normal(0.0, 0.1), &device);
        let views = Tensor::cat(vec![x.clone(), x + noise], 0);
        let i = Tensor::<1>::from_floats([1.0, 1.0], &device);
        let mut losses = Vec::new();
        for _ in 0..20 {
            let loss = model.simclr_loss(views.clone(), i.clone(), 2, 0.2);
            losses.push(loss.clone().into_scalar::<f32>());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(3e-3, model, grads);
        }
        assert!(losses.iter().all(|l| l.is_finite()));
        let (first, last) = (losses[0], losses[19]);
        assert!(last < 0.7 * first, "loss did not fall: {losses:?}");
    }
}

#[cfg(test)]
mod momentum_tests {
    use super::*;
    use crate::ModelKind;
    use burn::tensor::Distribution;

    fn tiny(device: &Device) -> ContrastiveModel {
        let mut config = EncoderConfig::new(ModelKind::HyperResnet18, 2).with_width(0.0625).with_image_size(8);
        config.hidden = 4;
        let head = ProjectionHeadConfig::new(config.feature_dim()).with_hidden_dim(16).with_output_dim(8);
        ContrastiveModel::new(&config, &head, 3, false, device).unwrap().with_predictor(&head, device)
    }

    fn flat(m: &ContrastiveModel) -> Vec<f32> {
        struct All(Vec<f32>);
        impl ModuleVisitor for All {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                self.0.extend(p.val().into_data().try_to_vec::<f32>().unwrap());
            }
        }
        let mut all = All(Vec::new());
        m.visit(&mut all);
        all.0
    }

    #[test]
    fn ema_blends_every_parameter() {
        let _serial = crate::serial_draws();
        let device = Device::flex();
        let (a, b) = (tiny(&device), tiny(&device));
        let (fa, fb) = (flat(&a), flat(&b));
        let c = ema_update(a, &b, 0.9);
        let fc = flat(&c);
        assert_eq!(fc.len(), fa.len());
        for ((x, y), z) in fa.iter().zip(&fb).zip(&fc) {
            assert!((0.9 * x + 0.1 * y - z).abs() < 1e-5);
        }
    }

    #[test]
    fn cosine_momentum_goes_from_base_to_one() {
        assert!((cosine_momentum(0, 100, 0.99) - 0.99).abs() < 1e-12);
        assert!((cosine_momentum(50, 100, 0.99) - 0.995).abs() < 1e-12);
        assert!((cosine_momentum(100, 100, 0.99) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn moco_losses_train_the_query_model_only() {
        let _serial = crate::serial_draws();
        use burn::optim::{AdamWConfig, GradientsParams};
        let device = Device::flex().autodiff();
        device.seed(3);
        let mut model = tiny(&device);
        let key = tiny(&device).no_grad();
        let views = Tensor::<4>::random([8, 3, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let i = Tensor::<1>::from_floats([1.0, 0.0], &device);
        let queue = crate::loss::normalize_rows(Tensor::<2>::random([16, 8], Distribution::Normal(0.0, 1.0), &device));
        let (loss, keys) = model.mocov2_loss(&key, views.clone(), i.clone(), 0, queue, 0.2);
        assert_eq!(keys.dims(), [4, 8]);
        let l2: f32 = loss.clone().into_scalar();
        assert!(l2.is_finite() && l2 > 0.0);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let before = flat(&key);
        model = AdamWConfig::new().init().step(1e-3, model, grads);
        assert_eq!(flat(&key), before, "the key model must not change by backprop");
        let l3: f32 = model.mocov3_loss(&key, views, i, 0, 0.2).into_scalar();
        assert!(l3.is_finite() && l3 > 0.0);
    }
}

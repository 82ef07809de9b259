//! A contrastive learner: the encoder plus its projection head(s), and SimCLR's objective on a step
//! whose two views were made with one descriptor (METHOD.md). MoCo-v2 / MoCo-v3 add a momentum
//! encoder around the same pieces ([`crate::loss::info_nce`], [`crate::queue`]).

use burn::prelude::*;

use crate::head::{Heads, ProjectionHeadConfig};
use crate::{CoreError, Encoder, EncoderConfig};

/// Encoder + projection heads.
#[derive(Module, Debug)]
pub struct ContrastiveModel {
    pub encoder: Encoder,
    pub heads: Heads,
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
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelKind;
    use burn::optim::{AdamWConfig, GradientsParams};
    use burn::tensor::Distribution;

    #[test]
    fn a_few_simclr_steps_lower_the_loss() {
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

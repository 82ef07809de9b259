//! Projection heads (docs/method.md): an MLP from the encoder's features to the contrastive space,
//! `Linear -> BN -> ReLU` repeated, then a final `Linear` (SimCLR's head; 2 layers suit CIFAR scale,
//! 3 the ImageNet recipes). Shared across descriptors by default; [`Heads`] holds one per descriptor
//! when asked (the release uses per-descriptor heads for K = 2).

use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;

#[derive(Config, Debug)]
pub struct ProjectionHeadConfig {
    pub input_dim: usize,
    #[config(default = 2048)]
    pub hidden_dim: usize,
    #[config(default = 128)]
    pub output_dim: usize,
    /// Linear layers in all (2 or more).
    #[config(default = 2)]
    pub num_layers: usize,
}

impl ProjectionHeadConfig {
    pub fn init(&self, device: &Device) -> ProjectionHead {
        let num_hidden = self.num_layers.max(2) - 1;
        let hidden = (0..num_hidden)
            .map(|l| {
                let input = if l == 0 { self.input_dim } else { self.hidden_dim };
                (LinearConfig::new(input, self.hidden_dim).with_bias(false).init(device), BatchNormConfig::new(self.hidden_dim).init(device))
            })
            .collect();
        ProjectionHead { hidden, output: LinearConfig::new(self.hidden_dim, self.output_dim).init(device) }
    }
}

/// `[Linear -> BN -> ReLU] x (L - 1) -> Linear`.
#[derive(Module, Debug)]
pub struct ProjectionHead {
    hidden: Vec<(Linear, BatchNorm)>,
    output: Linear,
}

impl ProjectionHead {
    /// # Shapes
    /// - `features`: `[batch, input_dim]` -> `[batch, output_dim]`
    pub fn forward(&self, features: Tensor<2>) -> Tensor<2> {
        let mut x = features;
        for (linear, bn) in &self.hidden {
            x = relu(bn.forward(linear.forward(x)));
        }
        self.output.forward(x)
    }
}

/// One shared head, or one head per trained descriptor.
#[derive(Module, Debug)]
pub struct Heads {
    heads: Vec<ProjectionHead>,
}

impl Heads {
    /// `per_descriptor`: one head for each of `num_descriptors`; otherwise one shared head.
    pub fn new(config: &ProjectionHeadConfig, num_descriptors: usize, per_descriptor: bool, device: &Device) -> Self {
        let n = if per_descriptor { num_descriptors.max(1) } else { 1 };
        Self { heads: (0..n).map(|_| config.init(device)).collect() }
    }

    /// Projects with the head of descriptor `index` (the shared head when there is one).
    pub fn forward(&self, features: Tensor<2>, index: usize) -> Tensor<2> {
        let head = if self.heads.len() == 1 { &self.heads[0] } else { &self.heads[index] };
        head.forward(features)
    }

    pub fn len(&self) -> usize {
        self.heads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn shapes_layers_and_per_descriptor_heads() {
        let _serial = crate::serial_draws();
        let device = Device::flex();
        let config = ProjectionHeadConfig::new(8).with_hidden_dim(16).with_output_dim(4).with_num_layers(3);
        let head = config.init(&device);
        // 8*16 + 16*16 (no bias) + 16*4 + 4, plus 2 BNs of 16 (4 values each incl. running stats).
        assert_eq!(head.num_params(), 8 * 16 + 16 * 16 + 16 * 4 + 4 + 2 * 4 * 16);
        let x = Tensor::<2>::random([5, 8], Distribution::Normal(0.0, 1.0), &device);
        assert_eq!(head.forward(x.clone()).dims(), [5, 4]);

        let shared = Heads::new(&config, 3, false, &device);
        let per = Heads::new(&config, 3, true, &device);
        assert_eq!((shared.len(), per.len()), (1, 3));
        let a: Vec<f32> = per.forward(x.clone(), 0).into_data().try_to_vec().unwrap();
        let b: Vec<f32> = per.forward(x.clone(), 2).into_data().try_to_vec().unwrap();
        assert_ne!(a, b, "per-descriptor heads are distinct");
        let c: Vec<f32> = shared.forward(x.clone(), 0).into_data().try_to_vec().unwrap();
        let d: Vec<f32> = shared.forward(x, 2).into_data().try_to_vec().unwrap();
        assert_eq!(c, d, "a shared head serves every descriptor");
    }
}

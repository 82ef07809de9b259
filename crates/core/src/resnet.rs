//! [Deep Residual Learning for Image Recognition](https://arxiv.org/abs/1512.03385): the plain
//! (unconditioned) ResNet-18/34 with BasicBlocks, used as the standard baseline encoder of the paper
//! (trained on one fixed augmentation set) and to measure backends (`ail bench device`).
//!
//! Stems (METHOD.md): CIFAR (3x3 conv, stride 1, no max-pool) for inputs up to 64 px, ImageNet (7x7
//! stride 2 + 3x3 max-pool) above. Kaiming fan-out initialisation; the last BN of each block starts
//! with gamma 0, so each block starts as the identity.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

/// A plain ResNet with BasicBlocks.
#[derive(Config, Debug)]
pub struct ResNetConfig {
    /// Blocks per stage: `[2, 2, 2, 2]` for ResNet-18, `[3, 4, 6, 3]` for ResNet-34.
    pub layers: [usize; 4],
    /// Channels of the first stage (64 in the standard network; the width multiplier times 64).
    #[config(default = 64)]
    pub base_channels: usize,
    /// Input channels (3 for images, 1 for spectrograms).
    #[config(default = 3)]
    pub in_channels: usize,
    /// CIFAR stem (3x3, stride 1, no max-pool) instead of the ImageNet stem.
    #[config(default = true)]
    pub cifar_stem: bool,
}

impl ResNetConfig {
    /// ResNet-18 whose first stage has `width * 64` channels.
    pub fn resnet18(width: f32) -> Self {
        Self::new([2, 2, 2, 2]).with_base_channels(((64.0 * width).round() as usize).max(1))
    }

    /// ResNet-34 whose first stage has `width * 64` channels.
    pub fn resnet34(width: f32) -> Self {
        Self::new([3, 4, 6, 3]).with_base_channels(((64.0 * width).round() as usize).max(1))
    }

    /// Channels of the output features (`8 * base_channels`).
    pub fn feature_dim(&self) -> usize {
        8 * self.base_channels
    }

    pub fn init(&self, device: &Device) -> ResNet {
        let w = self.base_channels;
        let stem = if self.cifar_stem {
            conv(self.in_channels, w, 3, 1, device)
        } else {
            conv(self.in_channels, w, 7, 2, device)
        };
        let mut blocks = Vec::new();
        let mut in_channels = w;
        for (stage, &num_blocks) in self.layers.iter().enumerate() {
            let out_channels = w << stage;
            for b in 0..num_blocks {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                blocks.push(BasicBlock::new(in_channels, out_channels, stride, device));
                in_channels = out_channels;
            }
        }
        ResNet {
            stem,
            stem_bn: BatchNormConfig::new(w).init(device),
            pool: (!self.cifar_stem).then(|| {
                MaxPool2dConfig::new([3, 3])
                    .with_strides([2, 2])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init()
            }),
            blocks,
        }
    }
}

/// Kaiming-normal, fan-out, ReLU gain (torchvision's ResNet initialisation).
fn kaiming_fan_out() -> Initializer {
    Initializer::KaimingNormal {
        gain: std::f64::consts::SQRT_2,
        fan_out_only: true,
    }
}

fn conv(in_channels: usize, out_channels: usize, kernel: usize, stride: usize, device: &Device) -> Conv2d {
    let pad = kernel / 2;
    Conv2dConfig::new([in_channels, out_channels], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .with_initializer(kaiming_fan_out())
        .init(device)
}

/// Two 3x3 convs with a residual connection (1x1 projection when the shape changes).
#[derive(Module, Debug)]
pub struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    shortcut: Option<(Conv2d, BatchNorm)>,
}

impl BasicBlock {
    fn new(in_channels: usize, out_channels: usize, stride: usize, device: &Device) -> Self {
        let mut bn2 = BatchNormConfig::new(out_channels).init(device);
        // Zero-init the last BN gamma: the block starts as the identity (Goyal et al. 2017).
        bn2.gamma = bn2.gamma.map(|g| g.zeros_like());
        let shortcut = (stride != 1 || in_channels != out_channels).then(|| {
            (
                conv(in_channels, out_channels, 1, stride, device),
                BatchNormConfig::new(out_channels).init(device),
            )
        });
        Self {
            conv1: conv(in_channels, out_channels, 3, stride, device),
            bn1: BatchNormConfig::new(out_channels).init(device),
            conv2: conv(out_channels, out_channels, 3, 1, device),
            bn2,
            shortcut,
        }
    }

    /// # Shapes
    /// - `x`: `[batch, in_channels, height, width]` -> `[batch, out_channels, height / stride, width / stride]`
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let out = relu(self.bn1.forward(self.conv1.forward(x.clone())));
        let out = self.bn2.forward(self.conv2.forward(out));
        let identity = match &self.shortcut {
            Some((conv, bn)) => bn.forward(conv.forward(x)),
            None => x,
        };
        relu(out + identity)
    }
}

/// A plain ResNet encoder.
#[derive(Module, Debug)]
pub struct ResNet {
    stem: Conv2d,
    stem_bn: BatchNorm,
    pool: Option<MaxPool2d>,
    blocks: Vec<BasicBlock>,
}

impl ResNet {
    /// Global-average-pooled features.
    ///
    /// # Shapes
    /// - `images`: `[batch, in_channels, height, width]`
    /// - output: `[batch, 8 * base_channels]`
    pub fn forward_features(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = relu(self.stem_bn.forward(self.stem.forward(images)));
        if let Some(pool) = &self.pool {
            x = pool.forward(x);
        }
        for block in &self.blocks {
            x = block.forward(x);
        }
        let [batch, channels, _, _] = x.dims();
        x.mean_dim(3).mean_dim(2).reshape([batch, channels]) // [batch, channels]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn resnet18_shapes_and_parameter_count() {
        let device = Device::flex();
        let config = ResNetConfig::resnet18(0.125);
        let model = config.init(&device);
        let x = Tensor::<4>::random([2, 3, 16, 16], Distribution::Normal(0.0, 1.0), &device);
        let f = model.forward_features(x);
        assert_eq!(f.dims(), [2, config.feature_dim()]);
        assert_eq!(config.feature_dim(), 64);
        // torchvision resnet18 without fc has 11,176,512 parameters at width 64; burn also counts
        // the BN running statistics (2 per channel). At base 8 the convs have 64x fewer weights.
        let convs: usize = 3 * 9 * 8
            + [(8, 8, 1), (8, 8, 1), (8, 16, 2), (16, 16, 1), (16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1)]
                .iter()
                .map(|&(i, o, s)| i * o * 9 + o * o * 9 + if s != 1 || i != o { i * o } else { 0 })
                .sum::<usize>();
        let bn_channels = 8 + [8, 8, 16, 16, 32, 32, 64, 64].iter().map(|c| 2 * c).sum::<usize>() + 16 + 32 + 64;
        assert_eq!(model.num_params(), convs + 4 * bn_channels);
    }

    #[test]
    fn imagenet_stem_downsamples_four_times_before_the_stages() {
        let device = Device::flex();
        let model = ResNetConfig::resnet18(0.125).with_cifar_stem(false).init(&device);
        let x = Tensor::<4>::zeros([1, 3, 64, 64], &device);
        assert_eq!(model.forward_features(x).dims(), [1, 64]);
    }

    #[test]
    fn blocks_start_as_identity_on_their_residual_branch() {
        let device = Device::flex();
        let block = BasicBlock::new(4, 4, 1, &device);
        // gamma 0 in bn2: out = relu(0 + beta + x) = relu(x) for beta 0.
        let x = Tensor::<4>::random([1, 4, 5, 5], Distribution::Normal(0.0, 1.0), &device);
        let y = block.forward(x.clone());
        y.into_data().assert_approx_eq::<f32>(&relu(x).into_data(), burn::tensor::Tolerance::default());
    }
}

//! Hypernetwork convolutions (paper, Section 3.1 and Listing 1; docs/method.md "Hyper-ResNet").
//!
//! A residual block embeds the invariance descriptor once, `z = E_b i` with
//! `E_b: Linear(K -> 16, no bias)`, and every conv of the block owns a generator
//! `Linear(16 -> hidden) -> ReLU -> Linear(hidden -> out * in * k * k)` that turns `z` into its
//! kernel. The kernel is generated once per forward (one descriptor per batch) and used by an
//! ordinary convolution, so gradients reach the generators, the embedding and `i` itself.
//!
//! Initialisation (our choice; the paper does not specify one, and the authors' release draws every
//! generator weight Kaiming-normal with PyTorch's default biases, which gives generated kernels of
//! std about 0.1 whatever the layer, see docs/method.md, "Deviations"): the generator's output bias holds a
//! Kaiming fan-out draw for the generated kernel's shape, and its output weight is
//! `N(0, kaiming_std^2 / hidden)`. Every descriptor therefore starts from a kernel of about Kaiming's
//! scale (std within a few percent above it), and the descriptor-dependent part starts at roughly a
//! third of it, so different descriptors give different kernels from step 0.

use burn::module::Param;
use burn::nn::conv::Conv2dConfig;
use burn::nn::{Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::relu;
use burn::tensor::ops::ConvOptions;

/// Size of the per-block descriptor embedding (16 in the paper).
pub const EMBED_DIM: usize = 16;

/// Kaiming-normal fan-out standard deviation with ReLU gain for a conv kernel.
pub fn kaiming_fan_out_std(out_channels: usize, kernel: usize) -> f64 {
    (2.0 / (out_channels * kernel * kernel) as f64).sqrt()
}

/// A convolution whose kernel a small MLP generates from the block's descriptor embedding.
#[derive(Module, Debug)]
pub struct HyperConv {
    hidden: Linear,
    output: Linear,
    out_channels: usize,
    in_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
}

/// Configuration of a [`HyperConv`].
#[derive(Config, Debug)]
pub struct HyperConvConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    #[config(default = 1)]
    pub stride: usize,
    /// Hidden units of the generator (32 in the paper).
    #[config(default = 32)]
    pub hidden: usize,
}

impl HyperConvConfig {
    pub fn init(&self, device: &Device) -> HyperConv {
        let numel = self.out_channels * self.in_channels * self.kernel * self.kernel;
        let std = kaiming_fan_out_std(self.out_channels, self.kernel);
        let mut output = LinearConfig::new(self.hidden, numel)
            .with_initializer(Initializer::Normal { mean: 0.0, std: std / (self.hidden as f64).sqrt() })
            .init(device);
        // A new Param (mapping the old one would drop its gradient requirement).
        output.bias = Some(Param::from_tensor(Tensor::random([numel], Distribution::Normal(0.0, std), device)));
        HyperConv {
            hidden: LinearConfig::new(EMBED_DIM, self.hidden).init(device),
            output,
            out_channels: self.out_channels,
            in_channels: self.in_channels,
            kernel: self.kernel,
            stride: self.stride,
            padding: self.kernel / 2,
        }
    }

    /// Parameters of the generator: `(16 + 1) * hidden + (hidden + 1) * out * in * k * k`.
    pub fn num_params(&self) -> usize {
        let numel = self.out_channels * self.in_channels * self.kernel * self.kernel;
        (EMBED_DIM + 1) * self.hidden + (self.hidden + 1) * numel
    }
}

impl HyperConv {
    /// The generated kernel.
    ///
    /// # Shapes
    /// - `z`: `[1, 16]` (the block's embedding of `i`)
    /// - output: `[out_channels, in_channels, kernel, kernel]`
    pub fn kernel(&self, z: Tensor<2>) -> Tensor<4> {
        let flat = crate::kernels::row_linear(&self.output, relu(self.hidden.forward(z))); // [1, out * in * k * k]
        flat.reshape([self.out_channels, self.in_channels, self.kernel, self.kernel])
    }

    /// Convolution with the kernel generated from `z`.
    ///
    /// # Shapes
    /// - `x`: `[batch, in_channels, height, width]`, `z`: `[1, 16]`
    /// - output: `[batch, out_channels, height / stride, width / stride]`
    pub fn forward(&self, x: Tensor<4>, z: Tensor<2>) -> Tensor<4> {
        let p = self.padding;
        let options = ConvOptions::new([self.stride; 2], [p, p], [1, 1], 1);
        crate::kernels::conv2d(x, self.kernel(z), None, options)
    }

    /// The static conv this generator replaces (same padding and stride), for reference.
    pub fn static_equivalent(&self) -> Conv2dConfig {
        let p = self.padding;
        Conv2dConfig::new([self.in_channels, self.out_channels], [self.kernel; 2])
            .with_stride([self.stride; 2])
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .with_bias(false)
    }
}

/// The per-block embedding `z = E_b i` (`Linear(K -> 16)`, no bias).
pub fn descriptor_embedding(num_invariances: usize, device: &Device) -> Linear {
    LinearConfig::new(num_invariances, EMBED_DIM).with_bias(false).init(device)
}

/// Embeds `i` (`[K]`) as `[1, 16]`.
pub fn embed(embedding: &Linear, i: Tensor<1>) -> Tensor<2> {
    let k = i.dims()[0];
    embedding.forward(i.reshape([1, k]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn std_of(t: Tensor<4>) -> f64 {
        let v: Vec<f32> = t.into_data().try_to_vec().unwrap();
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt()
    }

    #[test]
    fn generated_kernels_start_at_kaiming_scale_and_depend_on_i() {
        let _serial = crate::serial_draws();
        let device = Device::flex();
        device.seed(3);
        let config = HyperConvConfig::new(32, 64, 3);
        let conv = config.init(&device);
        let emb = descriptor_embedding(2, &device);
        let kaiming = kaiming_fan_out_std(64, 3);
        let mut kernels = Vec::new();
        for i in [[1.0f32, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.5]] {
            let w = conv.kernel(embed(&emb, Tensor::from_floats(i, &device)));
            assert_eq!(w.dims(), [64, 32, 3, 3]);
            let ratio = std_of(w.clone()) / kaiming;
            assert!((0.95..1.25).contains(&ratio), "std / kaiming = {ratio} for i = {i:?}");
            kernels.push(w);
        }
        let diff = std_of(kernels[0].clone() - kernels[1].clone()) / kaiming;
        assert!(diff > 0.05, "kernels for [1,0] and [0,1] barely differ: {diff}");
    }

    #[test]
    fn parameter_count_is_about_33_per_generated_weight() {
        let _serial = crate::serial_draws();
        let config = HyperConvConfig::new(8, 16, 3);
        let conv = config.init(&Device::flex());
        assert_eq!(conv.num_params(), config.num_params());
        assert_eq!(config.num_params(), 17 * 32 + 33 * 16 * 8 * 9);
    }

    #[test]
    fn forward_matches_a_static_conv_with_the_generated_kernel() {
        let _serial = crate::serial_draws();
        let device = Device::flex();
        let conv = HyperConvConfig::new(3, 4, 3).with_stride(2).init(&device);
        let emb = descriptor_embedding(2, &device);
        let z = embed(&emb, Tensor::from_floats([1.0, 0.0], &device));
        let x = Tensor::<4>::random([2, 3, 7, 7], Distribution::Normal(0.0, 1.0), &device);
        let mut reference = conv.static_equivalent().init(&device);
        reference.weight = reference.weight.map(|_| conv.kernel(z.clone()));
        let y = conv.forward(x.clone(), z);
        assert_eq!(y.dims(), [2, 4, 4, 4]);
        y.into_data().assert_approx_eq::<f32>(&reference.forward(x).into_data(), burn::tensor::Tolerance::default());
    }
}

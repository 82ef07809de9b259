//! Vision Transformer ([An Image is Worth 16x16 Words](https://arxiv.org/abs/2010.11929)), plain and
//! with an invariance prompt (Prompt-ViT; paper Section 3.1, Listing 2; docs/method.md).
//!
//! Prompt-ViT: `M` projectors `Linear(K -> D) -> ReLU -> Linear(D -> D)` map the descriptor `i` to
//! `M` tokens whose mean is ONE invariance token, appended after `[CLS]` + patch tokens once the
//! position embeddings are added (the token has none). Features are the final-normed `[CLS]` output.
//! The `M` projectors run as one matmul (`Linear(K -> M D)`) and one batched matmul (`[M, D, D]`).
//!
//! Token layout: `[CLS, patch_1 .. patch_N, invariance]`.

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::transformer::{TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::relu;

/// LayerNorm's epsilon inside the transformer blocks (burn's default).
pub const BLOCK_EPS: f64 = 1e-5;
/// LayerNorm's epsilon of the final norm (timm's).
pub const NORM_EPS: f64 = 1e-6;

/// A ViT encoder, plain (`num_invariances = 0`) or with an invariance prompt.
#[derive(Config, Debug)]
pub struct VitConfig {
    /// Token width `D`.
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    /// Side of the square patches (4 for 32 px inputs, 16 for 224 px).
    #[config(default = 4)]
    pub patch_size: usize,
    #[config(default = 32)]
    pub image_size: usize,
    #[config(default = 3)]
    pub in_channels: usize,
    #[config(default = 4)]
    pub mlp_ratio: usize,
    /// K; 0 makes a plain ViT.
    #[config(default = 0)]
    pub num_invariances: usize,
    /// `M`, the number of averaged invariance projectors (256 for ViT-B in the paper).
    #[config(default = 256)]
    pub num_projectors: usize,
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl VitConfig {
    /// ViT-Tiny: D 192, 12 layers, 3 heads.
    pub fn tiny() -> Self {
        Self::new(192, 12, 3)
    }
    /// ViT-Small: D 384, 12 layers, 6 heads.
    pub fn small() -> Self {
        Self::new(384, 12, 6)
    }
    /// ViT-Base: D 768, 12 layers, 12 heads.
    pub fn base() -> Self {
        Self::new(768, 12, 12)
    }

    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    pub fn feature_dim(&self) -> usize {
        self.embed_dim
    }

    /// Checks the shape arithmetic; the message names the offending value.
    pub fn validate(&self) -> Result<(), crate::CoreError> {
        let bad = |m: String| Err(crate::CoreError::Config(m));
        if self.patch_size == 0 || self.image_size % self.patch_size != 0 {
            return bad(format!("image size {} is not a multiple of patch size {}", self.image_size, self.patch_size));
        }
        if self.num_heads == 0 || self.embed_dim % self.num_heads != 0 {
            return bad(format!("embed_dim {} is not a multiple of num_heads {}", self.embed_dim, self.num_heads));
        }
        if self.num_invariances > 0 && self.num_projectors == 0 {
            return bad("a Prompt-ViT needs at least one invariance projector".into());
        }
        Ok(())
    }

    pub fn init(&self, device: &Device) -> Vit {
        let d = self.embed_dim;
        let n = self.num_patches();
        Vit {
            patch_embed: Conv2dConfig::new([self.in_channels, d], [self.patch_size; 2])
                .with_stride([self.patch_size; 2])
                .init(device),
            cls_token: Param::from_tensor(Tensor::random([1, 1, d], Distribution::Normal(0.0, 1e-6), device)),
            pos_embed: Param::from_tensor(Tensor::random([1, 1 + n, d], Distribution::Normal(0.0, 0.02), device)),
            prompt: (self.num_invariances > 0).then(|| InvariancePrompt::new(self.num_invariances, self.num_projectors, d, device)),
            encoder: TransformerEncoderConfig::new(d, self.mlp_ratio * d, self.num_heads, self.depth)
                .with_norm_first(true)
                .with_layer_norm_eps(BLOCK_EPS)
                .with_dropout(self.dropout)
                .init(device),
            norm: LayerNormConfig::new(d).with_epsilon(NORM_EPS).init(device),
            image_size: self.image_size,
        }
    }
}

/// `M` averaged projectors of `i` into one token.
#[derive(Module, Debug)]
pub struct InvariancePrompt {
    /// The M first layers as one: `[K] -> [M * D]`.
    first: Linear,
    /// The M second layers: `[M, D, D]`.
    second_weight: Param<Tensor<3>>,
    /// `[M, D]`.
    second_bias: Param<Tensor<2>>,
    num_projectors: usize,
    embed_dim: usize,
}

impl InvariancePrompt {
    fn new(num_invariances: usize, num_projectors: usize, d: usize, device: &Device) -> Self {
        let bound = 1.0 / (d as f64).sqrt(); // PyTorch's Linear default range
        Self {
            first: LinearConfig::new(num_invariances, num_projectors * d).init(device),
            second_weight: Param::from_tensor(Tensor::random([num_projectors, d, d], Distribution::Uniform(-bound, bound), device)),
            second_bias: Param::from_tensor(Tensor::random([num_projectors, d], Distribution::Uniform(-bound, bound), device)),
            num_projectors,
            embed_dim: d,
        }
    }

    /// # Shapes
    /// - `i`: `[K]` -> `[1, 1, D]`
    pub fn token(&self, i: Tensor<1>) -> Tensor<3> {
        let (m, d) = (self.num_projectors, self.embed_dim);
        let k = i.dims()[0];
        let h = relu(self.first.forward(i.reshape([1, k]))).reshape([m, 1, d]); // [M, 1, D]
        let tokens = h.matmul(self.second_weight.val()) + self.second_bias.val().reshape([m, 1, d]); // [M, 1, D]
        tokens.mean_dim(0) // [1, 1, D]
    }
}

/// A ViT encoder (plain or with an invariance prompt).
#[derive(Module, Debug)]
pub struct Vit {
    patch_embed: Conv2d,
    cls_token: Param<Tensor<3>>,
    pos_embed: Param<Tensor<3>>,
    prompt: Option<InvariancePrompt>,
    encoder: TransformerEncoder,
    norm: LayerNorm,
    image_size: usize,
}

impl Vit {
    /// Tokens before the patches (`[CLS]`); the invariance token, when present, comes last.
    pub fn num_prefix_tokens(&self) -> usize {
        1
    }

    /// Tokens after the patches (1 for a Prompt-ViT).
    pub fn num_suffix_tokens(&self) -> usize {
        usize::from(self.prompt.is_some())
    }

    /// The `[CLS]` output at descriptor `i` (ignored by a plain ViT).
    ///
    /// # Shapes
    /// - `images`: `[batch, channels, image_size, image_size]`, `i`: `[K]`
    /// - output: `[batch, embed_dim]`
    pub fn forward_features(&self, images: Tensor<4>, i: Tensor<1>) -> Tensor<2> {
        let [batch, _, height, width] = images.dims();
        assert!(
            height == self.image_size && width == self.image_size,
            "ViT built for {0}x{0} images got {height}x{width}",
            self.image_size
        );
        let patches = crate::kernels::conv2d_module(&self.patch_embed, images); // [batch, D, h, w]
        let [_, d, h, w] = patches.dims();
        let patches = patches.reshape([batch, d, h * w]).swap_dims(1, 2); // [batch, N, D]
        let cls = self.cls_token.val().expand([batch, 1, d]);
        let mut x = Tensor::cat(vec![cls, patches], 1) + self.pos_embed.val(); // [batch, 1 + N, D]
        if let Some(prompt) = &self.prompt {
            let token = prompt.token(i).expand([batch, 1, d]);
            x = Tensor::cat(vec![x, token], 1); // [batch, 2 + N, D]
        }
        let x = self.norm.forward(self.encoder.forward(TransformerEncoderInput::new(x)));
        x.slice([0..batch, 0..1, 0..d]).reshape([batch, d]) // [batch, D]: the [CLS] output
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(k: usize) -> VitConfig {
        VitConfig::new(16, 2, 2).with_image_size(8).with_num_invariances(k).with_num_projectors(3)
    }

    #[test]
    fn shapes_and_prompt_effect() {
        let _serial = crate::serial_draws();
        let device = Device::flex();
        let model = tiny(2).init(&device);
        let x = Tensor::<4>::random([3, 3, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let a = model.forward_features(x.clone(), Tensor::from_floats([1.0, 0.0], &device));
        let b = model.forward_features(x, Tensor::from_floats([0.0, 1.0], &device));
        assert_eq!(a.dims(), [3, 16]);
        let diff: f32 = (a - b).abs().max().into_scalar();
        assert!(diff > 1e-4, "the invariance token does not change the features ({diff})");
        assert_eq!(model.num_suffix_tokens(), 1);
    }

    #[test]
    fn projectors_are_averaged() {
        let _serial = crate::serial_draws();
        let device = Device::flex();
        let prompt = InvariancePrompt::new(2, 4, 5, &device);
        let i = Tensor::<1>::from_floats([0.3, 0.8], &device);
        let token = prompt.token(i.clone());
        // Recompute projector by projector.
        let h = relu(prompt.first.forward(i.reshape([1, 2]))); // [1, 4 * 5]
        let mut sum = Tensor::<2>::zeros([1, 5], &device);
        for m in 0..4 {
            let hm = h.clone().slice([0..1, m * 5..(m + 1) * 5]);
            let w = prompt.second_weight.val().slice([m..m + 1, 0..5, 0..5]).reshape([5, 5]);
            let b = prompt.second_bias.val().slice([m..m + 1, 0..5]);
            sum = sum + hm.matmul(w) + b;
        }
        token.reshape([1, 5]).into_data().assert_approx_eq::<f32>(&(sum / 4.0).into_data(), burn::tensor::Tolerance::default());
    }

    #[test]
    fn validate_names_the_bad_value() {
        let msg = VitConfig::tiny().with_image_size(30).validate().unwrap_err().to_string();
        assert!(msg.contains("image size 30 is not a multiple of patch size 4"), "{msg}");
        assert!(VitConfig::base().with_patch_size(16).with_image_size(224).validate().is_ok());
    }
}


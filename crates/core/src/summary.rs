//! Analytic parameter counts (by part) and FLOPs of an encoder, from its config alone, so that even
//! a full-width Hyper-ResNet-50 can be described without building it. The tests check these counts
//! against the built modules and against torchvision's published totals.

use crate::encoder::{ArchConfig, EncoderConfig};
use crate::hypernet::EMBED_DIM;
use crate::resnet::ResNetConfig;
use crate::vit::VitConfig;

/// Parameters by part, counted as PyTorch does (BatchNorm running statistics excluded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSummary {
    /// `(part, parameters)`, in order; parts with no parameters are left out.
    pub parts: Vec<(&'static str, usize)>,
    /// BatchNorm running mean and variance (burn's `num_params` counts them too).
    pub running_stats: usize,
}

impl ParamSummary {
    pub fn total(&self) -> usize {
        self.parts.iter().map(|(_, n)| n).sum()
    }

    pub fn part(&self, name: &str) -> usize {
        self.parts.iter().filter(|(p, _)| *p == name).map(|(_, n)| n).sum()
    }
}

/// Multiply-adds counted as two FLOPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlopSummary {
    /// Per image (convolutions / attention / MLPs; norms and activations left out).
    pub per_image: u64,
    /// Once per forward, whatever the batch size: generating kernels or the invariance token.
    pub per_forward: u64,
}

/// Parameters of `config`'s encoder, plus a linear head with `num_classes` outputs (0 for none).
pub fn params(config: &EncoderConfig, num_classes: usize) -> ParamSummary {
    let mut summary = match config.arch() {
        ArchConfig::ResNet(c) => resnet_params(&c),
        ArchConfig::Vit(c) => vit_params(&c),
    };
    if num_classes > 0 {
        summary.parts.push(("head", config.feature_dim() * num_classes + num_classes));
    }
    summary.parts.retain(|(_, n)| *n > 0);
    summary
}

fn resnet_params(c: &ResNetConfig) -> ParamSummary {
    let convs = c.convs();
    let static_convs = convs.iter().filter(|s| !s.conditioned).map(|s| s.numel()).sum();
    let generators = convs
        .iter()
        .filter(|s| s.conditioned)
        .map(|s| (EMBED_DIM + 1) * c.hidden + (c.hidden + 1) * s.numel())
        .sum();
    let conditioned_blocks = if c.is_conditioned() { c.num_blocks() + usize::from(c.condition_stem) } else { 0 };
    let bn: usize = c.bn_channels().iter().sum();
    ParamSummary {
        parts: vec![
            ("static convs", static_convs),
            ("kernel generators", generators),
            ("descriptor embeddings", conditioned_blocks * c.num_invariances * EMBED_DIM),
            ("batch norm", 2 * bn),
        ],
        running_stats: 2 * bn,
    }
}

fn vit_params(c: &VitConfig) -> ParamSummary {
    let d = c.embed_dim;
    let f = c.mlp_ratio * d;
    let m = c.num_projectors;
    let prompt = if c.num_invariances > 0 { c.num_invariances * m * d + m * d + m * d * d + m * d } else { 0 };
    ParamSummary {
        parts: vec![
            ("patch embedding", c.in_channels * d * c.patch_size * c.patch_size + d),
            ("class token and positions", d + (1 + c.num_patches()) * d),
            ("attention", c.depth * 4 * (d * d + d)),
            ("mlp", c.depth * (2 * d * f + f + d)),
            ("layer norms", (2 * c.depth + 1) * 2 * d),
            ("invariance projectors", prompt),
        ],
        running_stats: 0,
    }
}

/// FLOPs of one forward of `config`'s encoder on `image_size` images.
pub fn flops(config: &EncoderConfig) -> FlopSummary {
    match config.arch() {
        ArchConfig::ResNet(c) => resnet_flops(&c, config.image_size),
        ArchConfig::Vit(c) => vit_flops(&c),
    }
}

/// Activation values one image keeps for the backward pass through `config`'s encoder (each conv's
/// output with its BatchNorm and ReLU outputs; each ViT layer's tokens, attention and MLP): what a
/// training step's memory grows with, per view.
pub fn activations_per_image(config: &EncoderConfig) -> u64 {
    match config.arch() {
        ArchConfig::ResNet(c) => {
            let mut total = 0u64;
            for_each_conv(&c, config.image_size, |spec, _, out| total += 3 * (spec.out_channels * out * out) as u64);
            total
        }
        ArchConfig::Vit(c) => {
            let t = (2 + c.num_patches()) as u64;
            let (d, f, h) = (c.embed_dim as u64, (c.mlp_ratio * c.embed_dim) as u64, c.num_heads as u64);
            c.depth as u64 * (t * (6 * d + 2 * f) + 2 * h * t * t)
        }
    }
}

/// Calls `visit` with every conv of the ResNet `c` on `image_size` images, in order, with the sides
/// of its input and output. With padding k / 2, every conv (and the stem's max-pool) maps a side s
/// to ceil(s / stride).
pub fn for_each_conv(c: &ResNetConfig, image_size: usize, mut visit: impl FnMut(&crate::resnet::ConvSpec, usize, usize)) {
    let mut conv = |spec: &crate::resnet::ConvSpec, side: usize| -> usize {
        let out = side.div_ceil(spec.stride);
        visit(spec, side, out);
        out
    };
    let mut side = conv(&c.stem(), image_size);
    if !c.cifar_stem {
        side = side.div_ceil(2);
    }
    for block in c.blocks() {
        let input = side;
        for spec in &block.body {
            side = conv(spec, side);
        }
        if let Some(spec) = &block.shortcut {
            conv(spec, input);
        }
    }
}

fn resnet_flops(c: &ResNetConfig, image_size: usize) -> FlopSummary {
    let mut per_image = 0u64;
    let mut per_forward = 0u64;
    for_each_conv(c, image_size, |spec, _, out| {
        per_image += 2 * (spec.numel() * out * out) as u64;
        if spec.conditioned {
            per_forward += 2 * (EMBED_DIM * c.hidden + c.hidden * spec.numel()) as u64;
        }
    });
    FlopSummary { per_image, per_forward }
}

fn vit_flops(c: &VitConfig) -> FlopSummary {
    let d = c.embed_dim as u64;
    let f = (c.mlp_ratio * c.embed_dim) as u64;
    let n = c.num_patches() as u64;
    let t = 1 + n + u64::from(c.num_invariances > 0);
    let patch = 2 * n * (c.in_channels * c.patch_size * c.patch_size) as u64 * d;
    let layer = 2 * 4 * t * d * d + 2 * 2 * t * t * d + 2 * 2 * t * d * f;
    let m = c.num_projectors as u64;
    let per_forward = if c.num_invariances > 0 { 2 * (c.num_invariances as u64 * m * d + m * d * d) } else { 0 };
    FlopSummary { per_image: patch + c.depth as u64 * layer, per_forward }
}

//! The encoders behind one interface: `forward_features(images, i) -> [batch, feature_dim]`.
//!
//! [`ModelKind`] names every variant in configs and on the command line; [`EncoderConfig`] holds what
//! a checkpoint needs to rebuild the model; [`Encoder`] is the module.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::CoreError;
use crate::resnet::{ResNet, ResNetConfig};
use crate::vit::{Vit, VitConfig};

/// Every encoder variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    HyperResnet18,
    HyperResnet34,
    HyperResnet50,
    Resnet18,
    Resnet34,
    Resnet50,
    PromptVitTiny,
    PromptVitSmall,
    PromptVitBase,
    VitTiny,
    VitSmall,
    VitBase,
}

impl ModelKind {
    pub const ALL: [ModelKind; 12] = [
        ModelKind::HyperResnet18,
        ModelKind::HyperResnet34,
        ModelKind::HyperResnet50,
        ModelKind::Resnet18,
        ModelKind::Resnet34,
        ModelKind::Resnet50,
        ModelKind::PromptVitTiny,
        ModelKind::PromptVitSmall,
        ModelKind::PromptVitBase,
        ModelKind::VitTiny,
        ModelKind::VitSmall,
        ModelKind::VitBase,
    ];

    /// The name used in configs and on the command line (`hyper-resnet18`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::HyperResnet18 => "hyper-resnet18",
            ModelKind::HyperResnet34 => "hyper-resnet34",
            ModelKind::HyperResnet50 => "hyper-resnet50",
            ModelKind::Resnet18 => "resnet18",
            ModelKind::Resnet34 => "resnet34",
            ModelKind::Resnet50 => "resnet50",
            ModelKind::PromptVitTiny => "prompt-vit-tiny",
            ModelKind::PromptVitSmall => "prompt-vit-small",
            ModelKind::PromptVitBase => "prompt-vit-base",
            ModelKind::VitTiny => "vit-tiny",
            ModelKind::VitSmall => "vit-small",
            ModelKind::VitBase => "vit-base",
        }
    }

    /// The descriptor as this encoder's input: its values for an amortised encoder, an empty tensor
    /// for a plain one (which takes no descriptor).
    pub fn descriptor_input(self, values: &[f32], device: &Device) -> Tensor<1> {
        if self.is_amortised() { Tensor::from_floats(values, device) } else { Tensor::zeros([0], device) }
    }

    /// Whether the encoder is conditioned on the invariance descriptor.
    pub fn is_amortised(self) -> bool {
        matches!(
            self,
            ModelKind::HyperResnet18
                | ModelKind::HyperResnet34
                | ModelKind::HyperResnet50
                | ModelKind::PromptVitTiny
                | ModelKind::PromptVitSmall
                | ModelKind::PromptVitBase
        )
    }

    pub fn is_vit(self) -> bool {
        matches!(
            self,
            ModelKind::PromptVitTiny
                | ModelKind::PromptVitSmall
                | ModelKind::PromptVitBase
                | ModelKind::VitTiny
                | ModelKind::VitSmall
                | ModelKind::VitBase
        )
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ModelKind {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        ModelKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = ModelKind::ALL.iter().map(|k| k.name()).collect();
            CoreError::Config(format!("unknown model `{s}`: use one of {}", names.join(", ")))
        })
    }
}

/// Everything needed to rebuild an encoder (stored in checkpoints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    pub kind: ModelKind,
    /// Width multiplier of the ResNets (1.0 = 64 channels in the first stage). ViTs ignore it.
    pub width: f32,
    /// K, the descriptor length (ignored by plain encoders, which take an empty `i`).
    pub num_invariances: usize,
    /// Side of the square input images (chooses the ResNet stem; fixes the ViT's patch grid).
    pub image_size: usize,
    #[serde(default = "three")]
    pub in_channels: usize,
    /// Hidden units of each kernel generator (Hyper-ResNet).
    #[serde(default = "thirty_two")]
    pub hidden: usize,
    /// Generate the stem's kernel too (Hyper-ResNet).
    #[serde(default)]
    pub condition_stem: bool,
    /// ViT patch side; `None` picks 4 up to 64 px, 16 above.
    #[serde(default)]
    pub patch_size: Option<usize>,
    /// Invariance projectors `M` of a Prompt-ViT; `None` picks 256 for base, 32 for small, 16 for tiny.
    #[serde(default)]
    pub num_projectors: Option<usize>,
}

fn three() -> usize {
    3
}
fn thirty_two() -> usize {
    32
}

/// The built model: a ResNet (plain or Hyper) or a ViT (plain or Prompt).
#[derive(Module, Debug)]
pub enum Encoder {
    ResNet(ResNet),
    Vit(Vit),
}

/// Either architecture's configuration.
#[derive(Debug, Clone)]
pub enum ArchConfig {
    ResNet(ResNetConfig),
    Vit(VitConfig),
}

impl EncoderConfig {
    pub fn new(kind: ModelKind, num_invariances: usize) -> Self {
        Self {
            kind,
            width: 1.0,
            num_invariances,
            image_size: 32,
            in_channels: 3,
            hidden: 32,
            condition_stem: false,
            patch_size: None,
            num_projectors: None,
        }
    }

    pub fn with_width(mut self, width: f32) -> Self {
        self.width = width;
        self
    }

    pub fn with_image_size(mut self, image_size: usize) -> Self {
        self.image_size = image_size;
        self
    }

    /// The descriptor length the model takes: K when amortised, 0 otherwise.
    pub fn input_invariances(&self) -> usize {
        if self.kind.is_amortised() { self.num_invariances } else { 0 }
    }

    /// Checks every value before building; the message names the field.
    pub fn validate(&self) -> Result<(), CoreError> {
        let bad = |m: String| Err(CoreError::Config(m));
        if !(self.width > 0.0 && self.width.is_finite()) {
            return bad(format!("width must be positive (got {})", self.width));
        }
        if self.image_size == 0 || self.in_channels == 0 || self.hidden == 0 {
            return bad("image_size, in_channels and hidden must be at least 1".into());
        }
        // Upper bounds keep every size computation far from overflow and every allocation sane.
        if self.width > 64.0 || self.image_size > 4096 || self.in_channels > 64 || self.hidden > 4096 || self.num_invariances > 64 {
            return bad(format!(
                "out of range: width {} (max 64), image_size {} (max 4096), in_channels {} (max 64), hidden {} (max 4096), num_invariances {} (max 64)",
                self.width, self.image_size, self.in_channels, self.hidden, self.num_invariances
            ));
        }
        if self.num_projectors.is_some_and(|m| m == 0 || m > 4096) || self.patch_size.is_some_and(|p| p == 0) {
            return bad("num_projectors must be in 1..=4096 and patch_size at least 1".into());
        }
        if self.kind.is_amortised() && self.num_invariances == 0 {
            return bad(format!("{} needs num_invariances >= 1", self.kind));
        }
        if let ArchConfig::Vit(v) = self.arch() {
            v.validate()?;
        }
        Ok(())
    }

    /// The architecture's own configuration.
    pub fn arch(&self) -> ArchConfig {
        let k = self.input_invariances();
        let resnet = |c: ResNetConfig| {
            ArchConfig::ResNet(
                c.with_stem_for(self.image_size)
                    .with_in_channels(self.in_channels)
                    .with_num_invariances(k)
                    .with_hidden(self.hidden)
                    .with_condition_stem(self.condition_stem),
            )
        };
        let vit = |c: VitConfig, projectors: usize| {
            let patch = self.patch_size.unwrap_or(if self.image_size <= 64 { 4 } else { 16 });
            ArchConfig::Vit(
                c.with_patch_size(patch)
                    .with_image_size(self.image_size)
                    .with_in_channels(self.in_channels)
                    .with_num_invariances(k)
                    .with_num_projectors(self.num_projectors.unwrap_or(projectors)),
            )
        };
        match self.kind {
            ModelKind::HyperResnet18 | ModelKind::Resnet18 => resnet(ResNetConfig::resnet18(self.width)),
            ModelKind::HyperResnet34 | ModelKind::Resnet34 => resnet(ResNetConfig::resnet34(self.width)),
            ModelKind::HyperResnet50 | ModelKind::Resnet50 => resnet(ResNetConfig::resnet50(self.width)),
            ModelKind::PromptVitTiny | ModelKind::VitTiny => vit(VitConfig::tiny(), 16),
            ModelKind::PromptVitSmall | ModelKind::VitSmall => vit(VitConfig::small(), 32),
            ModelKind::PromptVitBase | ModelKind::VitBase => vit(VitConfig::base(), 256),
        }
    }

    pub fn feature_dim(&self) -> usize {
        match self.arch() {
            ArchConfig::ResNet(c) => c.feature_dim(),
            ArchConfig::Vit(c) => c.feature_dim(),
        }
    }

    /// Builds the encoder after validating the config.
    pub fn init(&self, device: &Device) -> Result<Encoder, CoreError> {
        self.validate()?;
        Ok(match self.arch() {
            ArchConfig::ResNet(c) => Encoder::ResNet(c.init(device)),
            ArchConfig::Vit(c) => Encoder::Vit(c.init(device)),
        })
    }
}

impl Encoder {
    /// Features at descriptor `i` (`[K]`; an empty tensor for plain encoders).
    ///
    /// # Shapes
    /// - `images`: `[batch, channels, height, width]`, `i`: `[K]`
    /// - output: `[batch, feature_dim]`
    pub fn forward_features(&self, images: Tensor<4>, i: Tensor<1>) -> Tensor<2> {
        match self {
            Encoder::ResNet(m) => m.forward_features(images, i),
            Encoder::Vit(m) => m.forward_features(images, i),
        }
    }
}

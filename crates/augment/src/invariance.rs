//! The evaluation transforms of invariance measurement (docs/method.md, "Measuring invariance"),
//! after Ericsson, Gouk & Hospedales, [Why Do Self-Supervised Models Transfer?](https://arxiv.org/abs/2111.11398)
//! (2022): each transform with its parameter grid, applied on the CPU to images in `[0, 1]`. The
//! measurement itself (the whitened cosine of an image's features to its transformed version's)
//! is `ail_core::invariance`, which `ail measure`, `ail interpolate` and the browser page share.

use crate::Affine;
use crate::AugmentError;
use crate::affine::affine_reference;
use crate::blur_solarize::blur_pass_reference;
use crate::color_jitter::{brightness_reference, contrast_reference, grayscale_reference, hue_reference, saturation_reference};

// ---------------------------------------------------------------------------------------------
// Transforms
// ---------------------------------------------------------------------------------------------

/// Every transform, in report order. Names are stable: they key the CSV rows and `--transforms`.
pub const TRANSFORM_NAMES: [&str; 13] = [
    "resized-crop",
    "h-flip",
    "v-flip",
    "scale",
    "rotation",
    "translation",
    "shear",
    "grayscale",
    "brightness",
    "contrast",
    "saturation",
    "hue",
    "blur",
];

/// One setting of a transform, applied to a `[C, H, W]` image in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    /// Any geometric transform (crops, flips, rotation, ...), resampled to the same size.
    Affine(Affine),
    Brightness(f32),
    Contrast(f32),
    Saturation(f32),
    /// Hue shift in turns.
    Hue(f32),
    Grayscale,
    /// Gaussian blur with `2 radius + 1` taps.
    Blur { sigma: f32, radius: usize },
}

impl Op {
    /// The transformed `[C, H, W]` image (same shape).
    pub fn apply(&self, image: &[f32], shape: [usize; 3]) -> Vec<f32> {
        let [c, h, w] = shape;
        let mut out = image.to_vec();
        match *self {
            Op::Affine(affine) => return affine_reference(image, shape, [h, w], &affine),
            Op::Brightness(f) => brightness_reference(&mut out, f),
            Op::Contrast(f) => contrast_reference(&mut out, c, f),
            Op::Saturation(f) => saturation_reference(&mut out, c, f),
            Op::Hue(shift) => hue_reference(&mut out, c, shift),
            Op::Grayscale => grayscale_reference(&mut out, c),
            Op::Blur { sigma, radius } => {
                let rows = blur_pass_reference(image, shape, sigma, radius, false);
                return blur_pass_reference(&rows, shape, sigma, radius, true);
            }
        }
        out
    }

    /// Applies the setting to `num_images` images laid out `[n, C, H, W]`.
    pub fn apply_all(&self, images: &[f32], num_images: usize, shape: [usize; 3]) -> Vec<f32> {
        let len = shape.iter().product::<usize>();
        assert_eq!(images.len(), num_images * len, "images do not match [{num_images}, {shape:?}]");
        images.chunks_exact(len).flat_map(|image| self.apply(image, shape)).collect()
    }
}

/// A named transform with its parameter grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Transform {
    pub name: &'static str,
    pub settings: Vec<Op>,
}

/// The transform called `name` for images of `[C, H, W]`, with its grid:
///
/// | name           | settings                                                                  |
/// |----------------|---------------------------------------------------------------------------|
/// | `resized-crop` | boxes of 25 %, 50 %, 75 % of the area at the centre and the four corners, resized back |
/// | `h-flip`, `v-flip` | the flip                                                              |
/// | `scale`        | zoom 0.6, 0.8, 1.25, 1.5 about the centre                                 |
/// | `rotation`     | +-15, +-30, +-45 degrees                                                  |
/// | `translation`  | 1/8 and 1/4 of the side, left, right, up and down                         |
/// | `shear`        | +-10, +-20 degrees (horizontal)                                           |
/// | `grayscale`    | ITU-R 601 luma                                                            |
/// | `brightness`, `contrast` | factors 0.6, 0.8, 1.2, 1.4                                      |
/// | `saturation`   | factors 0.4, 0.7, 1.3, 1.6                                                |
/// | `hue`          | shifts +-0.1, +-0.2 turns                                                 |
/// | `blur`         | gaussian sigma 0.5, 1, 1.5, 2 pixels (radius 3 sigma)                     |
pub fn transform(name: &str, [_, h, w]: [usize; 3]) -> Option<Transform> {
    let affine = |a: Affine| Op::Affine(a);
    let settings: Vec<Op> = match name {
        "resized-crop" => {
            let mut ops = Vec::new();
            for area in [0.25f64, 0.5, 0.75] {
                let bh = ((area.sqrt() * h as f64).round() as usize).clamp(1, h);
                let bw = ((area.sqrt() * w as f64).round() as usize).clamp(1, w);
                let boxes = [((h - bh) / 2, (w - bw) / 2), (0, 0), (0, w - bw), (h - bh, 0), (h - bh, w - bw)];
                ops.extend(boxes.map(|(top, left)| affine(Affine::crop(top, left, bh, bw, h, w))));
            }
            ops
        }
        "h-flip" => vec![affine(Affine::identity(h, w).then_hflip(w))],
        "v-flip" => vec![affine(Affine::identity(h, w).then_vflip(h))],
        "scale" => [0.6, 0.8, 1.25, 1.5].map(|f| affine(Affine::scale(h, w, f))).to_vec(),
        "rotation" => [-45.0, -30.0, -15.0, 15.0, 30.0, 45.0].map(|d| affine(Affine::rotation(h, w, d))).to_vec(),
        "translation" => {
            let mut ops = Vec::new();
            for fraction in [0.125f32, 0.25] {
                let (dx, dy) = (fraction * w as f32, fraction * h as f32);
                for (x, y) in [(dx, 0.0), (-dx, 0.0), (0.0, dy), (0.0, -dy)] {
                    ops.push(affine(Affine::translation(h, w, x, y)));
                }
            }
            ops
        }
        "shear" => [-20.0, -10.0, 10.0, 20.0].map(|d| affine(Affine::shear(h, w, d))).to_vec(),
        "grayscale" => vec![Op::Grayscale],
        "brightness" => [0.6, 0.8, 1.2, 1.4].map(Op::Brightness).to_vec(),
        "contrast" => [0.6, 0.8, 1.2, 1.4].map(Op::Contrast).to_vec(),
        "saturation" => [0.4, 0.7, 1.3, 1.6].map(Op::Saturation).to_vec(),
        "hue" => [-0.2, -0.1, 0.1, 0.2].map(Op::Hue).to_vec(),
        "blur" => {
            let max_radius = h.min(w).saturating_sub(1);
            [0.5f32, 1.0, 1.5, 2.0]
                .map(|sigma| Op::Blur { sigma, radius: ((3.0 * sigma).ceil() as usize).min(max_radius) })
                .to_vec()
        }
        _ => return None,
    };
    let name = TRANSFORM_NAMES.iter().find(|n| **n == name).expect("every matched name is listed");
    Some(Transform { name, settings })
}

/// Parses a comma-separated list of transform names (`all` or empty: every transform).
pub fn parse_transforms(list: &str, shape: [usize; 3]) -> Result<Vec<Transform>, AugmentError> {
    let list = list.trim();
    if list.is_empty() || list == "all" {
        return Ok(TRANSFORM_NAMES.iter().map(|n| transform(n, shape).expect("listed names exist")).collect());
    }
    let mut out: Vec<Transform> = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let t = transform(name, shape).ok_or_else(|| {
            AugmentError::Config(format!("unknown transform `{name}`: use any of {} (comma-separated), or all", TRANSFORM_NAMES.join(", ")))
        })?;
        if !out.iter().any(|o| o.name == t.name) {
            out.push(t);
        }
    }
    Ok(out)
}

/// Every setting of every transform applied to `num_images` images `[n, C, H, W]` in `[0, 1]`,
/// concatenated in order (transform by transform, setting by setting): one batch for a caller
/// that computes all the features at once. [`similarities_from_features`] reads its features back.
pub fn transformed_all(images: &[f32], num_images: usize, shape: [usize; 3], transforms: &[Transform]) -> Vec<f32> {
    transforms.iter().flat_map(|t| t.settings.iter()).flat_map(|op| op.apply_all(images, num_images, shape)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transforms_have_stable_names_and_keep_the_shape() {
        let shape = [3, 8, 6];
        let image: Vec<f32> = (0..3 * 8 * 6).map(|v| (v % 17) as f32 / 16.0).collect();
        for name in TRANSFORM_NAMES {
            let t = transform(name, shape).unwrap();
            assert_eq!(t.name, name);
            assert!(!t.settings.is_empty(), "{name}");
            for op in &t.settings {
                let out = op.apply(&image, shape);
                assert_eq!(out.len(), image.len(), "{name}");
                assert!(out.iter().all(|v| v.is_finite() && (-1e-6..=1.0 + 1e-6).contains(v)), "{name} {op:?}");
            }
        }
        assert_eq!(transform("resized-crop", shape).unwrap().settings.len(), 15);
        assert_eq!(parse_transforms("all", shape).unwrap().len(), TRANSFORM_NAMES.len());
        assert_eq!(parse_transforms(" grayscale , h-flip,grayscale", shape).unwrap().len(), 2);
        let err = format!("{:#}", parse_transforms("h-flip,twirl", shape).unwrap_err());
        assert!(err.contains("unknown transform `twirl`") && err.contains("resized-crop"), "{err}");
    }
}

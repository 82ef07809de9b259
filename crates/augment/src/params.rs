//! Per-sample augmentation parameters, drawn on the host from a seeded RNG (torchvision's
//! `get_params` semantics), and the descriptor -> pipeline mapping (docs/method.md, "Augmentation sets").
//!
//! The kernels are deterministic given these parameters, so the GPU path and the CPU reference can
//! be compared value for value and any run can be replayed.

use crate::{Descriptor, Family};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::affine::Affine;

/// Number of `f32` values one sample's parameters occupy in the buffer the kernels read.
pub const PARAM_STRIDE: usize = 24;

/// Augmentation hyper-parameters; the defaults are docs/method.md's (SimCLR / MoCo-v2 values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Area fraction range of the random resized crop.
    pub crop_scale: [f32; 2],
    /// Aspect-ratio range of the random resized crop.
    pub crop_ratio: [f32; 2],
    pub hflip_p: f32,
    pub jitter_p: f32,
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
    pub grayscale_p: f32,
    pub blur_p: f32,
    pub blur_sigma: [f32; 2],
    /// Blur kernel size as a fraction of the image side (made odd, at least 3).
    pub blur_kernel_fraction: f32,
    pub solarize_p: f32,
    pub solarize_threshold: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            crop_scale: [0.08, 1.0],
            crop_ratio: [3.0 / 4.0, 4.0 / 3.0],
            hflip_p: 0.5,
            jitter_p: 0.8,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.4,
            hue: 0.1,
            grayscale_p: 0.2,
            blur_p: 0.5,
            blur_sigma: [0.1, 2.0],
            blur_kernel_fraction: 0.1,
            solarize_p: 0.2,
            solarize_threshold: 0.5,
        }
    }
}

impl AugmentConfig {
    /// Checks every value; the message names the field and its valid range.
    pub fn validate(&self) -> Result<(), crate::AugmentError> {
        let bad = |field: &str, why: &str| {
            Err(crate::AugmentError::Config(format!("augment.{field}: {why}")))
        };
        for (name, p) in [
            ("hflip_p", self.hflip_p),
            ("jitter_p", self.jitter_p),
            ("grayscale_p", self.grayscale_p),
            ("blur_p", self.blur_p),
            ("solarize_p", self.solarize_p),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(name, &format!("probability {p} is outside [0, 1]"));
            }
        }
        let [s0, s1] = self.crop_scale;
        if !(0.0 < s0 && s0 <= s1 && s1 <= 1.0) {
            return bad("crop_scale", "needs 0 < min <= max <= 1");
        }
        let [r0, r1] = self.crop_ratio;
        if !(0.0 < r0 && r0 <= r1) {
            return bad("crop_ratio", "needs 0 < min <= max");
        }
        for (name, v) in [
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("saturation", self.saturation),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(name, &format!("{v} is outside [0, 1] (factors are drawn from [1-v, 1+v])"));
            }
        }
        if !(0.0..=0.5).contains(&self.hue) {
            return bad("hue", &format!("{} is outside [0, 0.5]", self.hue));
        }
        let [b0, b1] = self.blur_sigma;
        if !(0.0 < b0 && b0 <= b1) {
            return bad("blur_sigma", "needs 0 < min <= max");
        }
        if !(0.0..=1.0).contains(&self.blur_kernel_fraction) {
            return bad("blur_kernel_fraction", "must be in [0, 1]");
        }
        if !(0.0..=1.0).contains(&self.solarize_threshold) {
            return bad("solarize_threshold", "must be in [0, 1]");
        }
        Ok(())
    }

    /// Radius of the blur kernel for images of side `side`: the kernel has `2 r + 1` taps, about
    /// `blur_kernel_fraction` of the side (23 taps at 224 px as in MoCo-v2, 3 at 32 px).
    pub fn blur_radius(&self, side: usize) -> usize {
        let k = (self.blur_kernel_fraction * side as f32) as usize;
        let k = if k % 2 == 0 { k + 1 } else { k };
        k.max(3) / 2
    }
}

impl AugmentConfig {
    /// The operations `descriptor` switches on, and this config at the descriptor's strengths
    /// (docs/method.md, "Fractional descriptors"). An entry `t` of `i` above 0 switches its
    /// operations on and scales each of them by `t`: its magnitude where it has one (the crop's
    /// area and aspect-ratio ranges shrink toward the whole image, the jitter factors and the blur's
    /// sigma toward the identity), its probability where it has none (flip, grayscale, solarize).
    /// A binary descriptor gives [`OpSet::from_descriptor`]'s operations, and the views drawn with
    /// them are those of `self`.
    pub fn at_descriptor(&self, family: Family, descriptor: &Descriptor) -> (OpSet, AugmentConfig) {
        let t = |j: usize| descriptor.values().get(j).copied().unwrap_or(0.0).clamp(0.0, 1.0);
        // [crop, flip, jitter, grayscale, blur, solarize]
        let s: [f32; 6] = match family {
            Family::Groups => [t(0), t(0), t(1), t(1), t(1), t(1)],
            Family::Individual => [t(0), t(1), t(2), t(3), t(4), 0.0],
            Family::Audio => return (OpSet::default(), self.clone()),
        };
        let ops = OpSet { crop: s[0] > 0.0, flip: s[1] > 0.0, jitter: s[2] > 0.0, grayscale: s[3] > 0.0, blur: s[4] > 0.0, solarize: s[5] > 0.0 };
        let mut c = self.clone();
        c.crop_scale = self.crop_scale.map(|a| 1.0 - s[0] * (1.0 - a));
        c.crop_ratio = self.crop_ratio.map(|r| r.powf(s[0]));
        c.hflip_p = self.hflip_p * s[1];
        c.brightness = self.brightness * s[2];
        c.contrast = self.contrast * s[2];
        c.saturation = self.saturation * s[2];
        c.hue = self.hue * s[2];
        c.grayscale_p = self.grayscale_p * s[3];
        c.blur_sigma = self.blur_sigma.map(|v| v * s[4]);
        c.solarize_p = self.solarize_p * s[5];
        (ops, c)
    }
}

/// Which operations a view may apply (each then fires with its probability).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OpSet {
    pub crop: bool,
    pub flip: bool,
    pub jitter: bool,
    pub grayscale: bool,
    pub blur: bool,
    pub solarize: bool,
}

impl OpSet {
    /// The operations a descriptor switches on.
    ///
    /// - K = 2 `[spatial, appearance]`: spatial = resized crop + horizontal flip; appearance =
    ///   colour jitter, grayscale, blur, solarize.
    /// - K = 5 `[crop, flip, jitter, grayscale, blur]`: one op each, SimCLR's five defaults (the
    ///   paper's individual condition); solarize is never on (it belongs to the MoCo appearance
    ///   group only).
    pub fn from_descriptor(family: Family, descriptor: &Descriptor) -> Self {
        // One mapping from entries to operations: `at_descriptor`'s, at the entries rounded to 0 or 1.
        let binary = Descriptor((0..descriptor.values().len()).map(|j| if descriptor.is_on(j) { 1.0 } else { 0.0 }).collect());
        AugmentConfig::default().at_descriptor(family, &binary).0
    }
}

/// Everything one view of one image needs; [`ViewParams::pack`] lays it out for the kernels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewParams {
    pub affine: Affine,
    /// Brightness, contrast, saturation factors and hue shift (identity: 1, 1, 1, 0).
    pub jitter: [f32; 4],
    /// The order in which the four jitter ops run (0 brightness, 1 contrast, 2 saturation, 3 hue).
    pub jitter_order: [u8; 4],
    pub jitter_on: bool,
    pub grayscale: bool,
    /// Gaussian blur sigma; 0 switches the blur off.
    pub blur_sigma: f32,
    /// Solarize threshold; values above 1 switch it off.
    pub solarize_threshold: f32,
}

impl ViewParams {
    /// The identity view of an `height x width` image.
    pub fn identity(height: usize, width: usize) -> Self {
        Self {
            affine: Affine::identity(height, width),
            jitter: [1.0, 1.0, 1.0, 0.0],
            jitter_order: [0, 1, 2, 3],
            jitter_on: false,
            grayscale: false,
            blur_sigma: 0.0,
            solarize_threshold: 2.0,
        }
    }

    /// Draws one view's parameters for an `height x width` image.
    pub fn sample(
        ops: OpSet,
        config: &AugmentConfig,
        height: usize,
        width: usize,
        rng: &mut impl Rng,
    ) -> Self {
        let mut view = Self::identity(height, width);
        if ops.crop {
            let (top, left, h, w) = resized_crop_box(config, height, width, rng);
            view.affine = Affine::crop(top, left, h, w, height, width);
        }
        if ops.flip && rng.random::<f32>() < config.hflip_p {
            view.affine = view.affine.then_hflip(width);
        }
        if ops.jitter && rng.random::<f32>() < config.jitter_p {
            let mut order = [0u8, 1, 2, 3];
            rand::seq::SliceRandom::shuffle(&mut order[..], rng);
            let factor = |rng: &mut _, v: f32| uniform(rng, (1.0 - v).max(0.0), 1.0 + v);
            view.jitter = [
                factor(rng, config.brightness),
                factor(rng, config.contrast),
                factor(rng, config.saturation),
                uniform(rng, -config.hue, config.hue),
            ];
            view.jitter_order = order;
            view.jitter_on = true;
        }
        if ops.grayscale && rng.random::<f32>() < config.grayscale_p {
            view.grayscale = true;
        }
        if ops.blur && rng.random::<f32>() < config.blur_p {
            view.blur_sigma = uniform(rng, config.blur_sigma[0], config.blur_sigma[1]);
        }
        if ops.solarize && rng.random::<f32>() < config.solarize_p {
            view.solarize_threshold = config.solarize_threshold;
        }
        view
    }

    /// Whether this view's geometry reads only inside an `height x width` image (clamped views
    /// must have their bounds inside it; filled views check every tap).
    pub fn fits(&self, height: usize, width: usize) -> bool {
        let [x0, y0, x1, y1] = self.affine.bounds;
        self.affine.fill_outside
            || (0.0 <= x0 && x0 <= x1 && x1 <= width as f32 - 1.0 && 0.0 <= y0 && y0 <= y1 && y1 <= height as f32 - 1.0)
    }

    /// The `PARAM_STRIDE` floats the kernels read (layout documented in `shaders/*.wgsl`).
    pub fn pack(&self) -> [f32; PARAM_STRIDE] {
        let mut p = [0.0f32; PARAM_STRIDE];
        let a = &self.affine;
        p[0..6].copy_from_slice(&a.matrix);
        p[6..10].copy_from_slice(&a.bounds);
        p[10] = if a.fill_outside { 1.0 } else { 0.0 };
        p[11] = a.fill;
        p[12..16].copy_from_slice(&self.jitter);
        let o = self.jitter_order;
        p[16] = (o[0] as u32 + 4 * o[1] as u32 + 16 * o[2] as u32 + 64 * o[3] as u32) as f32;
        p[17] = if self.jitter_on { 1.0 } else { 0.0 };
        p[18] = if self.grayscale { 1.0 } else { 0.0 };
        p[19] = self.blur_sigma;
        p[20] = self.solarize_threshold;
        p
    }
}

fn uniform(rng: &mut impl Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.random::<f32>()
}

/// torchvision's `RandomResizedCrop.get_params`: ten tries at a box of random area and aspect
/// ratio that fits, else a centre crop clamped to the ratio range. Returns `(top, left, h, w)`.
pub fn resized_crop_box(
    config: &AugmentConfig,
    height: usize,
    width: usize,
    rng: &mut impl Rng,
) -> (usize, usize, usize, usize) {
    let area = (height * width) as f32;
    let (log_r0, log_r1) = (config.crop_ratio[0].ln(), config.crop_ratio[1].ln());
    for _ in 0..10 {
        let target_area = area * uniform(rng, config.crop_scale[0], config.crop_scale[1]);
        let aspect = uniform(rng, log_r0, log_r1).exp();
        // Python's round() rounds half to even.
        let w = (target_area * aspect).sqrt().round_ties_even() as usize;
        let h = (target_area / aspect).sqrt().round_ties_even() as usize;
        if 0 < w && w <= width && 0 < h && h <= height {
            let top = rng.random_range(0..=height - h);
            let left = rng.random_range(0..=width - w);
            return (top, left, h, w);
        }
    }
    let in_ratio = width as f32 / height as f32;
    let (h, w) = if in_ratio < config.crop_ratio[0] {
        ((width as f32 / config.crop_ratio[0]).round_ties_even() as usize, width)
    } else if in_ratio > config.crop_ratio[1] {
        (height, (height as f32 * config.crop_ratio[1]).round_ties_even() as usize)
    } else {
        (height, width)
    };
    let (h, w) = (h.clamp(1, height), w.clamp(1, width));
    ((height - h) / 2, (width - w) / 2, h, w)
}

/// Draws the parameters of `num_views` views for each of `batch` images: view `v` of image `b` is
/// entry `v * batch + b` (all first views, then all second views).
pub fn sample_views(
    ops: OpSet,
    config: &AugmentConfig,
    [batch, height, width]: [usize; 3],
    num_views: usize,
    rng: &mut impl Rng,
) -> Vec<ViewParams> {
    (0..num_views * batch)
        .map(|_| ViewParams::sample(ops, config, height, width, rng))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn binary_descriptors_keep_the_config_and_fractions_scale_it() {
        let config = AugmentConfig::default();
        for family in [Family::Groups, Family::Individual] {
            for d in family.trained() {
                let (ops, scaled) = config.at_descriptor(family, &d);
                assert_eq!(ops, OpSet::from_descriptor(family, &d), "{d}");
                // The same views from the same generator: an entry at 1 keeps its operations'
                // settings, one at 0 switches them off (their settings are then never read).
                let draw = |config: &AugmentConfig| sample_views(ops, config, [4, 32, 32], 2, &mut ChaCha8Rng::seed_from_u64(5));
                assert_eq!(draw(&scaled), draw(&config), "{d}");
            }
        }
        let (ops, half) = config.at_descriptor(Family::Groups, &Descriptor(vec![0.5, 0.25]));
        assert_eq!(ops, OpSet { crop: true, flip: true, jitter: true, grayscale: true, blur: true, solarize: true });
        assert!((half.crop_scale[0] - 0.54).abs() < 1e-6 && half.crop_scale[1] == 1.0, "{:?}", half.crop_scale);
        assert!((half.crop_ratio[0] - (0.75f32).sqrt()).abs() < 1e-6, "{:?}", half.crop_ratio);
        assert_eq!((half.hflip_p, half.brightness, half.hue, half.grayscale_p), (0.25, 0.1, 0.025, 0.05));
        assert_eq!((half.jitter_p, half.blur_p, half.blur_sigma), (0.8, 0.5, [0.025, 0.5]));
        half.validate().unwrap();
        // An entry at 0 switches its operations off; K = 5 never solarizes.
        let (ops, _) = config.at_descriptor(Family::Individual, &Descriptor(vec![0.0, 0.3, 0.0, 0.0, 1.0]));
        assert_eq!(ops, OpSet { flip: true, blur: true, ..OpSet::default() });
        // Views at strength t: a crop at 0.1 keeps most of the image.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (ops, weak) = config.at_descriptor(Family::Groups, &Descriptor(vec![0.1, 0.0]));
        for _ in 0..200 {
            let (_, _, h, w) = resized_crop_box(&weak, 32, 32, &mut rng);
            assert!(h * w >= (0.9 * 1024.0) as usize - 64, "{h} x {w}");
        }
        assert!(!ops.jitter && ops.crop);
    }

    #[test]
    fn default_config_is_valid_and_bad_values_are_named() {
        AugmentConfig::default().validate().unwrap();
        let msg = AugmentConfig { blur_p: 1.5, ..Default::default() }.validate().unwrap_err().to_string();
        assert!(msg.contains("augment.blur_p") && msg.contains("1.5"), "{msg}");
        let msg = AugmentConfig { crop_scale: [0.5, 0.1], ..Default::default() }
            .validate()
            .unwrap_err()
            .to_string();
        assert!(msg.contains("crop_scale"), "{msg}");
    }

    #[test]
    fn blur_kernel_is_a_tenth_of_the_side_and_odd() {
        let c = AugmentConfig::default();
        assert_eq!(c.blur_radius(224), 11); // 23 taps, as MoCo-v2
        assert_eq!(c.blur_radius(32), 1); // 3 taps
        assert_eq!(c.blur_radius(5), 1);
    }

    #[test]
    fn crop_boxes_fit_and_cover_the_configured_area() {
        let c = AugmentConfig::default();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut areas = Vec::new();
        for _ in 0..2000 {
            let (t, l, h, w) = resized_crop_box(&c, 32, 32, &mut rng);
            assert!(h >= 1 && w >= 1 && t + h <= 32 && l + w <= 32);
            areas.push((h * w) as f32 / 1024.0);
        }
        let mean = areas.iter().sum::<f32>() / areas.len() as f32;
        // U(0.08, 1) has mean 0.54; rounding and rejection of boxes that do not fit shift it a bit.
        assert!((0.45..0.6).contains(&mean), "mean crop area {mean}");
        assert!(areas.iter().any(|&a| a < 0.15) && areas.iter().any(|&a| a > 0.9));
    }

    #[test]
    fn impossible_ratio_falls_back_to_a_centre_crop() {
        let c = AugmentConfig { crop_ratio: [4.0, 5.0], crop_scale: [1.0, 1.0], ..Default::default() };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        // A 10x10 image cannot hold a full-area box of ratio 4-5: centre crop of ratio 4, height
        // round(10 / 4) = 2 with Python's half-to-even rounding, as torchvision computes it.
        assert_eq!(resized_crop_box(&c, 10, 10, &mut rng), (4, 0, 2, 10));
    }

    #[test]
    fn descriptors_switch_the_right_ops() {
        let spatial = OpSet::from_descriptor(Family::Groups, &Descriptor(vec![1.0, 0.0]));
        assert!(spatial.crop && spatial.flip && !spatial.jitter && !spatial.blur);
        let appearance = OpSet::from_descriptor(Family::Groups, &Descriptor(vec![0.0, 1.0]));
        assert!(!appearance.crop && appearance.jitter && appearance.grayscale && appearance.solarize);
        // K = 5: SimCLR's five, one op per entry, never solarize.
        let expected = [
            OpSet { crop: true, ..Default::default() },
            OpSet { flip: true, ..Default::default() },
            OpSet { jitter: true, ..Default::default() },
            OpSet { grayscale: true, ..Default::default() },
            OpSet { blur: true, ..Default::default() },
        ];
        for (j, want) in expected.into_iter().enumerate() {
            let mut d = vec![0.0; 5];
            d[j] = 1.0;
            assert_eq!(OpSet::from_descriptor(Family::Individual, &Descriptor(d)), want, "entry {j}");
        }
        let all = OpSet::from_descriptor(Family::Individual, &Descriptor(vec![1.0; 5]));
        assert_eq!(all, OpSet { crop: true, flip: true, jitter: true, grayscale: true, blur: true, solarize: false });
    }

    #[test]
    fn sampling_is_reproducible_and_respects_probabilities() {
        let c = AugmentConfig::default();
        let all = OpSet::from_descriptor(Family::Groups, &Descriptor(vec![1.0, 1.0]));
        let a = sample_views(all, &c, [500, 32, 32], 2, &mut ChaCha8Rng::seed_from_u64(9));
        let b = sample_views(all, &c, [500, 32, 32], 2, &mut ChaCha8Rng::seed_from_u64(9));
        assert_eq!(a, b);
        let frac = |f: &dyn Fn(&ViewParams) -> bool| a.iter().filter(|v| f(v)).count() as f32 / 1000.0;
        assert!((frac(&|v| v.jitter_on) - 0.8).abs() < 0.05);
        assert!((frac(&|v| v.grayscale) - 0.2).abs() < 0.05);
        assert!((frac(&|v| v.blur_sigma > 0.0) - 0.5).abs() < 0.05);
        assert!((frac(&|v| v.solarize_threshold <= 1.0) - 0.2).abs() < 0.05);
        for v in a.iter().filter(|v| v.jitter_on) {
            assert!((0.6..=1.4).contains(&v.jitter[0]) && (-0.1..=0.1).contains(&v.jitter[3]));
            let mut o = v.jitter_order;
            o.sort();
            assert_eq!(o, [0, 1, 2, 3]);
        }
        // With appearance off, nothing but geometry changes.
        let s = sample_views(OpSet { crop: true, flip: true, ..Default::default() }, &c, [50, 32, 32], 1, &mut ChaCha8Rng::seed_from_u64(2));
        assert!(s.iter().all(|v| !v.jitter_on && !v.grayscale && v.blur_sigma == 0.0 && v.solarize_threshold > 1.0));
    }

    #[test]
    fn pack_encodes_the_jitter_order_exactly() {
        let mut v = ViewParams::identity(4, 4);
        v.jitter_order = [3, 1, 0, 2];
        let p = v.pack();
        assert_eq!(p[16], (3 + 4 + 0 + 64 * 2) as f32);
        assert_eq!(p[20], 2.0);
    }
}

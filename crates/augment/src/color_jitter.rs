//! Colour jitter (brightness, contrast, saturation, hue, applied in a per-sample random order) and
//! random grayscale, fused into one kernel: `shaders/color_jitter.wgsl`, one workgroup per image.
//!
//! Formulas follow torchvision's functional ops on float images in `[0, 1]`:
//! - brightness `f`: `clamp(f x)`;
//! - contrast `f`: `clamp(f x + (1 - f) m)`, `m` the mean of the grayscale image (per image);
//! - saturation `f`: `clamp(f x + (1 - f) gray(x))` per pixel;
//! - hue `h`: RGB -> HSV (torchvision's `_rgb2hsv`), `H = (H + h) mod 1`, back (`_hsv2rgb`);
//! - grayscale: `0.2989 r + 0.587 g + 0.114 b`, copied to the three channels.
//!
//! One-channel images: saturation, hue and grayscale leave them unchanged (as torchvision does).

use crate::params::ViewParams;

/// ITU-R 601 luma, as torchvision's `rgb_to_grayscale`.
pub fn gray(r: f32, g: f32, b: f32) -> f32 {
    0.2989 * r + 0.587 * g + 0.114 * b
}

/// torchvision `_rgb2hsv` for one pixel.
pub fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let eqc = maxc == minc;
    let cr = maxc - minc;
    let s = cr / if eqc { 1.0 } else { maxc };
    let div = if eqc { 1.0 } else { cr };
    let rc = (maxc - r) / div;
    let gc = (maxc - g) / div;
    let bc = (maxc - b) / div;
    let h = if maxc == r {
        bc - gc
    } else if maxc == g {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    // torch.fmod(h / 6 + 1, 1): h / 6 + 1 is positive, so fmod is x - floor(x).
    let x = h / 6.0 + 1.0;
    (x - x.floor(), s, maxc)
}

/// torchvision `_hsv2rgb` for one pixel.
pub fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let i = (i as i32).rem_euclid(6);
    let p = (v * (1.0 - s)).clamp(0.0, 1.0);
    let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
    let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
    match i {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

fn blend(x: f32, other: f32, factor: f32) -> f32 {
    (factor * x + (1.0 - factor) * other).clamp(0.0, 1.0)
}

/// Brightness on a `[C, H, W]` image in place.
pub fn brightness_reference(image: &mut [f32], factor: f32) {
    image.iter_mut().for_each(|x| *x = blend(*x, 0.0, factor));
}

/// Contrast on a `[C, H, W]` image (C = 1 or 3) in place.
pub fn contrast_reference(image: &mut [f32], channels: usize, factor: f32) {
    let hw = image.len() / channels;
    let mean = if channels == 3 {
        (0..hw).map(|p| gray(image[p], image[hw + p], image[2 * hw + p]) as f64).sum::<f64>() / hw as f64
    } else {
        image.iter().map(|&x| x as f64).sum::<f64>() / hw as f64
    } as f32;
    image.iter_mut().for_each(|x| *x = blend(*x, mean, factor));
}

/// Applies `op` to every RGB pixel of a `[3, H, W]` image.
fn per_pixel(image: &mut [f32], op: impl Fn(f32, f32, f32) -> (f32, f32, f32)) {
    let hw = image.len() / 3;
    for p in 0..hw {
        let (r, g, b) = op(image[p], image[hw + p], image[2 * hw + p]);
        image[p] = r;
        image[hw + p] = g;
        image[2 * hw + p] = b;
    }
}

/// Saturation on a `[C, H, W]` image in place.
pub fn saturation_reference(image: &mut [f32], channels: usize, factor: f32) {
    if channels != 3 {
        return;
    }
    per_pixel(image, |r, g, b| {
        let l = gray(r, g, b);
        (blend(r, l, factor), blend(g, l, factor), blend(b, l, factor))
    });
}

/// Hue shift on a `[C, H, W]` image in place.
pub fn hue_reference(image: &mut [f32], channels: usize, shift: f32) {
    if channels != 3 {
        return;
    }
    per_pixel(image, |r, g, b| {
        let (h, s, v) = rgb_to_hsv(r, g, b);
        let h = h + shift;
        hsv_to_rgb(h - h.floor(), s, v)
    });
}

/// Grayscale on a `[C, H, W]` image in place.
pub fn grayscale_reference(image: &mut [f32], channels: usize) {
    if channels != 3 {
        return;
    }
    per_pixel(image, |r, g, b| {
        let l = gray(r, g, b);
        (l, l, l)
    });
}

/// CPU reference of `color_jitter.wgsl`: the jitter ops in the view's order, then grayscale.
pub fn color_jitter_reference(image: &mut [f32], channels: usize, view: &ViewParams) {
    if view.jitter_on {
        let [b, c, s, h] = view.jitter;
        for op in view.jitter_order {
            match op {
                0 => brightness_reference(image, b),
                1 => contrast_reference(image, channels, c),
                2 => saturation_reference(image, channels, s),
                _ => hue_reference(image, channels, h),
            }
        }
    }
    if view.grayscale {
        grayscale_reference(image, channels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgb(r: f32, g: f32, b: f32) -> Vec<f32> {
        vec![r, g, b]
    }

    #[test]
    fn brightness_scales_and_clamps() {
        let mut img = vec![0.2, 0.5, 0.9];
        brightness_reference(&mut img, 1.4);
        assert_eq!(img, vec![0.2 * 1.4, 0.5 * 1.4, 1.0]);
    }

    #[test]
    fn contrast_blends_towards_the_grey_mean() {
        // Two pixels, red and black: gray = 0.2989 and 0; mean 0.14945.
        let mut img = vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        contrast_reference(&mut img, 3, 0.5);
        let m = 0.2989 / 2.0;
        let expected = [0.5 + 0.5 * m, 0.5 * m, 0.5 * m, 0.5 * m, 0.5 * m, 0.5 * m];
        for (a, e) in img.iter().zip(expected) {
            assert!((a - e).abs() < 1e-6, "{img:?}");
        }
    }

    #[test]
    fn saturation_zero_is_grayscale() {
        let mut a = rgb(0.9, 0.3, 0.1);
        let mut b = a.clone();
        saturation_reference(&mut a, 3, 0.0);
        grayscale_reference(&mut b, 3);
        let l = 0.2989 * 0.9 + 0.587 * 0.3 + 0.114 * 0.1;
        assert_eq!(a, b);
        assert!((a[0] - l).abs() < 1e-7 && a[0] == a[1] && a[1] == a[2]);
    }

    #[test]
    fn hue_rotates_primaries() {
        let close = |a: &[f32], e: [f32; 3]| a.iter().zip(e).all(|(x, y)| (x - y).abs() < 1e-6);
        let mut red = rgb(1.0, 0.0, 0.0);
        hue_reference(&mut red, 3, 1.0 / 3.0);
        assert!(close(&red, [0.0, 1.0, 0.0]), "{red:?}");
        let mut red = rgb(1.0, 0.0, 0.0);
        hue_reference(&mut red, 3, 0.5);
        assert!(close(&red, [0.0, 1.0, 1.0]), "{red:?}");
        let mut red = rgb(1.0, 0.0, 0.0);
        hue_reference(&mut red, 3, -1.0 / 6.0);
        assert!(close(&red, [1.0, 0.0, 1.0]), "{red:?}");
        // Greys have no hue: unchanged.
        let mut grey = rgb(0.4, 0.4, 0.4);
        hue_reference(&mut grey, 3, 0.3);
        assert_eq!(grey, rgb(0.4, 0.4, 0.4));
    }

    #[test]
    fn hsv_round_trip() {
        for &(r, g, b) in &[(0.1, 0.5, 0.9), (0.9, 0.9, 0.2), (0.3, 0.0, 0.6), (0.5, 0.2, 0.2)] {
            let (h, s, v) = rgb_to_hsv(r, g, b);
            let (r2, g2, b2) = hsv_to_rgb(h, s, v);
            assert!((r - r2).abs() < 1e-6 && (g - g2).abs() < 1e-6 && (b - b2).abs() < 1e-6);
        }
        // torchvision: hue of (0.1, 0.5, 0.9) is (4 + (gc - rc)) / 6 = (4 - 0.5) / 6.
        assert!((rgb_to_hsv(0.1, 0.5, 0.9).0 - 3.5 / 6.0).abs() < 1e-6);
    }

    #[test]
    fn order_matters_and_is_followed() {
        let mut v = ViewParams::identity(1, 2);
        v.jitter_on = true;
        v.jitter = [1.5, 1.0, 1.0, 0.0];
        // brightness then contrast(0) vs contrast(0) then brightness, on a grey image.
        v.jitter[1] = 0.0;
        let img = vec![0.2, 0.8, 0.2, 0.8, 0.2, 0.8];
        let mut a = img.clone();
        v.jitter_order = [0, 1, 2, 3];
        color_jitter_reference(&mut a, 3, &v);
        let mut b = img.clone();
        v.jitter_order = [1, 0, 2, 3];
        color_jitter_reference(&mut b, 3, &v);
        // The luma weights sum to 0.9999, so a grey pixel g has luma 0.9999 g.
        // brightness first: (0.3, 1.0 clamped) -> contrast 0 gives the mean luma 0.65 * 0.9999;
        // contrast first: mean luma 0.5 * 0.9999 everywhere, then brightness 1.5.
        assert!(a.iter().all(|&x| (x - 0.65 * 0.9999).abs() < 1e-6), "{a:?}");
        assert!(b.iter().all(|&x| (x - 1.5 * 0.5 * 0.9999).abs() < 1e-6), "{b:?}");
    }

    #[test]
    fn one_channel_images_ignore_colour_ops() {
        let mut img = vec![0.3, 0.6];
        saturation_reference(&mut img, 1, 0.0);
        hue_reference(&mut img, 1, 0.4);
        grayscale_reference(&mut img, 1);
        assert_eq!(img, vec![0.3, 0.6]);
        contrast_reference(&mut img, 1, 0.0);
        assert!(img.iter().all(|&x| (x - 0.45).abs() < 1e-6));
    }
}

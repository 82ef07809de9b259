//! Separable gaussian blur (reflect padding) with solarize fused into its vertical pass:
//! `shaders/blur_solarize.wgsl`. Solarize comes after blur in the augmentation order, so the
//! second blur pass is the last touch of every pixel and applies it for free.
//!
//! Blur follows torchvision's `gaussian_blur`: a `2r + 1`-tap kernel `exp(-x^2 / (2 sigma^2))` over
//! `x = -r..r`, normalised to sum 1, applied along rows then columns with reflect padding (which,
//! for a separable kernel, equals torchvision's 2-D convolution with reflect padding).
//! Solarize follows torchvision: `x >= threshold ? 1 - x : x`.

/// Normalised 1-D gaussian weights for `x = -radius..=radius`.
pub fn gaussian_weights(sigma: f32, radius: usize) -> Vec<f32> {
    let r = radius as i32;
    let w: Vec<f32> = (-r..=r).map(|x| (-0.5 * (x as f32 / sigma).powi(2)).exp()).collect();
    let sum: f32 = w.iter().sum();
    w.into_iter().map(|v| v / sum).collect()
}

/// Reflect padding ("reflect", without repeating the edge): -1 -> 1, n -> n - 2.
pub fn reflect(i: i32, n: usize) -> usize {
    let n = n as i32;
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let m = i.rem_euclid(period);
    (if m < n { m } else { period - m }) as usize
}

/// One blur pass over a `[C, H, W]` image: along rows (`vertical = false`) or columns.
pub fn blur_pass_reference(
    image: &[f32],
    [channels, height, width]: [usize; 3],
    sigma: f32,
    radius: usize,
    vertical: bool,
) -> Vec<f32> {
    if sigma <= 0.0 {
        return image.to_vec();
    }
    let weights = gaussian_weights(sigma, radius);
    let r = radius as i32;
    let mut out = vec![0.0; image.len()];
    for c in 0..channels {
        for y in 0..height {
            for x in 0..width {
                let mut acc = 0.0;
                for (k, w) in weights.iter().enumerate() {
                    let d = k as i32 - r;
                    let (sx, sy) = if vertical {
                        (x, reflect(y as i32 + d, height))
                    } else {
                        (reflect(x as i32 + d, width), y)
                    };
                    acc += w * image[(c * height + sy) * width + sx];
                }
                out[(c * height + y) * width + x] = acc;
            }
        }
    }
    out
}

/// torchvision's `solarize` in place.
pub fn solarize_reference(image: &mut [f32], threshold: f32) {
    image.iter_mut().for_each(|x| {
        if *x >= threshold {
            *x = 1.0 - *x
        }
    });
}

/// CPU reference of the two passes of `blur_solarize.wgsl`.
pub fn blur_solarize_reference(
    image: &[f32],
    shape: [usize; 3],
    sigma: f32,
    radius: usize,
    solarize_threshold: f32,
) -> Vec<f32> {
    let rows = blur_pass_reference(image, shape, sigma, radius, false);
    let mut out = blur_pass_reference(&rows, shape, sigma, radius, true);
    if solarize_threshold <= 1.0 {
        solarize_reference(&mut out, solarize_threshold);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_match_torchvision_for_sigma_1() {
        // exp(-0.5) = 0.60653; sum 2.21306 -> [0.27407, 0.45186, 0.27407]
        let w = gaussian_weights(1.0, 1);
        for (a, e) in w.iter().zip([0.274069, 0.451863, 0.274069]) {
            assert!((a - e).abs() < 1e-6, "{w:?}");
        }
    }

    #[test]
    fn reflect_does_not_repeat_the_edge() {
        let got: Vec<usize> = (-3..7).map(|i| reflect(i, 4)).collect();
        assert_eq!(got, vec![3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
        assert_eq!(reflect(-1, 1), 0);
    }

    #[test]
    fn corner_impulse_spreads_with_reflection() {
        // 1 at (0, 0) of a 3x3 image; the reflected neighbour (-1 -> 1) does not see it, so the
        // corner keeps w0^2 and (0, 1) gets w1 * w0 (w0 = 0.45186, w1 = 0.27407).
        let mut img = vec![0.0; 9];
        img[0] = 1.0;
        let out = blur_solarize_reference(&img, [1, 3, 3], 1.0, 1, 2.0);
        let (w0, w1) = (0.451863f32, 0.274069f32);
        assert!((out[0] - w0 * w0).abs() < 1e-6, "{out:?}");
        assert!((out[1] - w0 * w1).abs() < 1e-6, "{out:?}");
        assert!((out[4] - w1 * w1).abs() < 1e-6, "{out:?}");
        assert!(out[2].abs() < 1e-7);
        // A constant image stays constant: the weights sum to one.
        let flat = blur_solarize_reference(&[0.3; 20], [1, 4, 5], 1.7, 2, 2.0);
        assert!(flat.iter().all(|&v| (v - 0.3).abs() < 1e-6));
    }

    #[test]
    fn solarize_inverts_at_and_above_the_threshold() {
        let mut x = vec![0.4, 0.5, 0.6, 1.0];
        solarize_reference(&mut x, 0.5);
        assert_eq!(x, vec![0.4, 0.5, 1.0 - 0.6, 0.0]);
        let y = blur_solarize_reference(&[0.9, 0.1], [1, 1, 2], 0.0, 1, 0.5);
        assert!((y[0] - 0.1).abs() < 1e-7 && y[1] == 0.1);
    }
}

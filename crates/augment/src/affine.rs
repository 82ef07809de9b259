//! One affine bilinear resampling op for every geometric transform: the random resized crop and
//! horizontal flip of pretraining, and the evaluation transforms (rotation, translation, scale,
//! shear, vertical flip) of invariance measurement. Kernel: `shaders/affine.wgsl`.
//!
//! Coordinates are pixel indices (pixel `k` has its centre at `k`). For output pixel `(x, y)` the
//! source position is `(a x + b y + c, d x + e y + f)`, sampled bilinearly. Two border rules:
//! - clamp (`fill_outside = false`): the position is clamped into `bounds`, as when torchvision
//!   crops a box and then resizes it with `interpolate(mode="bilinear", align_corners=False)`;
//! - fill (`fill_outside = true`): taps outside `bounds` read `fill`; with `fill = 0` this is
//!   torchvision's `affine` / `rotate` with bilinear interpolation and `fill=None` (grid-sample zero
//!   padding). torchvision's default for those ops is nearest interpolation; measuring invariance
//!   uses bilinear here, which varies smoothly with the transform's parameter.

/// A geometric transform of an image (see the module docs for the conventions).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    /// `[a, b, c, d, e, f]`: output pixel -> source position.
    pub matrix: [f32; 6],
    /// `[x0, y0, x1, y1]`: the inclusive source region, in pixel indices.
    pub bounds: [f32; 4],
    pub fill_outside: bool,
    pub fill: f32,
}

impl Affine {
    /// Leaves an `height x width` image unchanged.
    pub fn identity(height: usize, width: usize) -> Self {
        Self {
            matrix: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            bounds: [0.0, 0.0, width as f32 - 1.0, height as f32 - 1.0],
            fill_outside: false,
            fill: 0.0,
        }
    }

    /// Crops the box `(top, left, h, w)` and resizes it to `out_h x out_w` (torchvision's
    /// `resized_crop` with bilinear interpolation, `align_corners=False`).
    pub fn crop(top: usize, left: usize, h: usize, w: usize, out_h: usize, out_w: usize) -> Self {
        let sx = w as f32 / out_w as f32;
        let sy = h as f32 / out_h as f32;
        Self {
            matrix: [
                sx,
                0.0,
                left as f32 + 0.5 * sx - 0.5,
                0.0,
                sy,
                top as f32 + 0.5 * sy - 0.5,
            ],
            bounds: [
                left as f32,
                top as f32,
                (left + w) as f32 - 1.0,
                (top + h) as f32 - 1.0,
            ],
            fill_outside: false,
            fill: 0.0,
        }
    }

    /// This transform followed by a horizontal flip of the `width`-wide output.
    pub fn then_hflip(self, width: usize) -> Self {
        let [a, b, c, d, e, f] = self.matrix;
        let w1 = width as f32 - 1.0;
        Self {
            matrix: [-a, b, c + a * w1, -d, e, f + d * w1],
            ..self
        }
    }

    /// This transform followed by a vertical flip of the `height`-tall output.
    pub fn then_vflip(self, height: usize) -> Self {
        let [a, b, c, d, e, f] = self.matrix;
        let h1 = height as f32 - 1.0;
        Self {
            matrix: [a, -b, c + b * h1, d, -e, f + e * h1],
            ..self
        }
    }

    /// A transform about the image centre: `src - centre = inverse * (out - centre) - shift`,
    /// zero outside the image.
    fn about_centre(height: usize, width: usize, inverse: [f32; 4], shift: [f32; 2]) -> Self {
        let (cx, cy) = ((width as f32 - 1.0) / 2.0, (height as f32 - 1.0) / 2.0);
        let [p, q, r, s] = inverse;
        Self {
            matrix: [
                p,
                q,
                cx - p * cx - q * cy - shift[0],
                r,
                s,
                cy - r * cx - s * cy - shift[1],
            ],
            bounds: [0.0, 0.0, width as f32 - 1.0, height as f32 - 1.0],
            fill_outside: true,
            fill: 0.0,
        }
    }

    /// Rotation by `degrees` counter-clockwise about the centre (torchvision's `rotate`).
    pub fn rotation(height: usize, width: usize, degrees: f32) -> Self {
        let (sin, cos) = degrees.to_radians().sin_cos();
        Self::about_centre(height, width, [cos, -sin, sin, cos], [0.0, 0.0])
    }

    /// Translation by `(dx, dy)` pixels (content moves right and down for positive values).
    pub fn translation(height: usize, width: usize, dx: f32, dy: f32) -> Self {
        Self::about_centre(height, width, [1.0, 0.0, 0.0, 1.0], [dx, dy])
    }

    /// Zoom by `factor` about the centre (> 1 enlarges the content).
    pub fn scale(height: usize, width: usize, factor: f32) -> Self {
        let inv = 1.0 / factor;
        Self::about_centre(height, width, [inv, 0.0, 0.0, inv], [0.0, 0.0])
    }

    /// Horizontal shear by `degrees` about the centre, as torchvision's
    /// `affine(angle=0, translate=[0, 0], scale=1, shear=[degrees, 0])`: the source of output
    /// pixel `(x, y)` is `(x + tan(degrees) (y - cy), y)` relative to the centre.
    pub fn shear(height: usize, width: usize, degrees: f32) -> Self {
        let t = degrees.to_radians().tan();
        Self::about_centre(height, width, [1.0, t, 0.0, 1.0], [0.0, 0.0])
    }

    /// The source position of output pixel `(x, y)`.
    pub fn source(&self, x: f32, y: f32) -> (f32, f32) {
        let [a, b, c, d, e, f] = self.matrix;
        (a * x + b * y + c, d * x + e * y + f)
    }
}

/// Bilinear sample of the `[height, width]` plane at `(sx, sy)` under `affine`'s border rule.
/// `shaders/affine.wgsl` computes exactly this.
pub fn sample_bilinear(plane: &[f32], height: usize, width: usize, sx: f32, sy: f32, affine: &Affine) -> f32 {
    let [bx0, by0, bx1, by1] = affine.bounds;
    if affine.fill_outside {
        let x0 = sx.floor();
        let y0 = sy.floor();
        let (wx, wy) = (sx - x0, sy - y0);
        let tap = |x: f32, y: f32| {
            if x < bx0 || x > bx1 || y < by0 || y > by1 || x < 0.0 || y < 0.0 || x >= width as f32 || y >= height as f32 {
                affine.fill
            } else {
                plane[y as usize * width + x as usize]
            }
        };
        let top = tap(x0, y0) * (1.0 - wx) + tap(x0 + 1.0, y0) * wx;
        let bottom = tap(x0, y0 + 1.0) * (1.0 - wx) + tap(x0 + 1.0, y0 + 1.0) * wx;
        top * (1.0 - wy) + bottom * wy
    } else {
        let sx = sx.clamp(bx0, bx1);
        let sy = sy.clamp(by0, by1);
        let x0 = sx.floor();
        let y0 = sy.floor();
        let (wx, wy) = (sx - x0, sy - y0);
        let x1 = (x0 + 1.0).min(bx1) as usize;
        let y1 = (y0 + 1.0).min(by1) as usize;
        let (x0, y0) = (x0 as usize, y0 as usize);
        let top = plane[y0 * width + x0] * (1.0 - wx) + plane[y0 * width + x1] * wx;
        let bottom = plane[y1 * width + x0] * (1.0 - wx) + plane[y1 * width + x1] * wx;
        top * (1.0 - wy) + bottom * wy
    }
}

/// CPU reference of `affine.wgsl`: resamples a `[C, H, W]` image (values in `[0, 1]`) to
/// `[C, out_h, out_w]`.
pub fn affine_reference(
    image: &[f32],
    [channels, height, width]: [usize; 3],
    [out_h, out_w]: [usize; 2],
    affine: &Affine,
) -> Vec<f32> {
    let mut out = vec![0.0; channels * out_h * out_w];
    for y in 0..out_h {
        for x in 0..out_w {
            let (sx, sy) = affine.source(x as f32, y as f32);
            for c in 0..channels {
                let plane = &image[c * height * width..(c + 1) * height * width];
                out[(c * out_h + y) * out_w + x] = sample_bilinear(plane, height, width, sx, sy, affine);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(values: &[f32], shape: [usize; 3], out: [usize; 2], affine: &Affine) -> Vec<f32> {
        affine_reference(values, shape, out, affine)
    }

    #[test]
    fn identity_is_exact() {
        let img: Vec<f32> = (0..3 * 7 * 5).map(|i| i as f32 / 104.0).collect();
        assert_eq!(grid(&img, [3, 7, 5], [7, 5], &Affine::identity(7, 5)), img);
    }

    #[test]
    fn upsampling_matches_torch_bilinear_align_corners_false() {
        // F.interpolate(tensor([[[[0., 1.], [2., 3.]]]]), size=4, mode="bilinear",
        // align_corners=False) -- source positions (d + 0.5) / 2 - 0.5 clamped to [0, 1].
        let out = grid(&[0., 1., 2., 3.], [1, 2, 2], [4, 4], &Affine::crop(0, 0, 2, 2, 4, 4));
        let expected = [
            0.0, 0.25, 0.75, 1.0, //
            0.5, 0.75, 1.25, 1.5, //
            1.5, 1.75, 2.25, 2.5, //
            2.0, 2.25, 2.75, 3.0,
        ];
        assert_eq!(out, expected);
    }

    #[test]
    fn crop_reads_only_inside_its_box() {
        // 4x4 image; the 2x2 box at (top 1, left 2) holds 6, 7, 10, 11.
        let img: Vec<f32> = (0..16).map(|i| i as f32).collect();
        let out = grid(&img, [1, 4, 4], [2, 2], &Affine::crop(1, 2, 2, 2, 2, 2));
        assert_eq!(out, vec![6., 7., 10., 11.]);
        let out = grid(&img, [1, 4, 4], [4, 4], &Affine::crop(1, 2, 2, 2, 4, 4));
        assert!(out.iter().all(|&v| (6.0..=11.0).contains(&v)), "{out:?}");
        assert_eq!((out[0], out[3], out[12], out[15]), (6.0, 7.0, 10.0, 11.0));
    }

    #[test]
    fn flips_reverse_rows_and_columns() {
        let img: Vec<f32> = (0..6).map(|i| i as f32).collect(); // 2 rows x 3 columns
        let h = grid(&img, [1, 2, 3], [2, 3], &Affine::identity(2, 3).then_hflip(3));
        assert_eq!(h, vec![2., 1., 0., 5., 4., 3.]);
        let v = grid(&img, [1, 2, 3], [2, 3], &Affine::identity(2, 3).then_vflip(2));
        assert_eq!(v, vec![3., 4., 5., 0., 1., 2.]);
    }

    #[test]
    fn rotation_by_90_matches_rot90() {
        // torch.rot90(x, 1, dims=(-2, -1)) == torchvision rotate(x, 90) on a square image.
        let img: Vec<f32> = (1..=9).map(|i| i as f32).collect();
        let out = grid(&img, [1, 3, 3], [3, 3], &Affine::rotation(3, 3, 90.0));
        let expected = [3., 6., 9., 2., 5., 8., 1., 4., 7.];
        for (o, e) in out.iter().zip(expected) {
            assert!((o - e).abs() < 1e-5, "{out:?}");
        }
    }

    #[test]
    fn translation_fills_with_zero_and_scale_zooms() {
        let img: Vec<f32> = (1..=9).map(|i| i as f32).collect();
        let out = grid(&img, [1, 3, 3], [3, 3], &Affine::translation(3, 3, 1.0, 0.0));
        assert_eq!(out, vec![0., 1., 2., 0., 4., 5., 0., 7., 8.]);
        // Zoom 2x about the centre: the centre pixel stays, the corner reads halfway to the centre.
        let out = grid(&img, [1, 3, 3], [3, 3], &Affine::scale(3, 3, 2.0));
        assert_eq!(out[4], 5.0);
        assert_eq!(out[0], (1.0 + 2.0 + 4.0 + 5.0) / 4.0);
        // Half-pixel translation blends with the zero fill at the border.
        let out = grid(&[1.0; 4], [1, 2, 2], [2, 2], &Affine::translation(2, 2, 0.5, 0.0));
        assert_eq!(out, vec![0.5, 1.0, 0.5, 1.0]);
    }

    #[test]
    fn shear_by_45_degrees_shifts_each_row_by_its_distance_from_the_centre() {
        // tan 45 = 1: output row y reads source columns x + (y - 2) of a 5x5 image, zero outside.
        let img: Vec<f32> = (0..25).map(|i| i as f32 + 1.0).collect();
        let out = grid(&img, [1, 5, 5], [5, 5], &Affine::shear(5, 5, 45.0));
        assert_eq!(&out[10..15], &img[10..15]);
        let close = |a: &[f32], e: &[f32]| a.iter().zip(e).all(|(x, y)| (x - y).abs() < 1e-4);
        assert!(close(&out[0..5], &[0.0, 0.0, 1.0, 2.0, 3.0]), "{:?}", &out[0..5]);
        assert!(close(&out[15..20], &[17.0, 18.0, 19.0, 20.0, 0.0]), "{:?}", &out[15..20]);
    }
}

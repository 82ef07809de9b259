//! A whole view: affine -> colour jitter + grayscale -> blur + solarize, on the device of choice.
//! On a wgpu device the three kernels of `shaders/` run on burn's tensors; on the CPU backend the
//! plain-Rust references run in parallel on the host (they are the same formulas).

use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;

use crate::affine::affine_reference;
use crate::blur_solarize::blur_solarize_reference;
use crate::color_jitter::color_jitter_reference;
use crate::{AugmentError, ViewParams};

/// CPU reference of a full view pipeline. `pixels` is a `u8` batch `[batch, C, H, W]`; view `s`
/// transforms image `s % batch`. Returns `[views.len(), C, H, W]` f32 in `[0, 1]`.
pub fn augment_reference(
    pixels: &[u8],
    [batch, channels, height, width]: [usize; 4],
    views: &[ViewParams],
    blur_radius: usize,
) -> Vec<f32> {
    let len = channels * height * width;
    let shape = [channels, height, width];
    views
        .par_iter()
        .enumerate()
        .flat_map_iter(|(s, view)| {
            let src = s % batch;
            let image: Vec<f32> = pixels[src * len..(src + 1) * len].iter().map(|&p| p as f32 / 255.0).collect();
            let mut out = affine_reference(&image, shape, [height, width], &view.affine);
            color_jitter_reference(&mut out, channels, view);
            blur_solarize_reference(&out, shape, view.blur_sigma, blur_radius, view.solarize_threshold)
        })
        .collect()
}

/// Packs `u8` bytes four per little-endian `i32` (zero-padded), the layout `affine.wgsl` reads.
pub fn pack_u8(pixels: &[u8]) -> Vec<i32> {
    pixels
        .chunks(4)
        .map(|c| {
            let mut word = [0u8; 4];
            word[..c.len()].copy_from_slice(c);
            i32::from_le_bytes(word)
        })
        .collect()
}

/// Flattens view parameters to the `[num, PARAM_STRIDE]` layout of the kernels.
pub fn pack_params(views: &[ViewParams]) -> Vec<f32> {
    views.iter().flat_map(|v| v.pack()).collect()
}

/// Runs augmentation on one device: the WGSL kernels on wgpu, the references on the CPU backend.
#[derive(Debug, Clone)]
pub struct Augmenter {
    device: Device,
    on_gpu: bool,
}

impl Augmenter {
    pub fn new(device: &Device) -> Self {
        Self {
            device: device.clone(),
            on_gpu: crate::device::is_cube(device),
        }
    }

    /// Whether the WGSL kernels run (otherwise the CPU references).
    pub fn uses_kernels(&self) -> bool {
        self.on_gpu
    }

    /// Augments a `u8` batch `[batch, C, H, W]` into `[views.len(), C, H, W]` f32 in `[0, 1]` on
    /// this augmenter's device. View `s` transforms image `s % batch`.
    pub fn apply(
        &self,
        pixels: &[u8],
        shape: [usize; 4],
        views: &[ViewParams],
        blur_radius: usize,
    ) -> Result<Tensor<4>, AugmentError> {
        let [batch, channels, height, width] = shape;
        if batch == 0 || views.is_empty() || pixels.len() != batch * channels * height * width {
            return Err(AugmentError::Shape(format!(
                "{} bytes and {} views for a batch of shape {shape:?}",
                pixels.len(),
                views.len()
            )));
        }
        if channels != 1 && channels != 3 {
            return Err(AugmentError::Shape(format!("{channels} channels: augmentation takes 1 or 3")));
        }
        let elements = views.len() as u64 * (channels * height * width) as u64;
        if elements > i32::MAX as u64 {
            return Err(AugmentError::Shape(format!(
                "{} views of {channels}x{height}x{width} make {elements} values, more than the \
                 kernels index (2^31 - 1): split the batch",
                views.len()
            )));
        }
        if let Some(k) = views.iter().position(|v| !v.fits(height, width)) {
            return Err(AugmentError::Shape(format!(
                "view {k} was drawn for another image size than {height}x{width}"
            )));
        }
        let out_shape = [views.len(), channels, height, width];
        if !self.on_gpu {
            let data = augment_reference(pixels, shape, views, blur_radius);
            return Ok(Tensor::from_data(TensorData::new(data, out_shape), &self.device));
        }
        #[cfg(feature = "wgpu")]
        {
            Ok(self.apply_kernels(pixels, shape, views, blur_radius))
        }
        #[cfg(not(feature = "wgpu"))]
        unreachable!("a cube device exists only with the wgpu feature")
    }

    #[cfg(feature = "wgpu")]
    fn apply_kernels(&self, pixels: &[u8], shape: [usize; 4], views: &[ViewParams], blur_radius: usize) -> Tensor<4> {
        use crate::PARAM_STRIDE;
        use crate::gpu::AugmentOps;
        use burn::backend::Dispatch;
        use burn::tensor::Int;
        let [batch, channels, height, width] = shape;
        let device = self.device.clone().without_autodiff();
        let words = pack_u8(pixels);
        let num_words = words.len();
        let packed = Tensor::<1, Int>::from_data(TensorData::new(words, [num_words]), &device);
        let params = Tensor::<2>::from_data(TensorData::new(pack_params(views), [views.len(), PARAM_STRIDE]), &device);
        let num = views.len() as u32;
        let dims = (num, batch as u32, channels as u32, height as u32, width as u32, height as u32, width as u32);
        let mut x = Tensor::<4>::from_dispatch(Dispatch::augment_affine_u8(
            packed.into_dispatch(),
            params.clone().into_dispatch(),
            dims,
        ));
        if views.iter().any(|v| v.jitter_on || v.grayscale) {
            x = Tensor::from_dispatch(Dispatch::augment_color_jitter(x.into_dispatch(), params.clone().into_dispatch()));
        }
        let any_blur = views.iter().any(|v| v.blur_sigma > 0.0);
        let any_solarize = views.iter().any(|v| v.solarize_threshold <= 1.0);
        let radius = blur_radius as u32;
        if any_blur {
            x = Tensor::from_dispatch(Dispatch::augment_blur_solarize(
                x.into_dispatch(),
                params.clone().into_dispatch(),
                radius,
                false,
                false,
            ));
        }
        if any_blur || any_solarize {
            x = Tensor::from_dispatch(Dispatch::augment_blur_solarize(
                x.into_dispatch(),
                params.into_dispatch(),
                radius,
                true,
                true,
            ));
        }
        if self.device.is_autodiff() { x.autodiff() } else { x }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Affine;

    #[test]
    fn pack_u8_is_little_endian_and_padded() {
        assert_eq!(pack_u8(&[1, 2, 3, 4, 5]), vec![0x0403_0201, 5]);
    }

    #[test]
    fn identity_views_return_the_images_scaled_to_unit_range() {
        let pixels: Vec<u8> = (0..2 * 3 * 4 * 5).map(|i| (i * 2) as u8).collect();
        let views = vec![ViewParams::identity(4, 5); 4];
        let out = augment_reference(&pixels, [2, 3, 4, 5], &views, 1);
        assert_eq!(out.len(), 4 * 60);
        // views 0 and 2 are image 0, views 1 and 3 image 1
        for (s, src) in [(0, 0), (1, 1), (2, 0), (3, 1)] {
            let expected: Vec<f32> = pixels[src * 60..(src + 1) * 60].iter().map(|&p| p as f32 / 255.0).collect();
            assert_eq!(&out[s * 60..(s + 1) * 60], &expected[..]);
        }
    }

    #[test]
    fn stages_compose_in_order() {
        // crop the top-left 1x1 pixel (value 255) and solarize: 1.0 >= 0.5 -> 0.0 everywhere.
        let mut pixels = vec![0u8; 3 * 2 * 2];
        pixels[0] = 255;
        pixels[4] = 255;
        pixels[8] = 255;
        let mut view = ViewParams::identity(2, 2);
        view.affine = Affine::crop(0, 0, 1, 1, 2, 2);
        let plain = augment_reference(&pixels, [1, 3, 2, 2], &[view], 1);
        assert!(plain.iter().all(|&v| v == 1.0));
        view.solarize_threshold = 0.5;
        let solarized = augment_reference(&pixels, [1, 3, 2, 2], &[view], 1);
        assert!(solarized.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn cpu_augmenter_checks_shapes() {
        let aug = Augmenter::new(&Device::flex());
        assert!(!aug.uses_kernels());
        let err = aug.apply(&[0; 5], [1, 1, 2, 2], &[ViewParams::identity(2, 2)], 1).unwrap_err();
        assert!(err.to_string().contains("5 bytes"), "{err}");
        let err = aug.apply(&[0; 8], [1, 2, 2, 2], &[ViewParams::identity(2, 2)], 1).unwrap_err();
        assert!(err.to_string().contains("2 channels"), "{err}");
        let err = aug.apply(&[0; 4], [1, 1, 2, 2], &[ViewParams::identity(3, 3)], 1).unwrap_err();
        assert!(err.to_string().contains("view 0 was drawn for another image size than 2x2"), "{err}");
        let t = aug.apply(&[255; 4], [1, 1, 2, 2], &[ViewParams::identity(2, 2); 3], 1).unwrap();
        assert_eq!(t.dims(), [3, 1, 2, 2]);
        assert_eq!(t.into_data().try_to_vec::<f32>().unwrap(), vec![1.0; 12]);
    }
}

use rayon::prelude::*;

use crate::{DataError, Result};

/// Decoded images in memory, `[N, C, H, W]` `u8`, with one label per image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    /// Pixels, image after image, each laid out `[C, H, W]`.
    pub pixels: Vec<u8>,
    /// One class index per image, `< class_names.len()`.
    pub labels: Vec<u32>,
    /// Class names in label order.
    pub class_names: Vec<String>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Where each image came from (a file path, a zip entry, `file#record`), one per image; empty
    /// when the source names none (the built-in data).
    pub sources: Vec<String>,
}

impl ImageSet {
    /// Builds a set after checking that the pixel buffer, the labels and the shape agree.
    pub fn new(
        pixels: Vec<u8>,
        labels: Vec<u32>,
        class_names: Vec<String>,
        [channels, height, width]: [usize; 3],
    ) -> Result<Self> {
        let per_image = channels * height * width;
        if per_image == 0 {
            return Err(DataError::InvalidOption(format!(
                "image shape {channels}x{height}x{width} has no pixels"
            )));
        }
        if pixels.len() != labels.len() * per_image {
            return Err(DataError::InvalidOption(format!(
                "{} pixel bytes do not hold {} images of {channels}x{height}x{width}",
                pixels.len(),
                labels.len()
            )));
        }
        if let Some(bad) = labels.iter().find(|&&l| l as usize >= class_names.len()) {
            return Err(DataError::InvalidOption(format!(
                "label {bad} is out of range for {} classes",
                class_names.len()
            )));
        }
        Ok(Self {
            pixels,
            labels,
            class_names,
            channels,
            height,
            width,
            sources: Vec::new(),
        })
    }

    /// The set with `sources` naming where each image came from (one per image).
    pub fn with_sources(mut self, sources: Vec<String>) -> Result<Self> {
        if sources.len() != self.len() {
            return Err(DataError::InvalidOption(format!("{} sources for {} images", sources.len(), self.len())));
        }
        self.sources = sources;
        Ok(self)
    }

    /// Where image `index` came from: its recorded source, or `#index` when none is recorded.
    pub fn source(&self, index: usize) -> String {
        self.sources.get(index).cloned().unwrap_or_else(|| format!("#{index}"))
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Bytes of one image, `C * H * W`.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// `[channels, height, width]`.
    pub fn shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    /// The pixels of image `index`, laid out `[C, H, W]`.
    pub fn image(&self, index: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[index * n..(index + 1) * n]
    }

    /// The images at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> ImageSet {
        let mut pixels = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        ImageSet {
            pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            class_names: self.class_names.clone(),
            channels: self.channels,
            height: self.height,
            width: self.width,
            sources: if self.sources.is_empty() { Vec::new() } else { indices.iter().map(|&i| self.sources[i].clone()).collect() },
        }
    }

    /// Converts to `channels` channels: grey (1) expands to RGB (3) by replication; RGB reduces to
    /// grey with the ITU-R 601 luma weights that torchvision's `rgb_to_grayscale` uses.
    pub fn to_channels(self, channels: usize) -> Result<ImageSet> {
        if channels == self.channels {
            return Ok(self);
        }
        let hw = self.height * self.width;
        let pixels: Vec<u8> = match (self.channels, channels) {
            (1, 3) => self
                .pixels
                .par_chunks(hw)
                .flat_map_iter(|grey| grey.iter().chain(grey).chain(grey).copied().collect::<Vec<_>>())
                .collect(),
            (3, 1) => self
                .pixels
                .par_chunks(3 * hw)
                .flat_map_iter(|rgb| rgb_planes_to_luma(rgb, hw))
                .collect(),
            (from, to) => {
                return Err(DataError::InvalidOption(format!(
                    "cannot convert {from}-channel images to {to} channels (supported: 1 <-> 3)"
                )));
            }
        };
        Ok(ImageSet {
            pixels,
            channels,
            ..self
        })
    }

    /// Resizes every image to `height x width` (bilinear, area-aware when shrinking).
    pub fn resized(self, height: usize, width: usize) -> Result<ImageSet> {
        if (height, width) == (self.height, self.width) {
            return Ok(self);
        }
        if height == 0 || width == 0 {
            return Err(DataError::InvalidOption(format!(
                "cannot resize images to {height}x{width}"
            )));
        }
        let (c, h, w) = (self.channels, self.height, self.width);
        let pixels: Vec<u8> = self
            .pixels
            .par_chunks(c * h * w)
            .flat_map_iter(|img| resize_chw(img, [c, h, w], height, width))
            .collect();
        Ok(ImageSet {
            pixels,
            height,
            width,
            ..self
        })
    }
}

/// ITU-R 601 luma (torchvision's `rgb_to_grayscale`, PIL's `convert("L")`) of one `[3, H, W]`
/// image with `hw = H * W` pixels per plane, rounded to `u8`.
pub(crate) fn rgb_planes_to_luma(rgb: &[u8], hw: usize) -> Vec<u8> {
    (0..hw)
        .map(|p| {
            let l = 0.2989 * rgb[p] as f32 + 0.587 * rgb[hw + p] as f32 + 0.114 * rgb[2 * hw + p] as f32;
            l.round().clamp(0.0, 255.0) as u8
        })
        .collect()
}

/// Resizes one `[C, H, W]` image channel by channel with `image`'s triangle filter, which widens its
/// support when shrinking (so it antialiases like torchvision's `antialias=True`).
pub(crate) fn resize_chw(img: &[u8], [c, h, w]: [usize; 3], out_h: usize, out_w: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(c * out_h * out_w);
    for ch in 0..c {
        let plane = image::GrayImage::from_raw(w as u32, h as u32, img[ch * h * w..(ch + 1) * h * w].to_vec())
            .expect("plane length matches its shape");
        let resized = image::imageops::resize(
            &plane,
            out_w as u32,
            out_h as u32,
            image::imageops::FilterType::Triangle,
        );
        out.extend_from_slice(resized.as_raw());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_grey_images() -> ImageSet {
        ImageSet::new(
            vec![0, 10, 20, 30, 100, 110, 120, 130],
            vec![0, 1],
            vec!["a".into(), "b".into()],
            [1, 2, 2],
        )
        .unwrap()
    }

    #[test]
    fn new_rejects_inconsistent_shapes_and_labels() {
        let err = ImageSet::new(vec![0; 7], vec![0, 0], vec!["a".into()], [1, 2, 2]).unwrap_err();
        assert!(err.to_string().contains("7 pixel bytes"), "{err}");
        let err = ImageSet::new(vec![0; 4], vec![3], vec!["a".into()], [1, 2, 2]).unwrap_err();
        assert!(err.to_string().contains("label 3 is out of range"), "{err}");
    }

    #[test]
    fn grey_expands_to_three_identical_channels() {
        let rgb = two_grey_images().to_channels(3).unwrap();
        assert_eq!(rgb.shape(), [3, 2, 2]);
        assert_eq!(rgb.image(1), &[100, 110, 120, 130, 100, 110, 120, 130, 100, 110, 120, 130]);
        // ...and back to grey exactly (the luma weights sum to 1).
        assert_eq!(rgb.to_channels(1).unwrap(), two_grey_images());
    }

    #[test]
    fn rgb_to_grey_uses_luma_weights() {
        let set = ImageSet::new(vec![255, 0, 0], vec![0], vec!["a".into()], [3, 1, 1]).unwrap();
        // 0.2989 * 255 = 76.2
        assert_eq!(set.to_channels(1).unwrap().pixels, vec![76]);
    }

    #[test]
    fn subset_keeps_order_and_labels() {
        let s = two_grey_images().subset(&[1, 0, 1]);
        assert_eq!(s.labels, vec![1, 0, 1]);
        assert_eq!(s.image(0), &[100, 110, 120, 130]);
        assert_eq!(s.image(1), &[0, 10, 20, 30]);
    }

    #[test]
    fn downscaling_averages_neighbourhoods() {
        // 1x4x4 -> 1x2x2 by the triangle filter, which widens to the 2x scale: output row 0
        // averages input rows 0-1 with a little of row 2, row 1 rows 2-3 with a little of row 1.
        let halves: Vec<u8> = (0..16).map(|i| if i < 8 { 0 } else { 240 }).collect();
        let set = ImageSet::new(halves, vec![0], vec!["a".into()], [1, 4, 4]).unwrap();
        let p = set.resized(2, 2).unwrap().pixels;
        assert!(p[0] < 60 && p[2] > 180 && p[0] == p[1] && p[2] == p[3], "{p:?}");
    }

    #[test]
    fn resize_of_constant_image_is_constant_and_shaped() {
        let set = ImageSet::new(vec![77; 3 * 8 * 6], vec![0], vec!["a".into()], [3, 8, 6]).unwrap();
        let r = set.resized(4, 3).unwrap();
        assert_eq!(r.shape(), [3, 4, 3]);
        assert!(r.pixels.iter().all(|&p| p == 77));
    }
}

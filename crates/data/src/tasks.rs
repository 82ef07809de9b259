//! Tasks derived from any image set whose best invariance is known by construction (`ail --task
//! position` and `--task tint`, the browser page's built-in tasks): a spatial regression made by
//! placing each image, shrunk, somewhere on an empty canvas and asking where it is (spatial
//! invariance should hurt), and a colour classification made by tinting each image and asking
//! which tint (appearance invariance should hurt).

use crate::dataset::resize_chw;
use crate::{DataError, ImageSet, Result};

/// Images of `set` shrunk to `item x item` and placed on a `canvas x canvas` black canvas at a
/// position drawn from `seed` (splitmix64, so the same on every platform): the images
/// (`[n, C, canvas, canvas]`) and, per image, the item's centre `(x, y)` as fractions of the canvas
/// side in [0, 1]. Uses the images at `indices`.
pub fn placed_items(set: &ImageSet, indices: &[usize], item: usize, canvas: usize, seed: u64) -> Result<(Vec<u8>, Vec<f32>)> {
    if item == 0 || item > canvas {
        return Err(DataError::InvalidOption(format!("an item of {item} px does not fit on a canvas of {canvas} px")));
    }
    if let Some(&bad) = indices.iter().find(|&&i| i >= set.len()) {
        return Err(DataError::InvalidOption(format!("image {bad} is not among the {} images", set.len())));
    }
    let c = set.channels;
    let room = (canvas - item + 1) as u64;
    let mut state = seed ^ 0x5851_f42d_4c95_7f2d;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut pixels = vec![0u8; indices.len() * c * canvas * canvas];
    let mut centres = Vec::with_capacity(indices.len() * 2);
    for (k, &index) in indices.iter().enumerate() {
        let small = resize_chw(set.image(index), [c, set.height, set.width], item, item);
        let (left, top) = ((next() % room) as usize, (next() % room) as usize);
        let out = &mut pixels[k * c * canvas * canvas..(k + 1) * c * canvas * canvas];
        for ch in 0..c {
            for y in 0..item {
                let row = &small[(ch * item + y) * item..(ch * item + y + 1) * item];
                let at = (ch * canvas + top + y) * canvas + left;
                out[at..at + item].copy_from_slice(row);
            }
        }
        centres.push((left as f32 + item as f32 / 2.0) / canvas as f32);
        centres.push((top as f32 + item as f32 / 2.0) / canvas as f32);
    }
    Ok((pixels, centres))
}

/// The tints of the derived colour task (`ail --task tint`, the page's colour task): the same total
/// factor in each, so that a tint changes the colour of an image far more than its brightness.
pub const TINTS: [(&str, [f32; 3]); 3] = [("reddish", [1.3, 0.85, 0.85]), ("greenish", [0.85, 1.3, 0.85]), ("bluish", [0.85, 0.85, 1.3])];

/// Images of `set` (three channels) each multiplied, channel by channel, by one of `tints` (the
/// `k`-th of `indices` by tint `k % tints.len()`): the images (`[n, 3, H, W]`) and, per image, the
/// index of its tint, a label that only colour carries (a derived task that appearance invariance
/// should hurt). Factors above 1 saturate at 255.
pub fn tinted_items(set: &ImageSet, indices: &[usize], tints: &[[f32; 3]]) -> Result<(Vec<u8>, Vec<u32>)> {
    if set.channels != 3 {
        return Err(DataError::InvalidOption(format!("tinting needs colour images (3 channels), not {}", set.channels)));
    }
    if tints.is_empty() || tints.iter().flatten().any(|f| !(f.is_finite() && *f >= 0.0)) {
        return Err(DataError::InvalidOption("tints need at least one set of finite, non-negative factors".into()));
    }
    if let Some(&bad) = indices.iter().find(|&&i| i >= set.len()) {
        return Err(DataError::InvalidOption(format!("image {bad} is not among the {} images", set.len())));
    }
    let hw = set.height * set.width;
    let mut pixels = Vec::with_capacity(indices.len() * 3 * hw);
    let mut labels = Vec::with_capacity(indices.len());
    for (k, &index) in indices.iter().enumerate() {
        let tint = k % tints.len();
        let image = set.image(index);
        for (ch, factor) in tints[tint].iter().enumerate() {
            pixels.extend(image[ch * hw..(ch + 1) * hw].iter().map(|&p| (p as f32 * factor).round().min(255.0) as u8));
        }
        labels.push(tint as u32);
    }
    Ok((pixels, labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tinted_items_carry_their_tint_in_colour_only() {
        let grey = ImageSet::new(vec![100u8; 2 * 3 * 4], vec![0, 1], vec!["a".into(), "b".into()], [3, 2, 2]).unwrap();
        let (pixels, labels) = tinted_items(&grey, &[0, 1, 0], &[[1.0, 0.5, 0.5], [0.5, 0.5, 3.0]]).unwrap();
        assert_eq!(labels, vec![0, 1, 0]);
        assert_eq!(&pixels[0..12], &[100, 100, 100, 100, 50, 50, 50, 50, 50, 50, 50, 50]);
        // The blue factor saturates.
        assert_eq!(&pixels[12..24], &[50, 50, 50, 50, 50, 50, 50, 50, 255, 255, 255, 255]);
        let one = ImageSet::new(vec![1u8; 4], vec![0], vec!["a".into()], [1, 2, 2]).unwrap();
        assert!(tinted_items(&one, &[0], &[[1.0; 3]]).unwrap_err().to_string().contains("3 channels"));
        assert!(tinted_items(&grey, &[0], &[[f32::NAN, 1.0, 1.0]]).is_err());
        assert!(tinted_items(&grey, &[5], &[[1.0; 3]]).unwrap_err().to_string().contains("image 5"));
    }

    #[test]
    fn items_are_placed_where_their_targets_say() {
        // Two 4x4 white images (one channel) on 10x10 canvases, shrunk to 2x2.
        let set = ImageSet { pixels: vec![255; 2 * 16], labels: vec![0, 1], class_names: vec!["a".into(), "b".into()], channels: 1, height: 4, width: 4, sources: Vec::new() };
        let (pixels, centres) = placed_items(&set, &[0, 1, 0], 2, 10, 7).unwrap();
        assert_eq!(pixels.len(), 3 * 100);
        assert_eq!(centres.len(), 6);
        for k in 0..3 {
            let image = &pixels[k * 100..(k + 1) * 100];
            let lit: Vec<(usize, usize)> = (0..100).filter(|p| image[*p] > 0).map(|p| (p % 10, p / 10)).collect();
            assert_eq!(lit.len(), 4, "image {k}");
            let (x, y) = (lit.iter().map(|p| p.0).sum::<usize>() as f32 / 4.0 + 0.5, lit.iter().map(|p| p.1).sum::<usize>() as f32 / 4.0 + 0.5);
            assert!((x / 10.0 - centres[2 * k]).abs() < 1e-6 && (y / 10.0 - centres[2 * k + 1]).abs() < 1e-6, "image {k}: ({x}, {y}) vs {centres:?}");
        }
        // Positions vary and are reproducible.
        assert_eq!(placed_items(&set, &[0, 1, 0], 2, 10, 7).unwrap().1, centres);
        assert_ne!(placed_items(&set, &[0, 1, 0], 2, 10, 8).unwrap().1, centres);
        assert!(placed_items(&set, &[0], 12, 10, 7).unwrap_err().to_string().contains("does not fit"));
        assert!(placed_items(&set, &[5], 2, 10, 7).unwrap_err().to_string().contains("image 5"));
    }
}

//! Image grids as PNG.

use std::path::Path;

use anyhow::Context;

/// A grid of `[3, side, side]` f32 images in `[0, 1]` (row-major cells), each cell upscaled by
/// `scale` (nearest) with a `gap`-pixel white border, written atomically as PNG.
pub fn write_grid(
    path: &Path,
    cells: &[Vec<f32>],
    rows: usize,
    cols: usize,
    side: usize,
    scale: usize,
) -> anyhow::Result<()> {
    let png = encode_grid(cells, rows, cols, side, scale)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    ail_core::io::write_atomic(path, &png).with_context(|| format!("writing {}", path.display()))
}

pub fn encode_grid(cells: &[Vec<f32>], rows: usize, cols: usize, side: usize, scale: usize) -> anyhow::Result<Vec<u8>> {
    const GAP: usize = 2;
    let cell = side * scale;
    let width = cols * cell + (cols + 1) * GAP;
    let height = rows * cell + (rows + 1) * GAP;
    let mut img = image::RgbImage::from_pixel(width as u32, height as u32, image::Rgb([255, 255, 255]));
    for (k, pixels) in cells.iter().enumerate().take(rows * cols) {
        anyhow::ensure!(pixels.len() == 3 * side * side, "cell {k} has {} values, not 3x{side}x{side}", pixels.len());
        let (r, c) = (k / cols, k % cols);
        let (x0, y0) = (GAP + c * (cell + GAP), GAP + r * (cell + GAP));
        for y in 0..cell {
            for x in 0..cell {
                let p = (y / scale) * side + x / scale;
                let px = |ch: usize| (pixels[ch * side * side + p].clamp(0.0, 1.0) * 255.0).round() as u8;
                img.put_pixel((x0 + x) as u32, (y0 + y) as u32, image::Rgb([px(0), px(1), px(2)]));
            }
        }
    }
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)?;
    Ok(out.into_inner())
}

//! ImageFolder: `<root>/<class>/<file>.{png,jpg,jpeg}` (torchvision's `ImageFolder` layout).
//!
//! Classes are the sub-folders of `root`, sorted by name; their index is the label. Images of any
//! size are decoded in parallel, resized so that the shorter side equals `side` and centre-cropped
//! to `side x side` (torchvision's `Resize(side)` + `CenterCrop(side)`), then held in memory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use crate::{DataError, ImageSet, Result};

/// File extensions read as images (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// How to read an ImageFolder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FolderOptions {
    /// Side of the square images produced.
    pub side: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Skip undecodable files (and report them) instead of failing on the first one.
    pub skip_bad: bool,
}

/// What was read besides the images.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FolderReport {
    /// Files that failed to decode and were skipped (only with `skip_bad`), with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Lists `(path, label)` for every image file, classes sorted by name, files sorted by name.
pub fn list(root: &Path) -> Result<(Vec<(PathBuf, u32)>, Vec<String>)> {
    let read_dir = |dir: &Path| -> Result<Vec<PathBuf>> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| DataError::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        Ok(entries)
    };
    let classes: Vec<PathBuf> = read_dir(root)?.into_iter().filter(|p| p.is_dir()).collect();
    if classes.is_empty() {
        return Err(DataError::Empty {
            path: root.to_path_buf(),
            reason: "no class folders: an ImageFolder is <root>/<class>/<image>.png|jpg".into(),
        });
    }
    let mut files = Vec::new();
    let mut names = Vec::new();
    for (label, class_dir) in classes.iter().enumerate() {
        let entries = read_dir(class_dir)?;
        let images: Vec<PathBuf> = entries.iter().filter(|p| is_image(p)).cloned().collect();
        if images.is_empty() {
            let hint = if entries.iter().any(|p| p.is_dir()) {
                format!(
                    "; it holds folders, so perhaps the ImageFolder root is {}",
                    class_dir.display()
                )
            } else {
                String::new()
            };
            return Err(DataError::Empty {
                path: class_dir.clone(),
                reason: format!(
                    "class folder has no .png/.jpg/.jpeg files{hint}"
                ),
            });
        }
        names.push(class_dir.file_name().unwrap_or_default().to_string_lossy().into_owned());
        files.extend(images.into_iter().map(|p| (p, label as u32)));
    }
    Ok((files, names))
}

fn is_image(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Reads an ImageFolder. `on_progress` is called with the number of files decoded so far.
pub fn read(
    root: &Path,
    options: FolderOptions,
    on_progress: &(dyn Fn(usize) + Sync),
) -> Result<(ImageSet, FolderReport)> {
    if options.side == 0 || !(options.channels == 1 || options.channels == 3) {
        return Err(DataError::InvalidOption(format!(
            "ImageFolder needs side > 0 and 1 or 3 channels (got side {}, {} channels)",
            options.side, options.channels
        )));
    }
    let (files, class_names) = list(root)?;
    let done = AtomicUsize::new(0);
    let decoded: Vec<std::result::Result<Vec<u8>, DataError>> = files
        .par_iter()
        .map(|(path, _)| {
            let r = decode_file(path, options.side, options.channels);
            on_progress(done.fetch_add(1, Ordering::Relaxed) + 1);
            r
        })
        .collect();
    let mut pixels = Vec::with_capacity(files.len() * options.channels * options.side * options.side);
    let mut labels = Vec::with_capacity(files.len());
    let mut sources = Vec::with_capacity(files.len());
    let mut report = FolderReport::default();
    for ((path, label), result) in files.into_iter().zip(decoded) {
        match result {
            Ok(p) => {
                pixels.extend_from_slice(&p);
                labels.push(label);
                sources.push(path.display().to_string());
            }
            Err(DataError::CorruptImage { reason, .. }) if options.skip_bad => {
                report.skipped.push((path, reason))
            }
            Err(DataError::Io { source, .. }) if options.skip_bad => {
                report.skipped.push((path, format!("unreadable: {source}")))
            }
            Err(e) => return Err(e),
        }
    }
    if labels.is_empty() {
        return Err(DataError::Empty {
            path: root.to_path_buf(),
            reason: format!("all {} image files were unreadable", report.skipped.len()),
        });
    }
    let set = ImageSet::new(
        pixels,
        labels,
        class_names,
        [options.channels, options.side, options.side],
    )?
    .with_sources(sources)?;
    Ok((set, report))
}

/// Decodes one file to `[channels, side, side]` bytes.
pub fn decode_file(path: &Path, side: usize, channels: usize) -> Result<Vec<u8>> {
    let bytes = crate::limits::read_file(path, crate::limits::MAX_IMAGE_FILE).map_err(|e| DataError::io(path, e))?;
    decode_bytes(&bytes, side, channels).map_err(|reason| DataError::CorruptImage {
        path: path.to_path_buf(),
        reason,
    })
}

/// The width and height PNG/JPEG bytes declare, read from the header alone (nothing is decoded).
pub fn declared_dimensions(bytes: &[u8]) -> std::result::Result<(u32, u32), String> {
    header(bytes).map(|(_, w, h)| (w, h))
}

/// The format and declared size of PNG/JPEG bytes (other formats are named and refused).
fn header(bytes: &[u8]) -> std::result::Result<(image::ImageFormat, u32, u32), String> {
    let format = image::guess_format(bytes).map_err(|_| format!("not a PNG or JPEG image (found {})", crate::describe_bytes(bytes)))?;
    if !matches!(format, image::ImageFormat::Png | image::ImageFormat::Jpeg) {
        return Err(format!("not a PNG or JPEG image (a {format:?} file): convert it first"));
    }
    let (w, h) = image::ImageReader::with_format(std::io::Cursor::new(bytes), format).into_dimensions().map_err(|e| e.to_string())?;
    Ok((format, w, h))
}

/// Decodes PNG/JPEG bytes to `[channels, side, side]`; the error is a reason for the user.
pub fn decode_bytes(bytes: &[u8], side: usize, channels: usize) -> std::result::Result<Vec<u8>, String> {
    // The declared size first (reading it allocates nothing), then the decode under the limits.
    let (format, w, h) = header(bytes)?;
    if w as u64 * h as u64 > crate::limits::MAX_IMAGE_PIXELS {
        return Err(format!(
            "{w}x{h} pixels; at most {} Mpx per image are accepted (shrink it first)",
            crate::limits::MAX_IMAGE_PIXELS >> 20
        ));
    }
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(crate::limits::MAX_DECODE_ALLOC);
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(|e| e.to_string())?;
    // Decoded, then cropped (a copy), then converted: reserved across threads before any of it.
    let held = image::ImageDecoder::total_bytes(&decoder).saturating_mul(2).saturating_add(6 * (side * side) as u64);
    let _held = crate::limits::DECODING.reserve(held).map_err(|e| format!("{w}x{h} pixels: {e}"))?;
    let img = image::DynamicImage::from_decoder(decoder).map_err(|e| e.to_string())?;
    if img.width() == 0 || img.height() == 0 {
        return Err("the image has no pixels".into());
    }
    let side32 = side as u32;
    let img = if img.width() == side32 && img.height() == side32 {
        img
    } else {
        // Centre square first, then resize: resizing first would build a huge intermediate for
        // extreme aspect ratios (a 1 x 10^6 strip).
        let short = img.width().min(img.height());
        let square = img.crop_imm((img.width() - short) / 2, (img.height() - short) / 2, short, short);
        square.resize_exact(side32, side32, image::imageops::FilterType::Triangle)
    };
    let hw = side * side;
    let rgb = img.to_rgb8().into_raw();
    let mut chw = vec![0u8; 3 * hw];
    for (p, px) in rgb.chunks_exact(3).enumerate() {
        chw[p] = px[0];
        chw[hw + p] = px[1];
        chw[2 * hw + p] = px[2];
    }
    if channels == 1 {
        // ITU-R 601 luma as torchvision and PIL's convert("L"), not `image`'s Rec. 709 weights.
        Ok(crate::dataset::rgb_planes_to_luma(&chw, hw))
    } else {
        Ok(chw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
        image::RgbImage::from_pixel(w, h, image::Rgb(rgb)).save(path).unwrap();
    }

    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (class, colour) in [("cats", [200, 10, 10]), ("dogs", [10, 200, 10])] {
            std::fs::create_dir(dir.path().join(class)).unwrap();
            write_png(&dir.path().join(class).join("a.png"), 40, 20, colour);
            write_png(&dir.path().join(class).join("b.PNG"), 7, 9, colour);
        }
        std::fs::write(dir.path().join("cats").join("notes.txt"), "not an image").unwrap();
        dir
    }

    const OPTS: FolderOptions = FolderOptions { side: 8, channels: 3, skip_bad: false };

    #[test]
    fn reads_classes_in_order_and_resizes_any_size() {
        let dir = folder();
        let (set, report) = read(dir.path(), OPTS, &|_| {}).unwrap();
        assert_eq!(set.class_names, vec!["cats", "dogs"]);
        assert_eq!(set.labels, vec![0, 0, 1, 1]);
        assert_eq!(set.shape(), [3, 8, 8]);
        // Constant colours survive resizing; channel planes are R, G, B.
        let img = set.image(2);
        assert!(img[..64].iter().all(|&p| p == 10));
        assert!(img[64..128].iter().all(|&p| p == 200));
        assert!(report.skipped.is_empty());
    }

    #[test]
    fn grey_output_uses_rec601_luma() {
        let dir = folder();
        let (set, _) = read(dir.path(), FolderOptions { channels: 1, ..OPTS }, &|_| {}).unwrap();
        assert_eq!(set.shape(), [1, 8, 8]);
        // cats are (200, 10, 10): 0.2989 * 200 + 0.587 * 10 + 0.114 * 10 = 66.79 -> 67
        // (Rec. 709 would give 51).
        assert!(set.image(0).iter().all(|&p| p == 67), "{:?}", set.image(0));
    }

    #[test]
    fn non_square_images_are_centre_cropped_then_resized() {
        // 6x2 image: columns 0-1 black, 2-3 white, 4-5 black. The centre 2x2 square is white.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("c")).unwrap();
        let img = image::RgbImage::from_fn(6, 2, |x, _| if (2..4).contains(&x) { image::Rgb([255; 3]) } else { image::Rgb([0; 3]) });
        img.save(dir.path().join("c").join("strip.png")).unwrap();
        let (set, _) = read(dir.path(), FolderOptions { side: 4, ..OPTS }, &|_| {}).unwrap();
        assert!(set.image(0).iter().all(|&p| p == 255), "{:?}", set.image(0));
        // An extreme strip decodes without building a huge intermediate image.
        image::RgbImage::new(20_000, 1).save(dir.path().join("c").join("line.png")).unwrap();
        let (set, _) = read(dir.path(), FolderOptions { side: 4, ..OPTS }, &|_| {}).unwrap();
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn corrupt_image_names_its_path_or_is_skipped() {
        let dir = folder();
        let bad = dir.path().join("dogs").join("c.jpg");
        std::fs::write(&bad, [0xff, 0xd8, 0xff, 0xe0, 1, 2, 3]).unwrap();
        let msg = read(dir.path(), OPTS, &|_| {}).unwrap_err().to_string();
        assert!(msg.contains("corrupt image") && msg.contains("c.jpg") && msg.contains("--skip-bad"), "{msg}");

        let (set, report) = read(dir.path(), FolderOptions { skip_bad: true, ..OPTS }, &|_| {}).unwrap();
        assert_eq!(set.len(), 4);
        assert_eq!(report.skipped.len(), 1);
        assert_eq!(report.skipped[0].0, bad);
    }

    #[test]
    fn text_with_image_extension_is_corrupt() {
        let dir = folder();
        std::fs::write(dir.path().join("cats").join("z.png"), "hello").unwrap();
        let msg = read(dir.path(), OPTS, &|_| {}).unwrap_err().to_string();
        assert!(msg.contains("z.png") && msg.contains("not a PNG or JPEG image (found text)"), "{msg}");
    }

    #[test]
    fn layout_errors_explain_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let msg = read(dir.path(), OPTS, &|_| {}).unwrap_err().to_string();
        assert!(msg.contains("<root>/<class>/<image>"), "{msg}");
        // A root one level too high: train/<class>/... passed as the root.
        std::fs::create_dir_all(dir.path().join("train").join("cats")).unwrap();
        write_png(&dir.path().join("train").join("cats").join("a.png"), 4, 4, [0, 0, 0]);
        let msg = read(dir.path(), OPTS, &|_| {}).unwrap_err().to_string();
        assert!(msg.contains("perhaps the ImageFolder root is"), "{msg}");
    }

    #[test]
    fn progress_counts_every_file() {
        let dir = folder();
        let max = AtomicUsize::new(0);
        read(dir.path(), OPTS, &|n| {
            max.fetch_max(n, Ordering::Relaxed);
        })
        .unwrap();
        assert_eq!(max.load(Ordering::Relaxed), 4);
    }
}

//! Omniglot (Lake et al. 2015) read from its official zips: `images_background*.zip`
//! (`<root>/<alphabet>/characterNN/<id>_<drawer>.png`, 105 x 105) and, for the pen-start regression
//! task, the matching `strokes_background*.zip` (`.txt`, one `x,y,t` line per point, strokes
//! separated by `START` / `BREAK`).
//!
//! Each character (alphabet and number) is a class. The pen-start target is the first point of the
//! first stroke in the 105 x 105 image's pixel coordinates: the stroke files store `(x, -y)` (the
//! official `space_motor_to_img` flips y), so the target is `(x, -y)`.

use std::collections::BTreeMap;
use std::path::Path;

use rayon::prelude::*;

use crate::zip::ZipArchive;
use crate::{DataError, ImageSet, Result};

/// Side of the official images.
pub const SIDE: usize = 105;

/// Omniglot images with character classes, and the pen-start point of each drawing when the
/// strokes were read.
pub struct Omniglot {
    /// Labels are characters; class names `alphabet/characterNN`.
    pub images: ImageSet,
    /// `(x, y)` of the first pen-down point of each image, in 105 x 105 pixel units.
    pub pen_start: Option<Vec<[f32; 2]>>,
}

/// `alphabet/characterNN/<file stem>` of an archive path, or None for other entries.
fn key(name: &str, extension: &str) -> Option<(String, String)> {
    if name.contains("__MACOSX") || !name.ends_with(extension) {
        return None;
    }
    let parts: Vec<&str> = name.trim_end_matches(extension).split('/').filter(|s| !s.is_empty()).collect();
    let n = parts.len();
    (n >= 3).then(|| (format!("{}/{}", parts[n - 3], parts[n - 2]), parts[n - 1].to_string()))
}

/// The first point of the first stroke of a stroke file, as image coordinates `(x, -y)`.
pub fn first_pen_down(text: &str) -> std::result::Result<[f32; 2], String> {
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line == "START" || line == "BREAK" {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        let parse = |i: usize| fields.get(i).and_then(|s| s.trim().parse::<f32>().ok()).filter(|v| v.is_finite());
        return match (parse(0), parse(1)) {
            (Some(x), Some(y)) => Ok([x, -y]),
            _ => Err(format!("the first point `{line}` is not `x,y,t`")),
        };
    }
    Err("no stroke points".into())
}

/// Reads the images zip (and the strokes zip, when given) to `side x side` images of `channels`.
pub fn read(images_zip: &Path, strokes_zip: Option<&Path>, side: usize, channels: usize) -> Result<Omniglot> {
    let zip = ZipArchive::open(images_zip)?;
    let mut files: Vec<(String, String, usize)> = zip
        .entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| key(&e.name, ".png").map(|(class, stem)| (class, stem, i)))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(DataError::Empty {
            path: images_zip.to_path_buf(),
            reason: "no <alphabet>/<character>/<image>.png entries: is this Omniglot's images_background zip?".into(),
        });
    }
    let mut classes: BTreeMap<String, u32> = BTreeMap::new();
    for (class, _, _) in &files {
        let next = classes.len() as u32;
        classes.entry(class.clone()).or_insert(next);
    }
    let decoded: Vec<Vec<u8>> = files
        .par_iter()
        .map(|(_, _, i)| {
            let entry = &zip.entries[*i];
            let (bytes, _held) = zip.read_reserved(entry)?;
            crate::folder::decode_bytes(&bytes, side, channels)
                .map_err(|reason| DataError::CorruptImage { path: images_zip.join(&entry.name), reason })
        })
        .collect::<Result<_>>()?;
    let labels: Vec<u32> = files.iter().map(|(c, _, _)| classes[c]).collect();
    let mut pixels = Vec::with_capacity(decoded.len() * channels * side * side);
    for d in decoded {
        pixels.extend(d);
    }
    let names = classes.keys().cloned().collect();
    let sources = files.iter().map(|(_, _, i)| zip.entries[*i].name.clone()).collect();
    let images = ImageSet::new(pixels, labels, names, [channels, side, side])?.with_sources(sources)?;
    let pen_start = match strokes_zip {
        None => None,
        Some(path) => {
            let strokes = ZipArchive::open(path)?;
            let by_key: BTreeMap<(String, String), usize> = strokes
                .entries
                .iter()
                .enumerate()
                .filter_map(|(i, e)| key(&e.name, ".txt").map(|k| (k, i)))
                .collect();
            let points = files
                .iter()
                .map(|(class, stem, _)| {
                    let i = by_key.get(&(class.clone(), stem.clone())).ok_or_else(|| DataError::Empty {
                        path: path.to_path_buf(),
                        reason: format!("no stroke file {class}/{stem}.txt for the image {class}/{stem}.png: is it the strokes zip of the same images zip?"),
                    })?;
                    let entry = &strokes.entries[*i];
                    let text = String::from_utf8_lossy(&strokes.read(entry)?).into_owned();
                    first_pen_down(&text).map_err(|found| DataError::WrongFormat {
                        path: path.join(&entry.name),
                        expected: "an Omniglot stroke file".into(),
                        found,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Some(points)
        }
    };
    Ok(Omniglot { images, pen_start })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zip::write_zip;

    fn png(value: u8) -> Vec<u8> {
        let img = image::GrayImage::from_pixel(105, 105, image::Luma([value]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn stroke_files_give_the_first_point_with_y_flipped() {
        let text = "START\n18.95,-43.53,0\n19.7,-41.9,56\nBREAK\n50,-60,300\nBREAK\n";
        assert_eq!(first_pen_down(text).unwrap(), [18.95, 43.53]);
        assert!(first_pen_down("START\nBREAK\n").unwrap_err().contains("no stroke points"));
        assert!(first_pen_down("START\nx,y\n").unwrap_err().contains("not `x,y,t`"));
    }

    #[test]
    fn reads_classes_images_and_pen_starts_from_zips() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (png(255), png(0), png(128));
        let images = write_zip(&[
            ("images_background/Greek/character02/0002_01.png", &c),
            ("images_background/Greek/character01/0001_01.png", &a),
            ("images_background/Greek/character01/0001_02.png", &b),
            ("__MACOSX/images_background/._x.png", b"junk"),
        ]);
        let strokes = write_zip(&[
            ("strokes_background/Greek/character01/0001_01.txt", b"START\n10,-20,0\nBREAK\n"),
            ("strokes_background/Greek/character01/0001_02.txt", b"START\n30,-40,0\nBREAK\n"),
            ("strokes_background/Greek/character02/0002_01.txt", b"START\n50,-60,0\nBREAK\n"),
        ]);
        std::fs::write(dir.path().join("i.zip"), images).unwrap();
        std::fs::write(dir.path().join("s.zip"), strokes).unwrap();
        let o = read(&dir.path().join("i.zip"), Some(&dir.path().join("s.zip")), 28, 1).unwrap();
        assert_eq!(o.images.class_names, vec!["Greek/character01", "Greek/character02"]);
        assert_eq!(o.images.labels, vec![0, 0, 1]);
        assert_eq!(o.images.shape(), [1, 28, 28]);
        assert_eq!(o.images.image(0)[0], 255);
        assert_eq!(o.images.image(1)[0], 0);
        assert_eq!(o.pen_start.unwrap(), vec![[10.0, 20.0], [30.0, 40.0], [50.0, 60.0]]);
        // A strokes zip without a matching file is refused with both names.
        let partial = write_zip(&[("s/Greek/character01/0001_01.txt", b"START\n1,-1,0\n")]);
        std::fs::write(dir.path().join("p.zip"), partial).unwrap();
        let e = read(&dir.path().join("i.zip"), Some(&dir.path().join("p.zip")), 28, 1).err().unwrap().to_string();
        assert!(e.contains("0001_02.txt") && e.contains("strokes zip"), "{e}");
    }
}

//! What the end-to-end tests of the `ail` binary share.

#![allow(dead_code)] // each test crate uses its own subset

use std::path::Path;
use std::process::{Command, Output};

/// Runs `ail` in `cwd` and waits for it.
pub fn ail(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ail"))
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .output()
        .expect("the ail binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `imgs/c<class>/<k>.png`: `classes` classes of `per_class` patterned 8x8 colour images (stripes
/// whose phase depends on the class and the image, a class-dependent green level).
pub fn patterned_folder(dir: &Path, classes: u32, per_class: u32, green_step: u32) {
    for c in 0..classes {
        let class = dir.join("imgs").join(format!("c{c}"));
        std::fs::create_dir_all(&class).unwrap();
        for k in 0..per_class {
            let img = image::RgbImage::from_fn(8, 8, |x, y| {
                let on = ((x + 2 * c) % 8 < 4) ^ ((y + k) % 8 < 4);
                image::Rgb([if on { 200 } else { 30 }, (green_step * c + 20) as u8, ((x * 31 + y * 17 + k * 7) % 256) as u8])
            });
            img.save(class.join(format!("{k}.png"))).unwrap();
        }
    }
}

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

/// A 4-class ImageFolder of 8x8 patterned images in `imgs/` and a short pretraining config in
/// `run.toml`: 20 steps of batch 16, checkpoints every 10; `overrides` replace settings by their
/// dotted TOML key (`("steps", "6")`, `("monitor.every", "0")`).
pub fn tiny_pretraining_setup(dir: &Path, overrides: &[(&str, &str)]) {
    patterned_folder(dir, 4, 16, 40);
    let defaults = [
        ("steps", "20"), ("batch_size", "16"), ("data.image_size", "8"), ("encoder.width", "0.0625"), ("encoder.hidden", "8"),
        ("optimizer.lr", "0.003"), ("optimizer.warmup_steps", "2"), ("log_every", "1"), ("checkpoint_every", "10"),
        ("monitor.every", "10"), ("heads.hidden", "32"), ("heads.output", "16"),
    ];
    let mut toml = String::new();
    for (key, value) in defaults.iter().chain(overrides.iter().filter(|(k, _)| !defaults.iter().any(|(d, _)| d == k))) {
        let value = overrides.iter().find(|(k, _)| k == key).map_or(*value, |(_, v)| *v);
        toml.push_str(&format!("{key} = {value}\n"));
    }
    std::fs::write(dir.join("run.toml"), toml).unwrap();
}

/// `(step, loss)` of the training rows of a metrics.csv.
pub fn losses(path: &Path) -> Vec<(u64, f64)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("step,descriptor,loss,lr,images_per_s,knn_accuracy"));
    lines
        .filter_map(|l| {
            // the descriptor is quoted and holds commas: split around it
            let (step, rest) = l.split_once(",\"")?;
            let (_, values) = rest.split_once("\",")?;
            let loss = values.split(',').next()?;
            (!loss.is_empty()).then(|| (step.parse().unwrap(), loss.parse().unwrap()))
        })
        .collect()
}

/// Copies `run`'s config and its step-10 checkpoint into `copy`, resumes there, and checks that
/// steps 11-20 give the uninterrupted run's losses.
pub fn assert_resume_is_exact(dir: &Path, run: &str, copy: &str) {
    let (run, b) = (dir.join(run), dir.join(copy));
    let curve = losses(&run.join("metrics.csv"));
    std::fs::create_dir_all(b.join("checkpoints")).unwrap();
    std::fs::copy(run.join("config.json"), b.join("config.json")).unwrap();
    let from = run.join("checkpoints").join("step-0000010");
    let to = b.join("checkpoints").join("step-0000010");
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    let out = ail(&["pretrain", "--device", "cpu", "--out", copy, "--resume"], dir);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("resuming") && stderr(&out).contains("at step 10"), "{}", stderr(&out));
    let resumed = losses(&b.join("metrics.csv"));
    assert_eq!(resumed.len(), 10);
    for ((s1, l1), (s2, l2)) in curve[10..].iter().zip(&resumed) {
        assert_eq!(s1, s2);
        assert!((l1 - l2).abs() < 1e-5, "{copy}, step {s1}: uninterrupted {l1}, resumed {l2}");
    }
}

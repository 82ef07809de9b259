//! A tiny, fixed case run through the page's computations on any backend: the dial and the first
//! steps of a fit on a tiny encoder (`tests/fixtures/tiny.ailweb`) and tiny synthetic images. The
//! native test (`tests/tests/web_engine.rs` at the root) records its results on the CPU backend in
//! `tests/fixtures/expected.json`; the browser tests (`web/tests/web.rs`) recompute them in
//! WebAssembly, on the CPU backend and on WebGPU, and compare.

use ail_core::fit::Split;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::engine;

/// The tiny images' shape, and how many there are (two classes alternating).
pub const SHAPE: [usize; 3] = [3, 16, 16];
pub const IMAGES: usize = 24;
/// Transforms of the tiny dial, the descriptor it is read at, and steps of the tiny fit recorded.
pub const TRANSFORMS: [&str; 3] = ["h-flip", "rotation", "brightness"];
pub const DIAL_I: [f32; 2] = [0.3, 0.8];
pub const FIT_STEPS: usize = 12;

/// What the case produces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub invariance: Vec<f64>,
    pub coords: Vec<f32>,
    pub losses: Vec<f64>,
    /// `i` after [`FIT_STEPS`] steps.
    pub i: Vec<f32>,
}

/// `IMAGES` images of [`SHAPE`]: a bright off-centre rectangle on a dark noisy background; class 0
/// rectangles are wide and reddish, class 1 tall and bluish. Deterministic on every platform.
pub fn images() -> (Vec<u8>, Vec<u32>) {
    let [c, h, w] = SHAPE;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut pixels = Vec::with_capacity(IMAGES * c * h * w);
    let mut labels = Vec::new();
    for k in 0..IMAGES {
        let class = (k % 2) as u32;
        let (bh, bw) = if class == 0 { (4, 9) } else { (9, 4) };
        let top = (next() % (h - bh) as u64) as usize;
        let left = (next() % (w - bw) as u64) as usize;
        for ch in 0..c {
            let tint = if (class == 0 && ch == 0) || (class == 1 && ch == 2) { 255 } else { 150 };
            for y in 0..h {
                for x in 0..w {
                    let inside = (top..top + bh).contains(&y) && (left..left + bw).contains(&x);
                    pixels.push(if inside { tint - (next() % 40) as u8 } else { (next() % 50) as u8 });
                }
            }
        }
        labels.push(class);
    }
    (pixels, labels)
}

/// Runs the case with the export `bytes`: the dial on `device`, the fit on `fit_device` (the page
/// fits on the CPU backend; see `engine::fit_device`).
pub async fn run(bytes: &[u8], device: &Device, fit_device: &Device) -> Result<Outcome, String> {
    let frozen = engine::open(bytes, "tiny.ailweb", device)?;
    let (pixels, labels) = images();
    let probe = engine::Probe::new(pixels.clone(), labels.clone(), SHAPE, 6, &TRANSFORMS, frozen.device())?;
    let view = engine::dial(&frozen, &probe, &DIAL_I).await?;
    let frozen = engine::open(bytes, "tiny.ailweb", fit_device)?;
    let len = SHAPE.iter().product::<usize>();
    let classes: Vec<(String, Vec<Vec<u8>>)> = (0..2u32)
        .map(|class| {
            let images = (0..IMAGES).filter(|&k| labels[k] == class).map(|k| pixels[k * len..(k + 1) * len].to_vec()).collect();
            (format!("class {class}"), images)
        })
        .collect();
    let task = engine::custom(&classes, SHAPE)?;
    let support: &Split = &task.support;
    let mut fit = ail_core::fewshot::StepFit::new(&frozen, support, &engine::fit_config(&frozen, support, None), 0).map_err(|e| e.to_string())?;
    let mut losses = Vec::new();
    for _ in 0..FIT_STEPS {
        let report = engine::step(&frozen, &mut fit).await?.ok_or("the fit ended early")?;
        losses.push(report.loss);
    }
    Ok(Outcome { invariance: view.invariance, coords: view.coords, losses, i: fit.i().to_vec() })
}

/// Differences beyond `tolerance` (relative to each list's largest magnitude), described; empty
/// when the outcomes agree.
pub fn differences(got: &Outcome, want: &Outcome, tolerance: f64) -> Vec<String> {
    fn compare(name: &str, a: &[f64], b: &[f64], tolerance: f64, out: &mut Vec<String>) {
        if a.len() != b.len() {
            out.push(format!("{name}: {} values, expected {}", a.len(), b.len()));
            return;
        }
        let scale = b.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
        for (k, (x, y)) in a.iter().zip(b).enumerate() {
            if !((x - y).abs() <= tolerance * scale) {
                out.push(format!("{name}[{k}]: {x} vs expected {y}"));
            }
        }
    }
    let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    let mut out = Vec::new();
    compare("invariance", &got.invariance, &want.invariance, tolerance, &mut out);
    compare("coords", &f(&got.coords), &f(&want.coords), tolerance, &mut out);
    compare("losses", &got.losses, &want.losses, tolerance, &mut out);
    compare("i", &f(&got.i), &f(&want.i), tolerance, &mut out);
    out
}

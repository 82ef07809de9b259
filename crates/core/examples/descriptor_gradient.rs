//! What the gradient of a downstream loss in `i` leaves out when BatchNorm statistics depend on `i`.
//!
//! A frozen amortised encoder read with per-descriptor statistics (the default of every downstream
//! command) normalises each BatchNorm layer at `i` with statistics computed at `i` on calibration
//! images. A gradient that holds those statistics fixed (`--i-gradient held-statistics`) is the
//! partial derivative; the loss the fit is scored on moves them with `i`. This
//! prints, for one task and a head fitted at `[0.5, ...]`, both derivatives at a few descriptors:
//!
//! - `partial`: back-propagated with the statistics of `i` held fixed;
//! - `total`: back-propagated with the statistics computed in the graph from the same images, so
//!   that they move with `i` (what `--i-gradient batch-statistics`, the default, follows); checked
//!   against central differences of that loss, whose statistics are recomputed at `i ± h` (`fd total`);
//! - `fd, statistics held`: central differences with the statistics of `i` held, against `partial`.
//!
//! The loss is that of the calibration images themselves (the first 512 training images of the
//! task, on which the statistics are computed), so that both derivatives are of one function:
//! the batch's own statistics are then exactly the calibrated ones. Both come from
//! `fit::loss_and_descriptor_gradient`, as a fit computes them.
//!
//! ```sh
//! cargo run --release -p ail-core --example descriptor_gradient -- ENCODER DATA [position|tint|classify]
//! ```

use ail_augment::device::{DeviceChoice, select};
use ail_core::fit::{DescriptorGradient, FitConfig, fit, loss_and_descriptor_gradient};
use ail_core::frozen::{BatchNormStatistics, CALIBRATION_IMAGES, Frozen};
use ail_core::task::{TaskKind, TaskSpec};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [encoder, data, rest @ ..] = args.as_slice() else {
        eprintln!("usage: descriptor_gradient ENCODER DATA [position|tint|classify]");
        std::process::exit(2);
    };
    let task = match rest.first().map(String::as_str).unwrap_or("position") {
        "position" => TaskKind::Position,
        "tint" => TaskKind::Tint,
        "classify" => TaskKind::Classify,
        other => return Err(format!("unknown task {other}: position, tint or classify").into()),
    };
    let device = select(DeviceChoice::Cpu)?.device;
    let mut frozen = Frozen::open(std::path::Path::new(encoder), &device, || unreachable!("published encoders record their normalisation"))?;
    let spec = TaskSpec { task, data: data.clone(), train_size: Some(1000), val_size: Some(500), test_size: Some(500), ..Default::default() };
    let loaded = spec.load(&frozen.meta, &device)?;
    // The calibration images (per-descriptor statistics are computed on them) are also the batch
    // whose loss is differentiated, so that its own statistics are exactly the calibrated ones.
    let train = &loaded.train;
    let calibration = train.subset(&(0..CALIBRATION_IMAGES.min(train.len())).collect::<Vec<_>>());
    frozen.set_batch_norm_statistics(BatchNormStatistics::PerDescriptor, &calibration.pixels, calibration.len(), calibration.shape);
    let k = frozen.num_invariances();
    let start = vec![0.5f32; k];
    let config = FitConfig { epochs: 24, lr: 0.01, fixed: Some(start.clone()), ..Default::default() };
    let readout = fit(&frozen, train, &loaded.val, &config, &mut |_, _, _| {})?.best;
    println!("{}: head fitted at {start:?} (validation best of 24 epochs)", loaded.describe());
    let at = |i: &[f32], kind| loss_and_descriptor_gradient(&frozen, &readout, &calibration, i, kind);
    let h = 0.01f32;
    let mut points = vec![start.clone()];
    if k == 2 {
        points.extend([vec![0.25, 0.75], vec![0.75, 0.25], vec![0.8, 0.4], vec![0.2, 0.6]]);
    }
    println!("| i | partial | total | fd total (h {h}) | fd, statistics held | cos(partial, total) |");
    println!("|---|---|---|---|---|---:|");
    for i in &points {
        let partial = at(i, DescriptorGradient::HeldStatistics).1;
        let total = at(i, DescriptorGradient::BatchStatistics).1;
        // Central differences of each loss; `i +- h` stays in the lattice cell of `i` (the points
        // are lattice points and h is under half its step), so held statistics stay those of `i`.
        let central = |kind| -> Vec<f32> {
            (0..k)
                .map(|e| {
                    let (mut up, mut down) = (i.clone(), i.clone());
                    up[e] += h;
                    down[e] -= h;
                    ((at(&up, kind).0 - at(&down, kind).0) / (2.0 * h as f64)) as f32
                })
                .collect()
        };
        let (fd_total, fd_held) = (central(DescriptorGradient::BatchStatistics), central(DescriptorGradient::HeldStatistics));
        let dot: f32 = partial.iter().zip(&total).map(|(a, b)| a * b).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let f = |v: &[f32]| format!("[{}]", v.iter().map(|x| format!("{x:+.4}")).collect::<Vec<_>>().join(", "));
        println!("| {i:?} | {} | {} | {} | {} | {:+.3} |", f(&partial), f(&total), f(&fd_total), f(&fd_held), dot / (norm(&partial) * norm(&total)).max(1e-12));
    }
    Ok(())
}

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
//!   against central differences with the statistics recomputed at `i ± h` (`fd total`);
//! - `fd, statistics held`: central differences with the statistics of `i` held, against `partial`.
//!
//! The loss is that of the calibration images themselves (the first 512 training images of the
//! task in the order `Frozen` draws them), so that both derivatives are of one function.
//!
//! ```sh
//! cargo run --release -p ail-core --example descriptor_gradient -- ENCODER DATA [position|tint|classify]
//! ```

use std::sync::Arc;

use ail_augment::device::{DeviceChoice, select};
use ail_core::fit::{FitConfig, Readout, Split, Targets, fit, target_rows};
use ail_core::frozen::{BatchNormStatistics, CALIBRATION_IMAGES, Frozen};
use ail_core::norm::{EncoderStatistics, batch_statistics_in_graph, with_statistics};
use ail_core::task::{TaskKind, TaskSpec};
use burn::prelude::*;

/// The loss of `readout` on `split` at `i`, and its gradient in `i`: with `statistics` held fixed
/// (`Some`) or with the split's own statistics computed in the graph (`None`).
fn loss_and_gradient(frozen: &Frozen, readout: &Readout, split: &Split, i: &[f32], statistics: Option<Arc<EncoderStatistics>>) -> (f64, Vec<f32>) {
    let device = frozen.device();
    let m = split.targets.outputs();
    let rows = target_rows(&split.targets, &readout.target_mean, &readout.target_std);
    let rows = Tensor::<1>::from_floats(rows.as_slice(), device).reshape([split.len(), m]);
    let i_t = Tensor::<1>::from_floats(i, device).require_grad();
    let x = frozen.normalization.apply(Frozen::upload_u8(&split.pixels, split.len(), split.shape, device));
    let forward = || frozen.encoder.forward_features(x, i_t.clone());
    let features = match statistics {
        Some(s) => with_statistics(s, forward),
        None => batch_statistics_in_graph(forward),
    };
    let out = readout.head.forward(features);
    let loss = match split.targets {
        Targets::Classes { .. } => (rows * burn::tensor::activation::log_softmax(out, 1)).sum_dim(1).mean().neg(),
        Targets::Values { .. } => (out - rows).powf_scalar(2.0).mean(),
    };
    let value = loss.clone().into_scalar::<f32>() as f64;
    let grads = loss.backward();
    let g = i_t.grad(&grads).map(|g| g.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32")).unwrap_or_else(|| vec![0.0; i.len()]);
    (value, g)
}

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
    let train = &loaded.train;
    frozen.set_batch_norm_statistics(BatchNormStatistics::PerDescriptor, &train.pixels, train.len(), train.shape);
    let k = frozen.num_invariances();
    let start = vec![0.5f32; k];
    let config = FitConfig { epochs: 24, lr: 0.01, fixed: Some(start.clone()), ..Default::default() };
    let readout = fit(&frozen, train, &loaded.val, &config, &mut |_, _, _| {})?.best;
    println!("{}: head fitted at {start:?} (validation best of 24 epochs)", loaded.describe());

    // The calibration images: the ones per-descriptor statistics are computed on.
    let order = ail_core::fit::permutation(train.len(), 0x6a7c, 0);
    let calibration = train.subset(&order[..CALIBRATION_IMAGES.min(train.len())]);
    let statistics = |i: &[f32]| -> Arc<EncoderStatistics> {
        Arc::new(frozen.layer_statistics(&calibration.pixels, calibration.len(), calibration.shape, i).expect("statistics").0)
    };
    let h = 0.01f32;
    let mut points = vec![start.clone()];
    if k == 2 {
        points.extend([vec![0.25, 0.75], vec![0.75, 0.25], vec![0.8, 0.4], vec![0.2, 0.6]]);
    }
    println!("| i | partial | total | fd total (h {h}) | fd, statistics held | cos(partial, total) |");
    println!("|---|---|---|---|---|---:|");
    for i in &points {
        let (_, partial) = loss_and_gradient(&frozen, &readout, &calibration, i, Some(statistics(i)));
        let (_, total) = loss_and_gradient(&frozen, &readout, &calibration, i, None);
        let mut fd_total = Vec::new();
        let mut fd_held = Vec::new();
        for e in 0..k {
            let (mut up, mut down) = (i.clone(), i.clone());
            up[e] += h;
            down[e] -= h;
            let at = |p: &[f32], s| loss_and_gradient(&frozen, &readout, &calibration, p, Some(s)).0;
            fd_total.push(((at(&up, statistics(&up)) - at(&down, statistics(&down))) / (2.0 * h as f64)) as f32);
            fd_held.push(((at(&up, statistics(i)) - at(&down, statistics(i))) / (2.0 * h as f64)) as f32);
        }
        let dot: f32 = partial.iter().zip(&total).map(|(a, b)| a * b).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let f = |v: &[f32]| format!("[{}]", v.iter().map(|x| format!("{x:+.4}")).collect::<Vec<_>>().join(", "));
        println!("| {i:?} | {} | {} | {} | {} | {:+.3} |", f(&partial), f(&total), f(&fd_total), f(&fd_held), dot / (norm(&partial) * norm(&total)).max(1e-12));
    }
    Ok(())
}

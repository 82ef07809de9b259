//! `ail bench pretrain`: one AI-SimCLR pretraining step against the same step in PyTorch, and the
//! scaling of data parallelism.

use ail_core::pretrain::PretrainConfig;
use burn::tensor::Device;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::timing::{peak_rss_mib, time_runs};
use super::torch::{Comparison, print_comparison, torch_step};
use crate::args::{BenchPretrainArgs, Global};
use crate::common;
use crate::parse::{ListError, parse_list};

/// Median seconds of our pretraining step for `config` on `devices` (autodiff; several: replicas).
fn time_pretrain_step(name: &str, config: &PretrainConfig, devices: &[Device], args: &BenchPretrainArgs) -> anyhow::Result<f64> {
    use ail_core::checkpoint::Normalization;
    use ail_core::method::ContrastiveModel;
    use ail_core::pretrain::{Replicas, Stepper};
    use rand::Rng;

    config.validate()?;
    let device = &devices[0];
    let invariances = &config.invariances;
    let encoder = config.encoder_config();
    let head = config.head_config(&encoder);
    device.seed(0);
    let mut model = Some(ContrastiveModel::new(&encoder, &head, invariances.trained().len(), false, device)?);
    let mut optim = ail_core::pretrain::optimizer(config);
    let side = config.data.image_size;
    let stats = Normalization { mean: vec![0.5; 3], std: vec![0.25; 3] };
    let mut stepper = Stepper::new(config, device, &stats, [3, side, side], model.as_ref().expect("model"));
    if devices.len() > 1 {
        let names = (0..devices.len()).map(|k| format!("replica {k}")).collect();
        stepper = stepper.with_replicas(Replicas::new(devices.to_vec(), names));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let pixels: Vec<u8> = (0..config.batch_size * 3 * side * side).map(|_| rng.random()).collect();
    let mut step = 0u64;
    time_runs(name, args.warmup, args.steps, || {
        let (next, out) = stepper.step(model.take().expect("model"), &mut optim, &pixels, step)?;
        model = Some(next);
        step += 1;
        let l = out.loss.into_scalar::<f32>(); // waits for the step to finish
        anyhow::ensure!(l.is_finite(), "non-finite loss in the benchmark");
        Ok(())
    })
}

pub(super) fn run(global: &Global, args: &BenchPretrainArgs) -> anyhow::Result<()> {
    let widths: Vec<f32> = parse_list(&args.widths, "--widths", ListError::Short)?;
    let batches: Vec<usize> = parse_list(&args.batch_sizes, "--batch-sizes", ListError::Short)?;
    anyhow::ensure!(args.steps > 0, "--steps must be at least 1");
    anyhow::ensure!(args.devices >= 1, "--devices must be at least 1");
    let all = common::devices(global, args.devices)?;
    let selected = all[0].clone();
    let devices: Vec<Device> = all.iter().map(|d| d.device.clone().autodiff()).collect();
    let mut rows: Vec<Comparison> = Vec::new();
    let mut scaling = Vec::new();
    for &width in &widths {
        for &batch in &batches {
            let mut config = PretrainConfig { batch_size: batch, steps: 1_000_000, ..Default::default() };
            config.encoder.width = width;
            config.data.image_size = args.image_size;
            let name = format!("width {width}, batch {batch}");
            let ours = time_pretrain_step(&name, &config, &devices[..1], args)?;
            let ours_mem = peak_rss_mib();
            if args.devices > 1 {
                let n = args.devices;
                let sharded = PretrainConfig { shards: n, ..config.clone() };
                let in_turn = time_pretrain_step(&format!("{name}, {n} shards, 1 device"), &sharded, &devices[..1], args)?;
                let parallel = time_pretrain_step(&format!("{name}, {n} shards, {n} devices"), &sharded, &devices, args)?;
                scaling.push((name.clone(), ours, in_turn, parallel));
            }
            let torch = torch_step(&args.torch, &[], width, batch, args.image_size, args.steps, args.warmup, selected.is_gpu)?;
            rows.push((name, ours, ours_mem, torch));
        }
    }
    let title = format!("AI-SimCLR step: Hyper-ResNet-18 (CIFAR stem, K = 2), {} px, two views, NT-Xent, AdamW", args.image_size);
    print_comparison(&title, &rows, &selected.description);
    if !scaling.is_empty() {
        let n = args.devices;
        println!("\ndata parallelism, same global batch: 1 device unsplit, {n} shards in turn on 1 device, {n} shards on {n} devices at once");
        println!("{:<22} {:>12} {:>14} {:>14} {:>9}", "config", "1 device ms", "in turn ms", "parallel ms", "scaling");
        for (name, one, in_turn, parallel) in &scaling {
            println!("{name:<22} {:>12.1} {:>14.1} {:>14.1} {:>8.2}x", one * 1e3, in_turn * 1e3, parallel * 1e3, one / parallel);
        }
        println!("scaling = 1-device time / {n}-device time (ideal: {n}x when the devices do not share hardware)");
    }
    Ok(())
}

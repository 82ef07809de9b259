//! `ail bench device`: a plain ResNet-18 training step on each backend.

use ail_augment::device::{DeviceChoice, select};

use super::timing::{Row, time_runs};
use crate::args::{BenchDeviceArgs, Global};

/// A plain ResNet-18 with a linear classifier: the network of the backend comparison.
#[derive(burn::module::Module, Debug)]
struct Classifier {
    encoder: ail_core::resnet::ResNet,
    head: burn::nn::Linear,
}

pub(super) fn run(global: &Global, args: &BenchDeviceArgs) -> anyhow::Result<()> {
    use burn::nn::LinearConfig;
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::optim::{AdamConfig, GradientsParams};
    use burn::tensor::{Distribution, Int, Tensor};

    anyhow::ensure!(args.width > 0.0 && args.batch_size > 0 && args.steps > 0, "--width, --batch-size and --steps must be positive");
    if global.device != "auto" {
        eprintln!("note: bench device measures the backends of --backends; --device is not used");
    }
    let config = ail_core::resnet::ResNetConfig::resnet18(args.width);
    eprintln!(
        "step: ResNet-18 (CIFAR stem, {} channels in stage 1), batch {} of 3x32x32, cross-entropy, backward, Adam",
        config.base_channels, args.batch_size
    );
    let mut rows = Vec::new();
    for name in args.backends.split(',').map(str::trim) {
        let selected = match name {
            "cpu" => ail_augment::device::cpu(),
            "wgpu" => match select(DeviceChoice::Wgpu) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("skipping wgpu: {e}");
                    continue;
                }
            },
            other => anyhow::bail!("unknown backend `{other}` in --backends (use cpu, wgpu)"),
        };
        eprintln!("measuring {}", selected.description);
        let device = selected.device.clone().autodiff();
        device.seed(42);
        let mut model = Some(Classifier {
            encoder: config.init(&device),
            head: LinearConfig::new(config.feature_dim(), 10).init(&device),
        });
        let mut optim = AdamConfig::new().init();
        let loss_fn = CrossEntropyLossConfig::new().init(&device);
        let x = Tensor::<4>::random([args.batch_size, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
        let labels: Vec<i64> = (0..args.batch_size as i64).map(|i| i % 10).collect();
        let y = Tensor::<1, Int>::from_ints(labels.as_slice(), &device);
        let no_descriptor = Tensor::<1>::zeros([0], &device);
        let mut last_loss = f32::NAN;
        let seconds = time_runs(name, args.warmup, args.steps, || {
            let m = model.take().expect("the model is put back after every step");
            let logits = m.head.forward(m.encoder.forward_features(x.clone(), no_descriptor.clone()));
            let loss = loss_fn.forward(logits, y.clone());
            let grads = GradientsParams::from_grads(loss.backward(), &m);
            model = Some(optim.step(1e-3, m, grads));
            last_loss = loss.into_scalar();
            Ok(())
        })?;
        anyhow::ensure!(last_loss.is_finite(), "{name}: the loss is not finite ({last_loss})");
        rows.push(Row { name: name.to_string(), device: selected.description, seconds });
    }
    anyhow::ensure!(!rows.is_empty(), "no backend could be measured");
    let baseline = rows[0].seconds;
    println!("\n{:<8} {:>12} {:>12} {:>10}  device", "backend", "ms/step", "images/s", "speed");
    for r in &rows {
        println!(
            "{:<8} {:>12.1} {:>12.1} {:>9.2}x  {}",
            r.name,
            r.seconds * 1e3,
            args.batch_size as f64 / r.seconds,
            baseline / r.seconds,
            r.device
        );
    }
    println!("speed: relative to `{}` (higher is faster)", rows[0].name);
    Ok(())
}

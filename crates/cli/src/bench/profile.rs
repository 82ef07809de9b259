//! `ail bench profile`: where one pretraining step spends its time, by kind of work, next to the
//! same kinds of work in PyTorch at the same shapes (`scripts/bench_pytorch_pretrain.py --profile`).
//!
//! Each row times its work alone, forward and backward, waiting for the result (a host read), at the
//! shapes of a Hyper-ResNet-18 step: every conv of the network on `2B` views, every BatchNorm, every
//! kernel generator, the projection head with NT-Xent, the optimiser over all parameters, and the
//! augmentation of the two views. The whole step is timed too: the rows do not add up to it
//! exactly (the step also reshapes, adds residuals and applies ReLUs; the rows each pay one wait).

use ail_augment::{AugmentConfig, Augmenter, OpSet, sample_views};
use ail_core::hypernet::{HyperConvConfig, descriptor_embedding, embed};
use ail_core::loss::nt_xent;
use ail_core::method::ContrastiveModel;
use ail_core::resnet::ConvSpec;
use ail_core::pretrain::PretrainConfig;
use ail_core::{Descriptor, Family};
use burn::module::Module;
use burn::nn::BatchNormConfig;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::Distribution;
use ail_core::kernels::{CpuKernels, conv2d, cpu_kernels, set_cpu_kernels};
use burn::tensor::ops::ConvOptions;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::args::{BenchProfileArgs, Global};
use crate::common;

/// Every conv of the encoder with the side of its input (the walk `ail info` counts FLOPs with).
fn convs_with_sides(config: &PretrainConfig) -> Vec<(ConvSpec, usize)> {
    let encoder = config.encoder_config();
    let ail_core::encoder::ArchConfig::ResNet(arch) = encoder.arch() else { unreachable!("bench profile builds a Hyper-ResNet") };
    let mut out = Vec::new();
    ail_core::summary::for_each_conv(&arch, encoder.image_size, |spec, input, _| out.push((spec.clone(), input)));
    out
}

/// Waits for `t` (reads one value to the host).
fn wait<const D: usize>(t: Tensor<D>) {
    let _ = t.sum().into_scalar::<f32>();
}

/// Waits for every pending update of `model`'s parameters (reads the last one).
fn wait_model(model: &ContrastiveModel) {
    struct Last(Option<Tensor<1>>);
    impl burn::module::ModuleVisitor for Last {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            self.0 = Some(p.val().flatten(0, D - 1));
        }
    }
    let mut last = Last(None);
    model.visit(&mut last);
    if let Some(t) = last.0 {
        wait(t);
    }
}

/// The median seconds of `runs` runs of `work`, after one warm-up run.
fn median_of(runs: usize, mut work: impl FnMut()) -> f64 {
    work();
    let times: Vec<f64> = (0..runs)
        .map(|_| {
            let t0 = std::time::Instant::now();
            work();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    super::timing::median(times)
}

pub(super) fn run(global: &Global, args: &BenchProfileArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.runs >= 1, "--runs must be at least 1");
    let selected = common::device(global)?;
    let device = selected.device.clone().autodiff();
    device.seed(0);
    let mut config = PretrainConfig { batch_size: args.batch_size, ..Default::default() };
    config.encoder.width = args.width;
    config.data.image_size = args.image_size;
    config.validate()?;
    let (b2, side, runs) = (2 * args.batch_size, args.image_size, args.runs);
    let mut rows: Vec<(&str, f64)> = Vec::new();
    eprintln!("profiling width {}, batch {} ({} views of {side} px), median of {runs} runs per row", args.width, args.batch_size, b2);

    // convs, forward + backward (input and kernel gradients)
    let convs = convs_with_sides(&config);
    let mut conv_time = 0.0;
    let mut conv_forward = 0.0;
    let mut weight_backward = 0.0;
    let mut burn_conv_time = 0.0;
    let own = cpu_kernels();
    for (c, s) in &convs {
        let x = Tensor::<4>::random([b2, c.in_channels, *s, *s], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let w = Tensor::<4>::random([c.out_channels, c.in_channels, c.kernel, c.kernel], Distribution::Normal(0.0, 0.1), &device).require_grad();
        let p = c.kernel / 2;
        let forward_backward = || {
            let y = conv2d(x.clone(), w.clone(), None, ConvOptions::new([c.stride; 2], [p, p], [1, 1], 1));
            let grads = y.sum().backward();
            wait(w.grad(&grads).expect("kernel gradient"));
            wait(x.grad(&grads).expect("input gradient"));
        };
        conv_time += median_of(runs, forward_backward);
        conv_forward += median_of(runs, || wait(conv2d(x.clone(), w.clone(), None, ConvOptions::new([c.stride; 2], [p, p], [1, 1], 1))));
        // The kernel gradient alone (the input needs none: burn skips its backward).
        let x_const = x.clone().detach();
        weight_backward += median_of(runs, || {
            let grads = conv2d(x_const.clone(), w.clone(), None, ConvOptions::new([c.stride; 2], [p, p], [1, 1], 1)).sum().backward();
            wait(w.grad(&grads).expect("kernel gradient"));
        });
        if !selected.is_gpu && own == CpuKernels::Own {
            set_cpu_kernels(CpuKernels::Burn);
            burn_conv_time += median_of(runs, forward_backward);
            set_cpu_kernels(own);
        }
    }
    rows.push(("convs (fwd + bwd)", conv_time));
    rows.push(("  of which forward", conv_forward));
    rows.push(("  forward + kernel gradient", weight_backward));
    if burn_conv_time > 0.0 {
        rows.push(("  the same with burn's conv2d", burn_conv_time));
    }

    // BatchNorm after every conv, forward + backward: the encoder's, and burn's for reference
    let mut bn_time = 0.0;
    let mut burn_bn_time = 0.0;
    for (c, s) in &convs {
        let out = s / c.stride;
        let ours = ail_core::norm::BatchNorm2dConfig::new(c.out_channels).init(&device);
        let theirs = BatchNormConfig::new(c.out_channels).init(&device);
        let x = Tensor::<4>::random([b2, c.out_channels, out, out], Distribution::Normal(0.0, 1.0), &device).require_grad();
        bn_time += median_of(runs, || {
            let grads = ours.forward(x.clone()).sum().backward();
            wait(x.grad(&grads).expect("input gradient"));
        });
        burn_bn_time += median_of(runs, || {
            let grads = theirs.forward(x.clone()).sum().backward();
            wait(x.grad(&grads).expect("input gradient"));
        });
    }
    rows.push(("batch norms (fwd + bwd)", bn_time));
    rows.push(("  the same with burn's BatchNorm", burn_bn_time));

    // kernel generators of the conditioned convs, forward + backward
    let hyper: Vec<_> = convs
        .iter()
        .filter(|(c, _)| c.conditioned)
        .map(|(c, _)| HyperConvConfig::new(c.in_channels, c.out_channels, c.kernel).with_stride(c.stride).with_hidden(config.encoder.hidden).init(&device))
        .collect();
    let emb = descriptor_embedding(2, &device);
    let i = Tensor::<1>::from_floats([1.0, 1.0], &device);
    let generator_time = median_of(runs, || {
        let z = embed(&emb, i.clone());
        let total = hyper.iter().map(|h| h.kernel(z.clone()).sum()).reduce(|a, b| a + b).expect("conditioned convs");
        let grads = total.backward();
        wait(emb.weight.val().grad(&grads).expect("embedding gradient"));
    });
    rows.push(("kernel generators (fwd + bwd)", generator_time));

    // projection head + NT-Xent on the features, forward + backward
    let invariances = &config.invariances;
    let encoder = config.encoder_config();
    let head_config = config.head_config(&encoder);
    let model = ContrastiveModel::new(&encoder, &head_config, invariances.trained().len(), false, &device)?;
    let features = Tensor::<2>::random([b2, encoder.feature_dim()], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let head_time = median_of(runs, || {
        let z = model.heads.forward(features.clone(), 0);
        let n = args.batch_size;
        let loss = nt_xent(z.clone().narrow(0, 0, n), z.narrow(0, n, n), config.temperature);
        wait(features.grad(&loss.backward()).expect("feature gradient"));
    });
    rows.push(("head + NT-Xent (fwd + bwd)", head_time));

    // the whole step's forward, backward and optimiser
    let x = Tensor::<4>::random([b2, 3, side, side], Distribution::Normal(0.0, 1.0), &device);
    let d = Tensor::<1>::from_floats([1.0, 1.0], &device);
    let forward_time = median_of(runs, || wait(model.simclr_loss(x.clone(), d.clone(), 0, config.temperature)));
    let x_tracked = x.clone().require_grad();
    let step_time = median_of(runs, || {
        let grads = model.simclr_loss(x_tracked.clone(), d.clone(), 0, config.temperature).backward();
        // The input's gradient is the last one backward computes.
        wait(x_tracked.grad(&grads).expect("input gradient"));
    });
    // The optimiser alone: gradients are computed untimed before each timed update.
    let optimizer_time = || {
        let mut optim = ail_core::pretrain::optimizer(&config);
        let mut current = Some(model.clone());
        let mut times = Vec::new();
        for run in 0..=runs {
            let m = current.take().expect("model");
            let grads = GradientsParams::from_grads(m.simclr_loss(x.clone().narrow(0, 0, 8), d.clone(), 0, config.temperature).backward(), &m);
            wait_model(&m);
            let t0 = std::time::Instant::now();
            let m = optim.step(1e-3, m, grads);
            wait_model(&m);
            if run > 0 {
                times.push(t0.elapsed().as_secs_f64());
            }
            current = Some(m);
        }
        super::timing::median(times)
    };
    rows.push(("AdamW over all parameters", optimizer_time()));
    if !selected.is_gpu && own == CpuKernels::Own {
        set_cpu_kernels(CpuKernels::Burn);
        rows.push(("  the same with burn's AdamW", optimizer_time()));
        set_cpu_kernels(own);
    }

    // augmentation of the two views (host draws, CPU or device kernels, upload)
    let augmenter = Augmenter::new(&device);
    let augment = AugmentConfig::default();
    let ops = OpSet::from_descriptor(Family::Groups, &Descriptor(vec![1.0, 1.0]));
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let pixels: Vec<u8> = (0..args.batch_size * 3 * side * side).map(|_| rng.random()).collect();
    let shape = [args.batch_size, 3, side, side];
    let radius = augment.blur_radius(side);
    let augment_time = median_of(runs, || {
        let views = sample_views(ops, &augment, [args.batch_size, side, side], 2, &mut rng);
        wait(augmenter.apply(&pixels, shape, &views, radius).expect("augmentation"));
    });
    rows.push(("augmentation (2 views)", augment_time));
    rows.push(("forward (encoder + head + loss)", forward_time));
    rows.push(("forward + backward", step_time));

    let torch = if args.no_torch { None } else {
        let script_args: Vec<String> = [("--width", args.width.to_string()), ("--batch-size", args.batch_size.to_string()),
            ("--image-size", args.image_size.to_string()), ("--steps", args.runs.to_string())]
            .into_iter()
            .flat_map(|(flag, value)| [flag.to_string(), value])
            .chain(["--profile".to_string()])
            .collect();
        match super::torch::run_torch_script(&args.python, "profile", &script_args) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("skipping the PyTorch profile: {e:#}");
                None
            }
        }
    };
    println!("\nwhere a pretraining step's time goes: Hyper-ResNet-18 (CIFAR stem, K = 2), width {}, batch {} ({b2} views of {side} px)", args.width, args.batch_size);
    println!("{:<34} {:>10} {:>12} {:>9}", "work", "ail ms", "PyTorch ms", "ail/PyTorch");
    for (name, seconds) in &rows {
        let theirs = torch.as_ref().and_then(|t| t.get(*name).and_then(|v| v.as_f64()));
        println!(
            "{name:<34} {:>10.1} {:>12} {:>9}",
            seconds * 1e3,
            theirs.map(|t| format!("{:.1}", t * 1e3)).unwrap_or("-".into()),
            theirs.map(|t| format!("{:.2}x", seconds / t)).unwrap_or("-".into())
        );
    }
    println!("device: {}; ail/PyTorch > 1 means ail takes longer. Rows are timed alone (see `ail bench profile --help`).", selected.description);
    Ok(())
}

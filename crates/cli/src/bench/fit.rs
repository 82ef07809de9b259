//! `ail bench fit`: one step of the downstream fit against the same step in PyTorch.

use anyhow::Context;

use super::timing::{peak_rss_mib, time_runs};
use super::torch::{print_comparison, torch_step};
use crate::args::{BenchFitArgs, Global};
use crate::common;
use crate::parse::{ListError, parse_list};

/// `ail bench fit`: the downstream step (frozen encoder, head + i) against PyTorch's.
pub(super) fn run(global: &Global, args: &BenchFitArgs) -> anyhow::Result<()> {
    use ail_core::EncoderConfig;
    use ail_core::loss::cross_entropy_one_hot;
    use burn::module::Module;
    use burn::nn::LinearConfig;
    use burn::optim::GradientsParams;
    use burn::tensor::{Distribution, Tensor};

    let widths: Vec<f32> = parse_list(&args.widths, "--widths", ListError::Short)?;
    let batches: Vec<usize> = parse_list(&args.batch_sizes, "--batch-sizes", ListError::Short)?;
    anyhow::ensure!(args.steps > 0, "--steps must be at least 1");
    let selected = common::device(global)?;
    let device = selected.device.clone().autodiff();
    let classes = 10;
    let mut rows = Vec::new();
    for &width in &widths {
        for &batch in &batches {
            device.seed(0);
            let config = EncoderConfig::new(ail_core::ModelKind::HyperResnet18, 2).with_width(width).with_image_size(args.image_size);
            config.validate()?;
            let encoder = config.init(&device)?.freeze(); // eval-mode BatchNorm, no parameter gradients
            let mut head = Some(LinearConfig::new(config.feature_dim(), classes).init(&device));
            let mut optim = ail_core::kernels::adamw(Default::default(), None);
            let mut adam = ail_core::fit::DescriptorAdam::new(2, 0.01);
            let mut i = vec![0.5f32, 0.5];
            let side = args.image_size;
            let x = Tensor::<4>::random([batch, 3, side, side], Distribution::Normal(0.0, 1.0), &device);
            let one_hot = Tensor::<2>::from_floats(
                burn::tensor::TensorData::new((0..batch * classes).map(|k| if k % classes == (k / classes) % classes { 1.0f32 } else { 0.0 }).collect(), [batch, classes]),
                &device,
            );
            let name = format!("width {width}, batch {batch}");
            let ours = time_runs(&name, args.warmup, args.steps, || {
                let h = head.take().expect("the head is put back after every step");
                let i_t = Tensor::<1>::from_floats(i.as_slice(), &device).require_grad();
                let loss = cross_entropy_one_hot(h.forward(encoder.forward_features(x.clone(), i_t.clone())), one_hot.clone());
                let mut grads = loss.backward();
                let g: Vec<f32> = i_t.grad_remove(&mut grads).context("no gradient reached i")?.into_data().try_to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
                adam.step(&mut i, &g); // reads the gradient: waits for the step
                head = Some(optim.step(1e-3, h.clone(), GradientsParams::from_grads(grads, &h)));
                Ok(())
            })?;
            let torch = torch_step(&args.torch, &["--fit"], width, batch, args.image_size, args.steps, args.warmup, selected.is_gpu)?;
            rows.push((name, ours, peak_rss_mib(), torch));
        }
    }
    let title = "fit step: frozen Hyper-ResNet-18 (eval BatchNorm, K = 2) at i (with gradient), linear head, cross-entropy, AdamW + Adam on i";
    print_comparison(title, &rows, &selected.description);
    Ok(())
}

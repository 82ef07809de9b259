//! `ail bench`: speed against a baseline measured in the same run.

use std::process::Command;
use std::time::Instant;

use ail_augment::device::{DeviceChoice, select};
use ail_augment::{AugmentConfig, Augmenter, OpSet, sample_views};
use ail_core::{Descriptor, Family};
use ail_data::epoch_order;
use anyhow::Context;
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::args::{BenchAugmentArgs, BenchCommand, BenchDeviceArgs, BenchFitArgs, BenchPretrainArgs, Global, TorchArgs};
use crate::common;

const TORCH_SCRIPT: &str = include_str!("../../../scripts/bench_torchvision_augment.py");
const TORCH_PRETRAIN_SCRIPT: &str = include_str!("../../../scripts/bench_pytorch_pretrain.py");

pub fn run(global: &Global, command: &BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Augment(args) => augment(global, args),
        BenchCommand::Device(args) => device(global, args),
        BenchCommand::Pretrain(args) => pretrain(global, args),
        BenchCommand::Profile(args) => crate::profile::run(global, args),
        BenchCommand::Fit(args) => fit(global, args),
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 }
}

/// Runs `step` `warmup` times, then `runs` times; returns the median seconds of the timed runs.
fn time_runs(name: &str, warmup: usize, runs: usize, mut step: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let bar = ProgressBar::new((warmup + runs) as u64).with_style(
        ProgressStyle::with_template("{msg:<28} {bar:30} {pos}/{len} [{elapsed}, eta {eta}]").expect("valid template"),
    );
    bar.set_message(name.to_string());
    for _ in 0..warmup {
        step()?; // compiles kernels, autotunes, fills allocators
        bar.inc(1);
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        step()?;
        times.push(t0.elapsed().as_secs_f64());
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(median(times))
}

struct Row {
    name: String,
    device: String,
    seconds: f64,
}

fn augment(global: &Global, args: &BenchAugmentArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.batch_size > 0 && args.runs > 0, "--batch-size and --runs must be at least 1");
    if global.device != "auto" {
        eprintln!("note: bench augment measures every backend; --device is not used");
    }
    let data = common::load(&args.data)?;
    anyhow::ensure!(
        data.len() >= args.batch_size,
        "the dataset has {} images, fewer than --batch-size {}",
        data.len(),
        args.batch_size
    );
    let batch = data.subset(&epoch_order(data.len(), 0, 0, true)[..args.batch_size]);
    let shape = [batch.len(), batch.channels, batch.height, batch.width];
    let config = AugmentConfig::default();
    let ops = OpSet::from_descriptor(Family::Groups, &Descriptor(vec![1.0, 1.0]));
    let radius = config.blur_radius(batch.height);
    eprintln!(
        "pipeline: default two-view SimCLR augmentation, {} images of {}x{}x{} -> {} views",
        shape[0], shape[1], shape[2], shape[3], 2 * shape[0]
    );

    let mut rows = Vec::new();
    let mut ours = |name: &str, device: &Device, description: String| -> anyhow::Result<()> {
        let augmenter = Augmenter::new(device);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let seconds = time_runs(name, 1, args.runs, || {
            let views = sample_views(ops, &config, [shape[0], shape[2], shape[3]], 2, &mut rng);
            let out = augmenter.apply(&batch.pixels, shape, &views, radius)?;
            device.sync().map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"))?;
            drop(out);
            Ok(())
        })?;
        rows.push(Row { name: name.into(), device: description, seconds });
        Ok(())
    };
    let cpu = ail_augment::device::cpu();
    ours("ail CPU reference", &cpu.device, cpu.description.clone())?;
    if !args.no_wgpu {
        match select(DeviceChoice::Wgpu) {
            Ok(gpu) => ours("ail WGSL kernels", &gpu.device, gpu.description.clone())?,
            Err(e) => eprintln!("skipping wgpu: {e}"),
        }
    }
    if !args.no_torch {
        match torchvision(args, &batch.pixels, shape) {
            Ok(row) => rows.push(row),
            Err(e) => eprintln!("skipping torchvision baseline: {e:#}"),
        }
    }

    let baseline = rows.iter().find(|r| r.name.starts_with("torchvision")).unwrap_or(&rows[0]);
    println!("\n{:<44} {:>10} {:>10} {:>8}  device", "pipeline", "ms/batch", "images/s", "ratio");
    for r in &rows {
        println!(
            "{:<44} {:>10.1} {:>10.0} {:>7.2}x  {}",
            r.name,
            r.seconds * 1e3,
            shape[0] as f64 / r.seconds,
            baseline.seconds / r.seconds,
            r.device
        );
    }
    println!("ratio: throughput relative to `{}`; images/s counts input images (two views each)", baseline.name);
    Ok(())
}

fn torchvision(args: &BenchAugmentArgs, pixels: &[u8], shape: [usize; 4]) -> anyhow::Result<Row> {
    let probe = Command::new(&args.python)
        .args(["-c", "import torchvision"])
        .output()
        .with_context(|| format!("running {}", args.python))?;
    anyhow::ensure!(probe.status.success(), "`{} -c \"import torchvision\"` failed (pip install torch torchvision)", args.python);
    let dir = std::env::temp_dir().join(format!("ail-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("bench_torchvision_augment.py");
    let images = dir.join("images.u8");
    std::fs::write(&script, TORCH_SCRIPT)?;
    std::fs::write(&images, pixels)?;
    let bar = ProgressBar::new_spinner().with_message("torchvision (same pipeline)");
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let out = Command::new(&args.python)
        .arg(&script)
        .args(["--images", &images.to_string_lossy(), "--runs", &args.runs.to_string(), "--shape"])
        .args(shape.iter().map(|d| d.to_string()))
        .output()
        .context("running the torchvision benchmark")?;
    bar.finish_and_clear();
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(out.status.success(), "torchvision benchmark failed: {}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(line.trim()).context("parsing the torchvision benchmark output")?;
    let seconds = json["median_s"].as_f64().context("no median_s in the torchvision output")?;
    Ok(Row {
        name: format!("torchvision, torch {} ({} workers)", json["torch"].as_str().unwrap_or("?"), json["workers"]),
        device: ail_augment::device::cpu().description.replace("cpu: burn flex on ", "cpu: "),
        seconds,
    })
}

/// A plain ResNet-18 with a linear classifier: the network of the backend comparison.
#[derive(burn::module::Module, Debug)]
struct Classifier {
    encoder: ail_core::resnet::ResNet,
    head: burn::nn::Linear,
}

fn device(global: &Global, args: &BenchDeviceArgs) -> anyhow::Result<()> {
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

/// Peak resident memory of this process so far (Linux `VmHWM`), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn parse_list<T: std::str::FromStr>(text: &str, flag: &str) -> anyhow::Result<Vec<T>> {
    text.split(',')
        .map(|s| s.trim().parse().map_err(|_| anyhow::anyhow!("{flag}: `{s}` is not a number")))
        .collect()
}

/// Median seconds of our pretraining step for `config` on `devices` (autodiff; several: replicas).
fn time_pretrain_step(name: &str, config: &crate::pretrain::PretrainConfig, devices: &[Device], args: &BenchPretrainArgs) -> anyhow::Result<f64> {
    use crate::pretrain::Stepper;
    use ail_core::head::ProjectionHeadConfig;
    use ail_core::method::ContrastiveModel;
    use ail_core::sampler::Invariances;
    use rand::Rng;

    config.validate()?;
    let device = &devices[0];
    let invariances = Invariances::parse(&config.invariances)?;
    let encoder = config.encoder(&invariances);
    let head = ProjectionHeadConfig::new(encoder.feature_dim()).with_hidden_dim(config.head_hidden).with_output_dim(config.head_output);
    device.seed(0);
    let mut model = Some(ContrastiveModel::new(&encoder, &head, invariances.trained().len(), false, device)?);
    let mut optim = crate::pretrain::optimizer(config);
    let side = config.image_size;
    let stats = (burn::tensor::Tensor::<4>::full([1, 3, 1, 1], 0.5, device), burn::tensor::Tensor::<4>::full([1, 3, 1, 1], 0.25, device));
    let mut stepper = Stepper::new(config, device, stats, [3, side, side], model.as_ref().expect("model"))?;
    if devices.len() > 1 {
        let names = (0..devices.len()).map(|k| format!("replica {k}")).collect();
        stepper = stepper.with_replicas(crate::parallel::Replicas::new(devices.to_vec(), names));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let pixels: Vec<u8> = (0..config.batch_size * 3 * side * side).map(|_| rng.random()).collect();
    let mut step = 0u64;
    time_runs(name, args.warmup, args.steps, || {
        let (next, loss, _, _) = stepper.step(model.take().expect("model"), &mut optim, &pixels, step)?;
        model = Some(next);
        step += 1;
        let l = loss.into_scalar::<f32>(); // waits for the step to finish
        anyhow::ensure!(l.is_finite(), "non-finite loss in the benchmark");
        Ok(())
    })
}

fn pretrain(global: &Global, args: &BenchPretrainArgs) -> anyhow::Result<()> {
    use crate::pretrain::PretrainConfig;

    let widths: Vec<f32> = parse_list(&args.widths, "--widths")?;
    let batches: Vec<usize> = parse_list(&args.batch_sizes, "--batch-sizes")?;
    anyhow::ensure!(args.steps > 0, "--steps must be at least 1");
    anyhow::ensure!(args.devices >= 1, "--devices must be at least 1");
    let all = common::devices(global, args.devices)?;
    let selected = all[0].clone();
    let devices: Vec<Device> = all.iter().map(|d| d.device.clone().autodiff()).collect();
    let mut rows: Vec<Comparison> = Vec::new();
    let mut scaling = Vec::new();
    for &width in &widths {
        for &batch in &batches {
            let config = PretrainConfig { width, batch_size: batch, image_size: args.image_size, steps: 1_000_000, ..Default::default() };
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

/// `ail bench fit`: the downstream step (frozen encoder, head + i) against PyTorch's.
fn fit(global: &Global, args: &BenchFitArgs) -> anyhow::Result<()> {
    use ail_core::EncoderConfig;
    use ail_core::loss::cross_entropy_one_hot;
    use burn::module::Module;
    use burn::nn::LinearConfig;
    use burn::optim::{AdamWConfig, GradientsParams};
    use burn::tensor::{Distribution, Tensor};

    let widths: Vec<f32> = parse_list(&args.widths, "--widths")?;
    let batches: Vec<usize> = parse_list(&args.batch_sizes, "--batch-sizes")?;
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
            let mut optim = AdamWConfig::new().init();
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

/// Runs `scripts/bench_pytorch_pretrain.py` with `script_args` (its `--profile`, `--fit` or plain
/// pretraining mode) and returns the JSON object it prints.
pub(crate) fn run_torch_script(python: &str, what: &str, script_args: &[String]) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let dir = std::env::temp_dir().join(format!("ail-bench-pt-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("bench_pytorch_pretrain.py");
    std::fs::write(&script, TORCH_PRETRAIN_SCRIPT)?;
    let bar = ProgressBar::new_spinner().with_message(format!("PyTorch, {what}"));
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let out = Command::new(python).arg(&script).args(script_args).output().with_context(|| format!("running {python}"));
    bar.finish_and_clear();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    anyhow::ensure!(out.status.success(), "the PyTorch side ({what}) failed: {}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).context("parsing the PyTorch output")?;
    json.as_object().cloned().context("the PyTorch output is not a JSON object")
}

/// A timed PyTorch step (`median_s`, `peak_rss_mib`) for a width and batch; `mode` is `[]` or
/// `["--fit"]`. `Ok(None)` when it cannot run and `--compare-torch` was not given (said on stderr).
fn torch_step(torch: &TorchArgs, mode: &[&str], width: f32, batch: usize, image_size: usize, steps: usize, warmup: usize, gpu: bool) -> anyhow::Result<Option<(f64, f64)>> {
    if torch.no_torch {
        return Ok(None);
    }
    let mut script_args: Vec<String> = mode.iter().map(|s| s.to_string()).collect();
    for (flag, value) in [("--width", width.to_string()), ("--batch-size", batch.to_string()), ("--image-size", image_size.to_string()),
        ("--steps", steps.to_string()), ("--warmup", warmup.to_string()), ("--device", (if gpu { "cuda" } else { "cpu" }).to_string())] {
        script_args.extend([flag.to_string(), value]);
    }
    let result = run_torch_script(&torch.python, &format!("width {width}, batch {batch}"), &script_args).and_then(|json| {
        let median = json.get("median_s").and_then(|v| v.as_f64()).context("no median_s in the PyTorch output")?;
        Ok((median, json.get("peak_rss_mib").and_then(|v| v.as_f64()).unwrap_or(f64::NAN)))
    });
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if torch.compare_torch => Err(e.context("--compare-torch: the PyTorch baseline could not run (pip install torch torchvision)")),
        Err(e) => {
            eprintln!("skipping the PyTorch baseline: {e:#}");
            Ok(None)
        }
    }
}

/// One row of a comparison: name, our seconds, our peak MiB, PyTorch's (seconds, peak MiB).
type Comparison = (String, f64, Option<f64>, Option<(f64, f64)>);

/// Prints our time, PyTorch's, the ratio and both peak memories, one row per configuration.
fn print_comparison(title: &str, rows: &[Comparison], device: &str) {
    println!("\n{title}");
    println!("{:<22} {:>12} {:>12} {:>9} {:>12} {:>12}", "config", "ail ms", "PyTorch ms", "speedup", "ail MiB", "PyTorch MiB");
    for (name, ours, mem, torch) in rows {
        let (t, tm) = torch.unzip();
        println!(
            "{name:<22} {:>12.1} {:>12} {:>8}x {:>12} {:>12}",
            ours * 1e3,
            t.map(|t| format!("{:.1}", t * 1e3)).unwrap_or("-".into()),
            t.map(|t| format!("{:.2}", t / ours)).unwrap_or("-".into()),
            mem.map(|m| format!("{m:.0}")).unwrap_or("-".into()),
            tm.map(|m| format!("{m:.0}")).unwrap_or("-".into())
        );
    }
    println!("device: {device}; speedup = PyTorch time / ail time (higher is better for ail); ail MiB is this process's peak so far");
}

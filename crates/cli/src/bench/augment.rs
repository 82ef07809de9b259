//! `ail bench augment`: the default two-view augmentation pipeline on the CPU reference and the
//! wgpu kernels, against torchvision's.

use std::process::Command;

use ail_augment::device::{DeviceChoice, select};
use ail_augment::{AugmentConfig, Augmenter, OpSet, sample_views};
use ail_core::{Descriptor, Family};
use ail_data::epoch_order;
use anyhow::Context;
use burn::tensor::Device;
use indicatif::ProgressBar;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::timing::{Row, time_runs};
use crate::args::{BenchAugmentArgs, Global};
use crate::common;

const TORCH_SCRIPT: &str = include_str!("../../../../scripts/bench_torchvision_augment.py");

pub(super) fn run(global: &Global, args: &BenchAugmentArgs) -> anyhow::Result<()> {
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

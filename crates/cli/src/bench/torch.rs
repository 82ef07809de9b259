//! The PyTorch side of `ail bench pretrain`, `ail bench fit` and `ail bench profile`
//! (`scripts/bench_pytorch_pretrain.py`), and the table comparing it with ours.

use std::process::Command;

use anyhow::Context;
use indicatif::ProgressBar;

use crate::args::TorchArgs;

const TORCH_PRETRAIN_SCRIPT: &str = include_str!("../../../../scripts/bench_pytorch_pretrain.py");

/// Runs `scripts/bench_pytorch_pretrain.py` with `script_args` (its `--profile`, `--fit` or plain
/// pretraining mode) and returns the JSON object it prints.
pub(super) fn run_torch_script(python: &str, what: &str, script_args: &[String]) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
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
pub(super) fn torch_step(torch: &TorchArgs, mode: &[&str], width: f32, batch: usize, image_size: usize, steps: usize, warmup: usize, gpu: bool) -> anyhow::Result<Option<(f64, f64)>> {
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
pub(super) type Comparison = (String, f64, Option<f64>, Option<(f64, f64)>);

/// Prints our time, PyTorch's, the ratio and both peak memories, one row per configuration.
pub(super) fn print_comparison(title: &str, rows: &[Comparison], device: &str) {
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

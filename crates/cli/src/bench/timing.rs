//! Timing helpers of `ail bench`: the median of timed runs, peak memory, rows of results.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

/// The median; of an even count, the mean of the two middle values.
pub(super) fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 }
}

/// Runs `step` `warmup` times, then `runs` times; returns the median seconds of the timed runs.
pub(super) fn time_runs(name: &str, warmup: usize, runs: usize, mut step: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
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

pub(super) struct Row {
    pub(super) name: String,
    pub(super) device: String,
    pub(super) seconds: f64,
}

/// Peak resident memory of this process so far (Linux `VmHWM`), in MiB.
pub(super) fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

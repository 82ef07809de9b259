//! Crash safety: a pretraining process killed with SIGKILL at random moments and resumed each time
//! ends with the same final checkpoint and the same metrics as an uninterrupted run (CPU backend),
//! and no file under its final name is ever half-written.
//!
//! The short form (5 kills) runs with the test suite; `AIL_KILLS=20` runs the long form.

#![cfg(unix)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ail(args: &[&str], cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ail"));
    c.args(args).current_dir(cwd).stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

fn setup(d: &Path) {
    for c in 0..3u32 {
        let class = d.join("imgs").join(format!("c{c}"));
        std::fs::create_dir_all(&class).unwrap();
        for k in 0..12u32 {
            image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([((x + k) * 29 % 256) as u8, ((y + c) * 37 % 256) as u8, (60 * c + 3 * k) as u8]))
                .save(class.join(format!("{k}.png")))
                .unwrap();
        }
    }
    std::fs::write(
        d.join("run.toml"),
        "steps = 24\nbatch_size = 8\ndata.image_size = 8\nencoder.width = 0.0625\nencoder.hidden = 8\noptimizer.lr = 0.003\n\
         optimizer.warmup_steps = 2\nlog_every = 1\ncheckpoint_every = 2\nkeep_checkpoints = 2\nmonitor.every = 0\nheads.hidden = 16\n\
         heads.output = 8\nmethod = \"mocov2\"\nqueue_size = 16\n",
    )
    .unwrap();
}

/// Each tensor's bytes by name.
fn tensors(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            let o = &v["data_offsets"];
            (k.clone(), bytes[8 + n + o[0].as_u64().unwrap() as usize..8 + n + o[1].as_u64().unwrap() as usize].to_vec())
        })
        .collect()
}

/// Training rows `(step, descriptor, loss)` of a metrics.csv (images/s differs between runs).
fn rows(path: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let (step, rest) = l.split_once(",\"").unwrap();
            let (descriptor, values) = rest.split_once("\",").unwrap();
            (step.to_string(), descriptor.to_string(), values.split(',').take(2).collect::<Vec<_>>().join(","))
        })
        .collect()
}

/// Every file under its final name in a checkpoint directory is complete: the checkpoint loads.
fn assert_complete(run: &Path) {
    for entry in std::fs::read_dir(run.join("checkpoints")).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // A directory under a checkpoint's name is a whole checkpoint (writes go to `.partial`,
        // deletions through `.deleting`).
        if ail_core::frozen::is_checkpoint_name(&name) {
            ail_core::checkpoint::load(&entry.path(), &burn::prelude::Device::flex())
                .unwrap_or_else(|e| panic!("{name} is not complete: {e}"));
            assert!(serde_json::from_slice::<serde_json::Value>(&std::fs::read(entry.path().join("training.json")).unwrap()).is_ok());
        }
    }
    if run.join("config.json").exists() {
        assert!(serde_json::from_slice::<serde_json::Value>(&std::fs::read(run.join("config.json")).unwrap()).is_ok());
    }
}

/// Whether a run has a complete checkpoint to resume from.
fn has_checkpoint(run: &Path) -> bool {
    std::fs::read_dir(run.join("checkpoints")).into_iter().flatten().flatten().any(|e| {
        ail_core::frozen::is_checkpoint_name(&e.file_name().to_string_lossy()) && e.path().join("checkpoint.json").exists()
    })
}

#[test]
fn sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let out = ail(&["pretrain", "--device", "cpu", "--data", "imgs", "--config", "run.toml", "--out", "reference"], d).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let started = Instant::now();
    let out = ail(&["pretrain", "--device", "cpu", "--data", "imgs", "--config", "run.toml", "--out", "probe"], d).output().unwrap();
    assert!(out.status.success());
    let run_time = started.elapsed().as_secs_f64();

    let kills: usize = std::env::var("AIL_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let mut state = 0x5eed_u64;
    let mut killed = 0;
    for attempt in 0..kills * 4 {
        if killed == kills {
            break;
        }
        if d.join("crashy/summary.json").exists() {
            // The last kill landed after the run had finished: start over for the kills left.
            std::fs::remove_dir_all(d.join("crashy")).unwrap();
        }
        let resume = has_checkpoint(&d.join("crashy"));
        let mut args = vec!["pretrain", "--device", "cpu", "--out", "crashy"];
        if resume {
            args.push("--resume");
        } else {
            args.extend(["--data", "imgs", "--config", "run.toml"]);
        }
        let mut child = ail(&args, d).spawn().unwrap();
        // A moment anywhere in the run, start-up included.
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let wait = (state >> 11) as f64 / (1u64 << 53) as f64 * 0.8 * run_time;
        std::thread::sleep(Duration::from_secs_f64(wait));
        match child.try_wait().unwrap() {
            Some(status) => {
                // The run finished before the kill (a faster start than the probe's): start over.
                let err = String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).into_owned();
                assert!(status.success(), "attempt {attempt}: {err}");
                std::fs::remove_dir_all(d.join("crashy")).unwrap();
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                killed += 1;
            }
        }
        assert_complete(&d.join("crashy"));
    }
    // Finish the run.
    if !d.join("crashy/summary.json").exists() {
        let resume = has_checkpoint(&d.join("crashy"));
        let args: Vec<&str> = if resume {
            vec!["pretrain", "--device", "cpu", "--out", "crashy", "--resume"]
        } else {
            std::fs::remove_dir_all(d.join("crashy")).ok();
            vec!["pretrain", "--device", "cpu", "--data", "imgs", "--config", "run.toml", "--out", "crashy"]
        };
        let out = ail(&args, d).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(killed, kills, "only {killed} kills landed inside a run");
    assert_complete(&d.join("crashy"));
    let last = |run: &str| d.join(run).join("checkpoints/step-0000024");
    assert_eq!(tensors(&last("reference").join("model.safetensors")), tensors(&last("crashy").join("model.safetensors")));
    assert_eq!(tensors(&last("reference").join("key.safetensors")), tensors(&last("crashy").join("key.safetensors")));
    assert_eq!(std::fs::read(last("reference").join("queues.bin")).unwrap(), std::fs::read(last("crashy").join("queues.bin")).unwrap());
    assert_eq!(rows(&d.join("reference/metrics.csv")), rows(&d.join("crashy/metrics.csv")));
}

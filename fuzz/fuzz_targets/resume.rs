//! Continuing a run from its saved state: `training.json` (step, queue pointers, data order),
//! `queues.bin` (MoCo-v2's negative queues) and `metrics.csv`. A tiny MoCo-v2 run is trained once;
//! each input replaces one of those files (its first byte picks which) in a copy of it, and the
//! run is continued one step on the CPU backend, as `ail pretrain --resume` does.
#![no_main]
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use ail_augment::device::SelectedDevice;
use ail_core::method::Method;
use ail_core::pretrain::{Data, PretrainConfig, Resume, RunOptions, Silent, pretrain};
use ail_data::ImageSet;
use burn::prelude::Device;
use libfuzzer_sys::fuzz_target;

fn config(steps: u64) -> PretrainConfig {
    let mut c = PretrainConfig { method: Method::Mocov2, steps, batch_size: 8, log_every: 1, checkpoint_every: 2, queue_size: 16, ..Default::default() };
    c.data.source = "patterns".into();
    c.data.image_size = 8;
    c.encoder.width = 0.0625;
    c.encoder.hidden = 8;
    c.heads.hidden = 16;
    c.heads.output = 8;
    c.optimizer.warmup_steps = 1;
    c.monitor.every = 0;
    c.monitor.bank = 16;
    c.monitor.queries = 8;
    c
}

fn images() -> Arc<ImageSet> {
    let n = 16;
    let pixels = (0..n * 3 * 64).map(|k| ((k * 37) % 251) as u8).collect();
    Arc::new(ImageSet::new(pixels, (0..n as u32).map(|k| k % 2).collect(), vec!["a".into(), "b".into()], [3, 8, 8]).unwrap())
}

fn options(out: &Path, resume: Resume) -> RunOptions {
    let cpu = SelectedDevice { device: Device::flex(), description: "cpu".into(), is_gpu: false };
    RunOptions { resume, ..RunOptions::new(out, vec![cpu]) }
}

/// The run trained once per process, two steps, a checkpoint at step 2.
fn base() -> &'static PathBuf {
    static BASE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &BASE
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let run = dir.path().join("run");
            pretrain(&config(2), Data::Images(images()), &options(&run, Resume::Never), &mut Silent).expect("the base run trains");
            (dir, run)
        })
        .1
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, content)) = data.split_first() else { return };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let run = dir.path().join("run");
    copy(base(), &run);
    let checkpoint = run.join("checkpoints").join("step-0000002");
    let file = match which % 3 {
        0 => checkpoint.join("training.json"),
        1 => checkpoint.join("queues.bin"),
        _ => run.join("metrics.csv"),
    };
    std::fs::write(&file, content).unwrap();
    let _ = pretrain(&config(3), Data::Images(images()), &options(&run, Resume::Required), &mut Silent);
});

//! Data-parallel pretraining from the command line (`--devices`): a two-device run continues on one
//! device exactly, and impossible splits are refused with the fix. The library's own tests of the
//! replicas are `crates/core/tests/parallel.rs`.

mod common;
use common::{ail, assert_resume_is_exact, losses, stderr};

#[test]
fn a_two_device_run_checkpoints_and_continues_on_one_device_exactly() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_pretraining_setup(dir.path(), &[("monitor.every", "0")]);
    let out = ail(&["pretrain", "--device", "cpu", "--devices", "2", "--config", "run.toml", "--data", "imgs", "--out", "a"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("device 1: cpu") && err.contains("2 shards of 8 images"), "{err}");
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("a/config.json")).unwrap()).unwrap();
    assert_eq!(config["shards"], 2);
    let curve = losses(&dir.path().join("a/metrics.csv"));
    assert_eq!(curve.len(), 20);
    let (first, last) = (curve[..5].iter().map(|c| c.1).sum::<f64>() / 5.0, curve[15..].iter().map(|c| c.1).sum::<f64>() / 5.0);
    assert!(last < first, "the loss should fall: first steps {first}, last steps {last}");
    // Resumed from step 10 with one device (`--devices` defaults to 1): the shards run in turn and
    // steps 11-20 give the same losses.
    assert_resume_is_exact(dir.path(), "a", "b");
}

#[test]
fn impossible_splits_are_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_pretraining_setup(dir.path(), &[("monitor.every", "0")]);
    let run = |extra: &[&str]| {
        let mut args = vec!["pretrain", "--device", "cpu", "--config", "run.toml", "--data", "imgs", "--out", "x"];
        args.extend_from_slice(extra);
        ail(&args, dir.path())
    };
    let out = run(&["--devices", "3"]);
    assert!(!out.status.success() && stderr(&out).contains("--batch-size 16 cannot be split into 3 shards"), "{}", stderr(&out));
    let out = run(&["--devices", "2", "--shards", "1"]);
    assert!(!out.status.success() && stderr(&out).contains("--devices 2 is more than the run's 1 shard(s)"), "{}", stderr(&out));
    let out = run(&["--devices", "0"]);
    assert!(!out.status.success() && stderr(&out).contains("--devices"), "{}", stderr(&out));
    #[cfg(not(feature = "remote"))]
    {
        let out = run(&["--hosts", "ws://127.0.0.1:1"]);
        assert!(!out.status.success() && stderr(&out).contains("build with `cargo build --release --features remote`"), "{}", stderr(&out));
        let out = ail(&["serve"], dir.path());
        assert!(!out.status.success() && stderr(&out).contains("--features remote"), "{}", stderr(&out));
    }
    assert!(!dir.path().join("x/checkpoints").exists());
}

//! What `ail bound` and `ail report` read back: `fit.json`, `fewshot.json`, `lowshot.json` and a
//! run's `metrics.csv`. The first byte picks the file, the rest is its content. (Run with
//! `-close_fd_mask=1`: both commands print.)
#![no_main]
use ail_cli::args::{BoundArgs, ReportArgs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, content)) = data.split_first() else { return };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let name = ["fit.json", "fewshot.json", "lowshot.json", "metrics.csv"][which as usize % 4];
    std::fs::write(run.join(name), content).unwrap();
    if name == "metrics.csv" {
        ail_core::pretrain::RunDir::new(&run).write_config(&ail_core::pretrain::PretrainConfig::default()).unwrap();
    }
    if name == "fit.json" {
        let _ = ail_cli::bound::run(&BoundArgs { fit: vec![run.clone()], delta: 0.05 });
    }
    let _ = ail_cli::report::run_report(&ReportArgs { runs: vec![run], out: dir.path().join("report.md") });
});

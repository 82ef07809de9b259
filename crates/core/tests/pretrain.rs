//! Pretraining through the library API: an observer of the caller's own sees the run and stops it,
//! the run continues from its checkpoint exactly, and bad requests get errors that name the fix.

use std::sync::Arc;

use ail_augment::device::{DeviceChoice, select};
use ail_core::CoreError;
use ail_core::pretrain::{Data, LogRow, Observer, PretrainConfig, Resume, RunOptions, Silent, pretrain};
use ail_data::ImageSet;

/// 48 patterned 8x8 images of 4 classes.
fn images() -> Arc<ImageSet> {
    let (n, side) = (48, 8);
    let mut pixels = Vec::with_capacity(n * 3 * side * side);
    let mut labels = Vec::new();
    for k in 0..n {
        let class = (k % 4) as u32;
        for c in 0..3 {
            for y in 0..side {
                for x in 0..side {
                    let on = ((x + 2 * class as usize) % 8 < 4) ^ ((y + k + c) % 8 < 4);
                    pixels.push(if on { 200 + (k % 7) as u8 * 5 } else { 30 + (c * 20) as u8 });
                }
            }
        }
        labels.push(class);
    }
    let names = (0..4).map(|c| format!("c{c}")).collect();
    Arc::new(ImageSet::new(pixels, labels, names, [3, side, side]).unwrap())
}

fn tiny_config() -> PretrainConfig {
    let mut c = PretrainConfig { steps: 6, batch_size: 8, log_every: 1, checkpoint_every: 2, ..Default::default() };
    c.data.source = "patterns".into();
    c.data.image_size = 8;
    c.encoder.width = 0.0625;
    c.encoder.hidden = 8;
    c.heads.hidden = 32;
    c.heads.output = 16;
    c.optimizer.warmup_steps = 1;
    c.monitor.every = 3;
    c.monitor.bank = 32;
    c.monitor.queries = 8;
    c
}

/// Records what the run reports and stops it after `stop_at` steps.
#[derive(Default)]
struct Recorder {
    stop_at: Option<u64>,
    done: u64,
    started: Option<(u64, u64)>,
    losses: Vec<(u64, f32)>,
    monitored: Vec<u64>,
    checkpoints: Vec<u64>,
}

impl Observer for Recorder {
    fn started(&mut self, start: u64, steps: u64) {
        self.started = Some((start, steps));
    }
    fn stepped(&mut self, done: u64) {
        self.done = done;
    }
    fn logged(&mut self, row: &LogRow) {
        self.losses.push((row.step, row.loss));
    }
    fn monitored(&mut self, step: u64, accuracies: &[(ail_core::Descriptor, f64)]) {
        assert_eq!(accuracies.len(), 3, "one accuracy per trained descriptor");
        assert!(accuracies.iter().all(|(_, a)| (0.0..=1.0).contains(a)));
        self.monitored.push(step);
    }
    fn checkpointed(&mut self, step: u64, dir: &std::path::Path) {
        assert!(dir.join("model.safetensors").exists());
        self.checkpoints.push(step);
    }
    fn should_stop(&mut self) -> bool {
        self.stop_at.is_some_and(|s| self.done >= s)
    }
}

fn run(config: &PretrainConfig, out: &std::path::Path, observer: &mut dyn Observer) -> Result<ail_core::pretrain::Summary, CoreError> {
    let options = RunOptions::new(out, vec![select(DeviceChoice::Cpu).unwrap()]);
    pretrain(config, Data::Images(images()), &options, observer)
}

#[test]
fn an_observer_sees_the_run_stops_it_and_the_run_continues_exactly() {
    let _serial = ail_core::serial_draws();
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config();

    let mut whole = Recorder::default();
    let summary = run(&config, &dir.path().join("whole"), &mut whole).unwrap();
    assert_eq!(whole.started, Some((0, 6)));
    assert_eq!(whole.losses.iter().map(|l| l.0).collect::<Vec<_>>(), (1..=6).collect::<Vec<_>>());
    assert!(whole.losses.iter().all(|l| l.1.is_finite()));
    assert_eq!(whole.monitored, vec![0, 3, 6], "before training, every monitor.every steps, and at the end");
    assert_eq!(whole.checkpoints, vec![2, 4, 6]);
    assert_eq!((summary.steps, summary.knn_accuracy.len()), (6, 3));
    assert!(dir.path().join("whole/summary.json").exists() && dir.path().join("whole/config.json").exists());

    // Stopped after step 3: a checkpoint of step 3 is written, and the error says where.
    let mut first = Recorder { stop_at: Some(3), ..Default::default() };
    let stopped = run(&config, &dir.path().join("split"), &mut first).unwrap_err();
    match &stopped {
        CoreError::Interrupted { step, checkpoint } => {
            assert_eq!(*step, 3);
            assert!(checkpoint.ends_with("step-0000003"), "{}", checkpoint.display());
        }
        other => panic!("expected Interrupted, got {other}"),
    }
    assert!(stopped.to_string().contains("run the same command again"), "{stopped}");
    // The same call continues it from step 3 and gives the uninterrupted run's losses.
    let mut rest = Recorder::default();
    run(&config, &dir.path().join("split"), &mut rest).unwrap();
    assert_eq!(rest.started, Some((3, 6)));
    let all: Vec<(u64, f32)> = first.losses.iter().chain(&rest.losses).copied().collect();
    assert_eq!(all.len(), whole.losses.len());
    for ((s, a), (t, b)) in all.iter().zip(&whole.losses) {
        assert_eq!(s, t);
        assert!((a - b).abs() < 1e-5, "step {s}: resumed {a}, uninterrupted {b}");
    }
    let metrics = |name: &str| std::fs::read_to_string(dir.path().join(name).join("metrics.csv")).unwrap();
    let losses_of = |text: String| text.lines().filter(|l| !l.ends_with(',')).count();
    assert_eq!(losses_of(metrics("split")), losses_of(metrics("whole")));
}

#[test]
fn a_different_run_in_the_same_directory_is_refused_and_bad_configs_name_the_fix() {
    let _serial = ail_core::serial_draws();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let config = PretrainConfig { steps: 2, checkpoint_every: 2, ..tiny_config() };
    run(&config, &out, &mut Silent).unwrap();
    let mut other = config.clone();
    other.optimizer.lr = 0.01;
    other.steps = 4;
    let err = run(&other, &out, &mut Silent).unwrap_err().to_string();
    assert!(err.contains("already holds a different run") && err.contains("optimizer.lr 0.001 there, 0.01 here"), "{err}");
    let options = RunOptions { resume: Resume::Never, ..RunOptions::new(&out, vec![select(DeviceChoice::Cpu).unwrap()]) };
    let err = pretrain(&config, Data::Images(images()), &options, &mut Silent).unwrap_err().to_string();
    assert!(err.contains("--no-resume"), "{err}");
    // The same run with more steps continues; with as many steps it has nothing to do.
    let done = run(&config, &out, &mut Silent).unwrap_err().to_string();
    assert!(done.contains("raise --steps"), "{done}");

    let bad = PretrainConfig { batch_size: 6, shards: 4, ..tiny_config() };
    let err = run(&bad, &dir.path().join("bad"), &mut Silent).unwrap_err().to_string();
    assert!(err.contains("--batch-size 6 cannot be split into 4 shards"), "{err}");
    assert!(!dir.path().join("bad").exists(), "nothing is written for a config that does not validate");
    let big = PretrainConfig { batch_size: 48, ..tiny_config() };
    let err = run(&big, &dir.path().join("big"), &mut Silent).unwrap_err().to_string();
    assert!(err.contains("too few") && err.contains("lower --batch-size"), "{err}");
}

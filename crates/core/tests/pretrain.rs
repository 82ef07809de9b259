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

/// Records each logged step's descriptor and loss.
#[derive(Default)]
struct Descriptors(Vec<(ail_core::Descriptor, f32)>);

impl Observer for Descriptors {
    fn logged(&mut self, row: &LogRow) {
        self.0.push((row.descriptor.clone(), row.loss));
    }
}

#[test]
fn fractional_draws_train_points_inside_the_dial_and_leave_binary_steps_alone() {
    let _serial = ail_core::serial_draws();
    let dir = tempfile::tempdir().unwrap();
    let binary = PretrainConfig { monitor: ail_core::pretrain::MonitorSettings { every: 0, ..tiny_config().monitor }, ..tiny_config() };
    let fractional = PretrainConfig { fractional_draws: 0.5, ..binary.clone() };
    let (mut a, mut b) = (Descriptors::default(), Descriptors::default());
    run(&binary, &dir.path().join("binary"), &mut a).unwrap();
    run(&fractional, &dir.path().join("fractional"), &mut b).unwrap();
    let is_binary = |d: &ail_core::Descriptor| d.values().iter().all(|&v| v == 0.0 || v == 1.0);
    assert!(a.0.iter().all(|(d, _)| is_binary(d)));
    let first = b.0.iter().position(|(d, _)| !is_binary(d)).expect("p = 0.5 draws a fractional descriptor in 6 steps");
    assert!(b.0.iter().all(|(_, loss)| loss.is_finite()));
    // Until the first fractional step the runs are the same: the binary draws do not depend on p.
    for s in 0..first {
        assert_eq!(a.0[s].0, b.0[s].0, "step {}", s + 1);
        assert!((a.0[s].1 - b.0[s].1).abs() < 1e-6, "step {}: {} vs {}", s + 1, a.0[s].1, b.0[s].1);
    }
    assert!((a.0[first].1 - b.0[first].1).abs() > 1e-6, "the fractional step trains other views at another i");
    // The run writes the fractional descriptor into its log.
    let log = std::fs::read_to_string(dir.path().join("fractional/metrics.csv")).unwrap();
    assert!(log.contains(&format!("\"{}\"", b.0[first].0)), "{log}");
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

#[test]
fn checkpoints_are_ordered_by_step_number_past_step_9999999() {
    let dir = tempfile::tempdir().unwrap();
    for step in [2u64, 9_999_999, 10_000_000, 123_456_789] {
        let d = dir.path().join("checkpoints").join(format!("step-{step:07}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(ail_core::checkpoint::META_FILE), "{}").unwrap();
    }
    // An interrupted write and a directory of another name are not checkpoints.
    std::fs::create_dir_all(dir.path().join("checkpoints/step-99999999.partial")).unwrap();
    std::fs::create_dir_all(dir.path().join("checkpoints/notes")).unwrap();
    let names: Vec<String> = ail_core::pretrain::RunDir::new(dir.path())
        .checkpoints()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["step-0000002", "step-9999999", "step-10000000", "step-123456789"]);
    let newest = ail_core::frozen::resolve_checkpoint(dir.path()).unwrap();
    assert!(newest.ends_with("step-123456789"), "{}", newest.display());
    assert_eq!(ail_core::frozen::checkpoint_step("step-10000000"), Some(10_000_000));
    assert_eq!(ail_core::frozen::checkpoint_step("step-1.partial"), None);
}

/// Collects the observer's messages.
#[derive(Default)]
struct Messages(Vec<String>, Option<(u64, u64)>);

impl Observer for Messages {
    fn message(&mut self, text: &str) {
        self.0.push(text.to_string());
    }
    fn started(&mut self, start: u64, steps: u64) {
        self.1 = Some((start, steps));
    }
}

#[test]
fn a_run_continues_from_the_newest_checkpoint_that_loads() {
    let _serial = ail_core::serial_draws();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let config = PretrainConfig { monitor: ail_core::pretrain::MonitorSettings { every: 0, ..tiny_config().monitor }, ..tiny_config() };
    run(&config, &out, &mut Silent).unwrap();
    // step-4 and step-6 are kept; a torn write leaves step-6's weights truncated.
    let newest = out.join("checkpoints/step-0000006");
    let model = std::fs::read(newest.join("model.safetensors")).unwrap();
    std::fs::write(newest.join("model.safetensors"), &model[..model.len() / 2]).unwrap();
    let longer = PretrainConfig { steps: 8, ..config };
    let mut seen = Messages::default();
    let summary = run(&longer, &out, &mut seen).unwrap();
    assert_eq!(seen.1, Some((4, 8)), "continued from step 4: {:?}", seen.0);
    assert!(seen.0.iter().any(|m| m.contains("skipping the checkpoint") && m.contains("step-0000006") && m.contains("truncated")), "{:?}", seen.0);
    assert_eq!(summary.steps, 8);
    assert!(summary.checkpoint.ends_with("step-0000008"));
}

#[test]
fn one_writer_per_run_directory_and_another_runs_files_are_not_overwritten() {
    let _serial = ail_core::serial_draws();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let config = PretrainConfig { steps: 2, checkpoint_every: 2, ..tiny_config() };
    let run_dir = ail_core::pretrain::RunDir::new(&out);
    {
        // Another writer holds the directory: refused with its PID, and nothing is written.
        let _held = run_dir.lock(&mut Silent).unwrap();
        let err = run(&config, &out, &mut Silent).unwrap_err().to_string();
        assert!(err.contains("is being written by another process") && err.contains(&format!("PID {}", std::process::id())), "{err}");
        assert!(!out.join("config.json").exists());
    }
    // A lock file left by a writer that died (its PID still in it): taken over, and said.
    std::fs::write(out.join(".lock"), "4194303").unwrap();
    let mut seen = Messages::default();
    run(&config, &out, &mut seen).unwrap();
    assert!(seen.0.iter().any(|m| m.contains("PID 4194303") && m.contains("without releasing")), "{:?}", seen.0);

    // Another run's files without checkpoints (a run killed before its first checkpoint) are not
    // overwritten by a different run, unless asked to.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let mut theirs = config.clone();
    theirs.optimizer.lr = 0.01;
    std::fs::write(other.join("config.json"), serde_json::to_vec(&theirs).unwrap()).unwrap();
    std::fs::write(other.join("metrics.csv"), "step,descriptor,loss,lr,images_per_s,knn_accuracy\n1,\"1,1\",4.0,1e-3,10.0,\n").unwrap();
    let err = run(&config, &other, &mut Silent).unwrap_err().to_string();
    assert!(err.contains("already holds a different run") && err.contains("--overwrite"), "{err}");
    assert!(std::fs::read_to_string(other.join("metrics.csv")).unwrap().contains("4.0"), "the other run's metrics are kept");
    let options = RunOptions { overwrite: true, ..RunOptions::new(&other, vec![select(DeviceChoice::Cpu).unwrap()]) };
    pretrain(&config, Data::Images(images()), &options, &mut Silent).unwrap();
    let metrics = std::fs::read_to_string(other.join("metrics.csv")).unwrap();
    assert!(!metrics.contains(",4.0,"), "{metrics}");
}

/// Keeps the accuracies of the monitor's last evaluation.
#[derive(Default)]
struct LastEvaluation(Vec<(ail_core::Descriptor, f64)>);

impl Observer for LastEvaluation {
    fn monitored(&mut self, _step: u64, accuracies: &[(ail_core::Descriptor, f64)]) {
        self.0 = accuracies.to_vec();
    }
}

#[test]
fn the_monitor_reads_each_descriptor_with_its_own_statistics_as_downstream_commands_do() {
    use ail_core::frozen::{BatchNormStatistics, Frozen};
    use ail_core::pretrain::Monitor;
    let _serial = ail_core::serial_draws();
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config();
    assert_eq!(config.monitor.batch_norm, BatchNormStatistics::PerDescriptor, "the default");
    let mut last = LastEvaluation::default();
    run(&config, &dir.path().join("run"), &mut last).unwrap();
    assert_eq!(last.0.len(), 3);

    // The final checkpoint read as `ail batchnorm` reads it: statistics recomputed at each
    // descriptor on the bank's images (the monitor's own split of the same data and seed).
    let (monitor, _, _) = Monitor::split(&config, &images()).unwrap();
    let device = select(DeviceChoice::Cpu).unwrap().device;
    let open = |mode: BatchNormStatistics| {
        let mut f = Frozen::open(&dir.path().join("run"), &device, || unreachable!("the run records its normalisation")).unwrap();
        f.set_batch_norm_statistics(mode, &monitor.bank.pixels, monitor.bank.len(), monitor.bank.shape());
        f
    };
    let (own, shared) = (open(BatchNormStatistics::PerDescriptor), open(BatchNormStatistics::Shared));
    let features = |f: &Frozen, set: &ImageSet, i: &[f32]| f.features_u8(&set.pixels, set.len(), set.shape(), i);
    let mut largest_gap = 0f32;
    for (descriptor, seen) in &last.0 {
        let i = descriptor.values();
        let (q, b) = (features(&own, &monitor.queries, i), features(&own, &monitor.bank, i));
        let d = own.feature_dim();
        let expected = ail_core::knn::knn_accuracy_of_features(
            &q,
            &b,
            d,
            &monitor.bank.labels,
            &monitor.queries.labels,
            monitor.bank.num_classes(),
            config.monitor.k,
            config.monitor.temperature,
        );
        assert!((seen - expected).abs() < 1e-9, "{descriptor}: the monitor saw {seen}, per-descriptor statistics give {expected}");
        let q_shared = features(&shared, &monitor.queries, i);
        largest_gap = q.iter().zip(&q_shared).map(|(a, b)| (a - b).abs()).fold(largest_gap, f32::max);
    }
    // After six steps the running statistics are far from the batch's own: the choice matters.
    assert!(largest_gap > 1e-3, "shared and per-descriptor statistics gave the same features (largest gap {largest_gap})");

    // `monitor.batch_norm = "shared"` reads the running statistics, as before.
    let mut shared_config = config.clone();
    shared_config.monitor.batch_norm = BatchNormStatistics::Shared;
    let (shared_monitor, _, _) = Monitor::split(&shared_config, &images()).unwrap();
    let ckpt = ail_core::checkpoint::load_encoder(&ail_core::frozen::resolve_checkpoint(&dir.path().join("run")).unwrap(), &device.clone().autodiff()).unwrap();
    let read = shared_monitor.frozen(ckpt.encoder, &ckpt.meta).unwrap();
    assert_eq!(read.batch_norm_statistics(), BatchNormStatistics::Shared);
    let i = last.0[0].0.values();
    let (a, b) = (features(&read, &monitor.queries, i), features(&shared, &monitor.queries, i));
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5), "the shared monitor reads the running statistics");
}

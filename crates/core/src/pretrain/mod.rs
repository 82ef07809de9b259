//! Contrastive pretraining of an amortised (or plain) encoder as a library (docs/method.md,
//! "Pretraining"): one entry point, [`pretrain`], that reads a [`PretrainConfig`], trains, and
//! keeps a run directory ([`RunDir`]) that a later call can continue exactly.
//!
//! ```no_run
//! use ail_core::pretrain::{Data, Observer, PretrainConfig, RunOptions, pretrain};
//! use ail_augment::device::{DeviceChoice, select};
//!
//! struct Print;
//! impl Observer for Print {
//!     fn logged(&mut self, row: &ail_core::pretrain::LogRow) {
//!         println!("step {} loss {:.4}", row.step, row.loss);
//!     }
//! }
//!
//! let config = PretrainConfig { steps: 20, ..Default::default() };
//! let run = RunOptions::new("runs/example", vec![select(DeviceChoice::Cpu).unwrap()]);
//! let summary = pretrain(&config, Data::FromConfig, &run, &mut Print).unwrap();
//! println!("{:?}", summary.knn_accuracy);
//! ```
//!
//! The loop, read top to bottom: the run directory (new, or continued from its latest
//! checkpoint) -> data (held-out kNN queries, bank, training images) -> model, optimiser, step
//! -> for each step: views -> forward -> loss -> optimiser step -> log / monitor / checkpoint ->
//! the summary. Parts: [`config`] (the settings), [`step`] (one optimisation step),
//! [`parallel`] (data parallelism), [`run_dir`] (files), [`monitor`] (kNN).

pub mod config;
pub mod monitor;
pub mod parallel;
pub mod run_dir;
pub mod step;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use ail_augment::device::SelectedDevice;
use ail_data::{BatchLoader, DataSource, ImageSet, LoadOptions, LoaderConfig};
use serde::Serialize;

pub use config::{AudioSettings, DataSettings, EncoderSettings, HeadSettings, Modality, MonitorSettings, MonitoredDescriptors, OptimizerSettings, PretrainConfig};
pub use monitor::Monitor;
pub use parallel::Replicas;
pub use run_dir::RunDir;
pub use step::{StepResult, Stepper, optimizer};

use crate::CoreError;
use crate::method::ContrastiveModel;

/// How a call treats a run directory that already holds checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resume {
    /// Continue it when its `config.json` describes the same run (up to its length and its log,
    /// checkpoint and monitor intervals); refuse a different run.
    #[default]
    IfSameRun,
    /// Continue it; fail when it holds no checkpoint.
    Required,
    /// Refuse it.
    Never,
}

/// Where a run trains besides its config.
pub struct RunOptions {
    /// The run directory.
    pub out: PathBuf,
    /// The devices; the first is the main one (parameters, optimiser). More than one runs the
    /// shards of each batch on all of them at once.
    pub devices: Vec<SelectedDevice>,
    pub resume: Resume,
    /// Passes over the training images; sets `steps` once the data is loaded.
    pub epochs: Option<u64>,
    /// Skip (and count) undecodable image or audio files instead of stopping at the first.
    pub skip_bad: bool,
    /// Replace the files of another run in `out` (its config, metrics, checkpoints and summary)
    /// instead of refusing to.
    pub overwrite: bool,
    /// Refuse a run whose estimated memory ([`PretrainConfig::memory_estimate`] and its training
    /// images) exceeds this many bytes; `None` never refuses. Default: the
    /// machine's memory budget ([`ail_data::limits::memory_budget`]: physical memory, or the
    /// address-space limit when lower).
    pub max_memory: Option<f64>,
}

impl RunOptions {
    pub fn new(out: impl Into<PathBuf>, devices: Vec<SelectedDevice>) -> Self {
        Self {
            out: out.into(),
            devices,
            resume: Resume::IfSameRun,
            epochs: None,
            skip_bad: false,
            overwrite: false,
            max_memory: ail_data::limits::memory_budget().map(|b| b as f64),
        }
    }
}

/// Refuses a run that would not fit in `limit` bytes, before anything large is allocated.
fn check_memory(config: &PretrainConfig, data: &Data, limit: Option<f64>) -> Result<(), CoreError> {
    let Some(limit) = limit else { return Ok(()) };
    // Images read from `config.data` are held in memory at the run's size (their number from file
    // sizes, headers or listings; audio clips and sources that cannot tell are left out). Images
    // passed in are already in memory.
    let count = match (data, config.modality) {
        (Data::FromConfig, Modality::Image) => ail_data::DataSource::parse(&config.data.source).count_images(config.data.format),
        _ => None,
    };
    crate::memory::Estimate::new("this run")
        .part("model, optimiser and a step's activations", config.memory_estimate())
        .part("images", crate::memory::images_bytes(count.unwrap_or(0), 3, config.data.image_size))
        .check(Some(limit), "lower --batch-size, --image-size, encoder.width, heads.hidden or queue_size")
}

/// The images a run trains on.
pub enum Data {
    /// Read `config.data` (images, or audio clips for `modality = "audio"`).
    FromConfig,
    /// Images already in memory (`config.data` is then only a name in `config.json`).
    Images(Arc<ImageSet>),
}

/// A logged training step.
#[derive(Debug, Clone)]
pub struct LogRow {
    pub step: u64,
    pub descriptor: crate::Descriptor,
    pub loss: f32,
    pub lr: f64,
    pub images_per_second: f64,
}

/// How a caller sees a run and asks it to stop. Every method has a default that does nothing.
pub trait Observer: Send {
    /// A line worth showing (what is being trained, a resumed run, skipped files, ...).
    fn message(&mut self, _text: &str) {}
    /// Decoding progress: `images` decoded so far.
    fn decoding(&mut self, _images: usize) {}
    /// Training starts at `start_step` of `steps`.
    fn started(&mut self, _start_step: u64, _steps: u64) {}
    /// A step finished (`done` steps in all).
    fn stepped(&mut self, _done: u64) {}
    /// A logged step (every `log_every` steps and the last).
    fn logged(&mut self, _row: &LogRow) {}
    /// The kNN accuracy of each monitored descriptor after `step` steps.
    fn monitored(&mut self, _step: u64, _accuracies: &[(crate::Descriptor, f64)]) {}
    /// A checkpoint was written.
    fn checkpointed(&mut self, _step: u64, _dir: &std::path::Path) {}
    /// Asked after every step: `true` writes a checkpoint and ends the run with
    /// [`CoreError::Interrupted`].
    fn should_stop(&mut self) -> bool {
        false
    }
}

/// An observer that shows nothing and never stops.
pub struct Silent;
impl Observer for Silent {}

/// What a run ends with (also `summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub steps: u64,
    pub final_loss: f32,
    pub knn_accuracy: Vec<(String, f64)>,
    /// Held-out images the kNN monitor classified.
    #[serde(skip)]
    pub num_queries: usize,
    pub seconds: f64,
    pub images_per_second: f64,
    pub device: String,
    pub checkpoint: PathBuf,
}

/// The training images (and, for audio, the clips they were made from), loaded as `config` says.
fn load_data(config: &PretrainConfig, data: Data, skip_bad: bool, device: &burn::prelude::Device, observer: &mut dyn Observer) -> Result<(Arc<ImageSet>, Option<Vec<Vec<f32>>>), CoreError> {
    match (data, config.modality) {
        (Data::Images(set), _) => Ok((set, None)),
        (Data::FromConfig, Modality::Audio) => {
            // The un-augmented log-mel images stand in for images (kNN monitor, statistics, batch
            // order); the clips beside them are what the views are made from.
            let front = config.audio.front_end();
            let takes = config.audio.takes.map(|[lo, hi]| (lo, hi));
            observer.message(&format!("reading the audio clips of {} ...", config.data.source));
            let (set, audio) = crate::task::audio_images(std::path::Path::new(&config.data.source), config.audio.labels, takes, skip_bad, &front, device)?;
            if audio.skipped > 0 {
                observer.message(&format!("skipped {} audio files that failed to decode", audio.skipped));
            }
            observer.message(&format!(
                "{} clips of {} classes, {} s views, log-mel inputs {:?}",
                set.len(),
                set.num_classes(),
                config.audio.clip_seconds,
                front.input_shape()
            ));
            Ok((Arc::new(set), Some(audio.clips)))
        }
        (Data::FromConfig, Modality::Image) => Ok((load_images(&config.data, skip_bad, observer)?, None)),
    }
}

/// Loads the images `data` names as 3-channel images of its size, reporting decoding progress,
/// skipped files and what was loaded to `observer`.
pub fn load_images(data: &DataSettings, skip_bad: bool, observer: &mut dyn Observer) -> Result<Arc<ImageSet>, CoreError> {
    if !(1..=4096).contains(&data.image_size) {
        return Err(CoreError::setting("--image-size", format!("must be between 1 and 4096 (got {})", data.image_size)));
    }
    let source = DataSource::parse(&data.source);
    // Refused from the count (file sizes, headers, listings) before any image is decoded.
    let count = source.count_images(data.format).unwrap_or(0);
    crate::memory::Estimate::new(format!("{source} at {0}x{0}", data.image_size))
        .part(format!("{count} images"), crate::memory::images_bytes(count, 3, data.image_size))
        .check(None, "lower --image-size, or use part of the data")?;
    let options = LoadOptions { format: data.format, side: Some(data.image_size), channels: 3, skip_bad, ..Default::default() };
    let progress = std::sync::Mutex::new(&mut *observer);
    let (set, report) = source
        .load(options, &|n| progress.lock().map(|mut o| o.decoding(n)).unwrap_or(()))
        .map_err(|error| CoreError::Loading { data: source.to_string(), error })?;
    drop(progress);
    if let Some((path, why)) = report.skipped.first() {
        observer.message(&format!("skipped {} unreadable image files (--skip-bad); first: {} ({why})", report.skipped.len(), path.display()));
    }
    observer.message(&format!("data: {source}: {} images of {}x{}x{}, {} classes", set.len(), set.channels, set.height, set.width, set.num_classes()));
    Ok(Arc::new(set))
}

/// Pretrains as `config` says, in the run directory `run.out`, reporting to `observer`.
///
/// A new run writes `config.json` first; a run directory that holds checkpoints is continued from
/// the newest one that loads (same step, optimiser state, learning-rate schedule, queues, data order
/// and augmentation draws as an uninterrupted run), as `run.resume` allows. The run holds the run
/// directory's writer lock throughout: a second call on the same directory is refused.
pub fn pretrain(config: &PretrainConfig, data: Data, run: &RunOptions, observer: &mut dyn Observer) -> Result<Summary, CoreError> {
    // --- the run directory: new, or continued ------------------------------------------------------
    config.validate()?;
    if matches!(data, Data::Images(_)) && config.modality == Modality::Audio {
        return Err(CoreError::setting("modality", "audio reads its clips from data.source: pass Data::FromConfig"));
    }
    check_memory(config, &data, run.max_memory)?;
    let num_devices = run.devices.len();
    if num_devices == 0 {
        return Err(CoreError::setting("--devices", "a run needs at least one device"));
    }
    if num_devices > config.shards {
        return Err(CoreError::RunDirectory(format!(
            "--devices {num_devices} is more than the run's {} shard(s) of each batch: with --devices N a new run splits its batches \
             into N shards (set --shards for more); a continued run keeps its shards",
            config.shards
        )));
    }
    let run_dir = RunDir::new(&run.out);
    // One writer per run directory, for the whole run (released on any exit).
    let _lock = run_dir.lock(observer)?;
    let resume = run_dir.settle(config, run.resume, run.overwrite, observer)?;
    let mut config = config.clone();
    run_dir.sweep();
    let selected = &run.devices[0];
    let device = selected.device.clone().autodiff();
    device.seed(config.seed);
    let trained = config.invariances.trained();

    // --- data: held-out kNN queries, the bank, the training images ------------------------------------
    let (data, clips) = load_data(&config, data, run.skip_bad, &selected.device, observer)?;
    let side = config.data.image_size;
    if config.modality == Modality::Image && data.shape() != [3, side, side] {
        return Err(CoreError::setting(
            "data.image_size",
            format!("is {side}, but the images are {:?} ([C, H, W]): give 3-channel images of {side} x {side}", data.shape()),
        ));
    }
    let (monitor, train, train_order) = Monitor::split(&config, &data)?;
    let train = Arc::new(train);
    let train_clips = clips.map(|c| Arc::new(train_order.iter().map(|&i| Arc::new(c[i].clone())).collect::<Vec<_>>()));
    if let Some(epochs) = run.epochs {
        let per_epoch = (train.len() / config.batch_size) as u64;
        config.steps = epochs.checked_mul(per_epoch).filter(|&s| s >= 1).ok_or_else(|| {
            CoreError::setting("--epochs", format!("{epochs} with {per_epoch} steps per epoch gives no valid step count"))
        })?;
    }
    let normalization = crate::frozen::channel_statistics(&train.pixels, train.shape());

    // --- model, optimiser, resume ------------------------------------------------------------------
    let encoder_config = config.encoder_config();
    let head_config = config.head_config(&encoder_config);
    let mut model = ContrastiveModel::new(&encoder_config, &head_config, trained.len(), config.heads.per_descriptor, &device)?;
    if config.method.uses_predictor() {
        model = model.with_predictor(&head_config, &device);
    }
    let mut optim = optimizer(&config);
    let mut start_step = 0;
    let mut resumed_from = None;
    if resume {
        let (dir, step, pointers) = run_dir.load_newest(&config, &mut model, &mut optim, &device, observer)?;
        start_step = step;
        // A run interrupted after its last checkpoint but before its summary only has the summary
        // left to do; a complete run needs more steps to continue.
        if !(start_step < config.steps || (start_step == config.steps && !run_dir.has_summary())) {
            return Err(CoreError::RunDirectory(format!(
                "the run already did {start_step} of its {} steps: raise --steps to continue",
                config.steps
            )));
        }
        run_dir.write_config(&config)?;
        run_dir.truncate_metrics(start_step, config.steps)?;
        observer.message(&format!("resuming {} at step {start_step} from {}", run_dir.path.display(), dir.display()));
        resumed_from = Some((dir, pointers));
    } else {
        run_dir.write_config(&config)?;
        run_dir.remove_stale_metrics()?;
    }
    let mut metrics = run_dir::Metrics::open(&run_dir)?;
    let mut stepper = Stepper::new(&config, &device, &normalization, train.shape(), &model);
    if let Some(clips) = train_clips {
        stepper = stepper.with_audio(clips, &device);
    }
    if num_devices > 1 {
        let replicas = Replicas::new(
            run.devices.iter().map(|d| d.device.clone().autodiff()).collect(),
            run.devices.iter().map(|d| d.description.clone()).collect(),
        );
        stepper = stepper.with_replicas(replicas);
    }
    if let Some((dir, pointers)) = resumed_from {
        RunDir::load_stepper(&dir, &mut stepper, pointers, &config, &device)?;
    }
    observer.message(&format!(
        "pretraining {} (K = {}: [{}], {} descriptor{}) with {}: {} steps of {} images, {} training images, {} held out",
        config.encoder.model,
        config.invariances.family().num_invariances(),
        config.invariances.family().entry_names().join(", "),
        trained.len(),
        if trained.len() == 1 { "" } else { "s" },
        config.method,
        config.steps,
        config.batch_size,
        train.len(),
        monitor.queries.len()
    ));
    if config.fractional_draws > 0.0 {
        observer.message(&format!(
            "{:.0}% of the steps draw a fractional descriptor from [0, 1]^{} (augmentations at the fractions' strengths)",
            100.0 * config.fractional_draws,
            config.invariances.family().num_invariances()
        ));
    }
    if config.shards > 1 {
        observer.message(&format!(
            "each batch: {} shards of {} images (own BatchNorm statistics and negatives, gradients averaged), on {num_devices} device{}",
            config.shards,
            config.batch_size / config.shards,
            if num_devices == 1 { " in turn" } else { "s at once" }
        ));
    }
    let meta = |step: u64| monitor::checkpoint_meta(&config, &normalization, step);
    let monitored = config.monitor.descriptors.select(&config.invariances);
    if monitored != trained {
        observer.message(&format!(
            "kNN monitor: {} descriptors (each single augmentation, all, all but one) of the {} trained; --monitor-descriptors all evaluates every trained one",
            monitored.len(),
            trained.len()
        ));
    }
    let knn = |model: &ContrastiveModel, step: u64, metrics: &mut run_dir::Metrics, observer: &mut dyn Observer| -> Result<Vec<f64>, CoreError> {
        let accuracies = monitor.accuracies(model, &meta(step), &monitored)?;
        for (d, acc) in monitored.iter().zip(&accuracies) {
            metrics.row(step, d, None, None, None, Some(*acc))?;
        }
        let pairs: Vec<(crate::Descriptor, f64)> = monitored.iter().cloned().zip(accuracies.iter().copied()).collect();
        observer.monitored(step, &pairs);
        Ok(accuracies)
    };

    // --- the loop -------------------------------------------------------------------------------------
    let loader = BatchLoader::new(train.clone(), LoaderConfig { start_step, ..LoaderConfig::new(config.batch_size, config.seed) })?;
    observer.started(start_step, config.steps);
    if start_step == 0 && config.monitor.every > 0 {
        // Step 0: the untrained encoder, the baseline every later kNN row is compared with.
        knn(&model, 0, &mut metrics, observer)?;
    }
    let started = Instant::now();
    let mut window = (Instant::now(), 0u64);
    let mut last_loss = f32::NAN;
    let mut last_dir = None;
    for (step, batch) in (start_step..config.steps).zip(loader) {
        // views -> forward -> loss -> optimiser step
        let (next, out) = stepper.step_batch(model, &mut optim, &batch, step)?;
        model = next;
        let descriptor = out.fractional.as_ref().unwrap_or(&trained[out.descriptor]);
        window.1 += 1;
        let done = step + 1;
        // log (the only host round trip); the loss is also checked before every checkpoint, so that
        // a diverged model is never saved.
        let log_now = done % config.log_every == 0 || done == config.steps;
        let save_now = done % config.checkpoint_every == 0 || done == config.steps;
        if log_now || save_now {
            last_loss = out.loss.into_scalar::<f32>();
            if !last_loss.is_finite() {
                return Err(CoreError::Diverged {
                    step: done,
                    descriptor: descriptor.to_string(),
                    lr: out.lr,
                    loss: last_loss,
                    checkpoints: run_dir.path.join("checkpoints"),
                });
            }
        }
        if log_now {
            let ips = (window.1 as usize * config.batch_size) as f64 / window.0.elapsed().as_secs_f64();
            window = (Instant::now(), 0);
            metrics.row(done, descriptor, Some(last_loss), Some(out.lr), Some(ips), None)?;
            observer.logged(&LogRow { step: done, descriptor: descriptor.clone(), loss: last_loss, lr: out.lr, images_per_second: ips });
        }
        observer.stepped(done);
        if config.monitor.every > 0 && done % config.monitor.every == 0 && done != config.steps {
            knn(&model, done, &mut metrics, observer)?;
            window = (Instant::now(), 0); // images/s measures training only
        }
        if save_now {
            let dir = run_dir.save(&model, &optim, &stepper, &meta(done), config.keep_checkpoints)?;
            observer.checkpointed(done, &dir);
            last_dir = Some(dir);
        }
        if done < config.steps && observer.should_stop() {
            let checkpoint = match &last_dir {
                Some(dir) if dir == &run_dir.checkpoint_dir(done) => dir.clone(),
                _ => run_dir.save(&model, &optim, &stepper, &meta(done), config.keep_checkpoints)?,
            };
            return Err(CoreError::Interrupted { step: done, checkpoint });
        }
    }

    // --- summary --------------------------------------------------------------------------------------
    let accuracies = knn(&model, config.steps, &mut metrics, observer)?;
    let seconds = started.elapsed().as_secs_f64();
    let steps_run = config.steps.saturating_sub(start_step);
    let summary = Summary {
        steps: config.steps,
        final_loss: last_loss,
        knn_accuracy: monitored.iter().map(|d| d.to_string()).zip(accuracies).collect(),
        num_queries: monitor.queries.len(),
        seconds,
        images_per_second: (steps_run as usize * config.batch_size) as f64 / seconds.max(1e-9),
        device: if num_devices > 1 {
            format!("{} (and {} more replicas)", selected.description, num_devices - 1)
        } else {
            selected.description.clone()
        },
        checkpoint: last_dir.unwrap_or_else(|| run_dir.checkpoints().pop().unwrap_or_default()),
    };
    run_dir.write_summary(&summary)?;
    Ok(summary)
}

//! Downstream tasks: a data source, its target, and its train / validation / test splits.
//!
//! | `--task`        | data                                              | target                         |
//! |-----------------|---------------------------------------------------|--------------------------------|
//! | `classify`      | `--data`: builtin, CIFAR binary, IDX, ImageFolder | the class                      |
//! | `omniglot`      | `--data images_background*.zip`                   | the character                  |
//! | `omniglot-pen`  | `--data images_*.zip --strokes strokes_*.zip`     | first pen-down `(x, y)`, pixels |
//! | `csv`           | `--data file.csv` of `path,target1,target2,...`   | the targets                    |
//! | `audio`         | `--data` an audio folder or FSDD (`recordings/`)  | the class, digit or speaker     |
//!
//! Validation is always carved from the training data. The test split is the official one where the
//! format has it (CIFAR binary, IDX); otherwise it is carved too (`--test-fraction`). Every carve is
//! a seeded permutation, so the same flags give the same splits.

use std::path::{Path, PathBuf};

use ail_core::fit::{Split, Targets};
use ail_data::{DataFormat, DataSource, ImageSet, LoadOptions, Split as DataSplit, epoch_order};
use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::args::Format;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    /// Classification of any image dataset (--data as for pretraining).
    Classify,
    /// Omniglot characters as classes (--data: the official images_background zip).
    Omniglot,
    /// Omniglot first pen-down point (x, y) regression (--data: images zip, --strokes: strokes zip).
    OmniglotPen,
    /// Regression from a CSV of `path,target1,target2,...` (paths relative to the CSV).
    Csv,
    /// Classification of audio clips (audio checkpoints): `<class>/<file>.wav`, or FSDD's
    /// `recordings/` labelled by --audio-labels digit|speaker.
    Audio,
}

/// Which task, and how to split it.
#[derive(Debug, Clone, Args)]
pub struct TaskArgs {
    #[arg(long, value_enum, default_value_t = TaskKind::Classify)]
    pub task: TaskKind,
    /// The task's data (see --task); `builtin` is the built-in Fashion-MNIST subset.
    #[arg(long, default_value = "builtin")]
    pub data: String,
    /// Format of --data for --task classify.
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    pub format: Format,
    /// Omniglot's strokes zip (strokes_background*.zip), for --task omniglot-pen.
    #[arg(long)]
    pub strokes: Option<PathBuf>,
    /// Fraction of the training data carved out for validation.
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Fraction carved out for testing when the data has no official test split.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Use at most this many training images (after carving validation and test).
    #[arg(long)]
    pub train_size: Option<usize>,
    /// Use at most this many validation images.
    #[arg(long)]
    pub val_size: Option<usize>,
    /// Use at most this many test images.
    #[arg(long)]
    pub test_size: Option<usize>,
    /// Seed of the splits.
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
    /// --task audio: label clips by `class` (folder name; FSDD: the digit), `digit` or `speaker`.
    #[arg(long, default_value = "class")]
    pub audio_labels: String,
    /// --task audio on FSDD: only these takes, e.g. `5-9` (recordings held out of pretraining).
    #[arg(long)]
    pub takes: Option<String>,
}

/// Parses `lo-hi` (inclusive) or a single number.
pub fn parse_takes(text: &str) -> anyhow::Result<(u32, u32)> {
    let bad = || anyhow::anyhow!("--takes {text}: use a range such as 5-9 (inclusive) or one take number");
    let (lo, hi) = match text.split_once('-') {
        Some((a, b)) => (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?),
        None => {
            let v = text.trim().parse().map_err(|_| bad())?;
            (v, v)
        }
    };
    anyhow::ensure!(lo <= hi, "--takes {text}: the first take must not exceed the last");
    Ok((lo, hi))
}

/// Reads audio clips and makes them the encoder's input images (un-augmented log-mel spectrograms
/// of the centred, fixed-length clip).
pub fn audio_images(
    root: &Path,
    labels: &str,
    takes: Option<(u32, u32)>,
    skip_bad: bool,
    front: &ail_core::mel::AudioFrontEnd,
    device: &burn::prelude::Device,
) -> anyhow::Result<(ImageSet, ail_data::audio::AudioSet)> {
    let options = ail_data::audio::AudioOptions { labels: labels.parse().map_err(anyhow::Error::msg)?, takes, skip_bad };
    eprintln!("reading the audio clips of {} ...", root.display());
    let clips = ail_data::audio::read_dir(root, &options)?;
    if clips.skipped > 0 {
        eprintln!("skipped {} audio files that failed to decode", clips.skipped);
    }
    let fitted: Vec<Vec<f32>> = clips.clips.iter().map(|c| ail_data::audio::center_fit(c, front.clip_samples)).collect();
    let pixels = front.images_u8(&fitted, device);
    let set = ImageSet::new(pixels, clips.labels.clone(), clips.class_names.clone(), front.input_shape())?;
    Ok((set, clips))
}

/// A loaded task.
pub struct Task {
    pub name: String,
    pub train: Split,
    pub val: Split,
    pub test: Split,
    /// Whether the test split is the official one.
    pub official_test: bool,
}

/// All images of a source with their targets (before splitting).
struct Whole {
    set: ImageSet,
    targets: Targets,
}

fn format(f: Format) -> DataFormat {
    match f {
        Format::Auto => DataFormat::Auto,
        Format::Cifar => DataFormat::Cifar,
        Format::Idx => DataFormat::Idx,
        Format::Folder => DataFormat::Folder,
    }
}

fn split_of(set: &ImageSet, targets: &Targets, indices: &[usize]) -> Split {
    Split { pixels: set.subset(indices).pixels, shape: set.shape(), targets: targets.subset(indices) }
}

fn classes_of(set: &ImageSet) -> Targets {
    Targets::Classes { labels: set.labels.clone(), classes: set.num_classes() }
}

/// Reads a CSV of `path,target1,...` (an optional header line is skipped).
fn read_csv(path: &Path, [c, side, _]: [usize; 3]) -> anyhow::Result<Whole> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let root = path.parent().unwrap_or(Path::new("."));
    let mut files = Vec::new();
    let mut values = Vec::new();
    let mut outputs = None;
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let parsed: Result<Vec<f32>, _> = fields[1..].iter().map(|f| f.parse::<f32>()).collect();
        match parsed {
            Ok(v) if !v.is_empty() && v.iter().all(|x| x.is_finite()) => {
                if *outputs.get_or_insert(v.len()) != v.len() {
                    anyhow::bail!("{}:{}: {} targets, earlier lines have {}", path.display(), n + 1, v.len(), outputs.unwrap_or(0));
                }
                files.push(root.join(fields[0]));
                values.extend(v);
            }
            _ if n == 0 => continue, // header
            _ => anyhow::bail!("{}:{}: expected `path,target1,target2,...` with finite numbers, found `{line}`", path.display(), n + 1),
        }
    }
    let outputs = outputs.with_context(|| format!("{} has no `path,target,...` rows", path.display()))?;
    let mut pixels = Vec::with_capacity(files.len() * c * side * side);
    for f in &files {
        pixels.extend(ail_data::folder::decode_file(f, side, 3)?);
    }
    let set = ImageSet::new(pixels, vec![0; files.len()], vec!["all".into()], [3, side, side])?.to_channels(c)?;
    Ok(Whole { set, targets: Targets::Values { values, outputs } })
}

impl TaskArgs {
    /// Loads the task at the input shape of the encoder `meta` describes and splits it (audio is
    /// turned into log-mel images on `device`).
    pub fn load(&self, meta: &ail_core::checkpoint::CheckpointMeta, device: &burn::prelude::Device) -> anyhow::Result<Task> {
        let shape = match &meta.audio {
            Some(front) => front.input_shape(),
            None => [meta.encoder.in_channels, meta.encoder.image_size, meta.encoder.image_size],
        };
        anyhow::ensure!(
            (self.task == TaskKind::Audio) == meta.audio.is_some(),
            "--task {} does not fit this {} encoder: use --task audio with audio encoders and an image task otherwise",
            serde_json::to_value(self.task)?.as_str().unwrap_or("?"),
            if meta.audio.is_some() { "audio" } else { "image" }
        );
        anyhow::ensure!(self.takes.is_none() || self.task == TaskKind::Audio, "--takes selects FSDD recordings: use it with --task audio");
        let [c, side, _] = shape;
        anyhow::ensure!(
            (0.0..0.9).contains(&self.val_fraction) && (0.0..0.9).contains(&self.test_fraction),
            "--val-fraction and --test-fraction must be in [0, 0.9)"
        );
        let options = LoadOptions { format: format(self.format), side: Some(side), channels: c, ..Default::default() };
        let source = DataSource::parse(&self.data);
        let mut official = None;
        let whole = match self.task {
            TaskKind::Classify => {
                let (set, _) = source.load(options, &|_| {}).with_context(|| format!("loading {source}"))?;
                let has_test = match &source {
                    DataSource::Path(p) => matches!(ail_data::resolve_format(p, format(self.format)), Ok(DataFormat::Cifar | DataFormat::Idx)),
                    DataSource::Builtin => false,
                };
                if has_test {
                    match source.load(LoadOptions { split: DataSplit::Test, ..options }, &|_| {}) {
                        Ok((test, _)) if test.class_names == set.class_names => official = Some(test),
                        Ok(_) => eprintln!("the test split's classes differ from the training split's: carving a test split instead"),
                        Err(e) => eprintln!("no official test split ({e}): carving one from the training data"),
                    }
                }
                Whole { targets: classes_of(&set), set }
            }
            TaskKind::Omniglot | TaskKind::OmniglotPen => {
                let strokes = match self.task {
                    TaskKind::OmniglotPen => Some(self.strokes.as_deref().context(
                        "--task omniglot-pen needs --strokes <strokes_background*.zip> (the pen strokes of the same drawings)",
                    )?),
                    _ => None,
                };
                let o = ail_data::omniglot::read(Path::new(&self.data), strokes, side, c)?;
                let targets = match o.pen_start {
                    Some(points) => Targets::Values { values: points.iter().flatten().copied().collect(), outputs: 2 },
                    None => classes_of(&o.images),
                };
                Whole { set: o.images, targets }
            }
            TaskKind::Csv => read_csv(Path::new(&self.data), shape)?,
            TaskKind::Audio => {
                let front = meta.audio.as_ref().expect("checked above");
                let takes = self.takes.as_deref().map(parse_takes).transpose()?;
                let (set, _) = audio_images(Path::new(&self.data), &self.audio_labels, takes, false, front, device)?;
                Whole { targets: classes_of(&set), set }
            }
        };
        let n = whole.set.len();
        let order = epoch_order(n, self.split_seed ^ 0x7a5c, 0, true);
        let n_test = if official.is_some() { 0 } else { (n as f64 * self.test_fraction).round() as usize };
        let n_val = ((n as f64 * self.val_fraction).round() as usize).max(1);
        anyhow::ensure!(n > n_test + n_val + 1, "{n} images are too few to carve {n_val} for validation and {n_test} for testing");
        let cap = |v: &[usize], c: Option<usize>| v[..c.unwrap_or(v.len()).min(v.len())].to_vec();
        let test_idx = cap(&order[..n_test], self.test_size);
        let val_idx = cap(&order[n_test..n_test + n_val], self.val_size);
        let train_idx = cap(&order[n_test + n_val..], self.train_size);
        let official_test = official.is_some();
        anyhow::ensure!(
            official_test || !test_idx.is_empty() || self.test_fraction == 0.0,
            "the carved test split is empty: raise --test-fraction (now {}) or --test-size",
            self.test_fraction
        );
        let test = match official {
            Some(t) => {
                let order = epoch_order(t.len(), self.split_seed ^ 0x7e57, 0, true);
                let idx = cap(&order, self.test_size);
                let targets = classes_of(&t);
                split_of(&t, &targets, &idx)
            }
            None => split_of(&whole.set, &whole.targets, &test_idx),
        };
        let task = Task {
            name: format!("{}:{}", serde_json::to_value(self.task)?.as_str().unwrap_or("task"), self.data),
            train: split_of(&whole.set, &whole.targets, &train_idx),
            val: split_of(&whole.set, &whole.targets, &val_idx),
            official_test,
            test,
        };
        eprintln!(
            "task {}: {} train, {} validation, {} test ({}) inputs of {}x{}x{}",
            task.name,
            task.train.len(),
            task.val.len(),
            task.test.len(),
            if task.official_test { "official test split" } else { "carved from the training data" },
            shape[0],
            shape[1],
            shape[2]
        );
        Ok(task)
    }
}

//! Downstream tasks: a data source, its target, and its train / validation / test splits.
//!
//! | `--task`        | data                                              | target                         |
//! |-----------------|---------------------------------------------------|--------------------------------|
//! | `classify`      | `--data`: builtin, CIFAR binary, IDX, ImageFolder | the class                      |
//! | `omniglot`      | `--data images_background*.zip`                   | the character                  |
//! | `omniglot-pen`  | `--data images_*.zip --strokes strokes_*.zip`     | first pen-down `(x, y)`, pixels |
//! | `csv`           | `--data file.csv` of `path,target1,target2,...`   | the targets                    |
//! | `audio`         | `--data` an audio folder or FSDD (`recordings/`)  | the class, digit or speaker     |
//! | `position`      | `--data` as `classify`, each image shrunk to half the side and placed at random on an empty canvas | its centre `(x, y)`, fractions of the side |
//! | `tint`          | `--data` as `classify` (colour), each image tinted reddish, greenish or bluish in turn | the tint |
//!
//! `position` and `tint` are derived tasks whose best invariance is known by construction: spatial
//! invariance (crops, flips) discards where an item is, appearance invariance (colour jitter,
//! grayscale) discards its tint, and the images' own classes carry neither.
//!
//! Validation is always carved from the training data. The test split is the official one where the
//! format has it (CIFAR binary, IDX); otherwise it is carved too (`--test-fraction`). Every carve is
//! a seeded permutation, so the same flags give the same splits.

use std::path::{Path, PathBuf};

use ail_data::audio::AudioLabels;
use ail_data::{DataFormat, DataSource, ImageSet, LoadOptions, OfficialSplit, epoch_order};

use crate::CoreError;
use crate::fit::{Split, Targets};

/// What a downstream task predicts, and from what data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    /// Classification of any image dataset (--data as for pretraining).
    #[default]
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
    /// Derived, spatial: each image of --data (as for classify) shrunk to half the side and placed
    /// at a random position on an empty canvas; regress its centre (x, y) as fractions of the side.
    /// Spatial invariance should hurt.
    Position,
    /// Derived, colour: each image of --data (colour, as for classify) tinted reddish, greenish or
    /// bluish in turn; classify the tint. Appearance invariance should hurt.
    Tint,
}

/// Which task, and how to split it (`ail fit`, `fewshot`, `lowshot` and `finetune` take it as flags).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    pub task: TaskKind,
    /// The task's data (see [`TaskKind`]); `builtin` is the built-in Fashion-MNIST subset.
    pub data: String,
    /// Format of `data` for [`TaskKind::Classify`].
    pub format: DataFormat,
    /// Omniglot's strokes zip, for [`TaskKind::OmniglotPen`].
    pub strokes: Option<PathBuf>,
    /// Fraction of the training data carved out for validation.
    pub val_fraction: f64,
    /// Fraction carved out for testing when the data has no official test split.
    pub test_fraction: f64,
    /// Caps on the number of training, validation and test images.
    pub train_size: Option<usize>,
    pub val_size: Option<usize>,
    pub test_size: Option<usize>,
    /// Seed of the splits.
    pub split_seed: u64,
    /// Audio tasks: label clips by folder (FSDD: digit), digit or speaker.
    pub audio_labels: AudioLabels,
    /// Audio tasks on FSDD: only these takes (inclusive).
    pub takes: Option<(u32, u32)>,
    /// [`TaskKind::Classify`]: a second dataset with the same classes, used whole as the test
    /// split (for example images held out of pretraining); nothing is carved from `data` for
    /// testing then.
    pub test_data: Option<String>,
}

impl Default for TaskSpec {
    fn default() -> Self {
        Self {
            task: TaskKind::Classify,
            data: "builtin".into(),
            format: DataFormat::Auto,
            strokes: None,
            val_fraction: 0.1,
            test_fraction: 0.2,
            train_size: None,
            val_size: None,
            test_size: None,
            split_seed: 0,
            audio_labels: AudioLabels::Class,
            takes: None,
            test_data: None,
        }
    }
}

impl TaskKind {
    /// The name `--task` takes.
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Classify => "classify",
            TaskKind::Omniglot => "omniglot",
            TaskKind::OmniglotPen => "omniglot-pen",
            TaskKind::Csv => "csv",
            TaskKind::Audio => "audio",
            TaskKind::Position => "position",
            TaskKind::Tint => "tint",
        }
    }
}

/// Parses `lo-hi` (inclusive) or a single number.
pub fn parse_takes(text: &str) -> Result<(u32, u32), CoreError> {
    let bad = || CoreError::setting(format!("--takes {text}"), "is not a take range: use a range such as 5-9 (inclusive) or one take number");
    let (lo, hi) = match text.split_once('-') {
        Some((a, b)) => (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?),
        None => {
            let v = text.trim().parse().map_err(|_| bad())?;
            (v, v)
        }
    };
    if lo > hi {
        return Err(CoreError::setting(format!("--takes {text}"), "has its first take after its last: use e.g. 5-9"));
    }
    Ok((lo, hi))
}

/// Reads audio clips and makes them the encoder's input images (un-augmented log-mel spectrograms
/// of the centred, fixed-length clip). `clips.skipped` counts the files skipped with `skip_bad`.
pub fn audio_images(
    root: &Path,
    labels: AudioLabels,
    takes: Option<(u32, u32)>,
    skip_bad: bool,
    front: &crate::mel::AudioFrontEnd,
    device: &burn::prelude::Device,
) -> Result<(ImageSet, ail_data::audio::AudioSet), CoreError> {
    let options = ail_data::audio::AudioOptions { labels, takes, skip_bad };
    let clips = ail_data::audio::read_dir(root, &options)?;
    let fitted: Vec<Vec<f32>> = clips.clips.iter().map(|c| ail_data::audio::center_fit(c, front.clip_samples)).collect();
    let pixels = front.images_u8(&fitted, device);
    let sources = clips.paths.iter().map(|p| p.display().to_string()).collect();
    let set = ImageSet::new(pixels, clips.labels.clone(), clips.class_names.clone(), front.input_shape())?.with_sources(sources)?;
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
    /// What happened on the way that a user should know (a missing official test split, skipped files).
    pub notes: Vec<String>,
    /// `[C, H, W]` of the inputs.
    pub shape: [usize; 3],
    /// Class names in label order (empty for regression).
    pub class_names: Vec<String>,
}

impl Task {
    /// One line: the task's name, split sizes and input shape.
    pub fn describe(&self) -> String {
        format!(
            "task {}: {} train, {} validation, {} test ({}) inputs of {}x{}x{}",
            self.name,
            self.train.len(),
            self.val.len(),
            self.test.len(),
            if self.official_test { "the official test split or --test-data" } else { "carved from the training data" },
            self.shape[0],
            self.shape[1],
            self.shape[2]
        )
    }
}

/// All images of a source with their targets (before splitting).
#[derive(Debug)]
struct Whole {
    set: ImageSet,
    targets: Targets,
}

fn split_of(set: &ImageSet, targets: &Targets, indices: &[usize]) -> Split {
    Split {
        pixels: set.subset(indices).pixels,
        shape: set.shape(),
        targets: targets.subset(indices),
        sources: indices.iter().map(|&i| set.source(i)).collect(),
    }
}

fn classes_of(set: &ImageSet) -> Targets {
    Targets::Classes { labels: set.labels.clone(), classes: set.num_classes() }
}

/// Reads a CSV task of `path,target1,...` rows (an optional header line is skipped; image paths are
/// relative to the CSV's folder) as images of `[c, side, side]` and their targets.
pub fn read_csv(path: &Path, shape: [usize; 3]) -> Result<(ImageSet, Targets), CoreError> {
    read_csv_whole(path, shape).map(|w| (w.set, w.targets))
}

fn read_csv_whole(path: &Path, [c, side, _]: [usize; 3]) -> Result<Whole, CoreError> {
    let bad = |reason: String| CoreError::setting(format!("--data {}", path.display()), reason);
    let text = ail_data::limits::read_text(path, ail_data::limits::MAX_TEXT_FILE).map_err(|e| CoreError::io("reading", path, e))?;
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
                    return Err(bad(format!("line {}: {} targets, earlier lines have {}", n + 1, v.len(), outputs.unwrap_or(0))));
                }
                files.push(root.join(fields[0]));
                values.extend(v);
            }
            _ if n == 0 => continue, // header
            _ => return Err(bad(format!("line {}: expected `path,target1,target2,...` with finite numbers, found `{line}`", n + 1))),
        }
    }
    let outputs = outputs.ok_or_else(|| bad("has no `path,target,...` rows".into()))?;
    // Decoded at 3 channels first, then split (a copy): refused from the row count before
    // decoding, and never aborted by the reservation.
    crate::memory::Estimate::new(format!("the task {}", path.display()))
        .part(format!("{} images", files.len()), 2.0 * crate::memory::images_bytes(files.len(), 3, side))
        .check(None, "use fewer rows, or an encoder of a smaller image size")?;
    let mut pixels = Vec::new();
    pixels
        .try_reserve_exact(files.len() * 3 * side * side)
        .map_err(|_| bad(format!("{} images of 3 x {side} x {side} do not fit in the memory left", files.len())))?;
    for f in &files {
        pixels.extend(ail_data::folder::decode_file(f, side, 3)?);
    }
    let sources = files.iter().map(|f| f.display().to_string()).collect();
    let set = ImageSet::new(pixels, vec![0; files.len()], vec!["all".into()], [3, side, side])?.with_sources(sources)?.to_channels(c)?;
    Ok(Whole { set, targets: Targets::Values { values, outputs } })
}

/// The derived task `kind` ([`TaskKind::Position`] or [`TaskKind::Tint`]) of every image of `set`:
/// placements drawn from `seed`; tints in turn, in the set's order (class by class), so that
/// every class carries every tint equally often.
fn derive(kind: TaskKind, set: &ImageSet, seed: u64) -> Result<Whole, ail_data::DataError> {
    let all: Vec<usize> = (0..set.len()).collect();
    let [c, side, _] = set.shape();
    let (pixels, targets, class_names) = match kind {
        TaskKind::Position => {
            let (pixels, centres) = ail_data::tasks::placed_items(set, &all, (side / 2).max(1), side, seed)?;
            (pixels, Targets::Values { values: centres, outputs: 2 }, vec!["all".to_string()])
        }
        TaskKind::Tint => {
            let tints: Vec<[f32; 3]> = ail_data::tasks::TINTS.iter().map(|t| t.1).collect();
            let (pixels, labels) = ail_data::tasks::tinted_items(set, &all, &tints)?;
            let names = ail_data::tasks::TINTS.iter().map(|t| t.0.to_string()).collect();
            (pixels, Targets::Classes { labels, classes: tints.len() }, names)
        }
        other => unreachable!("{} is not a derived task", other.name()),
    };
    let labels = match &targets {
        Targets::Classes { labels, .. } => labels.clone(),
        Targets::Values { .. } => vec![0; set.len()],
    };
    let sources = (0..set.len()).map(|i| set.source(i)).collect();
    let set = ImageSet::new(pixels, labels, class_names, [c, side, side])?.with_sources(sources)?;
    Ok(Whole { set, targets })
}

impl TaskSpec {
    /// Loads the task at the input shape of the encoder `meta` describes and splits it (audio is
    /// turned into log-mel images on `device`).
    pub fn load(&self, meta: &crate::checkpoint::CheckpointMeta, device: &burn::prelude::Device) -> Result<Task, CoreError> {
        let shape = match &meta.audio {
            Some(front) => front.input_shape(),
            None => [meta.encoder.in_channels, meta.encoder.image_size, meta.encoder.image_size],
        };
        if (self.task == TaskKind::Audio) != meta.audio.is_some() {
            return Err(CoreError::setting(
                format!("--task {}", self.task.name()),
                format!(
                    "does not fit this {} encoder: use --task audio with audio encoders and an image task otherwise",
                    if meta.audio.is_some() { "audio" } else { "image" }
                ),
            ));
        }
        if self.test_data.is_some() && self.task != TaskKind::Classify {
            return Err(CoreError::setting(
                "--test-data",
                format!("is a test split of classes: use it with --task classify, not --task {}", self.task.name()),
            ));
        }
        if self.takes.is_some() && self.task != TaskKind::Audio {
            return Err(CoreError::setting("--takes", "selects FSDD recordings: use it with --task audio"));
        }
        let [c, side, _] = shape;
        if !((0.0..0.9).contains(&self.val_fraction) && (0.0..0.9).contains(&self.test_fraction)) {
            return Err(CoreError::setting("--val-fraction / --test-fraction", "must be in [0, 0.9)"));
        }
        let options = LoadOptions { format: self.format, side: Some(side), channels: c, ..Default::default() };
        let source = DataSource::parse(&self.data);
        let derived = matches!(self.task, TaskKind::Position | TaskKind::Tint);
        if self.task == TaskKind::Classify || derived {
            // Decoded at three channels, then split (a copy): refused from the count before decoding.
            let count = source.count_images(self.format).unwrap_or(0);
            // --test-data is held at the same time: both are bounded together, before either is read.
            let test_count = self.test_data.as_deref().map_or(0, |t| DataSource::parse(t).count_images(self.format).unwrap_or(0));
            crate::memory::Estimate::new(format!("the task's data at the encoder's {side}x{side}"))
                .part(format!("{count} images"), 2.0 * crate::memory::images_bytes(count, 3, side))
                .part(format!("{test_count} images of --test-data"), 2.0 * crate::memory::images_bytes(test_count, 3, side))
                .check(None, "use part of the data (a smaller folder), or an encoder of a smaller image size")?;
        }
        let mut official = None;
        let mut notes = Vec::new();
        let whole = match self.task {
            TaskKind::Classify => {
                let (set, _) = source.load(options, &|_| {}).map_err(|e| CoreError::Loading { data: source.to_string(), error: e })?;
                let has_test = match &source {
                    DataSource::Path(p) => matches!(ail_data::resolve_format(p, self.format), Ok(DataFormat::Cifar | DataFormat::Idx)),
                    DataSource::Builtin => false,
                };
                if let Some(test_data) = &self.test_data {
                    let test_source = DataSource::parse(test_data);
                    let (test, _) = test_source.load(options, &|_| {}).map_err(|e| CoreError::Loading { data: test_source.to_string(), error: e })?;
                    if test.class_names != set.class_names {
                        return Err(CoreError::setting(
                            "--test-data",
                            format!(
                                "{test_data} has the classes {:?}, --data {} has {:?}: the test data must hold the same classes (the same folder names)",
                                test.class_names, self.data, set.class_names
                            ),
                        ));
                    }
                    official = Some(test);
                } else if has_test {
                    match source.load(LoadOptions { split: OfficialSplit::Test, ..options }, &|_| {}) {
                        Ok((test, _)) if test.class_names == set.class_names => official = Some(test),
                        Ok(_) => notes.push("the test split's classes differ from the training split's: carving a test split instead".into()),
                        Err(e) => notes.push(format!("no official test split ({e}): carving one from the training data")),
                    }
                }
                Whole { targets: classes_of(&set), set }
            }
            TaskKind::Omniglot | TaskKind::OmniglotPen => {
                let strokes = match self.task {
                    TaskKind::OmniglotPen => Some(self.strokes.as_deref().ok_or_else(|| {
                        CoreError::setting(
                            "--task omniglot-pen",
                            "needs --strokes <strokes_background*.zip> (the pen strokes of the same drawings)",
                        )
                    })?),
                    _ => None,
                };
                let o = ail_data::omniglot::read(Path::new(&self.data), strokes, side, c)?;
                let targets = match o.pen_start {
                    Some(points) => Targets::Values { values: points.iter().flatten().copied().collect(), outputs: 2 },
                    None => classes_of(&o.images),
                };
                Whole { set: o.images, targets }
            }
            TaskKind::Position | TaskKind::Tint => {
                let (set, _) = source.load(options, &|_| {}).map_err(|e| CoreError::Loading { data: source.to_string(), error: e })?;
                derive(self.task, &set, self.split_seed).map_err(|e| CoreError::setting(format!("--task {}", self.task.name()), e.to_string()))?
            }
            TaskKind::Csv => read_csv_whole(Path::new(&self.data), shape)?,
            TaskKind::Audio => {
                let front = meta.audio.as_ref().expect("checked above");
                let (set, _) = audio_images(Path::new(&self.data), self.audio_labels, self.takes, false, front, device)?;
                Whole { targets: classes_of(&set), set }
            }
        };
        let n = whole.set.len();
        let order = epoch_order(n, self.split_seed ^ 0x7a5c, 0, true);
        let n_test = if official.is_some() { 0 } else { (n as f64 * self.test_fraction).round() as usize };
        let n_val = ((n as f64 * self.val_fraction).round() as usize).max(1);
        if n <= n_test + n_val + 1 {
            return Err(CoreError::setting("--data", format!("holds {n} images, too few to carve {n_val} for validation and {n_test} for testing")));
        }
        let cap = |v: &[usize], c: Option<usize>| v[..c.unwrap_or(v.len()).min(v.len())].to_vec();
        let test_idx = cap(&order[..n_test], self.test_size);
        let val_idx = cap(&order[n_test..n_test + n_val], self.val_size);
        let train_idx = cap(&order[n_test + n_val..], self.train_size);
        let official_test = official.is_some();
        if !(official_test || !test_idx.is_empty() || self.test_fraction == 0.0) {
            return Err(CoreError::setting(
                "--test-fraction",
                format!("{} leaves the carved test split empty: raise it or --test-size", self.test_fraction),
            ));
        }
        let test = match official {
            Some(t) => {
                let order = epoch_order(t.len(), self.split_seed ^ 0x7e57, 0, true);
                let idx = cap(&order, self.test_size);
                let targets = classes_of(&t);
                split_of(&t, &targets, &idx)
            }
            None => split_of(&whole.set, &whole.targets, &test_idx),
        };
        let class_names = match &whole.targets {
            Targets::Classes { .. } => whole.set.class_names.clone(),
            Targets::Values { .. } => Vec::new(),
        };
        Ok(Task {
            class_names,
            name: format!("{}:{}", self.task.name(), self.data),
            train: split_of(&whole.set, &whole.targets, &train_idx),
            val: split_of(&whole.set, &whole.targets, &val_idx),
            official_test,
            test,
            notes,
            shape,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Eight 3-channel 8x8 images of two classes, each a flat grey of its own level.
    fn greys() -> ImageSet {
        let pixels = (0..8u8).flat_map(|k| std::iter::repeat_n(40 + 20 * k, 3 * 64)).collect();
        ImageSet::new(pixels, vec![0, 0, 0, 0, 1, 1, 1, 1], vec!["a".into(), "b".into()], [3, 8, 8]).unwrap()
    }

    #[test]
    fn derived_tasks_carry_their_target_in_position_or_colour_only() {
        let set = greys();
        let tint = derive(TaskKind::Tint, &set, 0).unwrap();
        let Targets::Classes { labels, classes } = &tint.targets else { panic!("tint is a classification") };
        assert_eq!(*classes, 3);
        // Tints in turn, so each class holds several tints and no tint is one class.
        assert_eq!(labels, &vec![0, 1, 2, 0, 1, 2, 0, 1]);
        assert_eq!(tint.set.class_names, ["reddish", "greenish", "bluish"]);
        // Image 1 (grey 60) tinted greenish: its green channel is 1.3 / 0.85 times its red.
        let image = tint.set.image(1);
        assert_eq!((image[0], image[64], image[128]), (51, 78, 51));

        let position = derive(TaskKind::Position, &set, 3).unwrap();
        let Targets::Values { values, outputs } = &position.targets else { panic!("position is a regression") };
        assert_eq!((*outputs, values.len()), (2, 16));
        for (k, centre) in values.chunks(2).enumerate() {
            // A 4x4 item on an 8x8 canvas: its centre lies in [0.25, 0.75] and its pixels there.
            assert!(centre.iter().all(|v| (0.25..=0.75).contains(v)), "{centre:?}");
            let image = position.set.image(k);
            let (x, y) = ((centre[0] * 8.0) as usize, (centre[1] * 8.0) as usize);
            assert_eq!(image[y * 8 + x], 40 + 20 * k as u8, "image {k} at {centre:?}");
            assert_eq!(image.iter().filter(|&&p| p > 0).count(), 3 * 16, "image {k}: one 4x4 item per channel");
        }
        assert_ne!(derive(TaskKind::Position, &set, 4).unwrap().targets, position.targets, "placements follow the seed");
        let grey = ImageSet::new(vec![9; 64], vec![0], vec!["a".into()], [1, 8, 8]).unwrap();
        assert!(derive(TaskKind::Tint, &grey, 0).unwrap_err().to_string().contains("3 channels"));
    }
}

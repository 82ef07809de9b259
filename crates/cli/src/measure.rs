//! `ail measure` and `ail interpolate`: how invariant an encoder's features are to each transform,
//! after Ericsson, Gouk & Hospedales, [Why Do Self-Supervised Models Transfer? Investigating the
//! Impact of Invariance on Downstream Tasks](https://arxiv.org/abs/2111.11398) (2022), as
//! docs/method.md, "Measuring invariance", specifies.
//!
//! For `n` images `x` and a transform `t` with a grid of parameters `p`: features `f(x)` and
//! `f(t_p(x))` at one descriptor `i`; `mu` and `Sigma` are the mean and covariance of the features
//! of `N >= n` original images (`--stats-images`, of which the `n` measured ones, `--images`, are
//! the first), `Sigma = L L^T` its Cholesky factor, and the similarity of an image is the cosine of
//! `L^-1 (f(x) - mu)` and `L^-1 (f(t_p(x)) - mu)`, averaged over the `n` images and the parameters
//! (1 = the features do not move). Every square root of `Sigma^-1` gives the same inner products, so
//! whitening with the Cholesky factor of `Sigma^-1` (the usual way to write it) is computed here with
//! one triangular solve per vector and no inverse.
//! `--plain-cosine` compares the raw features instead (and needs no statistics). `ail interpolate`
//! repeats one transform's measurement over a grid of descriptors (the paper's Figure 1, right).
//!
//! Deviations and choices:
//! - `mu` and `Sigma` come from a larger set of originals than the measured images (default 2,000,
//!   capped at the data size): whitening amplifies the covariance's smallest directions, which a
//!   few hundred images estimate badly for `D` = 256..512 (a 256-dimensional encoder read 0.22 with
//!   300 images and 0.37 with 1,500 for the same flip when both came from the measured images).
//!   Only originals enter the statistics, so this costs `N` forward passes per descriptor, the
//!   measured images' among them;
//! - `Sigma` gets a ridge of `--ridge` times its mean variance on the diagonal, so the Cholesky
//!   factor exists when there are fewer statistics images than feature dimensions or dead features;
//! - geometric transforms resample bilinearly (zero outside the image), which varies smoothly with
//!   the parameter (torchvision's `rotate`/`affine` default to nearest);
//! - the parameter grids are ours (see [`transform`]), fixed so that runs compare.
//!
//! Whitened similarities still depend on `--stats-images` relative to the feature dimension `D` (a
//! sample covariance underestimates its smallest eigenvalues), far less once it is several times
//! `D`; `--images` only sets how many images are averaged. Compare numbers measured with the same
//! `--stats-images` on encoders of the same `D`.
//!
//! The measurement itself lives in `ail_core::invariance` (with the transforms of
//! `ail_augment::invariance`), shared with the browser page: [`Reference`] and [`invariance_table`] only see a feature function
//! `(images in [0, 1], n) -> [n, D]`, so they are tested on hand-made functions.

use std::path::Path;

use ail_core::invariance::*;
use ail_core::checkpoint;
use ail_core::frozen::{Frozen, channel_statistics, resolve_checkpoint};
use ail_core::io::write_atomic;
use ail_core::{CoreError, Descriptor};
use ail_data::epoch_order;
use anyhow::Context;
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::{DataArgs, Global, InterpolateArgs, MeasureArgs, SourceArgs};
use crate::common;
use crate::svg;

// ---------------------------------------------------------------------------------------------
// Shared setup: checkpoint, images, descriptors
// ---------------------------------------------------------------------------------------------

/// A loaded encoder and the images it is measured on.
struct Setup {
    frozen: Frozen,
    /// The statistics images, `[num_statistics, C, H, W]` in `[0, 1]`; the first `num_images` are
    /// measured.
    images: Vec<f32>,
    num_statistics: usize,
    num_images: usize,
    shape: [usize; 3],
    metric: Metric,
    ridge: f64,
    data: String,
}

impl Setup {
    fn open(global: &Global, source: &SourceArgs, images: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(images >= 2, "--images must be at least 2 (a mean and covariance need several images)");
        anyhow::ensure!(
            source.ridge.is_finite() && source.ridge >= 0.0,
            "--ridge must be a non-negative number (got {})",
            source.ridge
        );
        let dir = resolve_checkpoint(&source.checkpoint)?;
        let meta = checkpoint::read_meta(&dir)?;
        anyhow::ensure!(
            meta.audio.is_none(),
            "{} is an audio encoder; the measured transforms are image transforms (measure audio encoders through \
             `ail fewshot --task audio` / `ail fit --task audio` instead)",
            dir.display()
        );
        let encoder = &meta.encoder;
        let image_size = source.image_size.unwrap_or(encoder.image_size);
        if image_size != encoder.image_size {
            anyhow::ensure!(
                !encoder.kind.is_vit(),
                "{kind} was trained on {size}x{size} images and its patch grid is fixed: drop --image-size or pass --image-size {size}",
                kind = encoder.kind,
                size = encoder.image_size
            );
            eprintln!("note: the encoder was trained on {0}x{0} images; measuring at {image_size}x{image_size}", encoder.image_size);
        }
        let device = common::device(global)?;
        let data_args =
            DataArgs { data: source.data.clone(), format: source.format, image_size, skip_bad: source.skip_bad };
        let data = std::sync::Arc::unwrap_or_clone(common::load(&data_args)?);
        anyhow::ensure!(data.len() >= 2, "{} holds {} image(s): measuring needs at least 2", source.data, data.len());
        let channels = encoder.in_channels;
        let data = if data.channels == channels {
            data
        } else {
            anyhow::ensure!(
                matches!(channels, 1 | 3),
                "{} takes {channels}-channel images, but the data loads as {}-channel images (ail converts only between grey and RGB)",
                dir.display(),
                data.channels
            );
            eprintln!("note: converting the {}-channel images to the encoder's {channels} channels", data.channels);
            data.to_channels(channels).context("converting the images to the encoder's channels")?
        };
        let frozen = Frozen::open(&dir, &device.device, || channel_statistics(&data.pixels, data.shape()))
            .with_context(|| format!("opening the checkpoint {}", dir.display()))?;
        anyhow::ensure!(
            frozen.input_shape()[0] == data.channels,
            "the encoder takes {}-channel images, the data has {}",
            frozen.input_shape()[0],
            data.channels
        );
        let num_images = images.min(data.len());
        if num_images < images {
            eprintln!("note: {} holds {} images; measuring all of them (--images {images})", source.data, data.len());
        }
        let metric = if source.plain_cosine { Metric::Cosine } else { Metric::Mahalanobis };
        // The measured images are the first statistics images; plain cosine needs no statistics.
        let num_statistics = match metric {
            Metric::Mahalanobis => source.stats_images.max(num_images).min(data.len()),
            Metric::Cosine => num_images,
        };
        let chosen = data.subset(&epoch_order(data.len(), source.seed, 0, true)[..num_statistics]);
        let d = frozen.feature_dim();
        if metric == Metric::Mahalanobis {
            eprintln!("whitening with the mean and covariance of {num_statistics} original images, the {num_images} measured among them");
            if num_statistics <= d {
                let room = if data.len() <= d { format!(" ({} holds only {})", source.data, data.len()) } else { String::new() };
                eprintln!(
                    "note: {num_statistics} statistics images for {d}-dimensional features: the covariance is rank-deficient \
                     and --ridge {} fills the rest; pass --stats-images above {d} for a full-rank estimate{room}",
                    source.ridge
                );
            }
        }
        eprintln!(
            "encoder: {} ({}, K = {}, {}-dimensional features, step {})",
            dir.display(),
            frozen.meta.encoder.kind,
            frozen.num_invariances(),
            frozen.feature_dim(),
            frozen.meta.step
        );
        Ok(Self {
            images: chosen.pixels.iter().map(|&p| p as f32 / 255.0).collect(),
            num_statistics,
            num_images,
            shape: chosen.shape(),
            frozen,
            metric,
            ridge: source.ridge,
            data: source.data.clone(),
        })
    }

    /// [`invariance_table`] on these images, with this comparison.
    fn table(&self, functions: &[&FeatureFn<'_>], transforms: &[Transform]) -> Result<Vec<Vec<f64>>, CoreError> {
        let (images, shape) = (&self.images, self.shape);
        invariance_table(functions, images, self.num_statistics, self.num_images, shape, transforms, self.metric, self.ridge)
    }

    /// How the mean and covariance were estimated, for reports ("" for plain cosine).
    fn statistics_note(&self) -> String {
        match self.metric {
            Metric::Mahalanobis => format!(
                " Mean and covariance from the features of {} original images, the measured ones among them.",
                self.num_statistics
            ),
            Metric::Cosine => String::new(),
        }
    }

    /// The encoder's features at `i`, counting images on `bar`.
    fn features<'a>(&'a self, i: &'a [f32], bar: &'a ProgressBar) -> impl Fn(&[f32], usize) -> Vec<f32> + 'a {
        const CHUNK: usize = 128;
        move |images: &[f32], n: usize| {
            let [c, h, w] = self.shape;
            let len = c * h * w;
            let inner = self.frozen.device().clone().without_autodiff();
            let mut out = Vec::with_capacity(n * self.frozen.feature_dim());
            for s in (0..n).step_by(CHUNK) {
                let e = (s + CHUNK).min(n);
                let x = Tensor::<4>::from_data(TensorData::new(images[s * len..e * len].to_vec(), [e - s, c, h, w]), &inner);
                let f = self.frozen.features(x, i).into_data().convert::<f32>();
                out.extend(f.try_into_vec::<f32>().unwrap_or_else(|e| panic!("features read back as f32: {e:?}")));
                bar.inc((e - s) as u64);
            }
            out
        }
    }

    /// Parses a descriptor for this encoder (length, range), naming the flag on error.
    fn descriptor(&self, input: &str, flag: &str) -> anyhow::Result<Vec<f32>> {
        let k = self.frozen.num_invariances();
        let values = match self.frozen.family().filter(|f| f.num_invariances() == k) {
            Some(family) => Descriptor::parse(input, family)?.0,
            None => input
                .split(',')
                .map(|s| s.trim().parse::<f32>().with_context(|| format!("`{}` is not a number", s.trim())))
                .collect::<anyhow::Result<Vec<f32>>>()?,
        };
        self.frozen.check_descriptor(&values).with_context(|| format!("{flag} {input}"))?;
        Ok(values)
    }

    /// The name of entry `j` of the descriptor (`i[0] spatial`), or just `i[j]`.
    fn entry_label(&self, j: usize) -> String {
        match self.frozen.family().and_then(|f| f.entry_names().get(j).copied()) {
            Some(name) => format!("i[{j}] {name}"),
            None => format!("i[{j}]"),
        }
    }
}

/// The default descriptors for `k` entries: each with one entry off (the last entry first), then
/// all ones. For K=2: `1,0`, `0,1`, `1,1`, the trained set.
pub fn default_descriptors(k: usize) -> Vec<Vec<f32>> {
    let mut out: Vec<Vec<f32>> = (0..k).rev().map(|off| (0..k).map(|j| if j == off { 0.0 } else { 1.0 }).collect()).collect();
    out.push(vec![1.0; k]);
    out
}

/// `1,0` for a descriptor, `plain` for the empty one of a plain encoder.
fn descriptor_label(i: &[f32]) -> String {
    if i.is_empty() { "plain".into() } else { Descriptor(i.to_vec()).to_string() }
}

fn column_label(i: &[f32]) -> String {
    if i.is_empty() { "plain".into() } else { format!("i = [{}]", descriptor_label(i)) }
}

fn progress(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} images [{elapsed}, eta {eta}]").expect("valid template"),
    );
    bar.set_message(what.to_string());
    bar
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    write_atomic(path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// ail measure
// ---------------------------------------------------------------------------------------------

pub fn run_measure(global: &Global, args: &MeasureArgs) -> anyhow::Result<()> {
    let setup = Setup::open(global, &args.source, args.images)?;
    let k = setup.frozen.num_invariances();
    let descriptors: Vec<Vec<f32>> = if k == 0 {
        anyhow::ensure!(
            args.descriptors.is_empty(),
            "{} is a plain encoder: it takes no descriptor; drop --descriptor",
            setup.frozen.checkpoint.display()
        );
        vec![Vec::new()]
    } else if args.descriptors.is_empty() {
        default_descriptors(k)
    } else {
        args.descriptors.iter().map(|d| setup.descriptor(d, "--descriptor")).collect::<anyhow::Result<_>>()?
    };
    let transforms = parse_transforms(&args.transforms, setup.shape).context("--transforms")?;
    anyhow::ensure!(!transforms.is_empty(), "--transforms names no transform");
    common::prepare_out(&args.out)?;

    // Measure: every descriptor sees the same transformed batches.
    let total = num_forwards(descriptors.len(), setup.num_statistics, setup.num_images, &transforms, setup.metric);
    let bar = progress(total, "measuring");
    let functions: Vec<_> = descriptors.iter().map(|i| setup.features(i, &bar)).collect();
    let refs: Vec<&FeatureFn<'_>> = functions.iter().map(|f| f as &FeatureFn<'_>).collect();
    let table = setup
        .table(&refs, &transforms)
        .context("measuring invariance (if the covariance is singular, raise --ridge or pass --plain-cosine)")?;
    bar.finish_and_clear();

    // Report: CSV, markdown, radar chart.
    let names: Vec<&str> = transforms.iter().map(|t| t.name).collect();
    let mut csv = String::from("descriptor,transform,similarity,metric\n");
    for (i, row) in descriptors.iter().zip(&table) {
        for (name, s) in names.iter().zip(row) {
            csv.push_str(&format!("\"{}\",{name},{s:.6},{}\n", descriptor_label(i), setup.metric.name()));
        }
    }
    let markdown = markdown_table(&descriptors, &names, &table);
    let header = format!(
        "# Invariance of {}\n\n{} of f(x) and f(t(x)), averaged over {} images of `{}` and each transform's \
         parameter grid (1 = invariant).{}\n\n",
        setup.frozen.checkpoint.display(),
        setup.metric.describe(),
        setup.num_images,
        setup.data,
        setup.statistics_note()
    );
    let series: Vec<svg::Series> =
        descriptors.iter().zip(&table).map(|(i, row)| svg::Series { name: column_label(i), values: row.clone() }).collect();
    let lowest = table.iter().flatten().copied().filter(|v| v.is_finite()).fold(0.0f64, f64::min);
    let axes: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let radar = svg::radar(
        &format!("Invariance ({})", setup.metric.name()),
        &axes,
        &series,
        [(lowest * 5.0).floor() / 5.0, 1.0],
    );
    let (csv_path, md_path, svg_path) =
        (args.out.join("invariance.csv"), args.out.join("invariance.md"), args.out.join("radar.svg"));
    write(&csv_path, &csv)?;
    write(&md_path, &format!("{header}{markdown}"))?;
    write(&svg_path, &radar)?;
    println!("{markdown}");
    eprintln!("wrote {}, {} and {}", csv_path.display(), md_path.display(), svg_path.display());
    Ok(())
}

/// Transforms as rows, descriptors as columns, and a final row of column means.
fn markdown_table(descriptors: &[Vec<f32>], names: &[&str], table: &[Vec<f64>]) -> String {
    let mut md = String::from("| transform |");
    for i in descriptors {
        md.push_str(&format!(" {} |", column_label(i)));
    }
    md.push_str("\n|---|");
    md.push_str(&"---:|".repeat(descriptors.len()));
    md.push('\n');
    for (t, name) in names.iter().enumerate() {
        md.push_str(&format!("| {name} |"));
        for row in table {
            md.push_str(&format!(" {:.3} |", row[t]));
        }
        md.push('\n');
    }
    md.push_str("| **mean** |");
    for row in table {
        md.push_str(&format!(" **{:.3}** |", row.iter().sum::<f64>() / row.len().max(1) as f64));
    }
    md.push('\n');
    md
}

// ---------------------------------------------------------------------------------------------
// ail interpolate
// ---------------------------------------------------------------------------------------------

pub fn run_interpolate(global: &Global, args: &InterpolateArgs) -> anyhow::Result<()> {
    anyhow::ensure!((2..=101).contains(&args.grid), "--grid must be between 2 and 101 (got {})", args.grid);
    anyhow::ensure!(
        args.from.is_some() == args.to.is_some(),
        "--from and --to go together: pass both ends of the line, or neither"
    );
    let setup = Setup::open(global, &args.source, args.images)?;
    let k = setup.frozen.num_invariances();
    anyhow::ensure!(
        k > 0,
        "{} is a plain encoder: it has no descriptor to sweep (`ail measure` measures it)",
        setup.frozen.checkpoint.display()
    );
    let transform = transform(&args.transform, setup.shape).with_context(|| {
        format!("unknown --transform `{}`: use one of {}", args.transform, TRANSFORM_NAMES.join(", "))
    })?;
    let g = args.grid;
    let step = |j: usize| j as f32 / (g - 1) as f32;
    let round = |v: f32| (v * 1e6).round() / 1e6;

    // The descriptors to measure at: an i[0] x i[1] grid (rows: i[1]) or a line from -> to.
    let line = if k == 2 && args.from.is_none() {
        None
    } else {
        let (from, to) = match (&args.from, &args.to) {
            (Some(f), Some(t)) => (setup.descriptor(f, "--from")?, setup.descriptor(t, "--to")?),
            _ if k == 1 => (vec![0.0], vec![1.0]),
            _ => {
                let one_hot = |j: usize| (0..k).map(|e| if e == j { 1.0 } else { 0.0 }).collect::<Vec<f32>>();
                (one_hot(0), one_hot(1))
            }
        };
        Some((from, to))
    };
    let points: Vec<Vec<f32>> = match &line {
        None => (0..g).flat_map(|r| (0..g).map(move |c| vec![step(c), step(r)])).collect(),
        Some((from, to)) => {
            (0..g).map(|j| from.iter().zip(to).map(|(a, b)| round(a + (b - a) * step(j))).collect()).collect()
        }
    };
    common::prepare_out(&args.out)?;

    let transforms = std::slice::from_ref(&transform);
    let total = num_forwards(points.len(), setup.num_statistics, setup.num_images, transforms, setup.metric);
    let bar = progress(total, &format!("sweeping i ({})", transform.name));
    let mut values = Vec::with_capacity(points.len());
    for i in &points {
        let features = setup.features(i, &bar);
        let (images, shape) = (&setup.images, setup.shape);
        let s = invariance(&features, images, setup.num_statistics, setup.num_images, shape, &transform, setup.metric, setup.ridge)
            .with_context(|| format!("measuring at i = [{}] (raise --ridge or pass --plain-cosine)", descriptor_label(i)))?;
        values.push(s);
    }
    bar.finish_and_clear();

    let stem = format!("interpolate-{}", transform.name);
    let (csv_path, svg_path) = (args.out.join(format!("{stem}.csv")), args.out.join(format!("{stem}.svg")));
    let title = format!("Invariance to {} ({})", transform.name, setup.metric.name());
    let (csv, chart) = match &line {
        None => {
            let mut csv = String::from("i0,i1,similarity\n");
            for (i, s) in points.iter().zip(&values) {
                csv.push_str(&format!("{},{},{s:.6}\n", i[0], i[1]));
            }
            let axis: Vec<f64> = (0..g).map(|j| step(j) as f64).collect();
            let chart = svg::heat_map(&title, &setup.entry_label(0), &setup.entry_label(1), &axis, &axis, &values, "similarity");
            // Print the grid as it is drawn: i[1] rows from the top (1) down, i[0] across.
            println!("{} ({}): rows {} from 1 down to 0, columns {} from 0 to 1", transform.name, setup.metric.name(), setup.entry_label(1), setup.entry_label(0));
            for r in (0..g).rev() {
                let row: Vec<String> = values[r * g..(r + 1) * g].iter().map(|v| format!("{v:6.3}")).collect();
                println!("{:>5.2} | {}", step(r), row.join(" "));
            }
            (csv, chart)
        }
        Some((from, to)) => {
            let mut csv = String::from("t,");
            csv.push_str(&(0..k).map(|j| format!("i{j}")).collect::<Vec<_>>().join(","));
            csv.push_str(",similarity\n");
            let mut curve = Vec::with_capacity(g);
            println!("{} ({}) from i = [{}] (t = 0) to i = [{}] (t = 1):", transform.name, setup.metric.name(), descriptor_label(from), descriptor_label(to));
            for (j, (i, s)) in points.iter().zip(&values).enumerate() {
                let entries: Vec<String> = i.iter().map(|v| v.to_string()).collect();
                csv.push_str(&format!("{},{},{s:.6}\n", step(j), entries.join(",")));
                curve.push((step(j) as f64, *s));
                println!("  t = {:.3}  i = [{}]  {s:.4}", step(j), descriptor_label(i));
            }
            let x_label = format!("t: i = (1 - t) [{}] + t [{}]", descriptor_label(from), descriptor_label(to));
            let chart = svg::line_chart(&title, &x_label, "similarity", &[svg::Curve { name: transform.name.to_string(), points: curve }]);
            (csv, chart)
        }
    };
    write(&csv_path, &csv)?;
    write(&svg_path, &chart)?;
    eprintln!("wrote {} and {}", csv_path.display(), svg_path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_descriptors_are_the_trained_corners() {
        assert_eq!(default_descriptors(2), vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![1.0, 1.0]]);
        let five = default_descriptors(5);
        assert_eq!(five.len(), 6);
        assert_eq!(five[0], vec![1.0, 1.0, 1.0, 1.0, 0.0]);
        assert_eq!(five[5], vec![1.0; 5]);
    }
}

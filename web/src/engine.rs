//! What the page computes, without the browser: opening an export, the invariance dial (the
//! invariance measure of `ail measure` and a PCA of the features at one `i`), the built-in and
//! custom tasks, and the few-shot fit of `ail fewshot --readout ridge` run step by step.
//! Everything here is ail-core / ail-augment / ail-data code; this module only arranges it so that
//! every tensor read on the dial's device is asynchronous (WebGPU cannot block the page to read a
//! buffer). The fit runs on the CPU backend ([`fit_device`]), whose reads complete at once, so the
//! ridge readout's host-side solves may read synchronously. The native tests drive the same
//! functions on the CPU backend.

use ail_core::invariance::{self, Metric, Reference, Transform};
use ail_core::checkpoint::load_web;
use ail_core::fewshot::{EpisodeConfig, FewShotReadout, StepFit};
use ail_core::fit::{Scores, Split, Targets};
use ail_core::frozen::Frozen;
use ail_core::linalg::pca;
use ail_data::ImageSet;
use burn::prelude::*;
use serde::Serialize;
use std::cell::RefCell;

/// The transforms on the page's radar chart: every evaluation transform that moves a grey image
/// (the probe images are Fashion-MNIST, so saturation, hue and grayscale would not change them).
pub const DIAL_TRANSFORMS: [&str; 8] = ["resized-crop", "h-flip", "rotation", "translation", "scale", "brightness", "contrast", "blur"];

/// Reads a tensor to the host without blocking (the only way on WebGPU).
pub async fn read<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, String> {
    let data = t.into_data_async().await.map_err(|e| format!("reading a result from the device failed: {e:?}"))?;
    data.convert::<f32>().try_into_vec::<f32>().map_err(|e| format!("unexpected result type: {e:?}"))
}

/// Lets the browser run its event loop (input, drawing, messages) before going on, once at least
/// [`YIELD_EVERY_MS`] have passed since the last time: a zero-delay timer on wasm32, nothing
/// natively. Called between pieces of work, so that the CPU backend, which computes synchronously,
/// never holds its thread for long. Not at every call: in the page's worker a yield took about
/// 17 ms (the end-to-end test, headless Chromium on 2 cores; a `MessageChannel` instead of the
/// timer was no faster), so a fit that yielded at each of its 100 steps spent 1.7 s of a 2.1 s
/// fixed-corner fit waiting (BENCHMARKS.md).
pub async fn pause() {
    #[cfg(target_family = "wasm")]
    {
        use wasm_bindgen::{JsCast, JsValue};
        thread_local! {
            static LAST_YIELD: std::cell::Cell<f64> = const { std::cell::Cell::new(f64::NEG_INFINITY) };
        }
        if js_sys::Date::now() - LAST_YIELD.get() < YIELD_EVERY_MS {
            return;
        }
        let promise = js_sys::Promise::new(&mut |resolve, _| {
            let set_timeout = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("setTimeout"))
                .ok()
                .and_then(|f| f.dyn_into::<js_sys::Function>().ok());
            match set_timeout {
                Some(f) => {
                    let _ = f.call2(&JsValue::NULL, &resolve, &JsValue::from(0));
                }
                None => {
                    let _ = resolve.call0(&JsValue::NULL);
                }
            }
        });
        let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
        LAST_YIELD.set(js_sys::Date::now());
    }
}

/// The longest stretch of work between two yields of [`pause`]: a stop request or a new dial
/// position waits at most this long (plus the step under way) before the worker sees it, well
/// within the 200 ms a page may be busy without feeling frozen.
pub const YIELD_EVERY_MS: f64 = 50.0;

/// Makes the browser's WebGPU device carry the `subgroups` feature whenever its adapter offers it.
/// Some of CubeCL's matmul kernels (tried by its autotuner) are written with `enable subgroups;`,
/// but the device is requested without that feature, and Chromium then rejects those shaders
/// ("extension 'subgroups' is not allowed"), which poisons the device. Call it before the WebGPU
/// device is created; nothing natively.
pub fn request_webgpu_subgroups() {
    #[cfg(target_family = "wasm")]
    {
        const SHIM: &str = r#"
            const proto = self.GPUAdapter && self.GPUAdapter.prototype;
            if (proto && !proto.__ailSubgroups) {
                const request = proto.requestDevice;
                proto.requestDevice = function (desc) {
                    desc = Object.assign({}, desc || {});
                    const wanted = new Set(desc.requiredFeatures || []);
                    for (const f of ["subgroups"]) if (this.features.has(f)) wanted.add(f);
                    desc.requiredFeatures = [...wanted];
                    return request.call(this, desc);
                };
                proto.__ailSubgroups = true;
            }
        "#;
        let _ = js_sys::Function::new_no_args(SHIM).call0(&wasm_bindgen::JsValue::NULL);
    }
}

/// Images through the encoder at a time between pauses.
pub const CHUNK: usize = 32;

/// Features (`[n, D]`, host) of `x01` (`[n, C, H, W]` in [0, 1] on the inner device) at `i`,
/// [`CHUNK`] images at a time with a [`pause`] between chunks.
pub async fn features(frozen: &Frozen, x01: &Tensor<4>, i: &[f32]) -> Result<Vec<f32>, String> {
    let n = x01.dims()[0];
    let mut out = Vec::with_capacity(n * frozen.feature_dim());
    for s in (0..n).step_by(CHUNK) {
        let e = (s + CHUNK).min(n);
        out.extend(read(frozen.features(x01.clone().slice(s..e), i)).await?);
        pause().await;
    }
    Ok(out)
}

/// The largest export the page opens: a ResNet-50 in f16 is about 50 MB; a browser tab holds the
/// file, the encoder and the dial's probes at once.
pub const MAX_EXPORT_BYTES: usize = 128 << 20;

/// The largest input size the page accepts: its probes are every dial transform of each measured
/// image at this size, on a device a browser shares with everything else.
pub const MAX_IMAGE_SIZE: usize = 224;

/// The largest image file a user may drop in, and the most pixels it may hold (decoded in a
/// WebAssembly memory of at most 4 GB).
pub const MAX_DROPPED_BYTES: usize = 32 << 20;
pub const MAX_DROPPED_PIXELS: u64 = 1 << 24;

/// Checks a dropped image before it is decoded: its file size, then the dimensions its header
/// declares (reading them allocates nothing). Errors name the file and the limit.
pub fn check_dropped(bytes: &[u8], name: &str) -> Result<(), String> {
    if bytes.len() > MAX_DROPPED_BYTES {
        return Err(format!("{name}: {:.1} MB, more than the {} MB the page accepts per image: shrink it first", bytes.len() as f64 / 1e6, MAX_DROPPED_BYTES >> 20));
    }
    let (w, h) = ail_data::folder::declared_dimensions(bytes).map_err(|reason| format!("{name}: {reason}"))?;
    if w as u64 * h as u64 > MAX_DROPPED_PIXELS {
        return Err(format!("{name}: {w}x{h} pixels, more than the {} megapixels the page decodes: shrink it first", MAX_DROPPED_PIXELS >> 20));
    }
    Ok(())
}

/// Opens an export (`ail export --web`) on `device`: the frozen encoder, ready for the dial and
/// fits. Refuses audio and plain encoders, which the page cannot show, exports larger than
/// [`MAX_EXPORT_BYTES`] and input sizes above [`MAX_IMAGE_SIZE`], before anything is built.
pub fn open(bytes: &[u8], name: &str, device: &Device) -> Result<Frozen, String> {
    if bytes.len() > MAX_EXPORT_BYTES {
        return Err(format!(
            "{name}: {:.0} MB, more than the {} MB the page opens: export a smaller encoder (a ResNet-18 or a narrower width)",
            bytes.len() as f64 / 1e6,
            MAX_EXPORT_BYTES >> 20
        ));
    }
    let declared = ail_core::checkpoint::web_meta(bytes, name).map_err(|e| e.to_string())?;
    if declared.encoder.image_size > MAX_IMAGE_SIZE {
        return Err(format!(
            "{name}: an encoder of {0}x{0} images; the page shows encoders of at most {MAX_IMAGE_SIZE}x{MAX_IMAGE_SIZE}",
            declared.encoder.image_size
        ));
    }
    let ad = device.clone().without_autodiff().autodiff();
    let (encoder, meta) = load_web(bytes, name, &ad).map_err(|e| e.to_string())?;
    if meta.audio.is_some() {
        return Err(format!("{name}: an audio encoder; the page shows image encoders"));
    }
    if meta.encoder.input_invariances() == 0 {
        return Err(format!("{name}: a plain {} has no invariance descriptor to dial; export an amortised encoder (hyper-resnet*, prompt-vit-*)", meta.encoder.kind));
    }
    Frozen::from_encoder(encoder, meta, name.into()).map_err(|e| e.to_string())
}

/// Converts images to what `frozen` takes (`[C, S, S]`): channels replicated or reduced, resized.
pub fn to_input(set: ImageSet, frozen: &Frozen) -> Result<ImageSet, String> {
    let [c, h, w] = frozen.input_shape();
    set.to_channels(c).and_then(|s| s.resized(h, w)).map_err(|e| e.to_string())
}

/// The images the dial measures, already on the device: `n_stats` originals (whose features give
/// the whitening's mean and covariance and the PCA), the first `n_measure` of which are measured,
/// and every setting of every dial transform applied to those.
pub struct Probe {
    pub shape: [usize; 3],
    pub n_stats: usize,
    pub n_measure: usize,
    pub labels: Vec<u32>,
    pub pixels: Vec<u8>,
    pub transforms: Vec<Transform>,
    originals: Tensor<4>,
    transformed: Tensor<4>,
    transformed_count: usize,
    /// The originals' features at the last `i` they were computed at (the dial and then the
    /// views of one image at the same `i` need them both).
    originals_at: RefCell<Option<(Vec<f32>, Vec<f32>)>>,
}

impl Probe {
    /// `pixels`: `[n_stats, C, H, W]` `u8` images on `device` (the frozen encoder's inner device).
    pub fn new(pixels: Vec<u8>, labels: Vec<u32>, shape: [usize; 3], n_measure: usize, names: &[&str], device: &Device) -> Result<Self, String> {
        let len = shape.iter().product::<usize>();
        let n_stats = pixels.len() / len;
        if n_stats == 0 || !(1..=n_stats).contains(&n_measure) {
            return Err(format!("{n_measure} measured images are not among {n_stats} probe images"));
        }
        let transforms: Vec<Transform> =
            names.iter().map(|n| invariance::transform(n, shape).ok_or_else(|| format!("unknown transform {n}"))).collect::<Result<_, _>>()?;
        let measured: Vec<f32> = pixels[..n_measure * len].iter().map(|&p| p as f32 / 255.0).collect();
        let transformed = invariance::transformed_all(&measured, n_measure, shape, &transforms);
        let transformed_count = transformed.len() / len;
        let device = device.clone().without_autodiff();
        let [c, h, w] = shape;
        let originals = Frozen::upload_u8(&pixels, n_stats, shape, &device);
        let transformed = Tensor::<1>::from_floats(transformed.as_slice(), &device).reshape([transformed_count, c, h, w]);
        Ok(Self { shape, n_stats, n_measure, labels, pixels, transforms, originals, transformed, transformed_count, originals_at: RefCell::new(None) })
    }

    /// Transformed images: every setting of every transform of each measured image.
    pub fn transformed_count(&self) -> usize {
        self.transformed_count
    }

    /// Where a dial shared with a helper ([`dial_shared`]) hands over: the helper takes the
    /// transformed images from here on, so that both put about half of [`Probe::forwards`]
    /// through the encoder (the originals stay with the caller, which needs them first).
    pub fn helper_split(&self) -> usize {
        (self.forwards() / 2).saturating_sub(self.n_stats).min(self.transformed_count)
    }

    /// Images through the encoder per dial update.
    pub fn forwards(&self) -> usize {
        self.n_stats + self.transformed_count
    }
}

/// One position of the dial.
#[derive(Debug, Clone, Serialize)]
pub struct DialView {
    /// Transform names, in radar order.
    pub transforms: Vec<&'static str>,
    /// Whitened cosine similarity of f(x) and f(t(x)) per transform (1 = invariant).
    pub invariance: Vec<f64>,
    /// First two principal coordinates of the probe originals' features, `[n_stats, 2]`.
    pub coords: Vec<f32>,
    /// Variance along each axis.
    pub variance: Vec<f64>,
    /// For each probe original, the [`NEIGHBOURS`] others nearest to it in feature space at this
    /// `i` (cosine of centred features), nearest first: `[n_stats, NEIGHBOURS]`.
    pub neighbours: Vec<u32>,
    /// Whether a helper computed part of it ([`dial_shared`]).
    pub shared: bool,
}

/// Nearest neighbours the dial reports per probe image.
pub const NEIGHBOURS: usize = 5;

/// For each of the `n` rows of `features` (`[n, d]`), the indices of the `k` other rows with the
/// largest cosine similarity after centring (the mean row subtracted), nearest first; ties go to
/// the lower index. `[n, min(k, n - 1)]`.
pub fn nearest(features: &[f32], n: usize, d: usize, k: usize) -> Vec<u32> {
    let k = k.min(n.saturating_sub(1));
    let mut mean = vec![0f64; d];
    for row in features.chunks_exact(d) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64 / n as f64;
        }
    }
    let unit: Vec<Vec<f64>> = features
        .chunks_exact(d)
        .map(|row| {
            let c: Vec<f64> = row.iter().zip(&mean).map(|(&v, m)| v as f64 - m).collect();
            let norm = c.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
            c.into_iter().map(|v| v / norm).collect()
        })
        .collect();
    let mut out = Vec::with_capacity(n * k);
    for a in 0..n {
        let mut sims: Vec<(f64, usize)> =
            (0..n).filter(|&b| b != a).map(|b| (unit[a].iter().zip(&unit[b]).map(|(x, y)| x * y).sum::<f64>(), b)).collect();
        sims.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
        out.extend(sims.iter().take(k).map(|&(_, b)| b as u32));
    }
    out
}

/// The encoder's invariances and embedding at `i`.
pub async fn dial(frozen: &Frozen, probe: &Probe, i: &[f32]) -> Result<DialView, String> {
    dial_shared(frozen, probe, i, None::<(usize, std::future::Ready<Result<Vec<f32>, String>>)>).await
}

/// [`dial`], with the features of the transformed images from `split` on computed elsewhere:
/// `remote` (already started, by another worker holding the same encoder and probe, see
/// [`transformed_features`]) is awaited after this side's share. The result is the same as
/// [`dial`]'s: each image's features do not depend on the others in its batch. When `remote`
/// fails or returns the wrong number of values, its share is computed here.
pub async fn dial_shared<F: Future<Output = Result<Vec<f32>, String>>>(frozen: &Frozen, probe: &Probe, i: &[f32], remote: Option<(usize, F)>) -> Result<DialView, String> {
    frozen.check_descriptor(i).map_err(|e| e.to_string())?;
    let d = frozen.feature_dim();
    let n = probe.transformed_count;
    let split = remote.as_ref().map_or(n, |(split, _)| (*split).min(n));
    let stats = original_features(frozen, probe, i).await?;
    let reference = Reference::new(&stats, probe.n_stats, probe.n_measure, Metric::Mahalanobis, invariance::DEFAULT_RIDGE).map_err(|e| e.to_string())?;
    let mut moved = transformed_features(frozen, probe, i, 0..split).await?;
    let mut shared = false;
    if let Some((_, remote)) = remote {
        match remote.await {
            Ok(rest) if rest.len() == (n - split) * d => {
                moved.extend(rest);
                shared = true;
            }
            _ => moved.extend(transformed_features(frozen, probe, i, split..n).await?),
        }
    }
    let invariance = invariance::similarities_from_features(&reference, &probe.transforms, &moved);
    let (coords, variance) = pca(&stats, probe.n_stats, d, 2);
    let neighbours = nearest(&stats, probe.n_stats, d, NEIGHBOURS);
    Ok(DialView { transforms: probe.transforms.iter().map(|t| t.name).collect(), invariance, coords, variance, neighbours, shared })
}

/// Features (`[n, D]`, host) of the probe originals at `i`: from the last call when `i` is the
/// same.
async fn original_features(frozen: &Frozen, probe: &Probe, i: &[f32]) -> Result<Vec<f32>, String> {
    if let Some((at, f)) = probe.originals_at.borrow().as_ref()
        && at.as_slice() == i
    {
        return Ok(f.clone());
    }
    let f = features(frozen, &probe.originals, i).await?;
    probe.originals_at.replace(Some((i.to_vec(), f.clone())));
    Ok(f)
}

/// Features (`[range.len(), D]`, host) of the probe's transformed images `range` at `i`: a
/// helper's share of a [`dial_shared`].
pub async fn transformed_features(frozen: &Frozen, probe: &Probe, i: &[f32], range: std::ops::Range<usize>) -> Result<Vec<f32>, String> {
    frozen.check_descriptor(i).map_err(|e| e.to_string())?;
    if range.start > range.end || range.end > probe.transformed_count {
        return Err(format!("transformed images {range:?} are not among the probe's {}", probe.transformed_count));
    }
    if range.is_empty() {
        return Ok(Vec::new());
    }
    features(frozen, &probe.transformed.clone().slice(range), i).await
}

/// One probe image under each dial transform at one `i`: its views and how similar each view's
/// features stay to the original's (the dial's measure, for this image alone).
#[derive(Debug, Clone, Serialize)]
pub struct ImageViews {
    /// The probe image's index.
    pub image: usize,
    /// Per transform: its name, the similarity of each setting's view, and their mean.
    pub transforms: Vec<TransformViews>,
    /// Every view as `u8` `[views, C, H, W]`, transform after transform, setting after setting.
    #[serde(skip)]
    pub pixels: Vec<u8>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TransformViews {
    pub name: &'static str,
    pub similarities: Vec<f64>,
    pub mean: f64,
}

/// Probe image `k` under every setting of every dial transform, with the similarity of each view's
/// features to the original's at `i`: the same whitened cosine as [`dial`] (mean and covariance
/// from all probe originals), for one image; the mean over the first `n_measure` images of a
/// transform's `mean` is the dial's value for it.
pub async fn views(frozen: &Frozen, probe: &Probe, k: usize, i: &[f32]) -> Result<ImageViews, String> {
    frozen.check_descriptor(i).map_err(|e| e.to_string())?;
    if k >= probe.n_stats {
        return Err(format!("image {k} is not among the {} probe images", probe.n_stats));
    }
    let d = frozen.feature_dim();
    let len = probe.shape.iter().product::<usize>();
    let stats = original_features(frozen, probe, i).await?;
    // The statistics do not depend on the rows' order; the image measured goes first.
    let mut reordered = stats[k * d..(k + 1) * d].to_vec();
    reordered.extend(stats.chunks_exact(d).enumerate().filter(|&(r, _)| r != k).flat_map(|(_, row)| row.iter().copied()));
    let reference = Reference::new(&reordered, probe.n_stats, 1, Metric::Mahalanobis, invariance::DEFAULT_RIDGE).map_err(|e| e.to_string())?;
    let image: Vec<f32> = probe.pixels[k * len..(k + 1) * len].iter().map(|&p| p as f32 / 255.0).collect();
    let moved = invariance::transformed_all(&image, 1, probe.shape, &probe.transforms);
    let count = moved.len() / len;
    let [c, h, w] = probe.shape;
    let device = frozen.device().clone().without_autodiff();
    let tensor = Tensor::<1>::from_floats(moved.as_slice(), &device).reshape([count, c, h, w]);
    let moved_features = features(frozen, &tensor, i).await?;
    let mut rows = moved_features.chunks_exact(d);
    let transforms = probe
        .transforms
        .iter()
        .map(|t| {
            let similarities: Vec<f64> = t.settings.iter().map(|_| reference.similarity(rows.next().expect("one row per view"))).collect();
            let mean = similarities.iter().sum::<f64>() / similarities.len() as f64;
            TransformViews { name: t.name, similarities, mean }
        })
        .collect();
    let pixels = moved.iter().map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect();
    Ok(ImageViews { image: k, transforms, pixels })
}

/// A task: support and query images with their targets, and how to show it.
#[derive(Debug, Clone)]
pub struct Task {
    pub name: String,
    pub support: Split,
    pub query: Split,
    /// Class names, or output names of a regression.
    pub labels: Vec<String>,
}

impl Task {
    pub fn is_regression(&self) -> bool {
        matches!(self.support.targets, Targets::Values { .. })
    }
}

fn split(pixels: Vec<u8>, shape: [usize; 3], targets: Targets) -> Split {
    Split::new(pixels, shape, targets)
}

/// The built-in 5-way 5-shot task: five Fashion-MNIST classes, 5 support and 10 query images
/// each, from the second half of the built-in set (the same images every time), converted to what
/// `frozen` takes. `draw` 0 is the page's task; draw `d` takes the next 15 images of each class
/// after those of draw `d - 1` (disjoint draws, for measurements over several).
pub fn five_way(set: &ImageSet, frozen: &Frozen, draw: usize) -> Result<Task, String> {
    const CLASSES: [u32; 5] = [0, 1, 3, 7, 8];
    let (shots, queries) = (5, 10);
    let (mut support, mut query) = (Vec::new(), Vec::new());
    let (mut support_labels, mut query_labels) = (Vec::new(), Vec::new());
    for (way, &class) in CLASSES.iter().enumerate() {
        let mut of_class = (set.len() / 2..set.len()).filter(|&k| set.labels[k] == class).skip(draw * (shots + queries));
        for _ in 0..shots {
            support.push(of_class.next().ok_or("too few built-in images")?);
            support_labels.push(way as u32);
        }
        for _ in 0..queries {
            query.push(of_class.next().ok_or("too few built-in images")?);
            query_labels.push(way as u32);
        }
    }
    let pick = |idx: &[usize]| to_input(set.subset(idx), frozen).map(|s| s.pixels);
    let shape = frozen.input_shape();
    Ok(Task {
        name: "5-way 5-shot classification (built-in Fashion-MNIST classes)".into(),
        support: split(pick(&support)?, shape, Targets::Classes { labels: support_labels, classes: 5 }),
        query: split(pick(&query)?, shape, Targets::Classes { labels: query_labels, classes: 5 }),
        labels: CLASSES.iter().map(|&c| set.class_names[c as usize].clone()).collect(),
    })
}

/// How far apart in the built-in set the items of two draws of a derived task start.
const DRAW_STRIDE: usize = 1009;

/// Support and query images of the page's position task: with fewer support images the demo
/// encoder's query R² falls (above 0.15 only at `[1, 0]` with 25, EXPERIMENTS.md).
pub const POSITION_SIZES: (usize, usize) = (100, 100);

/// The built-in spatial regression (a derived task): a built-in image shrunk to half the side and
/// placed at a random position on an empty canvas of the input size; the targets are the item's
/// centre (x, y) as fractions of the side. The page uses [`POSITION_SIZES`].
/// `sizes`: support and query images. `draw` 0 is the page's task; other draws take other items
/// and other positions (for measurements over several).
pub fn position(set: &ImageSet, frozen: &Frozen, sizes: (usize, usize), draw: usize) -> Result<Task, String> {
    let (support, query) = sizes;
    let pick = |k: usize, offset: usize| (set.len() / 2 + 37 * k + offset + DRAW_STRIDE * draw) % set.len();
    let support_idx: Vec<usize> = (0..support).map(|k| pick(k, 0)).collect();
    let query_idx: Vec<usize> = (0..query).map(|k| pick(k, 11)).collect();
    let items: Vec<usize> = support_idx.iter().chain(&query_idx).copied().collect();
    let set = to_input(set.subset(&items), frozen)?;
    let side = set.height;
    let (support_idx, query_idx): (Vec<usize>, Vec<usize>) = ((0..support).collect(), (support..support + query).collect());
    let place = |idx: &[usize], seed| ail_data::tasks::placed_items(&set, idx, side / 2, side, seed).map_err(|e| e.to_string());
    let (sp, sv) = place(&support_idx, 1 + 2 * draw as u64)?;
    let (qp, qv) = place(&query_idx, 2 + 2 * draw as u64)?;
    let shape = set.shape();
    Ok(Task {
        name: "where is the item? (derived task: position regression)".into(),
        support: split(sp, shape, Targets::Values { values: sv, outputs: 2 }),
        query: split(qp, shape, Targets::Values { values: qv, outputs: 2 }),
        labels: vec!["x".into(), "y".into()],
    })
}

pub use ail_data::tasks::TINTS;

/// Support and query images of the page's colour task.
pub const TINT_SIZES: (usize, usize) = (30, 60);

/// The built-in colour task (a derived task): which tint was applied to a built-in image? Only
/// colour carries the answer, so invariance to appearance (colour, brightness) should hurt. The
/// items (the same every time, from the second half of the built-in set) take the tints in turn.
/// `sizes`: support and query images; `draw` as in [`position`]. Needs an encoder of colour
/// (3-channel) images.
pub fn tint(set: &ImageSet, frozen: &Frozen, sizes: (usize, usize), draw: usize) -> Result<Task, String> {
    let (support, query) = sizes;
    if frozen.input_shape()[0] != 3 {
        return Err("the colour task needs an encoder of colour (3-channel) images".into());
    }
    let pick = |k: usize, offset: usize| (set.len() / 2 + 53 * k + offset + DRAW_STRIDE * draw) % set.len();
    let items: Vec<usize> = (0..support).map(|k| pick(k, 5)).chain((0..query).map(|k| pick(k, 29))).collect();
    let set = to_input(set.subset(&items), frozen)?;
    let tints: Vec<[f32; 3]> = TINTS.iter().map(|t| t.1).collect();
    let make = |idx: Vec<usize>| ail_data::tasks::tinted_items(&set, &idx, &tints).map_err(|e| e.to_string());
    let (sp, sl) = make((0..support).collect())?;
    let (qp, ql) = make((support..support + query).collect())?;
    let shape = set.shape();
    let classes = TINTS.len();
    Ok(Task {
        name: "which tint? (derived task: colour)".into(),
        support: split(sp, shape, Targets::Classes { labels: sl, classes }),
        query: split(qp, shape, Targets::Classes { labels: ql, classes }),
        labels: TINTS.iter().map(|t| t.0.to_string()).collect(),
    })
}

/// At least this many images per class in a task of the user's own images: two or more for the
/// support set and one or more to score on.
pub const MIN_PER_CLASS: usize = 3;

/// A task from the user's images, already decoded to the input shape: per class its name and
/// images. Every third image of a class (the 3rd, 6th, ...) is a query, the rest support.
pub fn custom(classes: &[(String, Vec<Vec<u8>>)], shape: [usize; 3]) -> Result<Task, String> {
    let filled: Vec<&(String, Vec<Vec<u8>>)> = classes.iter().filter(|(_, images)| !images.is_empty()).collect();
    if filled.len() < 2 {
        return Err(format!("put images into at least two class boxes (now {} with images)", filled.len()));
    }
    if let Some((name, images)) = filled.iter().find(|(_, images)| images.len() < MIN_PER_CLASS) {
        return Err(format!(
            "class \"{name}\" has {} image(s): each class needs at least {MIN_PER_CLASS} (two or more to learn from, one or more to score on)",
            images.len()
        ));
    }
    let (mut sp, mut qp, mut sl, mut ql) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (c, (_, images)) in filled.iter().enumerate() {
        for (k, image) in images.iter().enumerate() {
            if k % 3 == 2 {
                qp.extend_from_slice(image);
                ql.push(c as u32);
            } else {
                sp.extend_from_slice(image);
                sl.push(c as u32);
            }
        }
    }
    let classes = filled.len();
    Ok(Task {
        name: format!("your images: {classes} classes"),
        support: split(sp, shape, Targets::Classes { labels: sl, classes }),
        query: split(qp, shape, Targets::Classes { labels: ql, classes }),
        labels: filled.iter().map(|(n, _)| n.clone()).collect(),
    })
}

/// Where the page fits: always burn's CPU backend (in WebAssembly in the browser). On WebGPU the
/// dial runs on the GPU, but a fit's graph hits a CubeCL matmul kernel that Chromium's WGSL
/// validator rejects on its SwiftShader adapter (the kernel's output is then never written, and the
/// loss is wrong from the first step: the browser test's self-check caught it), while the fit's
/// graph is small (25 or 100 images) and the CPU computes it exactly.
pub fn fit_device() -> Device {
    Device::flex()
}

/// The page's fit on `support`: `ail fewshot`'s ridge readout (`--readout ridge --i-init
/// best-corner`, with the penalty grid of `ail lowshot`, 0.001-10, since the page has a regression
/// task too). The readout is solved in closed form, so a fit with `i` fixed is one pass of the
/// support images; a learned `i` starts at the trained corner whose features best predict each
/// support image from the others (the smallest leave-one-out error of the ridge readout, which the
/// support set alone decides) and descends that same error for 20 steps. A support set with a
/// class of one image (leaving it out removes the class), or an encoder without a recorded family,
/// starts from 0.5.
pub fn fit_config(frozen: &Frozen, support: &Split, fixed: Option<Vec<f32>>) -> EpisodeConfig {
    let two_per_class = match &support.targets {
        Targets::Classes { labels, classes } => (0..*classes as u32).all(|c| labels.iter().filter(|&&l| l == c).count() >= 2),
        Targets::Values { .. } => support.len() >= 3,
    };
    let start_corners = frozen.family().filter(|_| fixed.is_none() && two_per_class).map(|f| f.trained().into_iter().map(|d| d.values().to_vec()).collect());
    EpisodeConfig { readout: FewShotReadout::Ridge, steps: 20, i_lr: 0.05, i_init: 0.5, start_corners, fixed, lambdas: vec![0.001, 0.01, 0.1, 1.0, 10.0], ..EpisodeConfig::default() }
}

/// One step's report.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: usize,
    pub total: usize,
    pub loss: f64,
    /// `i` after the step.
    pub i: Vec<f32>,
    /// Whether the step moved `i`.
    pub joint: bool,
}

/// One fit step, reading its loss and gradient without blocking; `None` when the fit is done.
pub async fn step(frozen: &Frozen, fit: &mut StepFit) -> Result<Option<StepReport>, String> {
    pause().await;
    let joint = fit.is_joint();
    let Some(pending) = fit.start_step(frozen).map_err(|e| e.to_string())? else { return Ok(None) };
    let loss = read(pending.loss).await?[0] as f64;
    let grad = match pending.i_grad {
        Some(g) => Some(read(g).await?),
        None => None,
    };
    fit.finish_step(grad.as_deref());
    if !loss.is_finite() {
        return Err(format!("the loss became {loss}: the fit diverged"));
    }
    let (step, total) = fit.progress();
    Ok(Some(StepReport { step, total, loss, i: fit.i().to_vec(), joint }))
}

/// The fitted head's scores on the query set (accuracy, or R^2).
pub async fn evaluate(frozen: &Frozen, fit: &StepFit, query: &Split) -> Result<Scores, String> {
    let raw = read(fit.predict(frozen, query).map_err(|e| e.to_string())?).await?;
    Ok(fit.scores(&raw, &query.targets))
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;

//! What the page computes, without the browser: opening an export, the invariance dial (the
//! invariance measure of `ail measure` and a PCA of the features at one `i`; in [`crate::dial`],
//! re-exported here), the built-in and
//! custom tasks, and the few-shot fit of `ail fewshot --readout ridge` run step by step.
//! Everything here is ail-core / ail-augment / ail-data code; this module only arranges it so that
//! every tensor read on the dial's device is asynchronous (WebGPU cannot block the page to read a
//! buffer). The fit runs on the CPU backend ([`fit_device`]), whose reads complete at once, so the
//! ridge readout's host-side solves may read synchronously. The native tests drive the same
//! functions on the CPU backend.

use ail_core::checkpoint::load_web;
use ail_core::fewshot::{EpisodeConfig, FeaturePart, FewShotReadout, StepFit};
use ail_core::fit::{Scores, Split, Targets};
use ail_core::frozen::Frozen;
use ail_data::ImageSet;
use burn::prelude::*;
use serde::Serialize;

pub use crate::dial::{
    DIAL_TRANSFORMS, DialView, ImageViews, NEIGHBOURS, Probe, TransformViews, dial, dial_shared, nearest, transformed_features, views,
};

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
    /// Whether a second worker computed part of the step ([`step_shared`]).
    pub shared: bool,
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
    Ok(Some(StepReport { step, total, loss, i: fit.i().to_vec(), joint, shared: false }))
}

/// A second worker with the same encoder open and all of a fit's support images (the page's
/// helper worker, `FitShare` there). Each call sends its request at once and returns a future of
/// the answer, so that this worker computes its own part meanwhile.
pub trait FitHelper {
    /// The L2-normalised features of the support images `rows` at `i` (`[rows, D]` row-major),
    /// whose graph the helper keeps for [`FitHelper::backward`], and the milliseconds the helper
    /// spent computing them.
    fn forward(&self, i: &[f32], rows: std::ops::Range<usize>) -> impl Future<Output = Result<(Vec<f32>, f64), String>> + 'static;
    /// The gradient in `i` of the loss whose gradient in those features is `grad`, and the
    /// milliseconds the helper spent computing it.
    fn backward(&self, grad: Vec<f32>) -> impl Future<Output = Result<(Vec<f32>, f64), String>> + 'static;
}

/// Milliseconds on a clock that only moves forward (for timing the two parts of a shared step).
pub fn now_ms() -> f64 {
    #[cfg(target_family = "wasm")]
    {
        js_sys::Date::now()
    }
    #[cfg(not(target_family = "wasm"))]
    {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64() * 1e3
    }
}

/// Whether and where a fit's joint steps are shared with the helper: this worker takes the
/// support rows `..from` of `n`, the helper the rest.
///
/// - Where: the split starts in the middle and follows the two workers' measured speeds ([`SharedSplit::next`]): the
///   halves run at the same time, so a step lasts as long as the slower one, and each step gives
///   each worker rows in proportion to its speed in the last (a helper that shares its core with
///   the page's drawing is slower; the per-step costs that do not depend on the number of images
///   count in each worker's speed).
/// - Whether: sharing pays when each step's work on the images outweighs what does not shrink
///   with fewer images (the kernels generated from `i` and their gradient, the messages) and the
///   second worker has a core of its own. After the first joint step (a warm-up, slower than the
///   rest, not counted), [`TRIALS`] steps alone and [`TRIALS`] shared alternate; the fit goes on
///   shared only if the median shared step was faster than the median lone one
///   ([`SharedSplit::decide`]). Alternating keeps a machine that slows down or speeds up during
///   the trial from favouring either way. On this 2-core machine a 5-way fit of 25 images gained
///   nothing from sharing, a fit of 100 did (BENCHMARKS.md).
#[derive(Debug, Clone, PartialEq)]
pub struct SharedSplit {
    pub from: usize,
    pub n: usize,
    /// Joint steps seen (the first is a warm-up), and the wall milliseconds of those taken alone
    /// and shared since, while trying both.
    seen: usize,
    alone: Vec<f64>,
    shared: Vec<f64>,
    /// `Some(true)` once sharing is kept, `Some(false)` once it is dropped for this fit.
    keep: Option<bool>,
}

/// Joint steps taken each way, alternately, before [`SharedSplit`] decides.
pub const TRIALS: usize = 3;

impl SharedSplit {
    /// The middle of `n` images (`n / 2`, at least 1), sharing still to be tried.
    pub fn new(n: usize) -> Self {
        Self { from: (n / 2).max(1), n, seen: 0, alone: Vec::new(), shared: Vec::new(), keep: None }
    }

    /// [`SharedSplit::new`], sharing every joint step without trying (for tests).
    pub fn always(n: usize) -> Self {
        Self { keep: Some(true), ..Self::new(n) }
    }

    /// Whether the next joint step is shared: the warm-up step alone, then alone and shared in
    /// turn until decided.
    pub fn shares_next(&self) -> bool {
        self.n >= 2 && self.from >= 1 && self.from < self.n && self.keep.unwrap_or(self.seen > 0 && self.alone.len() > self.shared.len())
    }

    /// Counts a joint step of `ms` (wall time) taken shared or alone, and decides once both ways
    /// were tried [`TRIALS`] times.
    pub fn record(&mut self, shared: bool, ms: f64) {
        self.seen += 1;
        if self.keep.is_some() || self.seen == 1 {
            return;
        }
        if shared { &mut self.shared } else { &mut self.alone }.push(ms);
        if self.shared.len() >= TRIALS && self.alone.len() >= TRIALS {
            self.keep = Some(Self::decide(&self.alone, &self.shared));
        }
    }

    /// Whether to go on sharing: the median shared step was faster than the median lone one.
    pub fn decide(alone: &[f64], shared: &[f64]) -> bool {
        let median = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied()
        };
        matches!((median(alone), median(shared)), (Some(a), Some(s)) if s < a)
    }

    /// Whether sharing was dropped for this fit.
    pub fn dropped(&self) -> bool {
        self.keep == Some(false)
    }

    /// The split after a step in which this worker computed for `local_ms` on its `from` rows and
    /// the helper for `remote_ms` on the other `n - from` (each as measured by itself): rows in
    /// proportion to each worker's images per millisecond, each keeping at least one.
    pub fn next(&self, local_ms: f64, remote_ms: f64) -> usize {
        let (m, h) = (self.from as f64, (self.n - self.from) as f64);
        if !(local_ms > 0.0 && remote_ms > 0.0) || self.n < 2 {
            return self.from;
        }
        let (local_speed, remote_speed) = (m / local_ms, h / remote_ms);
        let from = (self.n as f64 * local_speed / (local_speed + remote_speed)).round() as usize;
        from.clamp(1, self.n - 1)
    }
}

/// [`step`], with each joint step of a ridge fit split between this worker and `helper` at
/// `split` ([`StepFit::start_shared`]): both compute the features of their rows with their graph
/// at the same time, this worker the leave-one-out error and its gradient in every image's
/// features, then both back-propagate their rows at the same time; the two gradients in `i` are
/// summed. The steps are the same as [`step`]'s (to float rounding: a native test checks it).
/// `split` then moves to balance the two workers, and decides whether sharing pays at all
/// ([`SharedSplit`]: the first steps try both ways). When the helper fails
/// or answers with the wrong size, its part is computed here and the report says the step was not
/// shared.
pub async fn step_shared<H: FitHelper>(frozen: &Frozen, fit: &mut StepFit, helper: Option<&H>, split: &mut SharedSplit) -> Result<Option<StepReport>, String> {
    let joint = helper.is_some() && fit.shareable_rows().is_some_and(|r| r.end == split.n);
    let Some(helper) = helper.filter(|_| joint && split.shares_next()) else {
        let t0 = now_ms();
        let report = step(frozen, fit).await?;
        if joint {
            split.record(false, now_ms() - t0);
        }
        return Ok(report);
    };
    let wall = now_ms();
    pause().await;
    let e = |e: ail_core::CoreError| e.to_string();
    let rows = split.from..split.n;
    let t0 = now_ms();
    let remote = helper.forward(fit.i(), rows.clone());
    let local = fit.start_shared(frozen, rows.start).map_err(e)?;
    let mut local_ms = now_ms() - t0;
    let mut remote_ms = 0.0;
    // The helper's part: its answer, or the same part computed here when it has none.
    let here = |fit: &StepFit| -> Result<FeaturePart, String> {
        let (pixels, shape) = fit.support_pixels(rows.clone()).ok_or("a shared step needs the support images")?;
        Ok(FeaturePart::new(frozen, Frozen::upload_u8(pixels, rows.len(), shape, frozen.device()), fit.i()))
    };
    let mut shared = true;
    let d = frozen.feature_dim();
    let (remote_features, mut fallback) = match remote.await {
        Ok((f, ms)) if f.len() == rows.len() * d => {
            remote_ms += ms;
            (f, None)
        }
        _ => {
            shared = false;
            let part = here(fit)?;
            (read(part.features()).await?, Some(part))
        }
    };
    let loss = fit.shared_loss(&local, &remote_features).map_err(e)?;
    let t1 = now_ms();
    let remote_grad = match fallback {
        None => Some(helper.backward(loss.remote.clone())),
        Some(_) => None,
    };
    let mut grad = read(local.backward(&loss.local).map_err(e)?).await?;
    local_ms += now_ms() - t1;
    let remote_grad = match remote_grad {
        Some(answer) => match answer.await {
            Ok((g, ms)) if g.len() == grad.len() => {
                remote_ms += ms;
                g
            }
            _ => {
                shared = false;
                fallback = Some(here(fit)?);
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    let remote_grad = match fallback {
        Some(part) => read(part.backward(&loss.remote).map_err(e)?).await?,
        None => remote_grad,
    };
    grad.iter_mut().zip(&remote_grad).for_each(|(a, b)| *a += b);
    let value = read(loss.loss).await?[0] as f64;
    fit.finish_step(Some(&grad));
    if shared {
        split.from = split.next(local_ms, remote_ms);
        split.record(true, now_ms() - wall);
    }
    if !value.is_finite() {
        return Err(format!("the loss became {value}: the fit diverged"));
    }
    let (step, total) = fit.progress();
    Ok(Some(StepReport { step, total, loss: value, i: fit.i().to_vec(), joint: true, shared }))
}

/// The fitted head's scores on the query set (accuracy, or R^2).
pub async fn evaluate(frozen: &Frozen, fit: &StepFit, query: &Split) -> Result<Scores, String> {
    let raw = read(fit.predict(frozen, query).map_err(|e| e.to_string())?).await?;
    Ok(fit.scores(&raw, &query.targets))
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;

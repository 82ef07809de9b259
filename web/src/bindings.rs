//! What `app.js` calls: wasm-bindgen types over [`crate::engine`].

use std::cell::RefCell;
use std::rc::Rc;

use ail_core::fewshot::StepFit;
use ail_core::frozen::Frozen;
use ail_data::ImageSet;
use burn::tensor::Device;
use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::{MEASURED_IMAGES, PROBE_IMAGES, engine};


#[derive(Debug, Clone, Serialize)]
struct Backend {
    /// `webgpu` or `cpu`.
    kind: &'static str,
    /// The adapter (WebGPU) or what runs (CPU).
    adapter: String,
    /// Why the CPU runs, when WebGPU was wanted.
    note: String,
    /// Whether the browser's WebGPU adapter is a software renderer (then `auto` chose the CPU, and
    /// the page offers to try WebGPU anyway).
    software: bool,
}

thread_local! {
    static BACKEND: RefCell<Option<(Device, Backend)>> = const { RefCell::new(None) };
    static BUILTIN: RefCell<Option<Rc<ImageSet>>> = const { RefCell::new(None) };
}

fn js(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

fn json(v: &impl Serialize) -> String {
    serde_json::to_string(v).expect("page values serialise")
}

fn device() -> Result<Device, JsError> {
    BACKEND.with(|b| b.borrow().as_ref().map(|(d, _)| d.clone())).ok_or_else(|| js("call start() first"))
}

fn builtin_images() -> Result<Rc<ImageSet>, JsError> {
    BUILTIN.with(|b| b.borrow().clone()).ok_or_else(|| js("the built-in images are not loaded: call load_builtin_images() first"))
}

/// Decodes the built-in images from their two fetched files (`ail_data::builtin::IMAGES_FILE`,
/// `LABELS_FILE`), once per page; errors name the file that does not parse.
#[wasm_bindgen]
pub fn load_builtin_images(images: &[u8], labels: &[u8]) -> Result<(), JsError> {
    let set = Rc::new(ail_data::builtin::fashion_mnist_from(images, labels).map_err(js)?);
    BUILTIN.with(|b| *b.borrow_mut() = Some(set));
    Ok(())
}

fn cpu_backend(note: String) -> (Device, Backend) {
    (Device::flex(), Backend { kind: "cpu", adapter: "burn flex (CPU) in WebAssembly, one thread per worker".into(), note, software: false })
}

/// Chooses the backend once per page, as the command line's `auto` does: `auto` takes WebGPU when
/// the browser offers a hardware adapter and the CPU when it offers none or only a software one (a
/// CPU rasteriser such as SwiftShader computes the same on the CPU, far slower than the CPU
/// backend); `webgpu` takes any WebGPU adapter, software included; `cpu` never asks for one.
/// Returns `{kind, adapter, note, software}` as JSON.
#[wasm_bindgen]
pub async fn start(mode: &str) -> Result<String, JsError> {
    console_error_panic_hook::set_once();
    if let Some((_, b)) = BACKEND.with(|b| b.borrow().clone()) {
        return Ok(json(&b));
    }
    let chosen = match mode {
        "cpu" => cpu_backend("the CPU was asked for".into()),
        "auto" | "webgpu" => gpu(mode == "webgpu").await,
        other => return Err(js(format!("unknown backend `{other}`: auto, webgpu or cpu"))),
    };
    let backend = chosen.1.clone();
    BACKEND.with(|b| *b.borrow_mut() = Some(chosen));
    Ok(json(&backend))
}

/// Whether an adapter is a software rasteriser: wgpu reports it as a CPU device (the browser's
/// fallback adapter), or its name says so.
fn is_software(info: &burn::tensor::wgpu::wgpu::AdapterInfo) -> bool {
    let names = format!("{} {}", info.name, info.driver).to_lowercase();
    info.device_type == burn::tensor::wgpu::wgpu::DeviceType::Cpu || ["swiftshader", "llvmpipe", "lavapipe", "software"].iter().any(|s| names.contains(s))
}

async fn gpu(any_adapter: bool) -> (Device, Backend) {
    engine::request_webgpu_subgroups();
    match Device::wgpu_options().init_with_setup_async().await {
        Ok((device, setup)) => {
            let info = setup.adapter.get_info();
            let name = if info.name.is_empty() { "unnamed adapter".to_string() } else { info.name.clone() };
            let adapter = format!("{name} ({:?}, {:?}{})", info.device_type, info.backend, if info.driver.is_empty() { String::new() } else { format!(", {}", info.driver) });
            let software = is_software(&info);
            if software && !any_adapter {
                let mut b = cpu_backend(format!(
                    "this browser offers WebGPU only through a software renderer ({adapter}), which computes on the CPU far slower than the page's own CPU backend; computing on the CPU instead"
                ));
                b.1.software = true;
                return b;
            }
            (device, Backend { kind: "webgpu", adapter, note: String::new(), software })
        }
        Err(e) => cpu_backend(format!("no WebGPU adapter ({e}); computing on the CPU instead")),
    }
}

/// An opened encoder with the dial's probe images.
#[wasm_bindgen]
pub struct Session {
    frozen: Rc<Frozen>,
    /// The same encoder on the fitting device (`engine::fit_device`): shared when that is the
    /// page's device.
    fit_frozen: Rc<Frozen>,
    probe: engine::Probe,
    /// The built-in images, as stored.
    images: Rc<ImageSet>,
    /// The RGBA views of the last [`Session::views`], until the page takes them.
    last_views: RefCell<Vec<u8>>,
}

#[derive(Serialize)]
struct Info<'a> {
    name: String,
    kind: String,
    width: f32,
    k: usize,
    entries: Vec<&'a str>,
    /// The descriptors the encoder was trained on (marks on the pad).
    trained: Vec<Vec<f32>>,
    image_size: usize,
    channels: usize,
    feature_dim: usize,
    step: u64,
    probe_images: usize,
    measured_images: usize,
    forwards_per_update: usize,
    transforms: Vec<&'static str>,
    probe_labels: Vec<u32>,
    class_names: Vec<String>,
    /// Where fits run (see `engine::fit_device`).
    fit_backend: &'static str,
}

#[wasm_bindgen]
impl Session {
    /// Opens an export (`ail export --web`); `name` labels it in messages.
    pub fn open(bytes: &[u8], name: &str) -> Result<Session, JsError> {
        let frozen = engine::open(bytes, name, &device()?).map_err(js)?;
        // The built-in images stay as they are; only those used are converted to the input shape.
        let images = builtin_images()?;
        // Probe images: spread over the whole built-in set (every class), the same every time.
        let step = images.len() / PROBE_IMAGES;
        let idx: Vec<usize> = (0..PROBE_IMAGES).map(|k| k * step + 3).collect();
        let subset = engine::to_input(images.subset(&idx), &frozen).map_err(js)?;
        let probe = engine::Probe::new(subset.pixels, subset.labels, frozen.input_shape(), MEASURED_IMAGES, &engine::DIAL_TRANSFORMS, frozen.device())
            .map_err(js)?;
        let frozen = Rc::new(frozen);
        let fit_frozen = match BACKEND.with(|b| b.borrow().as_ref().map(|(_, b)| b.kind)) {
            Some("cpu") => frozen.clone(),
            _ => Rc::new(engine::open(bytes, name, &engine::fit_device()).map_err(js)?),
        };
        Ok(Session { frozen, fit_frozen, probe, images, last_views: RefCell::new(Vec::new()) })
    }

    /// What the page shows about the encoder, as JSON.
    pub fn info(&self) -> String {
        let m = &self.frozen.meta;
        let family = self.frozen.family();
        let k = self.frozen.num_invariances();
        json(&Info {
            name: self.frozen.checkpoint.display().to_string(),
            kind: m.encoder.kind.to_string(),
            width: m.encoder.width,
            k,
            entries: family.map(|f| f.entry_names().to_vec()).unwrap_or_default(),
            trained: family.map(|f| f.trained().into_iter().map(|d| d.values().to_vec()).collect()).unwrap_or_default(),
            image_size: m.encoder.image_size,
            channels: m.encoder.in_channels,
            feature_dim: self.frozen.feature_dim(),
            step: m.step,
            probe_images: self.probe.n_stats,
            measured_images: self.probe.n_measure,
            forwards_per_update: self.probe.forwards(),
            transforms: self.probe.transforms.iter().map(|t| t.name).collect(),
            probe_labels: self.probe.labels.clone(),
            class_names: self.images.class_names.clone(),
            fit_backend: "the CPU (burn flex in WebAssembly)",
        })
    }

    /// The probe images as RGBA (`[n, S, S, 4]`), for thumbnails.
    pub fn probe_rgba(&self) -> Vec<u8> {
        rgba(&self.probe.pixels, self.probe.shape)
    }

    /// The dial at `i`: `{transforms, invariance, coords, variance, neighbours, shared}` as JSON.
    ///
    /// `helper`, when given, is called once as `helper(from, to)` and must return a Promise of
    /// the features of the transformed probe images `from..to` at `i` (a `Float32Array`, what
    /// [`Session::transformed_features`] returns in another worker that opened the same encoder):
    /// that share of the work then runs there while this worker computes the rest. `shared` says
    /// whether it did; when the helper fails, its share is computed here.
    pub async fn dial(&self, i: Vec<f32>, helper: Option<js_sys::Function>) -> Result<String, JsError> {
        let (split, count) = (self.probe.helper_split(), self.probe.transformed_count());
        let promise = helper
            .and_then(|f| f.call2(&JsValue::NULL, &JsValue::from(split as u32), &JsValue::from(count as u32)).ok())
            .and_then(|p| p.dyn_into::<js_sys::Promise>().ok());
        let remote = promise.map(|p| {
            let features = async move {
                let value = wasm_bindgen_futures::JsFuture::from(p).await.map_err(|e| format!("the helper failed: {e:?}"))?;
                let array = value.dyn_into::<js_sys::Float32Array>().map_err(|_| "the helper did not return a Float32Array".to_string())?;
                Ok(array.to_vec())
            };
            (split, features)
        });
        let view = engine::dial_shared(&self.frozen, &self.probe, &i, remote).await.map_err(js)?;
        Ok(json(&view))
    }

    /// Features (`[to - from, D]`, row-major) of the transformed probe images `from..to` at `i`:
    /// a helper worker's share of another worker's [`Session::dial`].
    pub async fn transformed_features(&self, i: Vec<f32>, from: usize, to: usize) -> Result<Vec<f32>, JsError> {
        engine::transformed_features(&self.frozen, &self.probe, &i, from..to).await.map_err(js)
    }

    /// Probe image `k` under each dial transform at `i`: `{image, transforms: [{name,
    /// similarities, mean}]}` as JSON.
    pub async fn views(&self, k: usize, i: Vec<f32>) -> Result<String, JsError> {
        let views = engine::views(&self.frozen, &self.probe, k, &i).await.map_err(js)?;
        let rgba = rgba(&views.pixels, self.probe.shape);
        self.last_views.replace(rgba);
        Ok(json(&views))
    }

    /// The views of the last [`Session::views`] as RGBA `[views, S, S, 4]`, for thumbnails.
    pub fn views_rgba(&self) -> Vec<u8> {
        self.last_views.take()
    }

    /// A built-in task: `five-way`, `position` or `tint`.
    pub fn builtin_task(&self, name: &str) -> Result<Task, JsError> {
        let task = match name {
            "five-way" => engine::five_way(&self.images, &self.frozen, 0),
            "position" => engine::position(&self.images, &self.frozen, engine::POSITION_SIZES, 0),
            "tint" => engine::tint(&self.images, &self.frozen, engine::TINT_SIZES, 0),
            other => Err(format!("unknown built-in task `{other}`: five-way, position or tint")),
        }
        .map_err(js)?;
        Ok(Task { task })
    }

    /// Decodes one of the user's image files to the encoder's input (errors name the file).
    pub fn decode(&self, name: &str, bytes: &[u8]) -> Result<Vec<u8>, JsError> {
        let [c, s, _] = self.frozen.input_shape();
        engine::check_dropped(bytes, name).map_err(js)?;
        ail_data::folder::decode_bytes(bytes, s, c).map_err(|reason| js(format!("{name}: {reason}")))
    }

    /// A task from decoded images: `classes` is JSON `[[name, count], ...]` and `pixels` the
    /// images of all classes one after another, as [`Session::decode`] returned them.
    pub fn custom_task(&self, classes: &str, pixels: &[u8]) -> Result<Task, JsError> {
        let counts: Vec<(String, usize)> = serde_json::from_str(classes).map_err(|e| js(format!("class list: {e}")))?;
        let len = self.frozen.input_shape().iter().product::<usize>();
        let total: usize = counts.iter().map(|c| c.1).sum();
        if pixels.len() != total * len {
            return Err(js(format!("{} bytes of pixels for {total} images of {len} bytes", pixels.len())));
        }
        let mut at = 0;
        let classes: Vec<(String, Vec<Vec<u8>>)> = counts
            .into_iter()
            .map(|(name, n)| {
                let images = (0..n).map(|k| pixels[(at + k) * len..(at + k + 1) * len].to_vec()).collect();
                at += n;
                (name, images)
            })
            .collect();
        Ok(Task { task: engine::custom(&classes, self.frozen.input_shape()).map_err(js)? })
    }

    /// A [`FitShare`] of a fit's `n` support images (`u8`, `[n, C, H, W]` in this encoder's input shape,
    /// as [`Fit::support_pixels`] returned them in the first worker).
    pub fn fit_share(&self, pixels: &[u8], n: usize) -> Result<FitShare, JsError> {
        let shape = self.fit_frozen.input_shape();
        if n == 0 || pixels.len() != n * shape.iter().product::<usize>() {
            return Err(js(format!("{} bytes of pixels for {n} images of shape {shape:?}", pixels.len())));
        }
        let x = Frozen::upload_u8(pixels, n, shape, self.fit_frozen.device());
        Ok(FitShare { frozen: self.fit_frozen.clone(), x, part: None })
    }

    /// A fit on `task`: learning `i` (from the corner [`engine::fit_config`] chooses) when
    /// `fixed` is absent, else with `i` fixed there.
    pub fn fit(&self, task: &Task, fixed: Option<Vec<f32>>) -> Result<Fit, JsError> {
        if let Some(i) = &fixed {
            self.fit_frozen.check_descriptor(i).map_err(js)?;
        }
        let config = engine::fit_config(&self.fit_frozen, &task.task.support, fixed);
        let fit = StepFit::new(&self.fit_frozen, &task.task.support, &config, 0).map_err(js)?;
        let split = engine::SharedSplit::new(task.task.support.len());
        Ok(Fit { frozen: self.fit_frozen.clone(), fit, query: task.task.query.clone(), split })
    }
}

/// `[n, C, H, W]` `u8` images as RGBA `[n, H, W, 4]` (grey replicated).
fn rgba(pixels: &[u8], [c, h, w]: [usize; 3]) -> Vec<u8> {
    let hw = h * w;
    pixels
        .chunks_exact(c * hw)
        .flat_map(|image| {
            (0..hw).flat_map(move |p| {
                let v = |ch: usize| image[ch.min(c - 1) * hw + p];
                [v(0), v(1), v(2), 255]
            })
        })
        .collect()
}

/// A task for the page.
#[wasm_bindgen]
pub struct Task {
    task: engine::Task,
}

#[derive(Serialize)]
struct TaskInfo<'a> {
    name: &'a str,
    regression: bool,
    labels: &'a [String],
    support: usize,
    query: usize,
    side: usize,
}

#[wasm_bindgen]
impl Task {
    /// `{name, regression, labels, support, query, side}` as JSON.
    pub fn info(&self) -> String {
        let t = &self.task;
        json(&TaskInfo { name: &t.name, regression: t.is_regression(), labels: &t.labels, support: t.support.len(), query: t.query.len(), side: t.support.shape[1] })
    }

    /// The support images as RGBA, for thumbnails.
    pub fn support_rgba(&self) -> Vec<u8> {
        rgba(&self.task.support.pixels, self.task.support.shape)
    }
}

/// A fit in progress: the page calls [`Fit::step`] until it returns `null`, yielding to the
/// browser between steps, then [`Fit::evaluate`].
#[wasm_bindgen]
pub struct Fit {
    frozen: Rc<Frozen>,
    fit: StepFit,
    query: ail_core::fit::Split,
    /// Where shared steps split the support images (moved step by step to balance the workers).
    split: engine::SharedSplit,
}

#[wasm_bindgen]
impl Fit {
    /// Where `i` started.
    pub fn start(&self) -> Vec<f32> {
        self.fit.start().to_vec()
    }

    /// One step: `{step, total, loss, i, joint, shared}` as JSON, or `null` when the fit is done.
    ///
    /// `helper`, when given, shares each joint step with a second worker that holds a [`FitShare`]
    /// of this fit's support images (`engine::step_shared`): it is called as `helper("forward", i,
    /// from)` and `helper("backward", gradient)` (`Float32Array`s, `from` the first row of the
    /// helper's part) and must return a Promise of `{values, ms}`: what that [`FitShare`]'s method
    /// of the same name returned, and the milliseconds it took.
    pub async fn step(&mut self, helper: Option<js_sys::Function>) -> Result<Option<String>, JsError> {
        let helper = helper.map(JsFitHelper);
        Ok(engine::step_shared(&self.frozen, &mut self.fit, helper.as_ref(), &mut self.split).await.map_err(js)?.map(|r| json(&r)))
    }

    /// The number of support images a second worker needs ([`Fit::support_pixels`] from 0) to
    /// share this fit's joint steps, or nothing when no step can be shared (a fixed `i`, a fit
    /// already past its joint steps).
    pub fn shared_images(&self) -> Option<u32> {
        self.fit.shareable_rows().map(|r| r.end as u32)
    }

    /// The support images of rows `from..to` as the encoder takes them (`u8`, `[n, C, H, W]`),
    /// for [`Session::fit_share`] in a second worker.
    pub fn support_pixels(&self, from: usize, to: usize) -> Result<Vec<u8>, JsError> {
        let (pixels, _) = self.fit.support_pixels(from..to).ok_or_else(|| js(format!("no support rows {from}..{to} in this fit")))?;
        Ok(pixels.to_vec())
    }

    /// Scores on the query set: `{loss, accuracy | r2, i}` as JSON.
    pub async fn evaluate(&self) -> Result<String, JsError> {
        let scores = engine::evaluate(&self.frozen, &self.fit, &self.query).await.map_err(js)?;
        #[derive(Serialize)]
        struct Out<'a> {
            #[serde(flatten)]
            scores: ail_core::fit::Scores,
            i: &'a [f32],
        }
        Ok(json(&Out { scores, i: self.fit.i() }))
    }
}

/// A helper function from JavaScript as an [`engine::FitHelper`] (see [`Fit::step`]).
struct JsFitHelper(js_sys::Function);

impl JsFitHelper {
    /// Calls `helper(op, values, from)` now; the future waits for the Promise it returned, of
    /// `{values: Float32Array, ms}`.
    fn call(&self, op: &str, values: &[f32], from: Option<usize>) -> impl Future<Output = Result<(Vec<f32>, f64), String>> + use<> {
        let from = from.map_or(JsValue::UNDEFINED, |f| JsValue::from(f as u32));
        let promise = self
            .0
            .call3(&JsValue::NULL, &JsValue::from_str(op), &js_sys::Float32Array::from(values).into(), &from)
            .map_err(|e| format!("the helper failed: {e:?}"))
            .and_then(|p| p.dyn_into::<js_sys::Promise>().map_err(|_| "the helper did not return a Promise".to_string()));
        async move {
            let answer = wasm_bindgen_futures::JsFuture::from(promise?).await.map_err(|e| format!("the helper failed: {e:?}"))?;
            let field = |name: &str| js_sys::Reflect::get(&answer, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED);
            let values = field("values").dyn_into::<js_sys::Float32Array>().map_err(|_| "the helper did not answer with {values: Float32Array, ms}".to_string())?;
            Ok((values.to_vec(), field("ms").as_f64().unwrap_or(0.0)))
        }
    }
}

impl engine::FitHelper for JsFitHelper {
    fn forward(&self, i: &[f32], rows: std::ops::Range<usize>) -> impl Future<Output = Result<(Vec<f32>, f64), String>> + 'static {
        self.call("forward", i, Some(rows.start))
    }

    fn backward(&self, grad: Vec<f32>) -> impl Future<Output = Result<(Vec<f32>, f64), String>> + 'static {
        self.call("backward", &grad, None)
    }
}

/// A second worker's share of a fit's joint steps: all of the fit's support images (from
/// [`Fit::support_pixels`]) on this worker's copy of the encoder. [`FitShare::forward`] and
/// [`FitShare::backward`] answer the first worker's `helper` calls, one after the other, each
/// with the milliseconds it computed (the first worker balances the two workers' rows with them).
#[wasm_bindgen]
pub struct FitShare {
    frozen: Rc<Frozen>,
    x: burn::tensor::Tensor<4>,
    part: Option<ail_core::fewshot::FeaturePart>,
}

#[wasm_bindgen]
impl FitShare {
    /// The L2-normalised features of the support images `from..` at `i` (`[n - from, D]`
    /// row-major); their graph is kept for [`FitShare::backward`].
    pub async fn forward(&mut self, i: Vec<f32>, from: usize) -> Result<Vec<f32>, JsError> {
        self.frozen.check_descriptor(&i).map_err(js)?;
        let n = self.x.dims()[0];
        if from >= n {
            return Err(js(format!("no support rows from {from} on: this share holds {n} images")));
        }
        let part = ail_core::fewshot::FeaturePart::new(&self.frozen, self.x.clone().slice([from..n]), &i);
        let features = engine::read(part.features()).await.map_err(js)?;
        self.part = Some(part);
        Ok(features)
    }

    /// The gradient in `i` from `grad`, the loss's gradient in the features the last
    /// [`FitShare::forward`] returned.
    pub async fn backward(&mut self, grad: Vec<f32>) -> Result<Vec<f32>, JsError> {
        let part = self.part.take().ok_or_else(|| js("backward without forward"))?;
        engine::read(part.backward(&grad).map_err(js)?).await.map_err(js)
    }
}

/// The tiny case of [`crate::fixture`] on this page's backend, compared with what the native CPU
/// backend recorded: `{backend, differences, outcome}` as JSON (no differences: they agree within
/// the tolerance: 1e-4 on the CPU, 2e-3 on WebGPU). The dial runs on the page's backend, the fit
/// on `engine::fit_device`, as in the page. The browser test calls it with the fixture's two files
/// (`tests/fixtures/tiny.ailweb` and `expected.json`, which the page itself never fetches).
#[wasm_bindgen]
pub async fn self_check(tiny: &[u8], expected: &str) -> Result<String, JsError> {
    let (device, backend) = BACKEND.with(|b| b.borrow().clone()).ok_or_else(|| js("call start() first"))?;
    let want: crate::fixture::Outcome = serde_json::from_str(expected).map_err(js)?;
    let got = crate::fixture::run(tiny, &device, &engine::fit_device()).await.map_err(js)?;
    let tolerance = if backend.kind == "webgpu" { 2e-3 } else { 1e-4 };
    let differences = crate::fixture::differences(&got, &want, tolerance);
    #[derive(Serialize)]
    struct Out<'a> {
        backend: &'a str,
        tolerance: f64,
        differences: Vec<String>,
        outcome: crate::fixture::Outcome,
    }
    Ok(json(&Out { backend: backend.kind, tolerance, differences, outcome: got }))
}

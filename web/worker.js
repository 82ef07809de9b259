// The page's computations, off the page's thread: this module worker loads the WebAssembly module
// (src/lib.rs) and the built-in assets, and answers app.js's requests. The page's thread only
// draws, so it never freezes, whatever the backend is doing.
//
// Messages in: {id, op, ...arguments}. Out: {id, result} or {id, error}; and, while a request
// runs, events {event: "progress" | "task" | "step", ...}.

import init, * as wasm from "./ail_web.js";

const state = { session: null, backend: null, stop: false, manifest: null, share: null };
const post = (message, transfer = []) => self.postMessage(message, transfer);

// On the CPU backend, a second worker (this same script, started by the first) holds its own copy
// of the module, the images and the encoder, and computes about half of each dial update's images
// (Session.dial's `helper`) and half of the support images of each step of a learned fit (Fit.step's
// `helper`): WebAssembly here runs one thread per worker, and a computer has more than one core. `version` counts the encoders opened here; the helper is used only once it has
// opened the same one (`readyVersion`). Without nested workers, or on one core, there is none.
const helper = { worker: null, seq: 0, pending: new Map(), version: 0, readyVersion: -1 };

function helperCall(op, args, transfer = []) {
  return new Promise((resolve, reject) => {
    const id = ++helper.seq;
    helper.pending.set(id, { resolve, reject });
    helper.worker.postMessage({ id, op, ...args }, transfer);
  });
}

function startHelper(module, images, labels) {
  if (typeof Worker === "undefined" || (navigator.hardwareConcurrency || 1) < 2 || state.backend.kind !== "cpu") return;
  try {
    helper.worker = new Worker(new URL(import.meta.url), { type: "module" });
  } catch {
    return;
  }
  helper.worker.onmessage = (ev) => {
    const { id, result, error } = ev.data;
    const call = helper.pending.get(id);
    if (!call) return;
    helper.pending.delete(id);
    if (error !== undefined) call.reject(new Error(error));
    else call.resolve(result);
  };
  // A helper that fails is dropped: every dial then runs here alone.
  helper.worker.onerror = () => {
    helper.worker.terminate();
    helper.worker = null;
    for (const call of helper.pending.values()) call.reject(new Error("the helper worker stopped"));
    helper.pending.clear();
  };
  helper.started = helperCall("helperStart", { module, images, labels });
}

// Gives the helper the encoder just opened here (a copy of its bytes).
function openInHelper(bytes, name) {
  const version = ++helper.version;
  if (!helper.worker) return;
  helper.started
    .then(() => helperCall("helperOpen", { bytes: bytes.slice(), name }))
    .then(() => {
      if (helper.version === version) helper.readyVersion = version;
    })
    .catch(() => {});
}

// The function Session.dial calls to hand the helper its share, or undefined when there is none.
function helperShare(i) {
  if (!helper.worker || helper.readyVersion !== helper.version) return undefined;
  return (from, to) => helperCall("features", { i, from, to });
}

// The function Fit.step calls to hand the helper its share of a learned fit's joint steps, once
// the helper holds the fit's support images; undefined when there is no helper, no step to share,
// or the helper cannot take them (the fit then runs here alone).
async function fitHelper(fit) {
  if (!helper.worker || helper.readyVersion !== helper.version) return undefined;
  const n = fit.shared_images();
  if (!n) return undefined;
  const pixels = fit.support_pixels(0, n);
  try {
    await helperCall("fitOpen", { pixels, n }, [pixels.buffer]);
  } catch {
    return undefined;
  }
  return (op, values, from) => helperCall(op === "forward" ? "fitForward" : "fitBackward", { values, from }, [values.buffer]);
}

// The file names and sizes of what the page fetches (written by scripts/web.sh build); each file is
// fetched with its content hash in the query, so a browser may cache it safely.
async function manifest() {
  if (!state.manifest) {
    const r = await fetch("assets.json", { cache: "no-cache" });
    if (!r.ok) throw new Error(`assets.json: HTTP ${r.status}; the page was not built with scripts/web.sh build`);
    state.manifest = await r.json();
  }
  return state.manifest;
}

// Fetches the manifest's files one after another, reporting progress over all of them; returns
// their bytes by name.
async function fetchAll(names, what) {
  const m = await manifest();
  const total = names.reduce((n, name) => n + m.files[name].bytes, 0);
  let loaded = 0;
  const out = {};
  for (const name of names) {
    const entry = m.files[name];
    const r = await fetch(`${entry.path}?v=${entry.hash}`);
    if (!r.ok) throw new Error(`${entry.path}: HTTP ${r.status}`);
    const bytes = new Uint8Array(entry.bytes);
    let at = 0;
    const reader = r.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (at + value.length > bytes.length) throw new Error(`${entry.path}: larger than the ${entry.bytes} bytes assets.json says; rebuild the page`);
      bytes.set(value, at);
      at += value.length;
      loaded += value.length;
      post({ event: "progress", what, loaded, total });
    }
    if (at !== bytes.length) throw new Error(`${entry.path}: ${at} bytes, assets.json says ${entry.bytes}; rebuild the page`);
    out[name] = bytes;
  }
  return out;
}

function opened(session) {
  if (state.session) state.session.free();
  state.session = session;
  const rgba = session.probe_rgba();
  return { result: { info: JSON.parse(session.info()), probeRgba: rgba }, transfer: [rgba.buffer] };
}

const ops = {
  // Loads the module and the built-in encoder and images; chooses the backend (`mode`: auto,
  // webgpu or cpu).
  async start({ mode }) {
    const files = await fetchAll(["module"], "the program");
    // Compiled once: the helper worker instantiates the same compiled module.
    const module = await WebAssembly.compile(files.module);
    await init({ module_or_path: module });
    state.backend = JSON.parse(await wasm.start(mode));
    const assets = await fetchAll(["encoder", "images", "labels"], "the encoder and the images");
    wasm.load_builtin_images(assets.images, assets.labels);
    startHelper(module, assets.images, assets.labels);
    const name = "the built-in encoder";
    const { result, transfer } = opened(wasm.Session.open(assets.encoder, name));
    openInHelper(assets.encoder, name);
    return { result: { backend: state.backend, helper: Boolean(helper.worker), ...result }, transfer };
  },

  async open({ bytes, name }) {
    const done = opened(wasm.Session.open(bytes, name));
    openInHelper(bytes, name);
    return done;
  },

  async dial({ i }) {
    return { result: JSON.parse(await state.session.dial(Float32Array.from(i), helperShare(i))) };
  },

  // The helper's side (requests from the first worker, never from the page).
  async helperStart({ module, images, labels }) {
    await init({ module_or_path: module });
    state.backend = JSON.parse(await wasm.start("cpu"));
    wasm.load_builtin_images(images, labels);
    return { result: null };
  },

  async helperOpen({ bytes, name }) {
    if (state.session) state.session.free();
    state.session = wasm.Session.open(bytes, name);
    return { result: null };
  },

  // A learned fit's support images (Session.fit_share), then its share of each joint step: the
  // features of the images from row `from` on at i, and the gradient in i from the gradient in
  // those features.
  async fitOpen({ pixels, n }) {
    if (state.share) state.share.free();
    state.share = state.session.fit_share(pixels, n);
    return { result: null };
  },

  // Each answers {values, ms}: the milliseconds computed, by which the first worker balances the
  // two workers' images.
  async fitForward({ values, from }) {
    if (!state.share) throw new Error("no fit share is open");
    const t0 = performance.now();
    const features = await state.share.forward(values, from);
    return { result: { values: features, ms: performance.now() - t0 }, transfer: [features.buffer] };
  },

  async fitBackward({ values }) {
    if (!state.share) throw new Error("no fit share is open");
    const t0 = performance.now();
    const grad = await state.share.backward(values);
    return { result: { values: grad, ms: performance.now() - t0 }, transfer: [grad.buffer] };
  },

  async fitClose() {
    if (state.share) state.share.free();
    state.share = null;
    return { result: null };
  },

  async features({ i, from, to }) {
    const features = await state.session.transformed_features(Float32Array.from(i), from, to);
    return { result: features, transfer: [features.buffer] };
  },

  // Probe image k under every dial transform at i, with each view's similarity.
  async views({ k, i }) {
    const views = JSON.parse(await state.session.views(k, Float32Array.from(i)));
    const rgba = state.session.views_rgba();
    return { result: { ...views, rgba }, transfer: [rgba.buffer] };
  },

  async decode({ name, bytes }) {
    const pixels = state.session.decode(name, bytes);
    return { result: pixels, transfer: [pixels.buffer] };
  },

  // Fits a linear head on a task's support images, learning i, then with i fixed at each of
  // `corners`; scores each on the query images. Reports each step; `stop` ends it early.
  async fit({ task: which, classes, pixels, corners }) {
    state.stop = false;
    const task = which === "custom" ? state.session.custom_task(JSON.stringify(classes), pixels) : state.session.builtin_task(which);
    try {
      const tinfo = JSON.parse(task.info());
      const support = task.support_rgba();
      post({ event: "task", info: tinfo, supportRgba: support }, [support.buffer]);
      const runs = [{ run: "learned", fixed: null }, ...corners.map((c) => ({ run: "corner", fixed: c }))];
      const results = [];
      for (const [k, run] of runs.entries()) {
        const started = performance.now();
        const fit = state.session.fit(task, run.fixed ? Float32Array.from(run.fixed) : undefined);
        // A learned fit's joint steps are split with the helper worker when there is one.
        const share = await fitHelper(fit);
        let sharedSteps = 0;
        try {
          for (;;) {
            if (state.stop) throw new Error("stopped");
            const r = await fit.step(share);
            if (r === undefined || r === null) break;
            const report = JSON.parse(r);
            if (report.shared) sharedSteps += 1;
            post({ event: "step", index: k, report });
          }
          results.push({ ...run, start: Array.from(fit.start()), scores: JSON.parse(await fit.evaluate()), ms: performance.now() - started, sharedSteps });
        } finally {
          // A finished, stopped or failed fit's memory in WebAssembly is given back, here and in
          // the helper.
          fit.free();
          if (share) helperCall("fitClose", {}).catch(() => {});
        }
      }
      return { result: { info: tinfo, results } };
    } finally {
      task.free();
    }
  },

  async stop() {
    state.stop = true;
    return { result: null };
  },

  // The browser test: the tiny fixed case on this backend against the native CPU backend's
  // numbers (files served by the test, never part of the page).
  async selfCheck({ tinyUrl, expectedUrl }) {
    const tiny = new Uint8Array(await (await fetch(tinyUrl)).arrayBuffer());
    const expected = await (await fetch(expectedUrl)).text();
    return { result: JSON.parse(await wasm.self_check(tiny, expected)) };
  },
};

// The helper's requests run one after another: an encoder opened while a share of a dial is being
// computed waits for it, instead of freeing the session under it.
const HELPER_OPS = ["helperStart", "helperOpen", "features", "fitOpen", "fitForward", "fitBackward", "fitClose"];
let helperQueue = Promise.resolve();

self.onmessage = (ev) => {
  if (HELPER_OPS.includes(ev.data.op)) helperQueue = helperQueue.then(() => handle(ev));
  else handle(ev);
};

async function handle(ev) {
  const { id, op, ...args } = ev.data;
  try {
    if (!ops[op]) throw new Error(`unknown request ${op}`);
    if (!["start", "stop", "selfCheck", "helperStart", "helperOpen"].includes(op) && !state.session) throw new Error("the encoder is not open yet");
    const { result, transfer = [] } = await ops[op](args);
    post({ id, result }, transfer);
  } catch (e) {
    post({ id, error: e && e.message ? e.message : String(e) });
  }
}

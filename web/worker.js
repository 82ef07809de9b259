// The page's computations, off the page's thread: this module worker loads the WebAssembly module
// (src/lib.rs) and the built-in assets, and answers app.js's requests. The page's thread only
// draws, so it never freezes, whatever the backend is doing.
//
// Messages in: {id, op, ...arguments}. Out: {id, result} or {id, error}; and, while a request
// runs, events {event: "progress" | "task" | "step", ...}.

import init, * as wasm from "./ail_web.js";

const state = { session: null, backend: null, stop: false, manifest: null };
const post = (message, transfer = []) => self.postMessage(message, transfer);

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
    await init({ module_or_path: files.module });
    state.backend = JSON.parse(await wasm.start(mode));
    const assets = await fetchAll(["encoder", "images", "labels"], "the encoder and the images");
    wasm.load_builtin_images(assets.images, assets.labels);
    const { result, transfer } = opened(wasm.Session.open(assets.encoder, "the built-in encoder"));
    return { result: { backend: state.backend, ...result }, transfer };
  },

  async open({ bytes, name }) {
    return opened(wasm.Session.open(bytes, name));
  },

  async dial({ i }) {
    return { result: JSON.parse(await state.session.dial(Float32Array.from(i))) };
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
        try {
          for (;;) {
            if (state.stop) throw new Error("stopped");
            const r = await fit.step();
            if (r === undefined || r === null) break;
            post({ event: "step", index: k, report: JSON.parse(r) });
          }
          results.push({ ...run, start: Array.from(fit.start()), scores: JSON.parse(await fit.evaluate()), ms: performance.now() - started });
        } finally {
          // A finished, stopped or failed fit's memory in WebAssembly is given back.
          fit.free();
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

self.onmessage = async (ev) => {
  const { id, op, ...args } = ev.data;
  try {
    if (!ops[op]) throw new Error(`unknown request ${op}`);
    if (op !== "start" && op !== "stop" && op !== "selfCheck" && !state.session) throw new Error("the encoder is not open yet");
    const { result, transfer = [] } = await ops[op](args);
    post({ id, result }, transfer);
  } catch (e) {
    post({ id, error: e && e.message ? e.message : String(e) });
  }
};

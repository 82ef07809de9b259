// The page: drawing and input only. Every number comes from the WebAssembly module (src/lib.rs),
// built from the same crates as the `ail` command line, which runs in a Web Worker (worker.js):
// this thread never computes, so the page stays responsive whatever the backend does.
//
// Query flags: ?cpu forces the CPU backend (what a browser without WebGPU gets); ?webgpu takes any
// WebGPU adapter, a software one included (by default a software adapter gets the CPU backend).

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const timings = (window.ailTimings = { interactive: null, dial: [], fits: [], longTasks: [] });
const state = { info: null, i: [], busy: false, pending: null, path: [], thumbs: [], classes: [], view: null, selected: 0, opened: false, viewsBusy: false, viewsPending: false };

// Stalls of this thread, for the page's own check that it never freezes: a timer due every 25 ms
// that fires more than 50 ms after the last one found the thread busy (or starved) in between.
// (Chromium's Long Tasks API reports nothing in headless mode, so the page measures itself.)
{
  let last = performance.now();
  setInterval(() => {
    const now = performance.now();
    if (now - last > 50) timings.longTasks.push({ start: last, ms: now - last });
    last = now;
  }, 25);
}

// ---------------------------------------------------------------------------------------------
// The worker
// ---------------------------------------------------------------------------------------------

const worker = new Worker("worker.js", { type: "module" });
const waiting = new Map();
const listeners = { progress: [], task: [], step: [] };
let nextId = 1;
worker.onmessage = (ev) => {
  const m = ev.data;
  if (m.event) {
    for (const f of listeners[m.event]) f(m);
    return;
  }
  const w = waiting.get(m.id);
  waiting.delete(m.id);
  if (m.error !== undefined) w.reject(new Error(m.error));
  else w.resolve(m.result);
};
worker.onerror = (ev) => message("The page's worker failed: " + (ev.message || "it could not load (does this browser run module workers?)"));

// Sends a request to the worker; resolves with its result.
function call(op, args = {}, transfer = []) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    waiting.set(id, { resolve, reject });
    worker.postMessage({ id, op, ...args }, transfer);
  });
}
// The browser test's hook: the tiny fixed case against the native CPU backend's numbers.
window.ailSelfCheck = (tinyUrl, expectedUrl) => call("selfCheck", { tinyUrl, expectedUrl });

function svg(tag, attrs = {}, parent = null) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

function message(text, kind = "error") {
  const m = $("message");
  m.hidden = !text;
  m.textContent = text || "";
  m.className = kind;
}

function errorText(e) {
  return e && e.message ? e.message : String(e);
}

const fmt = (v, d = 3) => (Number.isFinite(v) ? v.toFixed(d) : String(v));
const iLabel = (i) => "[" + i.map((v) => v.toFixed(2)).join(", ") + "]";
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

// Thumbnails: RGBA [n, S, S, 4] -> data URLs.
function thumbnails(rgba, side) {
  const n = rgba.length / (side * side * 4);
  const canvas = document.createElement("canvas");
  canvas.width = side;
  canvas.height = side;
  const ctx = canvas.getContext("2d");
  const urls = [];
  for (let k = 0; k < n; k++) {
    const img = new ImageData(new Uint8ClampedArray(rgba.buffer, rgba.byteOffset + k * side * side * 4, side * side * 4), side, side);
    ctx.putImageData(img, 0, 0);
    urls.push(canvas.toDataURL());
  }
  return urls;
}

// ---------------------------------------------------------------------------------------------
// Start-up and opening encoders
// ---------------------------------------------------------------------------------------------

function showProgress({ what, loaded, total }) {
  const p = $("load-progress");
  p.hidden = loaded >= total;
  p.max = total;
  p.value = loaded;
  $("load-text").textContent = loaded >= total ? "" : `Fetching ${what}: ${(loaded / 1e6).toFixed(1)} of ${(total / 1e6).toFixed(1)} MB`;
}

async function main() {
  const params = new URLSearchParams(location.search);
  const mode = params.has("cpu") ? "cpu" : params.has("webgpu") ? "webgpu" : "auto";
  listeners.progress.push(showProgress);
  wireInputs();
  try {
    const gpu = "gpu" in navigator;
    const started = await call("start", { mode: gpu || mode === "cpu" ? mode : "cpu" });
    const backend = started.backend;
    if (!gpu && mode !== "cpu") backend.note = "this browser has no WebGPU; computing on the CPU in WebAssembly";
    console.log(`ail: backend ready after ${performance.now().toFixed(0)} ms`);
    const b = $("backend");
    b.textContent = (backend.kind === "webgpu" ? "WebGPU: " : "CPU (WebAssembly): ") + backend.adapter + (started.helper ? "; each dial update split between two workers, and a learned fit's steps where that is faster" : "");
    b.className = "badge " + backend.kind;
    b.dataset.kind = backend.kind;
    b.dataset.helper = started.helper ? "1" : "0";
    b.title = started.helper
      ? "Where the page computes: in a background worker; each dial update splits its images with a second worker, on another core, and so does each step of a learned fit where the first steps show that it is faster."
      : "Where the page computes: every dial update and fit runs there, in a background worker.";
    if (backend.note) message(backend.note, "info");
    // A software adapter got the CPU: offer to try WebGPU anyway.
    $("try-webgpu").hidden = !(backend.software && backend.kind === "cpu");
    showOpened(started);
    await afterOpen();
  } catch (e) {
    message("The page could not start: " + errorText(e));
  }
}

function showOpened({ info, probeRgba }) {
  state.info = info;
  state.opened = true;
  $("model").textContent = `${info.name}: ${info.kind} width ${info.width}, trained for ${info.step} steps on ${info.image_size}×${info.image_size} images, ${info.feature_dim} features per image`;
  $("measured-count").textContent = info.measured_images;
  $("probe-count").textContent = info.probe_images;
  state.thumbs = thumbnails(probeRgba, info.image_size);
  $("fit-status").textContent = `fits run on ${info.fit_backend}`;
  state.i = info.trained.length ? info.trained[info.trained.length - 1].slice() : new Array(info.k).fill(1);
  state.path = [];
  state.selected = 0;
  buildDialControls();
  drawLegend();
}

async function afterOpen() {
  console.log(`ail: encoder opened after ${performance.now().toFixed(0)} ms`);
  await requestDial(state.i);
  if (timings.interactive === null) {
    timings.interactive = performance.now();
    document.body.dataset.ready = "1";
  }
  showTimings();
}

// ---------------------------------------------------------------------------------------------
// The dial
// ---------------------------------------------------------------------------------------------

const PAD = 260, MARGIN = 30;
const padXY = (i) => [MARGIN + i[0] * PAD, MARGIN + (1 - i[1]) * PAD];

function buildDialControls() {
  const info = state.info;
  const box = $("pad-box");
  box.innerHTML = "";
  $("sliders").innerHTML = "";
  if (info.k === 2) {
    const pad = svg("svg", { id: "pad", width: PAD + 2 * MARGIN, height: PAD + 2 * MARGIN }, box);
    svg("rect", { x: MARGIN, y: MARGIN, width: PAD, height: PAD, fill: "#fff", stroke: "#bbb" }, pad);
    svg("text", { x: MARGIN + PAD / 2, y: PAD + 2 * MARGIN - 6, "text-anchor": "middle" }, pad).textContent = `${info.entries[0]} →`;
    const yl = svg("text", { x: 12, y: MARGIN + PAD / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${MARGIN + PAD / 2})` }, pad);
    yl.textContent = `${info.entries[1]} →`;
    for (const t of info.trained) {
      const [x, y] = padXY(t);
      svg("rect", { x: x - 6, y: y - 6, width: 12, height: 12, fill: "none", stroke: "#c33", "stroke-width": 2, class: "trained" }, pad);
      svg("text", { x: x + (t[0] > 0.5 ? -10 : 10), y: y + (t[1] > 0.5 ? 18 : -10), "text-anchor": t[0] > 0.5 ? "end" : "start" }, pad).textContent = iLabel(t);
    }
    svg("polyline", { id: "fit-path", fill: "none", stroke: "#2a7", "stroke-width": 2, points: "" }, pad);
    svg("circle", { id: "handle", r: 8, fill: "#246", "fill-opacity": 0.8 }, pad);
    const move = (ev) => {
      const r = pad.getBoundingClientRect();
      const x = Math.min(1, Math.max(0, (ev.clientX - r.left - MARGIN) / PAD));
      const y = Math.min(1, Math.max(0, 1 - (ev.clientY - r.top - MARGIN) / PAD));
      requestDial([x, y]);
    };
    pad.addEventListener("pointerdown", (ev) => { pad.setPointerCapture(ev.pointerId); move(ev); });
    pad.addEventListener("pointermove", (ev) => { if (ev.buttons) move(ev); });
  } else {
    info.entries.forEach((name, k) => {
      const label = document.createElement("label");
      label.textContent = name + " ";
      const input = document.createElement("input");
      Object.assign(input, { type: "range", min: 0, max: 1, step: 0.01, value: state.i[k] });
      input.dataset.k = k;
      input.addEventListener("input", () => {
        const i = state.i.slice();
        i[k] = Number(input.value);
        requestDial(i);
      });
      label.appendChild(input);
      $("sliders").appendChild(label);
    });
  }
  drawHandle();
}

function drawHandle() {
  $("i-value").textContent = iLabel(state.i);
  const h = $("handle");
  if (h) {
    const [x, y] = padXY(state.i);
    h.setAttribute("cx", x);
    h.setAttribute("cy", y);
  }
  document.querySelectorAll("#sliders input").forEach((s) => (s.value = state.i[Number(s.dataset.k)]));
}

function drawPath() {
  const p = $("fit-path");
  if (p) p.setAttribute("points", state.path.map((i) => padXY(i).join(",")).join(" "));
}

// Coalesces dial requests: while one update runs, only the latest request waits.
async function requestDial(i) {
  state.i = i.slice();
  drawHandle();
  if (state.busy) {
    state.pending = i.slice();
    return;
  }
  state.busy = true;
  let next = i.slice();
  while (next) {
    const t0 = performance.now();
    try {
      const view = await call("dial", { i: next });
      const ms = performance.now() - t0;
      timings.dial.push(ms);
      console.log(`ail: dial at ${iLabel(next)} in ${ms.toFixed(0)} ms${view.shared ? " (shared with the second worker)" : ""}`);
      document.body.dataset.dialShared = view.shared ? "1" : "0";
      $("dial-time").textContent = `(updated in ${ms.toFixed(0)} ms)`;
      state.view = view;
      drawRadar(view, next);
      drawEmbedding(view);
      drawNeighbours(next);
      requestViews();
      document.body.dataset.dialI = iLabel(next);
    } catch (e) {
      message("The dial could not update: " + errorText(e));
    }
    next = state.pending;
    state.pending = null;
  }
  state.busy = false;
  showTimings();
}

function drawRadar(view, i) {
  const box = $("radar");
  box.innerHTML = "";
  const R = 120, C = 160;
  const s = svg("svg", { width: 2 * C, height: 2 * C - 10 }, box);
  const n = view.transforms.length;
  const at = (k, r) => [C + r * Math.sin((2 * Math.PI * k) / n), C - 10 - r * Math.cos((2 * Math.PI * k) / n)];
  for (const level of [0.25, 0.5, 0.75, 1]) {
    svg("polygon", { points: view.transforms.map((_, k) => at(k, R * level).join(",")).join(" "), fill: "none", stroke: "#ddd" }, s);
  }
  view.transforms.forEach((name, k) => {
    const [x, y] = at(k, R);
    svg("line", { x1: C, y1: C - 10, x2: x, y2: y, stroke: "#ddd" }, s);
    const [tx, ty] = at(k, R + 16);
    svg("text", { x: tx, y: ty + 4, "text-anchor": "middle" }, s).textContent = name;
  });
  const clamp = (v) => Math.max(0, Math.min(1, v));
  svg("polygon", { id: "radar-shape", points: view.invariance.map((v, k) => at(k, R * clamp(v)).join(",")).join(" "), fill: "#246", "fill-opacity": 0.25, stroke: "#246", "stroke-width": 2 }, s);
  const table = $("radar-values");
  table.innerHTML = "";
  view.transforms.forEach((name, k) => {
    const row = table.insertRow();
    row.insertCell().textContent = name;
    const cell = row.insertCell();
    cell.textContent = fmt(view.invariance[k]);
    cell.dataset.transform = name;
  });
  table.dataset.i = iLabel(i);
}

function drawEmbedding(view) {
  const box = $("embedding");
  box.innerHTML = "";
  const W = 460, H = 360, T = 22;
  const s = svg("svg", { id: "embedding-svg", width: W, height: H }, box);
  const xs = [], ys = [];
  for (let k = 0; k < view.coords.length / 2; k++) { xs.push(view.coords[2 * k]); ys.push(view.coords[2 * k + 1]); }
  const span = (v) => { const lo = Math.min(...v), hi = Math.max(...v); return [lo, hi - lo || 1]; };
  const [x0, dx] = span(xs), [y0, dy] = span(ys);
  const labels = state.info.probe_labels;
  const near = new Set(neighboursOf(state.selected));
  xs.forEach((x, k) => {
    const px = T + ((x - x0) / dx) * (W - 3 * T), py = T + (1 - (ys[k] - y0) / dy) * (H - 3 * T);
    const mark = k === state.selected ? "#000" : near.has(k) ? "#555" : PALETTE[labels[k] % 10];
    svg("rect", { x: px - 2, y: py - 2, width: T + 4, height: T + 4, fill: PALETTE[labels[k] % 10], stroke: mark, "stroke-width": k === state.selected || near.has(k) ? 2 : 0 }, s);
    const img = svg("image", { x: px, y: py, width: T, height: T, href: state.thumbs[k], class: "probe" }, s);
    img.dataset.k = k;
    img.addEventListener("click", () => { state.selected = k; drawEmbedding(state.view); drawNeighbours(state.i); requestViews(); });
    svg("title", {}, img).textContent = `${state.info.class_names[labels[k]]} (click: its nearest neighbours)`;
  });
  svg("text", { x: 4, y: H - 4 }, s).textContent = `horizontal: direction of largest spread (${fmt(100 * view.variance[0] / (view.variance.reduce((a, b) => a + b, 0) || 1), 0)}% of the two); vertical: the next`;
}

// The selected image's nearest neighbours at the current i (from the last dial update).
function neighboursOf(k) {
  const v = state.view;
  if (!v || !v.neighbours.length) return [];
  const per = v.neighbours.length / (v.coords.length / 2);
  return v.neighbours.slice(k * per, (k + 1) * per);
}

function drawNeighbours(i) {
  const box = $("neighbours");
  const k = state.selected;
  const near = neighboursOf(k);
  const names = state.info.class_names, labels = state.info.probe_labels;
  box.innerHTML = "";
  const figure = (n, caption) => {
    const f = document.createElement("figure");
    const img = document.createElement("img");
    img.src = state.thumbs[n];
    const c = document.createElement("figcaption");
    c.textContent = caption;
    f.append(img, c);
    return f;
  };
  box.append(figure(k, `this ${names[labels[k]].toLowerCase()}`));
  const arrow = document.createElement("span");
  arrow.className = "arrow";
  arrow.textContent = "→";
  box.append(arrow);
  near.forEach((n, r) => box.append(figure(n, `${r + 1}. ${names[labels[n]].toLowerCase()}`)));
  box.dataset.of = k;
  box.dataset.list = near.join(",");
  box.dataset.i = iLabel(i);
  const same = near.filter((n) => labels[n] === labels[k]).length;
  $("neighbours-note").textContent = `At i = ${iLabel(i)}, ${same} of its ${near.length} nearest images (by their features) are of the same class.`;
}

// The selected image's views under each transform at the current i; one request at a time, the
// latest waiting.
async function requestViews() {
  if (state.viewsBusy) {
    state.viewsPending = true;
    return;
  }
  state.viewsBusy = true;
  do {
    state.viewsPending = false;
    const k = state.selected, i = state.i.slice();
    try {
      drawViews(await call("views", { k, i }), i);
    } catch (e) {
      message("The views could not update: " + errorText(e));
    }
  } while (state.viewsPending);
  state.viewsBusy = false;
}

function drawViews(v, i) {
  const side = state.info.image_size;
  const urls = thumbnails(v.rgba, side);
  const box = $("views");
  box.innerHTML = "";
  let at = 0;
  for (const t of v.transforms) {
    const row = document.createElement("div");
    row.className = "views-row";
    row.dataset.transform = t.name;
    row.dataset.mean = t.mean;
    const label = document.createElement("span");
    label.className = "views-name";
    label.textContent = `${t.name}: ${fmt(t.mean, 2)}`;
    row.append(label);
    // At most four of the transform's settings, spread over them.
    const n = t.similarities.length, shown = Math.min(4, n);
    for (let s = 0; s < shown; s++) {
      const j = Math.round((s * (n - 1)) / Math.max(1, shown - 1));
      const f = document.createElement("figure");
      const img = document.createElement("img");
      img.src = urls[at + j];
      const c = document.createElement("figcaption");
      c.textContent = fmt(t.similarities[j], 2);
      f.append(img, c);
      row.append(f);
    }
    at += n;
    box.append(row);
  }
  box.dataset.image = v.image;
  box.dataset.i = iLabel(i);
  const names = state.info.class_names, labels = state.info.probe_labels;
  $("views-note").textContent = `This ${names[labels[v.image]].toLowerCase()} changed in each way, at i = ${iLabel(i)}. Under each view: how similar its features stay to the unchanged image's (1: the encoder does not notice the change). The number after each change's name is the mean over all its settings.`;
}

function drawLegend() {
  const box = $("legend");
  box.innerHTML = "";
  const present = [...new Set(state.info.probe_labels)].sort((a, b) => a - b);
  for (const c of present) {
    const item = document.createElement("span");
    item.className = "legend-item";
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = PALETTE[c % 10];
    item.append(sw, document.createTextNode(state.info.class_names[c]));
    box.append(item);
  }
}

// ---------------------------------------------------------------------------------------------
// Fitting
// ---------------------------------------------------------------------------------------------

function wireInputs() {
  $("open").addEventListener("change", async (ev) => {
    const file = ev.target.files[0];
    if (!file) return;
    message("");
    try {
      const bytes = new Uint8Array(await file.arrayBuffer());
      showOpened(await call("open", { bytes, name: file.name }, [bytes.buffer]));
      await afterOpen();
    } catch (e) {
      message(errorText(e));
    }
    ev.target.value = "";
  });
  $("task").addEventListener("change", () => {
    $("custom").hidden = $("task").value !== "custom";
    $("task-note").textContent = TASK_NOTES[$("task").value] || "";
    if ($("task").value === "custom" && state.classes.length === 0) { addClass(); addClass(); }
  });
  $("task-note").textContent = TASK_NOTES[$("task").value] || "";
  $("add-class").addEventListener("click", addClass);
  $("fit").addEventListener("click", runFit);
  $("stop").addEventListener("click", () => call("stop"));
  $("try-webgpu").addEventListener("click", () => { location.search = "?webgpu"; });
}

// What each built-in task asks, and which invariance should win.
const TASK_NOTES = {
  "five-way": "Which kind of garment is it? A shirt stays a shirt when it is moved, flipped or made brighter, so invariance to both kinds of change should help: expect the corner [1, 1] to do best.",
  position: "Where on the canvas is the item? The answer is the position itself, so one would expect an encoder that ignores where things are (spatial invariance) to throw the answer away, and the corner without it, [0, 1], to do best. Measured with the built-in encoder it is the other way round: [1, 0] does best, on this draw and on average over 18 draws of this task. Ignoring how a whole picture is moved and cropped did not erase where a small item sits on an empty canvas. The learned i follows what the support images show, not the expectation.",
  tint: "Each garment was tinted reddish, greenish or bluish: which tint? Only colour tells, so an encoder that ignores how things look (appearance invariance) throws the answer away: expect the corner without it, [1, 0], to do best, and the learned i to start there or move towards it (down on the pad).",
  custom: "Your own classes: which invariance helps depends on what tells them apart (colour? shape? position?). The fit finds out.",
};

function addClass() {
  const k = state.classes.length;
  const cls = { name: `class ${k + 1}`, images: [], thumbs: [] };
  state.classes.push(cls);
  const box = document.createElement("div");
  box.className = "classbox";
  box.dataset.k = k;
  const name = document.createElement("input");
  Object.assign(name, { type: "text", value: cls.name });
  name.addEventListener("input", () => (cls.name = name.value));
  const pick = document.createElement("input");
  Object.assign(pick, { type: "file", multiple: true, accept: "image/png,image/jpeg" });
  const shown = document.createElement("div");
  const add = async (files) => {
    for (const file of files) {
      try {
        const bytes = new Uint8Array(await file.arrayBuffer());
        if (!state.opened) throw new Error("wait until the encoder is open");
        cls.images.push(await call("decode", { name: file.name, bytes }, [bytes.buffer]));
        const img = document.createElement("img");
        img.src = URL.createObjectURL(file);
        img.title = file.name;
        shown.appendChild(img);
      } catch (e) {
        message(errorText(e));
      }
    }
  };
  pick.addEventListener("change", () => add(pick.files));
  const snap = document.createElement("button");
  snap.className = "snap";
  snap.textContent = "Take a photo";
  snap.title = "A picture from your camera, added to this class (the page asks for the camera once)";
  snap.addEventListener("click", async () => {
    try {
      add([await cameraPhoto(`${cls.name} photo ${cls.images.length + 1}.png`)]);
    } catch (e) {
      message(errorText(e));
    }
  });
  box.addEventListener("dragover", (ev) => { ev.preventDefault(); box.classList.add("over"); });
  box.addEventListener("dragleave", () => box.classList.remove("over"));
  box.addEventListener("drop", (ev) => { ev.preventDefault(); box.classList.remove("over"); add(ev.dataTransfer.files); });
  box.append(name, document.createElement("br"), pick, snap, shown);
  $("classes").appendChild(box);
}

// One frame of the camera as a PNG file (the camera is asked for once and then kept open, shown
// above the class boxes). A refusal, or no camera, gets a message saying what to do instead.
async function cameraPhoto(name) {
  const video = $("camera");
  if (!video.srcObject) {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("This browser gives the page no camera (it needs https or localhost): drop image files into the boxes instead.");
    }
    try {
      video.srcObject = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: false });
    } catch (e) {
      const why = e && e.name === "NotAllowedError" ? "the camera was refused" : e && e.name === "NotFoundError" ? "no camera was found" : `the camera could not start (${errorText(e)})`;
      throw new Error(`No photo: ${why}. Allow the camera in the browser's site settings and try again, or drop image files into the boxes instead.`);
    }
    video.hidden = false;
    await video.play();
  }
  if (!video.videoWidth) await new Promise((r) => video.addEventListener("loadeddata", r, { once: true }));
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  const blob = await new Promise((r) => canvas.toBlob(r, "image/png"));
  return new File([blob], name, { type: "image/png" });
}

// The fit request for the chosen task.
function taskRequest() {
  const which = $("task").value;
  if (which !== "custom") return { task: which };
  const classes = state.classes.map((c) => [c.name, c.images.length]);
  const total = state.classes.reduce((n, c) => n + c.images.reduce((m, im) => m + im.length, 0), 0);
  const pixels = new Uint8Array(total);
  let at = 0;
  for (const c of state.classes) for (const im of c.images) { pixels.set(im, at); at += im.length; }
  return { task: "custom", classes, pixels };
}

// The fixed-i readouts fitted beside the learned one: every trained descriptor when there are
// few, else all ones and each entry alone.
function corners() {
  const t = state.info.trained, k = state.info.k;
  if (t.length && t.length <= 4) return t;
  return [new Array(k).fill(1), ...Array.from({ length: k }, (_, e) => Array.from({ length: k }, (_, j) => (j === e ? 1 : 0)))];
}

function drawLoss(curves) {
  const box = $("loss");
  box.innerHTML = "";
  // The chart, then a legend line per curve below it (labels inside the chart would cover the lines).
  const W = 400, C = 200, B = 24, L = 40, H = C + 14 * curves.length + 6;
  const s = svg("svg", { width: W, height: H }, box);
  const all = curves.flatMap((c) => c.values);
  if (!all.length) return;
  const hi = Math.max(...all), lo = Math.min(...all), steps = Math.max(...curves.map((c) => c.total));
  svg("line", { x1: L, y1: C - B, x2: W - 5, y2: C - B, stroke: "#999" }, s);
  svg("line", { x1: L, y1: 5, x2: L, y2: C - B, stroke: "#999" }, s);
  svg("text", { x: L - 4, y: 12, "text-anchor": "end" }, s).textContent = fmt(hi, 2);
  svg("text", { x: L - 4, y: C - B, "text-anchor": "end" }, s).textContent = fmt(lo, 2);
  svg("text", { x: W - 5, y: C - 6, "text-anchor": "end" }, s).textContent = `step ${steps}`;
  curves.forEach((c, n) => {
    // A fixed setting has one value: a dashed line across, for the learned curve to be read against.
    const dashed = c.fixed && c.values.length === 1;
    const xs = dashed ? [L, W - 5] : c.values.map((_, k) => L + ((k + 1) / steps) * (W - L - 5));
    const ys = (dashed ? [c.values[0], c.values[0]] : c.values).map((v) => C - B - ((v - lo) / (hi - lo || 1)) * (C - B - 10) - 5);
    const pts = xs.map((x, k) => [x, ys[k]].join(","));
    svg("polyline", { points: pts.join(" "), fill: "none", stroke: c.colour, "stroke-width": 2, "stroke-dasharray": dashed ? "6 4" : "none" }, s);
    const y = C + 14 * n + 8;
    svg("line", { x1: L, y1: y - 4, x2: L + 24, y2: y - 4, stroke: c.colour, "stroke-width": 2, "stroke-dasharray": dashed ? "6 4" : "none" }, s);
    svg("text", { x: L + 30, y, fill: c.colour }, s).textContent = c.values.length ? `${c.label}: ${fmt(c.values[c.values.length - 1], 3)}` : c.label;
  });
}

const CURVE_COLOURS = ["#2a7", "#c63", "#36c", "#a3a", "#886", "#3aa"];

async function runFit() {
  if (!state.opened) return;
  message("");
  $("fit").disabled = true;
  $("stop").disabled = false;
  $("results").innerHTML = "";
  document.body.dataset.fitDone = "";
  const t0 = performance.now();
  const fixed = corners();
  const curves = [{ label: "learned i", colour: CURVE_COLOURS[0], values: [], total: 1 },
    ...fixed.map((c, k) => ({ label: `i fixed at ${iLabel(c)}`, fixed: true, colour: CURVE_COLOURS[(k + 1) % CURVE_COLOURS.length], values: [], total: 1 }))];
  state.path = [];
  const onTask = ({ info, supportRgba }) => {
    const support = $("support");
    support.innerHTML = "";
    for (const url of thumbnails(supportRgba, info.side)) {
      const img = document.createElement("img");
      img.src = url;
      support.appendChild(img);
    }
  };
  const onStep = ({ index, report: rep }) => {
    const curve = curves[index];
    curve.values.push(rep.loss);
    curve.total = rep.total;
    if (index === 0) {
      state.path.push(rep.i);
      state.i = rep.i;
      drawHandle();
      drawPath();
    }
    $("fit-status").textContent = `${curve.label}: step ${rep.step}/${rep.total}, loss ${fmt(rep.loss)}`;
    if (rep.step % 5 === 0 || rep.step === rep.total) drawLoss(curves);
  };
  listeners.task.push(onTask);
  listeners.step.push(onStep);
  let done;
  try {
    const request = taskRequest();
    done = await call("fit", { ...request, corners: fixed }, request.pixels ? [request.pixels.buffer] : []);
  } catch (e) {
    const stopped = errorText(e) === "stopped";
    message(stopped ? "Fit stopped." : "The fit failed: " + errorText(e), stopped ? "info" : "error");
    $("fit-status").textContent = "";
    return;
  } finally {
    listeners.task.splice(listeners.task.indexOf(onTask), 1);
    listeners.step.splice(listeners.step.indexOf(onStep), 1);
    $("fit").disabled = false;
    $("stop").disabled = true;
  }
  const ms = performance.now() - t0;
  timings.fits.push({ task: $("task").value, ms, runs: done.results.map((r) => ({ run: r.run, i: r.scores.i, ms: r.ms, sharedSteps: r.sharedSteps })) });
  drawLoss(curves);
  showResults(done.info, done.results, ms);
  // The dial follows the learned i.
  await requestDial(done.results[0].scores.i);
  document.body.dataset.fitDone = "1";
  showTimings();
}

function showResults(tinfo, results, ms) {
  const metric = tinfo.regression ? "r2" : "accuracy";
  const name = tinfo.regression ? "query R²" : "query accuracy";
  const box = $("results");
  box.innerHTML = `<h3>${tinfo.name}</h3><p class="muted">${tinfo.support} support, ${tinfo.query} query images; ${results.length} fits in ${(ms / 1000).toFixed(1)} s</p>`;
  const table = document.createElement("table");
  table.id = "results-table";
  table.innerHTML = `<tr><th>readout</th><th>${name}</th><th>i</th></tr>`;
  const best = Math.max(...results.filter((r) => r.run === "corner").map((r) => r.scores[metric]));
  for (const r of results) {
    const row = table.insertRow();
    row.dataset.run = r.run;
    row.insertCell().textContent = r.run === "learned" ? "i learned" : "i fixed";
    const v = row.insertCell();
    v.className = "score";
    v.dataset.value = r.scores[metric];
    v.textContent = tinfo.regression ? fmt(r.scores[metric]) : (100 * r.scores[metric]).toFixed(1) + " %";
    if (r.run === "corner" && r.scores[metric] === best) row.classList.add("best");
    row.insertCell().textContent = iLabel(r.scores.i);
  }
  box.appendChild(table);
  const learned = results[0].scores[metric];
  const gap = tinfo.regression ? fmt(learned - best, 3) : ((100 * (learned - best)).toFixed(1) + " points");
  const p = document.createElement("p");
  p.className = "explain";
  const start = results[0].start;
  const same = (a, b) => a.length === b.length && a.every((v, k) => Math.abs(v - b[k]) < 0.005);
  const fromCorner = start && state.info.trained.some((c) => same(c, start));
  const how = fromCorner
    ? `The learned i started at ${iLabel(start)}: each trained corner was tried on the support images, predicting each one from the others, and this corner predicted them best (the dashed lines). ${same(start, results[0].scores.i) ? "No step away from it lowered that error, so it stayed there" : `From there it moved to lower that error further and ended at ${iLabel(results[0].scores.i)}`}`
    : `The learned i started at ${start ? iLabel(start) : "the middle of the pad"} and ended at ${iLabel(results[0].scores.i)}`;
  p.textContent = `${how}, ${learned >= best ? "level with or above" : "below"} the best fixed corner on the query images (${gap}). `
    + `Everything the learned i knows comes from the ${tinfo.support} support images, while the corners' scores are read on the query images: with so few images the learned i can pick a different corner, and a difference of a few points is within what another draw of ${tinfo.support} images would change.`;
  box.appendChild(p);
}

function showTimings() {
  const d = timings.dial;
  const parts = [];
  if (timings.interactive !== null) parts.push(`interactive after ${(timings.interactive / 1000).toFixed(1)} s`);
  if (d.length) parts.push(`last dial update ${d[d.length - 1].toFixed(0)} ms (${state.info ? state.info.forwards_per_update : "?"} images through the encoder)`);
  if (timings.fits.length) parts.push(`last fit ${(timings.fits[timings.fits.length - 1].ms / 1000).toFixed(1)} s`);
  $("timings").textContent = parts.join(" · ");
}

main();

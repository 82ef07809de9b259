// The page: drawing and input only. Every number comes from the WebAssembly module (src/lib.rs),
// built from the same crates as the `ail` command line.
//
// Query flags: ?cpu forces the CPU backend (what a browser without WebGPU gets).

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const timings = (window.ailTimings = { interactive: null, dial: [], fits: [] });
const state = { wasm: null, session: null, info: null, i: [], busy: false, pending: null, path: [], thumbs: [], stop: false, classes: [] };

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

async function main() {
  const w = window.wasmBindings;
  state.wasm = w;
  const params = new URLSearchParams(location.search);
  try {
    const backend = JSON.parse(await w.start(!params.has("cpu") && "gpu" in navigator));
    console.log(`ail: backend ready after ${performance.now().toFixed(0)} ms`);
    if (!("gpu" in navigator) && !params.has("cpu")) backend.note = "this browser has no WebGPU; computing on the CPU in WebAssembly";
    const b = $("backend");
    b.textContent = (backend.kind === "webgpu" ? "WebGPU: " : "CPU (WebAssembly): ") + backend.adapter;
    b.className = "badge " + backend.kind;
    b.dataset.kind = backend.kind;
    if (backend.note) message(backend.note, "info");
    await openSession(() => w.Session.builtin());
  } catch (e) {
    message("The page could not start: " + errorText(e));
  }
  wireInputs();
}

async function openSession(make) {
  let session;
  try {
    session = make();
  } catch (e) {
    message(errorText(e));
    return;
  }
  console.log(`ail: encoder opened after ${performance.now().toFixed(0)} ms`);
  if (state.session) state.session.free();
  state.session = session;
  const info = (state.info = JSON.parse(session.info()));
  $("model").textContent = `${info.name}: ${info.kind} width ${info.width}, K = ${info.k} (${info.entries.join(", ")}), ${info.image_size}×${info.image_size} inputs, ${info.feature_dim}-d features, step ${info.step}`;
  $("measured-count").textContent = info.measured_images;
  $("probe-count").textContent = info.probe_images;
  state.thumbs = thumbnails(session.probe_rgba(), info.image_size);
  $("fit-status").textContent = `fits run on ${info.fit_backend}`;
  state.i = info.trained.length ? info.trained[info.trained.length - 1].slice() : new Array(info.k).fill(1);
  state.path = [];
  buildDialControls();
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
      const view = JSON.parse(await state.session.dial(Float32Array.from(next)));
      const ms = performance.now() - t0;
      timings.dial.push(ms);
      console.log(`ail: dial at ${iLabel(next)} in ${ms.toFixed(0)} ms`);
      $("dial-time").textContent = `(updated in ${ms.toFixed(0)} ms)`;
      drawRadar(view, next);
      drawEmbedding(view);
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
  const palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const labels = state.info.probe_labels;
  xs.forEach((x, k) => {
    const px = T + ((x - x0) / dx) * (W - 3 * T), py = T + (1 - (ys[k] - y0) / dy) * (H - 3 * T);
    svg("rect", { x: px - 1, y: py - 1, width: T + 2, height: T + 2, fill: palette[labels[k] % 10] }, s);
    const img = svg("image", { x: px, y: py, width: T, height: T, href: state.thumbs[k] }, s);
    svg("title", {}, img).textContent = state.info.class_names[labels[k]];
  });
  svg("text", { x: 4, y: H - 4 }, s).textContent = `PC1 ${fmt(view.variance[0], 3)}, PC2 ${fmt(view.variance[1], 3)} (variance); border colour = class`;
}

// ---------------------------------------------------------------------------------------------
// Fitting
// ---------------------------------------------------------------------------------------------

function wireInputs() {
  $("open").addEventListener("change", async (ev) => {
    const file = ev.target.files[0];
    if (!file) return;
    message("");
    const bytes = new Uint8Array(await file.arrayBuffer());
    await openSession(() => state.wasm.Session.open(bytes, file.name));
    ev.target.value = "";
  });
  $("task").addEventListener("change", () => {
    $("custom").hidden = $("task").value !== "custom";
    if ($("task").value === "custom" && state.classes.length === 0) { addClass(); addClass(); }
  });
  $("add-class").addEventListener("click", addClass);
  $("fit").addEventListener("click", runFit);
  $("stop").addEventListener("click", () => (state.stop = true));
}

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
        cls.images.push(state.session.decode(file.name, bytes));
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
  box.addEventListener("dragover", (ev) => { ev.preventDefault(); box.classList.add("over"); });
  box.addEventListener("dragleave", () => box.classList.remove("over"));
  box.addEventListener("drop", (ev) => { ev.preventDefault(); box.classList.remove("over"); add(ev.dataTransfer.files); });
  box.append(name, document.createElement("br"), pick, shown);
  $("classes").appendChild(box);
}

function makeTask() {
  const which = $("task").value;
  if (which !== "custom") return state.session.builtin_task(which);
  const counts = state.classes.map((c) => [c.name, c.images.length]);
  const total = state.classes.reduce((n, c) => n + c.images.reduce((m, im) => m + im.length, 0), 0);
  const pixels = new Uint8Array(total);
  let at = 0;
  for (const c of state.classes) for (const im of c.images) { pixels.set(im, at); at += im.length; }
  return state.session.custom_task(JSON.stringify(counts), pixels);
}

function drawLoss(curves) {
  const box = $("loss");
  box.innerHTML = "";
  const W = 400, H = 220, L = 40, B = 24;
  const s = svg("svg", { width: W, height: H }, box);
  const all = curves.flatMap((c) => c.values);
  if (!all.length) return;
  const hi = Math.max(...all), lo = Math.min(0, ...all), steps = Math.max(...curves.map((c) => c.total));
  svg("line", { x1: L, y1: H - B, x2: W - 5, y2: H - B, stroke: "#999" }, s);
  svg("line", { x1: L, y1: 5, x2: L, y2: H - B, stroke: "#999" }, s);
  svg("text", { x: L - 4, y: 12, "text-anchor": "end" }, s).textContent = fmt(hi, 2);
  svg("text", { x: L - 4, y: H - B, "text-anchor": "end" }, s).textContent = fmt(lo, 2);
  svg("text", { x: W - 5, y: H - 6, "text-anchor": "end" }, s).textContent = `step ${steps}`;
  curves.forEach((c, n) => {
    const pts = c.values.map((v, k) => [L + ((k + 1) / steps) * (W - L - 5), H - B - ((v - lo) / (hi - lo || 1)) * (H - B - 5)].join(","));
    svg("polyline", { points: pts.join(" "), fill: "none", stroke: c.colour, "stroke-width": 2 }, s);
    svg("text", { x: W - 5, y: 16 + 14 * n, "text-anchor": "end", fill: c.colour }, s).textContent = c.label;
  });
}

async function runFit() {
  if (!state.session) return;
  message("");
  let task;
  try {
    task = makeTask();
  } catch (e) {
    message(errorText(e));
    return;
  }
  const tinfo = JSON.parse(task.info());
  const support = $("support");
  support.innerHTML = "";
  for (const url of thumbnails(task.support_rgba(), tinfo.side)) {
    const img = document.createElement("img");
    img.src = url;
    support.appendChild(img);
  }
  $("fit").disabled = true;
  $("stop").disabled = false;
  $("results").innerHTML = "";
  document.body.dataset.fitDone = "";
  state.stop = false;
  const t0 = performance.now();
  const curves = [];
  const results = [];
  const runs = [
    { learn: true, label: "learned i", colour: "#2a7" },
    { learn: false, label: `i fixed at [${new Array(state.info.k).fill(1).join(", ")}]`, colour: "#c63" },
  ];
  let fit = null;
  try {
    for (const run of runs) {
      fit = state.session.fit(task, run.learn);
      const curve = { label: run.label, colour: run.colour, values: [], total: 100 };
      curves.push(curve);
      if (run.learn) state.path = [];
      for (;;) {
        if (state.stop) throw new Error("stopped");
        const r = await fit.step();
        if (r === undefined || r === null) break;
        const rep = JSON.parse(r);
        curve.values.push(rep.loss);
        curve.total = rep.total;
        if (run.learn) {
          state.path.push(rep.i);
          state.i = rep.i;
          drawHandle();
          drawPath();
        }
        $("fit-status").textContent = `${run.label}: step ${rep.step}/${rep.total}, loss ${fmt(rep.loss)}`;
        if (rep.step % 5 === 0 || rep.step === rep.total) drawLoss(curves);
      }
      const scores = JSON.parse(await fit.evaluate());
      fit.free();
      fit = null;
      results.push({ ...run, scores });
    }
  } catch (e) {
    const stopped = errorText(e) === "stopped";
    // A stopped or failed fit's memory in WebAssembly is given back.
    try {
      if (fit) fit.free();
    } catch {}
    message(stopped ? "Fit stopped." : "The fit failed: " + errorText(e), stopped ? "info" : "error");
    $("fit").disabled = false;
    $("stop").disabled = true;
    $("fit-status").textContent = "";
    task.free();
    return;
  }
  const ms = performance.now() - t0;
  timings.fits.push({ task: $("task").value, ms });
  drawLoss(curves);
  showResults(tinfo, results, ms);
  $("fit").disabled = false;
  $("stop").disabled = true;
  task.free();
  // The dial follows the learned i.
  await requestDial(results[0].scores.i);
  document.body.dataset.fitDone = "1";
  showTimings();
}

function showResults(tinfo, results, ms) {
  const metric = tinfo.regression ? "r2" : "accuracy";
  const name = tinfo.regression ? "query R²" : "query accuracy";
  const box = $("results");
  box.innerHTML = `<h3>${tinfo.name}</h3><p class="muted">${tinfo.support} support, ${tinfo.query} query images; both fits in ${(ms / 1000).toFixed(1)} s</p>`;
  const table = document.createElement("table");
  table.id = "results-table";
  table.innerHTML = `<tr><th>readout</th><th>${name}</th><th>i</th></tr>`;
  for (const r of results) {
    const row = table.insertRow();
    row.dataset.run = r.learn ? "learned" : "fixed";
    row.insertCell().textContent = r.label;
    const v = row.insertCell();
    v.className = "score";
    v.dataset.value = r.scores[metric];
    v.textContent = tinfo.regression ? fmt(r.scores[metric]) : (100 * r.scores[metric]).toFixed(1) + " %";
    row.insertCell().textContent = iLabel(r.scores.i);
  }
  box.appendChild(table);
}

function showTimings() {
  const d = timings.dial;
  const parts = [];
  if (timings.interactive !== null) parts.push(`interactive after ${(timings.interactive / 1000).toFixed(1)} s`);
  if (d.length) parts.push(`last dial update ${d[d.length - 1].toFixed(0)} ms (${state.info ? state.info.forwards_per_update : "?"} images through the encoder)`);
  if (timings.fits.length) parts.push(`last fit ${(timings.fits[timings.fits.length - 1].ms / 1000).toFixed(1)} s`);
  $("timings").textContent = parts.join(" · ");
}

if (window.wasmBindings) main();
else addEventListener("TrunkApplicationStarted", main, { once: true });

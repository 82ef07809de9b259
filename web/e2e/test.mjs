// End-to-end test of the built page (web/dist): serves it on 127.0.0.1 as a web server would
// (gzipped copies with content-encoding), opens it in Debian's Chromium through playwright-core,
// moves the dial, looks at nearest neighbours, runs the built-in fits, feeds it bad input, and
// asserts what the DOM shows, the bytes on the wire and that the page's thread never blocks.
// Saves screenshots and timings.
//
//   node e2e/test.mjs --mode webgpu|cpu --dist dist --out OUTDIR
//
// webgpu: Chromium with --enable-unsafe-webgpu (SwiftShader, a software renderer, when there is no
// GPU): the page must see the adapter is software and choose its CPU backend, offering a switch;
// the switch (?webgpu) must then give WebGPU, on which the rest runs. cpu: without the flag the
// browser has no adapter and the page must fall back to the CPU backend, and say so.

import fs from "node:fs";
import path from "node:path";
import os from "node:os";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { createServer } from "./serve.mjs";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, k, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[k + 1]]] : acc), []),
);
const mode = args.mode || "webgpu";
const dist = path.resolve(args.dist || "dist");
const out = path.resolve(args.out || "e2e-out");
const browserPath = process.env.CHROMIUM || "/usr/bin/chromium";
fs.mkdirSync(out, { recursive: true });

// The test's own files (the self-check's fixture) come from /__test/, never from the page.
const fixtures = path.join(path.dirname(new URL(import.meta.url).pathname), "..", "tests", "fixtures");
const { server, sent } = createServer(dist, { "/__test/": fixtures });
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const base = `http://127.0.0.1:${server.address().port}/`;
const wire = () => [...sent].filter(([p]) => !p.startsWith("/__test/")).reduce((n, [, b]) => n + b, 0);

// The wire size's goal, and the longest the page's thread may be busy at once.
const MAX_WIRE_BYTES = 15e6;
const MAX_LONG_TASK_MS = 200;

const flags = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
];
if (mode === "webgpu") flags.push("--enable-unsafe-webgpu");
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "ail-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: browserPath, headless: true, args: flags, viewport: { width: 1280, height: 1700 },
});
const browserPid = context.browser()?.process?.()?.pid;
const log = [];
let failed = false;
try {
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (m) => log.push(`[${m.type()}] ${m.text()}`));
  page.on("pageerror", (e) => log.push(`[pageerror] ${e.message}`));
  const t0 = Date.now();
  // First paint: the page's text and progress bar, before the module arrives.
  await page.goto(base, { waitUntil: "load" });
  const paint = await page.evaluate(() => (performance.getEntriesByName("first-contentful-paint")[0] || {}).startTime);
  console.log(`[${mode}] first contentful paint ${paint === undefined ? "not reported" : `after ${Math.round(paint)} ms`}`);
  await page.waitForSelector("body[data-ready='1']", { timeout: 600_000 });
  console.log(`[${mode}] interactive after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const wireBytes = wire();
  console.log(`[${mode}] on the wire until interactive: ${(wireBytes / 1e6).toFixed(2)} MB (${[...sent].map(([p, b]) => `${p} ${(b / 1e6).toFixed(2)}`).join(", ")})`);
  assert.ok(wireBytes < MAX_WIRE_BYTES, `${wireBytes} bytes on the wire, the goal is under ${MAX_WIRE_BYTES}`);

  // The backend in use is shown. With WebGPU offered only by a software renderer the page takes
  // its CPU backend and offers the switch; the switch gives WebGPU.
  let badge = await page.$eval("#backend", (b) => ({ kind: b.dataset.kind, text: b.textContent }));
  console.log(`[${mode}] backend by default: ${badge.text}`);
  assert.equal(badge.kind, "cpu", `backend ${JSON.stringify(badge)}`);
  const note = await page.$eval("#message", (m) => m.textContent);
  const switchShown = await page.$eval("#try-webgpu", (b) => !b.hidden);
  if (mode === "webgpu") {
    assert.match(note, /software renderer/, "the page says the adapter is a software renderer");
    assert.ok(switchShown, "the page offers to try WebGPU anyway");
    await page.click("#try-webgpu");
    await page.waitForURL(/\?webgpu/);
    await page.waitForSelector("body[data-ready='1']", { timeout: 600_000 });
    badge = await page.$eval("#backend", (b) => ({ kind: b.dataset.kind, text: b.textContent }));
    console.log(`[${mode}] backend after the switch: ${badge.text}`);
    assert.equal(badge.kind, "webgpu", `backend ${JSON.stringify(badge)}`);
  } else {
    assert.match(note, /CPU|WebGPU/, "the page says why it computes on the CPU");
    assert.ok(!switchShown, "no WebGPU switch without an adapter");
  }

  // The page's computations on this backend equal the native CPU backend's on a tiny case.
  const check = await page.evaluate(() => window.ailSelfCheck("/__test/tiny.ailweb", "/__test/expected.json"));
  console.log(`[${mode}] self-check on ${check.backend} (tolerance ${check.tolerance}): ${check.differences.length} differences; losses ${check.outcome.losses.map((v) => v.toFixed(4)).join(", ")}`);
  assert.equal(check.backend, badge.kind);
  assert.deepEqual(check.differences, [], "results equal to the native CPU backend's");

  const radar = async () => page.$$eval("#radar-values td[data-transform]", (cells) => cells.map((c) => [c.dataset.transform, Number(c.textContent)]));
  const first = await radar();
  assert.equal(first.length, 8, "eight transforms on the radar");
  for (const [name, v] of first) assert.ok(Number.isFinite(v) && v >= -1 && v <= 1, `${name} = ${v}`);
  const startI = await page.$eval("#radar-values", (t) => t.dataset.i);
  assert.equal(startI, "[1.00, 1.00]", "the dial starts at the last trained corner");
  assert.equal(await page.$$eval("#pad rect.trained", (r) => r.length), 3, "three trained corners marked");
  assert.equal(await page.$$eval("#embedding-svg image", (r) => r.length), 128, "128 thumbnails in the embedding");

  // Nearest neighbours of a few images at [1, 1], by clicking them in the map.
  const neighbours = async () => {
    const lists = [];
    for (let k = 0; k < 8; k++) {
      await page.dispatchEvent(`#embedding-svg image[data-k='${k}']`, "click");
      lists.push(await page.$eval("#neighbours", (n) => n.dataset.list));
    }
    return lists;
  };
  const nearFirst = await neighbours();
  assert.ok(nearFirst.every((l) => l.split(",").length === 5), "five neighbours per image");
  // The last clicked image's views under each transform, with their similarities.
  const views = async (i) => {
    await page.waitForFunction((i) => { const v = document.querySelector("#views"); return v.dataset.image === "7" && v.dataset.i === i; }, i, { timeout: 600_000 });
    return page.$$eval("#views .views-row", (rows) => rows.map((r) => [r.dataset.transform, Number(r.dataset.mean), r.querySelectorAll("img").length]));
  };
  const viewsFirst = await views("[1.00, 1.00]");
  assert.equal(viewsFirst.length, 8, "eight transforms in the views");
  for (const [name, mean, images] of viewsFirst) {
    assert.ok(Number.isFinite(mean) && mean >= -1 && mean <= 1 && images >= 1 && images <= 4, `${name}: ${mean}, ${images} views`);
  }

  // The page records stalls of its thread: one made on purpose (150 ms of busy work) is seen.
  const seen = async () => {
    await page.evaluate(() => { const t = performance.now(); while (performance.now() - t < 150) {} });
    return page.waitForFunction(() => window.ailTimings.longTasks.some((t) => t.ms >= 140), null, { timeout: 60_000 }).then(() => true, () => false);
  };
  assert.ok((await seen()) || (await seen()), `a 150 ms block is recorded (stalls seen: ${JSON.stringify(await page.evaluate(() => window.ailTimings.longTasks))})`);
  // From here on the page's thread must never be blocked for long.
  const watchFrom = await page.evaluate(() => performance.now());
  // Move the dial to (spatial 1, appearance 0): the radar must change.
  const pad = await page.$("#pad");
  await pad.scrollIntoViewIfNeeded();
  const box = await pad.boundingBox();
  const dialsBefore = await page.evaluate(() => window.ailTimings.dial.length);
  await page.mouse.move(box.x + 30 + 260 * 0.95, box.y + 30 + 260 * 0.95);
  await page.mouse.down();
  await page.mouse.up();
  await page.waitForFunction(() => document.querySelector("#radar-values").dataset.i === "[0.95, 0.05]", null, { timeout: 600_000 });
  const moved = await radar();
  const change = Math.max(...moved.map(([, v], k) => Math.abs(v - first[k][1])));
  console.log(`[${mode}] radar at [1,1]: ${first.map(([n, v]) => `${n} ${v}`).join(", ")}`);
  console.log(`[${mode}] radar at [0.95,0.05]: ${moved.map(([n, v]) => `${n} ${v}`).join(", ")} (largest change ${change.toFixed(3)})`);
  assert.ok(change > 0.01, "moving the dial changes the invariances");
  assert.ok((await page.evaluate(() => window.ailTimings.dial.length)) > dialsBefore);
  // On the CPU backend a second worker computes part of each dial update (same values: the
  // native test a_dial_shared_with_a_helper_equals_the_dial_alone).
  const shared = await page.evaluate(() => ({ helper: document.querySelector("#backend").dataset.helper, last: document.body.dataset.dialShared }));
  console.log(`[${mode}] second worker: ${shared.helper === "1" ? "started" : "none"}; the last dial update ${shared.last === "1" ? "was shared" : "ran in one worker"}`);
  if (badge.kind === "cpu") {
    assert.equal(shared.helper, "1", "on the CPU backend a second worker is started");
    assert.equal(shared.last, "1", "the dial update was shared with the second worker");
  } else {
    assert.equal(shared.last, "0", "on WebGPU the dial runs in one worker");
  }
  const viewsMoved = await views("[0.95, 0.05]");
  const viewsChange = Math.max(...viewsMoved.map(([, m], k) => Math.abs(m - viewsFirst[k][1])));
  console.log(`[${mode}] one image's views at [0.95,0.05]: ${viewsMoved.map(([n, m]) => `${n} ${m.toFixed(3)}`).join(", ")} (largest change ${viewsChange.toFixed(3)})`);
  assert.ok(viewsChange > 0.01, "moving the dial changes how far one image's features move");
  const nearMoved = await neighbours();
  const changed = nearMoved.filter((l, k) => l !== nearFirst[k]).length;
  console.log(`[${mode}] neighbours of 8 images at [1,1] and [0.95,0.05]: ${changed} of 8 lists changed`);
  assert.ok(changed > 0, "moving the dial changes nearest neighbours");
  await page.screenshot({ path: path.join(out, `${mode}-dial.png`), fullPage: true });

  // The built-in 5-way 5-shot fit: learned i next to every trained corner.
  await page.selectOption("#task", "five-way");
  await page.click("#fit");
  await page.waitForSelector("body[data-fit-done='1']", { timeout: 600_000 });
  const rows = await page.$$eval("#results-table tr[data-run]", (rs) =>
    rs.map((r) => ({ run: r.dataset.run, value: Number(r.querySelector(".score").dataset.value), i: r.cells[2].textContent })));
  console.log(`[${mode}] fit: ${JSON.stringify(rows)}`);
  // Learned i next to every trained corner.
  assert.deepEqual(rows.map((r) => r.run), ["learned", "corner", "corner", "corner"]);
  for (const r of rows) assert.ok(r.value > 0.2 && r.value <= 1, `accuracy ${r.value} beats chance (0.2)`);
  assert.deepEqual(rows.slice(1).map((r) => r.i).sort(), ["[0.00, 1.00]", "[1.00, 0.00]", "[1.00, 1.00]"]);
  // The learned i starts at the corner its support images choose and descends from there: its
  // error curve and one dashed line per fixed corner.
  assert.ok((await page.$$eval("#loss polyline", (p) => p.length)) === 4, "four error curves drawn");
  assert.equal(await page.$$eval("#loss polyline[stroke-dasharray='6 4']", (p) => p.length), 3, "each fixed corner's error is a dashed line");
  const explain = await page.$eval("#results .explain", (p) => p.textContent);
  assert.match(explain, /started at \[[01]\.00, [01]\.00\]: each trained corner was tried/);
  assert.match(explain, /best fixed corner/);
  assert.ok((await page.$eval("#fit-path", (p) => p.getAttribute("points").split(" ").length)) >= 20, "the path of i is drawn on the pad");
  // On the CPU backend the learned fit tries splitting its descending steps with the second
  // worker (each computes part of the support images; the native tests
  // a_joint_step_shared_between_two_workers_is_the_whole_step and
  // a_fit_shared_with_a_helper_takes_the_steps_of_the_fit_alone check the steps are the same):
  // after a warm-up step, three steps alone and three shared in turn, then the rest shared only
  // if that was faster (engine.rs, SharedSplit). The fixed corners' fits have no such step; on WebGPU there is no second worker.
  const fitRuns = await page.evaluate(() => window.ailTimings.fits[0].runs.map((r) => r.sharedSteps));
  console.log(`[${mode}] 5-way fit steps shared with the second worker, per run: ${JSON.stringify(fitRuns)}`);
  if (mode === "cpu") assert.ok(fitRuns[0] >= 3 && fitRuns.slice(1).every((n) => n === 0), "the learned fit tries sharing its steps on the CPU backend");
  else assert.deepEqual(fitRuns, [0, 0, 0, 0], "no second worker on WebGPU");
  // The views panel follows the dial to the learned i before the picture is taken.
  await page.waitForFunction(() => document.querySelector("#views").dataset.i === document.querySelector("#radar-values").dataset.i, null, { timeout: 600_000 });
  await page.screenshot({ path: path.join(out, `${mode}-fit.png`), fullPage: true });

  // The derived position task: a regression, scored by R² on the query items.
  await page.selectOption("#task", "position");
  await page.click("#fit");
  await page.waitForSelector("body[data-fit-done='1']", { timeout: 600_000 });
  assert.match(await page.$eval("#results-table", (t) => t.rows[0].textContent), /query R²/);
  const reg = await page.$$eval("#results-table tr[data-run]", (rs) =>
    rs.map((r) => ({ run: r.dataset.run, r2: Number(r.querySelector(".score").dataset.value), i: r.cells[2].textContent })));
  console.log(`[${mode}] position fit: ${JSON.stringify(reg)}; steps shared: ${JSON.stringify(await page.evaluate(() => window.ailTimings.fits[1].runs.map((r) => r.sharedSteps)))}`);
  assert.deepEqual(reg.map((r) => r.run), ["learned", "corner", "corner", "corner"]);
  const bestReg = Math.max(...reg.map((r) => r.r2));
  assert.ok(bestReg > 0 && bestReg <= 1, `best R² ${bestReg} beats predicting the mean position`);

  // The derived colour task: which tint? Three classes, learned i beside every corner.
  await page.selectOption("#task", "tint");
  assert.match(await page.$eval("#task-note", (p) => p.textContent), /\[1, 0\]/);
  await page.click("#fit");
  await page.waitForSelector("body[data-fit-done='1']", { timeout: 600_000 });
  const tint = await page.$$eval("#results-table tr[data-run]", (rs) =>
    rs.map((r) => ({ run: r.dataset.run, value: Number(r.querySelector(".score").dataset.value), i: r.cells[2].textContent })));
  console.log(`[${mode}] tint fit: ${JSON.stringify(tint)}`);
  assert.deepEqual(tint.map((r) => r.run), ["learned", "corner", "corner", "corner"]);
  assert.ok(Math.max(...tint.map((r) => r.value)) > 1 / 3, "the best readout beats chance (1/3)");
  await page.waitForFunction(() => document.querySelector("#views").dataset.i === document.querySelector("#radar-values").dataset.i, null, { timeout: 600_000 });
  await page.screenshot({ path: path.join(out, `${mode}-tint.png`), fullPage: true });
  const longTasks = await page.evaluate((from) => window.ailTimings.longTasks.filter((t) => t.start >= from), watchFrom);
  const longest = Math.max(0, ...longTasks.map((t) => t.ms));
  console.log(`[${mode}] the page's thread during dial updates and fits: ${longTasks.length} stalls over 50 ms, the longest ${Math.round(longest)} ms`);
  assert.ok(longest <= MAX_LONG_TASK_MS, `the page's thread was blocked for ${Math.round(longest)} ms (at most ${MAX_LONG_TASK_MS})`);

  // Stop: a fit stopped after a few steps says so, shows no result and leaves the page ready.
  await page.selectOption("#task", "five-way");
  await page.click("#fit");
  // Early in the learned fit (20 of its 21 steps and three fixed fits are still to come).
  await page.waitForFunction(() => /learned i: step [1-3]\//.test(document.querySelector("#fit-status").textContent), null, { timeout: 600_000 });
  await page.click("#stop");
  await page.waitForFunction(() => document.querySelector("#message").textContent.includes("Fit stopped"), null, { timeout: 60_000 });
  assert.equal(await page.$eval("#results", (r) => r.textContent.trim()), "", "a stopped fit shows no result");
  assert.ok(!(await page.$eval("#fit", (b) => b.disabled)) && (await page.$eval("#stop", (b) => b.disabled)), "Fit is ready again");
  console.log(`[${mode}] stop: ${await page.$eval("#message", (m) => m.textContent)}`);

  // Bad input: a file that is not an export, then too few images and a non-image in a class box.
  await page.setInputFiles("#open", { name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("hello, not a model") });
  await page.waitForFunction(() => document.querySelector("#message").textContent.includes("not an encoder export"), null, { timeout: 60_000 });
  assert.match(await page.$eval("#message", (m) => m.textContent), /notes\.txt/);
  // A real export opened from a file (the built-in encoder under another name): the page and,
  // on the CPU backend, the second worker both open it (checked by the last dial update below).
  const dialsWithFirstEncoder = await page.evaluate(() => window.ailTimings.dial.length);
  await page.setInputFiles("#open", { name: "copy.ailweb", mimeType: "application/octet-stream", buffer: fs.readFileSync(path.join(dist, "assets", "encoder.ailweb")) });
  await page.waitForFunction(() => document.querySelector("#model").textContent.startsWith("copy.ailweb"), null, { timeout: 600_000 });
  await page.selectOption("#task", "custom");
  const png = fs.readFileSync(path.join(out, `${mode}-dial.png`));
  const boxes = await page.$$(".classbox input[type=file]");
  await boxes[0].setInputFiles({ name: "shot.png", mimeType: "image/png", buffer: png });
  await boxes[1].setInputFiles({ name: "photo.jpg", mimeType: "image/jpeg", buffer: Buffer.from("not really a jpeg") });
  await page.waitForFunction(() => document.querySelector("#message").textContent.includes("photo.jpg"), null, { timeout: 60_000 });
  assert.match(await page.$eval("#message", (m) => m.textContent), /photo\.jpg: not a PNG or JPEG/);
  await page.click("#fit");
  await page.waitForFunction(() => /needs at least 3|at least two class boxes/.test(document.querySelector("#message").textContent), null, { timeout: 60_000 });
  console.log(`[${mode}] bad input message: ${await page.$eval("#message", (m) => m.textContent)}`);

  // The camera: Chromium's fake camera gives frames; three photos land in the second class box.
  const snaps = await page.$$(".classbox .snap");
  for (let k = 0; k < 3; k++) {
    await snaps[1].click();
    await page.waitForFunction((n) => document.querySelectorAll(".classbox")[1].querySelectorAll("img").length >= n, k + 1, { timeout: 60_000 });
  }
  assert.ok(!(await page.$eval("#camera", (v) => v.hidden)), "the camera's preview is shown");
  // A refused camera gets a message saying what to do instead (a page whose camera is refused).
  const refused = await context.newPage();
  await refused.addInitScript(() => {
    navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException("denied", "NotAllowedError"));
  });
  await refused.goto(base + (mode === "webgpu" ? "?cpu" : ""));
  await refused.waitForSelector("body[data-ready='1']", { timeout: 600_000 });
  await refused.selectOption("#task", "custom");
  await refused.click(".classbox .snap");
  await refused.waitForFunction(() => document.querySelector("#message").textContent.includes("camera was refused"), null, { timeout: 60_000 });
  console.log(`[${mode}] refused camera: ${await refused.$eval("#message", (m) => m.textContent)}`);
  await refused.close();
  // The page is alive: the dial still answers.
  const n = await page.evaluate(() => window.ailTimings.dial.length);
  // The pad is drawn anew for each opened encoder.
  const padAgain = await page.$("#pad");
  await padAgain.scrollIntoViewIfNeeded();
  const padNow = await padAgain.boundingBox();
  await page.mouse.click(padNow.x + 30 + 260 * 0.1, padNow.y + 30 + 260 * 0.1);
  await page.waitForFunction((n) => window.ailTimings.dial.length > n, n, { timeout: 600_000 });
  if (badge.kind === "cpu") {
    assert.equal(await page.evaluate(() => document.body.dataset.dialShared), "1", "after opening another encoder the dial is still shared with the second worker");
  }

  const timings = await page.evaluate(() => window.ailTimings);
  // The median over the first encoder's updates after its first (the reopened encoder's first
  // update may run before the second worker has opened it).
  const dial = timings.dial.slice(1, dialsWithFirstEncoder).sort((a, b) => a - b);
  const result = {
    mode,
    backend: badge.text,
    interactive_ms: Math.round(timings.interactive),
    dial_update_ms_median: Math.round(dial[Math.floor(dial.length / 2)]),
    dial_updates: dial.length,
    five_way_fit_ms: Math.round(timings.fits[0].ms),
    // Each fit of a task on its own (in the worker): the learned one back-propagates through the
    // encoder at every joint step, a fixed corner computes the features once.
    five_way_fit_runs_ms: timings.fits[0].runs.map((r) => Math.round(r.ms)),
    position_fit_runs_ms: timings.fits[1].runs.map((r) => Math.round(r.ms)),
    tint_fit_runs_ms: timings.fits[2].runs.map((r) => Math.round(r.ms)),
    position_fit_ms: Math.round(timings.fits[1].ms),
    first_contentful_paint_ms: Math.round(paint),
    wire_bytes: wireBytes,
    longest_task_ms: Math.round(longest),
    accuracy: Object.fromEntries(rows.map((r) => [r.run === "learned" ? `learned ${r.i}` : r.i, r.value])),
    position_r2: Object.fromEntries(reg.map((r) => [r.run === "learned" ? `learned ${r.i}` : r.i, r.r2])),
    tint_accuracy: Object.fromEntries(tint.map((r) => [r.run === "learned" ? `learned ${r.i}` : r.i, r.value])),
    tint_fit_ms: Math.round(timings.fits[2].ms),
  };
  fs.writeFileSync(path.join(out, `${mode}-timings.json`), JSON.stringify(result, null, 2));
  console.log(`[${mode}] timings: ${JSON.stringify(result)}`);
} catch (e) {
  failed = true;
  console.error(`[${mode}] FAILED: ${e.stack || e}`);
  console.error("browser console:\n" + log.slice(-40).join("\n"));
  try {
    const page = context.pages()[0];
    if (page) await page.screenshot({ path: path.join(out, `${mode}-failure.png`), fullPage: true });
  } catch {}
} finally {
  await context.close().catch(() => {});
  if (browserPid) try { process.kill(browserPid, "SIGKILL"); } catch {}
  server.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
// Exit 3 (not 1) when a WebGPU pass fails after wgpu reported an uncaptured error: on wasm, CubeCL
// cannot check a pipeline's creation (it cannot block there), so autotune candidates that
// SwiftShader refuses are launched, and each refusal panics in CubeCL's error handler. Most runs
// see a few of these without harm; now and then the autotuner chooses a refused kernel and the
// numbers go wrong (the self-check catches it). scripts/web.sh reruns the WebGPU pass (twice at most) on this
// code only; a CPU pass, or a WebGPU pass without such errors, fails at once.
const refused = mode === "webgpu" && log.some((l) => l.includes("wgpu error:"));
if (failed && refused) console.error(`[${mode}] failed after wgpu reported uncaptured errors (exit 3)`);
process.exit(failed ? (refused ? 3 : 1) : 0);

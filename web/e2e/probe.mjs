// Debugging aid: opens a served page and prints its console, its messages and its timings every
// 10 s. node e2e/probe.mjs URL [webgpu|cpu] [seconds]
import { chromium } from "playwright-core";
import fs from "node:fs"; import os from "node:os"; import path from "node:path";
const [url, mode = "webgpu", seconds = "120"] = process.argv.slice(2);
const args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
if (mode === "webgpu") args.push("--enable-unsafe-webgpu");
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ail-probe-"));
const ctx = await chromium.launchPersistentContext(dir, { executablePath: "/usr/bin/chromium", headless: true, args });
const page = ctx.pages()[0] || (await ctx.newPage());
const t0 = Date.now();
const t = () => ((Date.now() - t0) / 1000).toFixed(1);
page.on("console", (m) => console.log(`${t()} [console.${m.type()}] ${m.text().slice(0, 500)}`));
page.on("pageerror", (e) => console.log(`${t()} [pageerror] ${e.message}`));
await page.addInitScript(() => {
  if (!self.GPUDevice) return;
  const orig = GPUDevice.prototype.createShaderModule;
  GPUDevice.prototype.createShaderModule = function (desc) {
    const m = orig.call(this, desc);
    m.getCompilationInfo().then((info) => {
      for (const msg of info.messages) if (msg.type === "error") console.log(`WGSL error in ${desc.label}: ${msg.message} at line ${msg.lineNum}: ${desc.code.split("\n")[msg.lineNum - 1]}`);
    });
    return m;
  };
});
await page.goto(url);
for (let k = 0; k < Number(seconds) / 10; k++) {
  await new Promise((r) => setTimeout(r, 10000));
  const s = await page.evaluate(() => ({ backend: document.querySelector("#backend")?.textContent, message: document.querySelector("#message")?.textContent, timings: JSON.stringify(window.ailTimings), ready: document.body.dataset.ready })).catch((e) => ({ error: String(e) }));
  console.log(t(), JSON.stringify(s));
}
await ctx.close();

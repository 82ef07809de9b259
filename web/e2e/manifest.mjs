// Writes DIR/assets.json: what the page's worker fetches (worker.js), with each file's size (for
// its progress bar) and content hash (the cache key in its URL). Run by `scripts/web.sh build`.
//
//   node e2e/manifest.mjs DIR

import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";

const dir = process.argv[2];
const files = {
  module: "ail_web_bg.wasm",
  encoder: "assets/encoder.ailweb",
  images: "assets/fashion-mnist-6k-images-idx3-ubyte.gz",
  labels: "assets/fashion-mnist-6k-labels-idx1-ubyte.gz",
};
const out = { files: {} };
for (const [name, rel] of Object.entries(files)) {
  const bytes = fs.readFileSync(path.join(dir, rel));
  out.files[name] = { path: rel, bytes: bytes.length, hash: crypto.createHash("sha256").update(bytes).digest("hex").slice(0, 16) };
}
fs.writeFileSync(path.join(dir, "assets.json"), JSON.stringify(out, null, 1) + "\n");

// Writes FILE.gz (gzip -9) and FILE.br (brotli, quality 9) beside every file under DIR that
// compresses (the module, scripts, pages, styles, JSON and encoder exports), for web servers that
// send them with content-encoding. Run by `scripts/web.sh build`.
//
//   node e2e/compress.mjs DIR

import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";

const COMPRESSIBLE = new Set([".wasm", ".js", ".html", ".css", ".json", ".ailweb"]);

function* files(dir) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) yield* files(p);
    else if (COMPRESSIBLE.has(path.extname(e.name))) yield p;
  }
}

for (const file of files(process.argv[2])) {
  const bytes = fs.readFileSync(file);
  fs.writeFileSync(file + ".gz", zlib.gzipSync(bytes, { level: 9 }));
  fs.writeFileSync(file + ".br", zlib.brotliCompressSync(bytes, {
    params: {
      [zlib.constants.BROTLI_PARAM_QUALITY]: 9,
      [zlib.constants.BROTLI_PARAM_LGWIN]: 24,
      [zlib.constants.BROTLI_PARAM_SIZE_HINT]: bytes.length,
    },
  }));
}

// A static server for the built page (web/dist), as any web server would serve it: a file's
// compressed copy (FILE.br or FILE.gz, written by `scripts/web.sh build`) is sent with its
// content-encoding to browsers that accept it. It counts the bytes it sends per path (the e2e
// test's wire size).
//
//   node e2e/serve.mjs --dist dist [--port 8080] [--address 127.0.0.1]
//
// Extra roots (`extra`: URL prefix -> directory) serve test files that are not part of the page.

import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const TYPES = {
  ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
  ".css": "text/css", ".png": "image/png", ".json": "application/json", ".jpg": "image/jpeg",
};

export function createServer(dist, extra = {}) {
  dist = path.resolve(dist);
  const sent = new Map();
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    let root = dist, rel = url.pathname === "/" ? "/index.html" : decodeURIComponent(url.pathname);
    for (const [prefix, dir] of Object.entries(extra)) {
      if (rel.startsWith(prefix)) { root = path.resolve(dir); rel = rel.slice(prefix.length - 1); }
    }
    const file = path.join(root, rel);
    if (!file.startsWith(root + path.sep) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
      res.writeHead(404, { "content-type": "text/plain" });
      res.end("not found");
      return;
    }
    // The smallest encoding the browser takes: brotli, then gzip, then the file as it is.
    const accepts = req.headers["accept-encoding"] || "";
    const encoding = ["br", "gzip"].find((e) => new RegExp(`\\b${e}\\b`).test(accepts) && fs.existsSync(file + (e === "br" ? ".br" : ".gz")));
    const body = encoding ? file + (encoding === "br" ? ".br" : ".gz") : file;
    const headers = {
      "content-type": TYPES[path.extname(file)] || "application/octet-stream",
      "content-length": fs.statSync(body).size,
      // Assets are fetched by content hash (assets.json), so they may be cached; the page itself not.
      "cache-control": url.searchParams.has("v") ? "public, max-age=31536000, immutable" : "no-cache",
    };
    if (encoding) headers["content-encoding"] = encoding;
    headers["vary"] = "accept-encoding";
    res.writeHead(200, headers);
    const stream = fs.createReadStream(body);
    stream.on("data", (chunk) => sent.set(url.pathname, (sent.get(url.pathname) || 0) + chunk.length));
    stream.pipe(res);
  });
  return { server, sent };
}

// Run directly: serve until interrupted.
if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = Object.fromEntries(
    process.argv.slice(2).reduce((acc, a, k, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[k + 1]]] : acc), []),
  );
  const dist = args.dist || "dist";
  if (!fs.existsSync(path.join(dist, "index.html"))) {
    console.error(`${dist}/index.html is missing: build the page first (scripts/web.sh build)`);
    process.exit(2);
  }
  const { server } = createServer(dist);
  const address = args.address || "127.0.0.1", port = Number(args.port || 8080);
  server.listen(port, address, () => console.log(`serving ${path.resolve(dist)} on http://${address}:${port}/ (Ctrl-C stops)`));
}

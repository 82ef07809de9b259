#!/usr/bin/env bash
# The browser page (web/): install its tools, build, serve, test.
#
#   scripts/web.sh serve     # build and serve on http://127.0.0.1:8080 (PORT=... to change)
#   scripts/web.sh build     # web/dist: the page as static files for any web server, each text and
#                            # wasm file beside its gzipped copy (serve those with content-encoding)
#   scripts/web.sh package   # build, then ail-page.tar.gz: the built page in one archive (unpack it
#                            # anywhere and serve the ail-page/ folder; no Rust needed to use it)
#   scripts/web.sh test      # wasm tests in headless Chromium + end-to-end tests, WebGPU and CPU,
#                            # run on the page unpacked from the archive `package` writes
#   scripts/web.sh setup     # only install what is missing
#
# What it installs when missing (once per machine): the wasm32 Rust target; wasm-bindgen-cli 0.2.130
# (cargo install, 5-10 minutes); Debian's nodejs and npm; for `test` also
# Debian's chromium and chromium-driver, and playwright-core from npm into web/e2e/node_modules.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ail/target}"
export PATH="$HOME/.cargo/bin:$ROOT/web/e2e/node_modules/.bin:$PATH"
CHROMIUM_FLAGS='"--headless","--no-sandbox","--disable-gpu","--disable-quic","--no-first-run","--disable-background-networking","--disable-component-update","--disable-sync","--enable-unsafe-webgpu"'

setup() {
  rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
  if ! wasm-bindgen --version 2>/dev/null | grep -q "0.2.130"; then
    echo "installing wasm-bindgen-cli 0.2.130 (about 5-10 minutes, once)..."
    # Not --locked: its lock file names a crate version the registry may lack.
    CARGO_TARGET_DIR="$HOME/.cache/ail/tools" cargo install wasm-bindgen-cli --version 0.2.130
  fi
  local missing=()
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}..."
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

setup_browser() {
  if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    echo "installing chromium and chromium-driver..."
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
  if [ ! -d web/e2e/node_modules/playwright-core ]; then
    (cd web/e2e && npm ci --no-audit --no-fund)
  fi
}

build() {
  cargo build --profile web --target wasm32-unknown-unknown -p ail-web --lib
  local wasm="$CARGO_TARGET_DIR/wasm32-unknown-unknown/web/ail_web.wasm" tmp
  # Built beside web/dist and swapped in at the end: a failed build leaves the last one whole
  # (and its leftovers are removed by the next build).
  rm -rf web/.dist.*
  tmp=$(mktemp -d web/.dist.XXXXXX)
  # The module is linked stripped (profile.web), so wasm-bindgen cannot read its feature list and
  # says so; its defaults are the right ones for this module, so that one warning is dropped.
  wasm-bindgen --target web --no-typescript --out-dir "$tmp" --out-name ail_web "$wasm" 2>&1 \
    | { grep -v "target_features. custom section is missing" || true; }
  # No wasm-opt: -Os made the module 19% smaller raw but 2% larger gzipped (BENCHMARKS.md), and
  # the wire is what a visitor waits for.
  mkdir "$tmp/assets"
  cp web/index.html web/app.js web/worker.js web/style.css "$tmp/"
  cp web/assets/encoder.ailweb crates/data/builtin/fashion-mnist-6k-images-idx3-ubyte.gz \
    crates/data/builtin/fashion-mnist-6k-labels-idx1-ubyte.gz "$tmp/assets/"
  # What the page's worker fetches, with sizes (its progress bar) and content hashes (cache keys).
  node web/e2e/manifest.mjs "$tmp"
  # Compressed copies of everything that compresses (gzip, and brotli for servers that send it),
  # for servers that send them with content-encoding (web/e2e/serve.mjs does).
  node web/e2e/compress.mjs "$tmp"
  chmod 755 "$tmp"
  rm -rf web/dist
  mv "$tmp" web/dist
  echo "built web/dist: module $(( $(stat -c %s web/dist/ail_web_bg.wasm) / 1000000 )) MB," \
    "$(( $(stat -c %s web/dist/ail_web_bg.wasm.gz) / 1000000 )) MB gzipped, $(( $(stat -c %s web/dist/ail_web_bg.wasm.br) / 1000000 )) MB brotli;" \
    "serve it with any static server (scripts/web.sh serve, or node web/e2e/serve.mjs --dist web/dist)"
}

# The built page as one archive, ail-page.tar.gz at the repository root (written beside and renamed,
# so a failed packing leaves the last archive whole). Its single folder, ail-page/, is what a
# static server serves.
package() {
  local tmp=ail-page.tar.gz.partial
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
    --transform 's|^web/dist|ail-page|' -czf "$tmp" web/dist
  mv "$tmp" ail-page.tar.gz
  echo "packed ail-page.tar.gz ($(( $(stat -c %s ail-page.tar.gz) / 1000000 )) MB): tar xzf ail-page.tar.gz," \
    "then serve ail-page/ (node web/e2e/serve.mjs --dist ail-page, or any static server)"
}

wasm_tests() {
  local dir
  dir=$(mktemp -d)
  # wasm-bindgen-test-runner drives Chromium through chromedriver with these options (read from
  # the working directory, web/).
  cat > web/webdriver.json <<EOF
{"goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": [$CHROMIUM_FLAGS, "--user-data-dir=$dir"]}}
EOF
  (cd web && CHROMEDRIVER=/usr/bin/chromedriver WASM_BINDGEN_TEST_TIMEOUT=600 WASM_BINDGEN_TEST_DRIVER_TIMEOUT=120 \
    cargo test --release --target wasm32-unknown-unknown -p ail-web --test web)
  rm -rf "$dir" web/webdriver.json
}

e2e() {
  local out="${AIL_WEB_OUT:-$CARGO_TARGET_DIR/web-e2e}" unpacked
  # The end-to-end tests run on the page as a user gets it: unpacked from the archive.
  unpacked=$(mktemp -d)
  tar -xzf ail-page.tar.gz -C "$unpacked"
  local dist="$unpacked/ail-page"
  for mode in webgpu cpu; do
    local rc=0
    node web/e2e/test.mjs --mode "$mode" --dist "$dist" --out "$out" || rc=$?
    # Exit 3: the WebGPU pass failed after wgpu reported refused pipelines (CubeCL's autotuner on
    # wasm; see web/e2e/test.mjs). It is rerun, at most twice: on a loaded machine the autotuner
    # picks a refused kernel more often (SwiftShader's timings are the CPU's).
    local tries=1
    while [ "$rc" -eq 3 ] && [ "$tries" -lt 3 ]; do
      echo "the WebGPU pass failed after wgpu reported refused pipelines; rerunning it ($tries of 2)"
      rc=0
      tries=$((tries + 1))
      node web/e2e/test.mjs --mode "$mode" --dist "$dist" --out "$out" || rc=$?
    done
    [ "$rc" -eq 0 ] || { rm -rf "$unpacked"; return "$rc"; }
  done
  rm -rf "$unpacked"
  echo "screenshots and timings: $out"
}

case "${1:-test}" in
  setup) setup ;;
  build) setup; build ;;
  serve) setup; build; exec node web/e2e/serve.mjs --dist web/dist --port "${PORT:-8080}" ;;
  package) setup; build; package ;;
  test) setup; setup_browser; wasm_tests; build; package; e2e ;;
  *) echo "usage: scripts/web.sh serve|build|package|test|setup" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Runs every test: unit tests, the WGSL kernels against their CPU references on a wgpu adapter
# (Mesa's software Vulkan when there is no GPU), the `ail` binary end to end, and the browser page
# (scripts/web.sh test).
# Installs what the tests need first. Tests build in the release profile, the same build
# `cargo run --release` uses (burn is unusably slow unoptimised).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# wgpu on the CPU: Mesa's lavapipe Vulkan driver.
if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
  echo "installing mesa-vulkan-drivers (software Vulkan for the wgpu tests)..."
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers >/dev/null
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
# The build goes where `cargo run --release` puts it (target/, or CARGO_TARGET_DIR when set), so the
# README's two commands build the workspace once between them.

cargo test --release --workspace "$@"

# The library's pretraining example (`cargo run --release -p ail-core --example pretrain`): 20 steps
# on the built-in data through the library API alone. `cargo test --workspace` has built it with
# the workspace's features; `cargo run -p ail-core` would build burn a second time for ail-core's
# own feature set, so the binary it built is run directly.
if [ "$#" -eq 0 ]; then
  example_out="$(mktemp -d)"
  "${CARGO_TARGET_DIR:-target}/release/examples/pretrain" "$example_out/run"
  rm -rf "$example_out"
fi

# The browser page: its computations in WebAssembly on the CPU backend in headless Chromium, then
# the built page end to end, with WebGPU and with the CPU fallback (installs Chromium,
# wasm-bindgen-cli, Node and the npm packages first when missing). Skipped with AIL_SKIP_WEB=1,
# and when cargo arguments select part of the suite (`scripts/test.sh -p ail-core`).
if [ -z "${AIL_SKIP_WEB:-}" ] && [ "$#" -eq 0 ]; then
  scripts/web.sh test
fi

#!/usr/bin/env bash
# GPU benchmarks: builds `ail` and runs `ail bench pretrain` and `ail bench fit` on the first
# hardware wgpu adapter, with the PyTorch baseline on the same GPU when torch with CUDA imports.
#
#   scripts/gpu-bench.sh            # results in target/gpu-bench/ (or under $OUT when set)
#
# Meant to finish within 10 minutes on a machine with 16 cores and one GPU: the build is the
# longest part; each benchmark runs few steps.
set -euo pipefail
cd "$(dirname "$0")/.."

out="${OUT:-target/gpu-bench}"
mkdir -p "$out"
log() { echo "[gpu-bench] $*" | tee -a "$out/log.txt"; }

log "machine: $(nproc) cores; $(command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo 'no nvidia-smi')"
start=$(date +%s)
cargo build --release -p ail-cli 2>&1 | tail -3 | tee -a "$out/log.txt"
log "build: $(( $(date +%s) - start )) s"
ail=target/release/ail

torch=(--no-torch)
if python3 -c "import torch, torchvision; assert torch.cuda.is_available()" 2>/dev/null; then
    torch=(--compare-torch)
    log "PyTorch baseline: $(python3 -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0))')"
else
    log "PyTorch with CUDA not importable: ail's numbers only"
fi

run() {
    local name=$1; shift
    log "$name: ail $*"
    timeout 300 "$ail" "$@" 2>&1 | tee "$out/$name.txt" || log "$name: exit $?"
}
run pretrain --device wgpu bench pretrain --widths 0.25,0.5,1.0 --batch-sizes 64,256 --steps 5 --warmup 2 "${torch[@]}"
run fit --device wgpu bench fit --widths 0.25,1.0 --batch-sizes 256 --steps 5 --warmup 2 "${torch[@]}"
log "total: $(( $(date +%s) - start )) s"

#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 600), one after another, under a memory limit
# (2 GB resident, and any single allocation over 1 GB counts as a crash: a reservation sized from
# what a file declares is found even when the machine could satisfy it); stdout is closed, since
# some targets run commands that print. Each target grows the corpus in
# corpus/<target>/ from the hand-made seeds in seeds/<target>/, then prints the executions of each.
# FUZZ_TIMEOUT (seconds, default 30) is the longest one input may take: raise it when the fuzzers
# share the machine with other work (a 34-megapixel JPEG takes 3 s under AddressSanitizer alone,
# over 30 s on a starved core).
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Crashes land in
# artifacts/<target>/; reproduce one with `cargo +nightly fuzz run <target> <file>`.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(cifar idx image zip strokes wav checkpoint config web_export omniglot csv_task resume results)
mkdir -p logs
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== $t: ${seconds} s"
  cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout="${FUZZ_TIMEOUT:-30}" \
    -close_fd_mask=1 -print_final_stats=1 > "logs/$t.log" 2>&1 || {
    echo "$t: FAILED (see logs/$t.log and artifacts/$t/)"; tail -30 "logs/$t.log"; exit 1; }
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "logs/$t.log" | sed "s/^/$t /"
done

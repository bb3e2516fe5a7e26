#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the end-to-end tests against real
# PostgreSQL servers the harness starts itself. Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# A full disk shows up as a linker crash (SIGBUS) deep in the build: say so plainly first.
target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir"
free_kb=$(df -Pk "$target_dir" | awk 'NR==2 {print $4}')
echo "== disk: $((free_kb / 1024 / 1024)) GiB free for $target_dir (the build needs about 15)"
if [ "$free_kb" -lt $((8 * 1024 * 1024)) ]; then
  echo "error: less than 8 GiB free for $target_dir; free space (cargo clean) and run again" >&2
  exit 1
fi
echo "== cargo fmt --check"
cargo fmt --all -- --check
(cd plugins && cargo fmt --all -- --check)
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy -j2 --workspace --all-targets -- -D warnings
echo "== plugins (wasm32-wasip2)"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
# Always into plugins/target (whatever CARGO_TARGET_DIR says): the end-to-end tests load them there.
(cd plugins && cargo clippy -j2 --target-dir target --all-targets -- -D warnings \
  && cargo clippy -j2 --target-dir target --target wasm32-wasip2 -- -D warnings \
  && cargo test -j2 --target-dir target \
  && cargo build -j2 --target-dir target --release --target wasm32-wasip2)
echo "== tests"
# Two end-to-end tests at a time: each starts its own PostgreSQL on this 2-core machine.
status=0
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --workspace --no-fail-fast --test-threads 2 --build-jobs 2 || status=$?
  # Tests that need TimescaleDB print this line and return early when it is absent: count them,
  # so that a skip is never reported as a pass.
  junit="${CARGO_TARGET_DIR:-target}/nextest/default/junit.xml"
  skips=$(grep -c 'skipped: TimescaleDB not installed' "$junit" 2>/dev/null || true)
  echo "TimescaleDB: ${skips:-0} tests skipped: TimescaleDB not installed"
else
  mkdir -p target
  cargo test -j2 --workspace --no-fail-fast -- --test-threads 2 --nocapture >target/test-output.log 2>&1 \
    || status=$?
  cat target/test-output.log
  skips=$(grep -c 'skipped: TimescaleDB not installed' target/test-output.log || true)
  echo "TimescaleDB: ${skips:-0} tests skipped: TimescaleDB not installed"
fi
exit "$status"

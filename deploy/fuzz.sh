#!/usr/bin/env bash
# Runs the fuzz targets (tests/fuzz: envelope and canonical JSON, addresses, the signature
# input, federation headers, WebSocket frames, configuration files), each for a bounded time,
# and prints the executions per target.
#
#   deploy/fuzz.sh                          # every target, 60 s each
#   FUZZ_SECS=600 deploy/fuzz.sh envelope   # one target, 10 minutes
#
# Needs a nightly toolchain (libFuzzer's instrumentation) and cargo-fuzz: both are installed
# here when missing (rustup, `cargo install cargo-fuzz`). Each run starts from the committed
# seeds (tests/fuzz/corpus/<target>/) and grows a scratch corpus under the target directory;
# the committed corpus is never written.
#
# A crash stops that target and leaves its input in tests/fuzz/fuzz/artifacts/<target>/. To
# keep it fixed: copy the input into tests/fuzz/corpus/<target>/ (the replay test,
# `cargo test -p amp-fuzz hardening`, then runs it on every CI run), and fix the code.
#
# Environment (all optional):
#   FUZZ_SECS         seconds per target (default 60)
#   FUZZ_TARGET_DIR   where to build (default <repo>/target/fuzz)
#   FUZZ_SANITIZER    address (default) or none (faster, finds panics only)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECS=${FUZZ_SECS:-60}
TARGET_DIR=${FUZZ_TARGET_DIR:-$ROOT/target/fuzz}
SANITIZER=${FUZZ_SANITIZER:-address}
FUZZ_DIR=$ROOT/tests/fuzz/fuzz
ALL=(canonical_json envelope address signing federation_headers ws_frame config)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL[@]}")

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "== installing the nightly toolchain (libFuzzer needs it)" >&2
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

echo "== building the targets (sanitizer: $SANITIZER)" >&2
cargo +nightly fuzz build --fuzz-dir "$FUZZ_DIR" --target-dir "$TARGET_DIR" \
  --sanitizer "$SANITIZER" "${TARGETS[@]:0:1}" >&2
for t in "${TARGETS[@]:1}"; do
  cargo +nightly fuzz build --fuzz-dir "$FUZZ_DIR" --target-dir "$TARGET_DIR" \
    --sanitizer "$SANITIZER" "$t" >&2
done

results=()
failed=0
for t in "${TARGETS[@]}"; do
  scratch=$TARGET_DIR/corpus/$t
  mkdir -p "$scratch"
  log=$TARGET_DIR/$t.log
  echo "== $t: $SECS s" >&2
  status=0
  # The scratch corpus first (libFuzzer writes new inputs there), then the committed seeds.
  cargo +nightly fuzz run --fuzz-dir "$FUZZ_DIR" --target-dir "$TARGET_DIR" \
    --sanitizer "$SANITIZER" "$t" "$scratch" "$ROOT/tests/fuzz/corpus/$t" -- \
    -max_total_time="$SECS" -print_final_stats=1 -rss_limit_mb=2048 -max_len=65536 \
    -timeout=10 > "$log" 2>&1 || status=$?
  # libFuzzer's final stats (-print_final_stats); 0 when it stopped before printing them.
  execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -1)
  if [ "$status" -ne 0 ]; then
    failed=1
    results+=("| $t | ${execs:-0} | CRASH (see $log and $FUZZ_DIR/artifacts/$t/) |")
  else
    results+=("| $t | ${execs:-0} | ok |")
  fi
done

echo
echo "fuzz: $SECS s per target, sanitizer $SANITIZER"
echo
echo "| target | executions | result |"
echo "|---|---|---|"
printf '%s\n' "${results[@]}"
exit "$failed"

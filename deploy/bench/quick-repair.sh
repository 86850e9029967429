#!/usr/bin/env bash
# redb's quick repair, on and off: for each setting, N signed routes (amp load, 64 in flight)
# into an empty release ampd (mean routes/s over the fill), the file's size, then kill -9 and
# a restart on the same data dir (seconds from exec to /readyz 200). The figures in
# deploy/bench/README.md ("Where ampd's time goes") came from it.
#
#   BENCH_SKIP_BUILD=1 CARGO_TARGET_DIR=/path N=200000 deploy/bench/quick-repair.sh
#
# Loopback only; bounded by N; every process is stopped by its pid.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release
N=${N:-200000}
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release --locked -p ampd -p amp-client)
fi
. "$ROOT/deploy/bench/limits.sh"
export AMP__LOG__FILTER=warn AMP__LOG__FORMAT=json
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null || true' EXIT
for qr in ${MODES:-true false}; do
  W=$(mktemp -d /tmp/amp-quick-repair.XXXXXX)
  port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  AMP__STORE__BACKEND=redb AMP__STORE__QUICK_REPAIR=$qr "$BIN/ampd" --listen "127.0.0.1:$port" --data-dir "$W/data" --domain bench.test > "$W/log" 2>&1 &
  pid=$!
  until curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null; do sleep 0.05; done
  "$BIN/amp" load --provider "http://127.0.0.1:$port" --agents 64 --tenants 4 --reuse "$W/agents.json" \
    --mix route --concurrency 64 --count "$N" --quiet > "$W/fill.txt"
  echo "quick_repair=$qr fill: $(grep ' route ' "$W/fill.txt" | tr -s ' ')"
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  echo "quick_repair=$qr file: $(du -sh "$W/data" | cut -f1)"
  start=$(date +%s.%N)
  AMP__STORE__BACKEND=redb AMP__STORE__QUICK_REPAIR=$qr "$BIN/ampd" --listen "127.0.0.1:$port" --data-dir "$W/data" --domain bench.test > "$W/log2" 2>&1 &
  pid=$!
  until curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null; do sleep 0.01; done
  end=$(date +%s.%N)
  echo "quick_repair=$qr kill -9 to ready: $(python3 -c "print(round($end - $start, 3))") s"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  pid=""
  rm -rf "$W"
done

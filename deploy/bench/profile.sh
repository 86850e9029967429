#!/usr/bin/env bash
# Where ampd's CPU goes on the signed durable route path (issue 20: profile first): starts the
# release ampd on a fresh data dir, registers agents, runs `amp load --mix route` (closed
# loop) and samples ampd alone with `perf record --call-graph dwarf` (the load generator runs in its own
# process and is not in the profile). Prints the top functions by self time and by time
# including callees, and the route figures of the same run.
#
#   deploy/bench/profile.sh                       # 20 s of load, 10 s sampled
#   BENCH_SKIP_BUILD=1 CARGO_TARGET_DIR=/path deploy/bench/profile.sh
#
# Environment: BENCH_SECS (load seconds, 20), PROFILE_SECS (sampled seconds, 10, within the
# load), BENCH_CONCURRENCY (64), BENCH_MIX (route | pickup, default route), PERF_FREQ (299),
# PERF_CALL_GRAPH (dwarf,32768: release builds keep no frame pointers; fp is cheaper).
# Needs perf (linux-perf) and permission to sample (root, or kernel.perf_event_paranoid <= 1).
# Loopback only; bounded in time; the processes started here are stopped by their pids.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release
SECS=${BENCH_SECS:-20}
PSECS=${PROFILE_SECS:-10}
CONC=${BENCH_CONCURRENCY:-64}
MIX=${BENCH_MIX:-route}
FREQ=${PERF_FREQ:-299}
command -v perf >/dev/null || { echo "perf is needed (apt-get install linux-perf)" >&2; exit 1; }
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release --locked -p ampd -p amp-client)
fi
WORK=$(mktemp -d /tmp/amp-profile.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
. "$ROOT/deploy/bench/limits.sh"
export AMP__LOG__FILTER=warn AMP__LOG__FORMAT=json
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
"$BIN/ampd" --listen "127.0.0.1:$port" --data-dir "$WORK/data" --domain bench.test > "$WORK/ampd.log" 2>&1 &
AMPD=$!
PIDS+=("$AMPD")
until curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null; do sleep 0.05; done
URL=http://127.0.0.1:$port
"$BIN/amp" load --provider "$URL" --agents 64 --tenants 4 --reuse "$WORK/agents.json" --mix route \
  --concurrency 8 --count 2000 --quiet > /dev/null
"$BIN/amp" load --provider "$URL" --agents 64 --reuse "$WORK/agents.json" --mix "$MIX" \
  --concurrency "$CONC" --duration "$SECS" --quiet --json "$WORK/load.json" > "$WORK/load.txt" &
LOAD=$!
PIDS+=("$LOAD")
sleep $(( (SECS - PSECS) / 2 ))
perf record -F "$FREQ" --call-graph "${PERF_CALL_GRAPH:-dwarf,32768}" -p "$AMPD" -o "$WORK/perf.data" -- sleep "$PSECS" 2> "$WORK/perf.err" > /dev/null
wait "$LOAD"
# The reports are cut with head: no SIGPIPE failure.
set +o pipefail
echo "== load ($MIX, $CONC in flight, $SECS s)"
cat "$WORK/load.txt"
echo
echo "== ampd: top functions by self time (perf report --no-children)"
perf report -i "$WORK/perf.data" --no-children --sort symbol --stdio --percent-limit 0.7 2>/dev/null \
  | grep -E '^ +[0-9]+\.[0-9]+%' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//' | cut -c1-160 | head -40
echo
echo "== ampd: top functions including callees (perf report --children)"
perf report -i "$WORK/perf.data" --children --sort symbol --stdio --percent-limit 3 2>/dev/null \
  | grep -E '^ +[0-9]+\.[0-9]+%' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//' | cut -c1-160 | head -45
echo
echo "perf data and logs in $WORK"

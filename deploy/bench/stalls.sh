#!/usr/bin/env bash
# Where ampd's store writer waits (issue 20's T2: the p99 at half load): starts the release
# ampd on a fresh data dir, fills it with routes (closed loop), then runs an open loop of
# signed routes at a fixed rate while `perf` records every scheduler switch of ampd with its
# call stack. Prints the route latency of the open loop and, for the store writer thread,
# every time it was off the CPU for more than 10 ms, grouped by what it was waiting in (the
# first store frame of the stack where it blocked): a slow journal fsync, a lock held by
# fjall's background work, the queue of writes.
#
#   deploy/bench/stalls.sh                         # 200,000 routes, then 2,500/s for 15 s
#   BENCH_SKIP_BUILD=1 BENCH_RATE=3000 CARGO_TARGET_DIR=/path deploy/bench/stalls.sh
#
# Environment: BENCH_FILL (routes stored first, 200000), BENCH_RATE (routes/s of the open
# loop, 2500), BENCH_SECS (its seconds, 15), STALL_MS (the shortest wait reported, 10).
# Needs perf (linux-perf) and permission to trace (root, or kernel.perf_event_paranoid <= 1).
# Loopback only; bounded in time; the processes started here are stopped by their pids.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release
FILL=${BENCH_FILL:-200000}
RATE=${BENCH_RATE:-2500}
SECS=${BENCH_SECS:-15}
command -v perf >/dev/null || { echo "perf is needed (apt-get install linux-perf)" >&2; exit 1; }
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release --locked -p ampd -p amp-client)
fi
WORK=$(mktemp -d /tmp/amp-stalls.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK/data" "$WORK/perf.data"
}
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
  --concurrency 64 --count "$FILL" --duration 900 --quiet > /dev/null
WRITER=$(grep -l '^amp-store-fjall$' /proc/"$AMPD"/task/*/comm | head -1 | cut -d/ -f5)
[ -n "$WRITER" ] || { echo "no store writer thread in ampd (is the store fjall?)" >&2; exit 1; }
perf record -q -e sched:sched_switch -e sched:sched_wakeup --call-graph dwarf,16384 \
  -p "$AMPD" -o "$WORK/perf.data" -- sleep $((SECS + 1)) 2> "$WORK/perf.err" > /dev/null &
PERF=$!
PIDS+=("$PERF")
sleep 0.5
"$BIN/amp" load --provider "$URL" --agents 64 --reuse "$WORK/agents.json" --mix route \
  --rate "$RATE" --concurrency 512 --duration "$SECS" --quiet --json "$WORK/load.json" > /dev/null
wait "$PERF"
python3 - "$WORK/load.json" "$RATE" "$SECS" <<'EOF'
import json, sys
o = json.load(open(sys.argv[1]))["ops"]["route"]
l = o["latency"]
print(f"== open loop at {sys.argv[2]}/s for {sys.argv[3]} s: {o['ok']} ok, {o.get('errors', 0)} errors, "
      f"p50 {l['p50_ms']} ms, p99 {l['p99_ms']} ms, p99.9 {l['p99_9_ms']} ms, max {l['max_ms']} ms")
EOF
cat > "$WORK/stalls.py" <<'EOF'
import collections, sys
writer, floor = sys.argv[1], float(sys.argv[2])
events = []  # (time, header, frames)
for block in sys.stdin.read().split("\n\n"):
    lines = [l for l in block.strip().split("\n") if l.strip()]
    if lines:
        frames = [" ".join(l.split()[1:]) for l in lines[1:]]
        events.append((float(lines[0].split()[1].rstrip(":")), lines[0], frames))
def cause(frames):
    # The first frame of the store (fjall, lsm-tree, ours), and what the kernel waited in.
    ours = next((f for f in frames if any(k in f for k in ("fjall", "lsm_tree", "amp_store"))
                 and "(inlined)" not in f), "?")
    kernel = ("fsync" if any("fsync" in f or "fdatasync" in f for f in frames) else
              "lock" if any("contended" in f or "futex" in f for f in frames) else "other")
    return f"{kernel:6} {ours}"
waits = collections.defaultdict(list)
off_total, on_state = 0.0, collections.Counter()
for (t, head, frames), (t_next, _, _) in zip(events, events[1:]):
    if "sched_switch" in head and f"prev_pid={writer} " in head:
        gap = (t_next - t) * 1000
        off_total += gap
        if gap > floor:
            waits[cause(frames)].append(gap)
span = (events[-1][0] - events[0][0]) if events else 0
print(f"== store writer thread {writer}: off the CPU {off_total / 1000:.1f} s of {span:.1f} s traced; "
      f"waits over {floor:g} ms by cause")
print(f"{'count':>5} {'sum ms':>8} {'max ms':>7}  cause (what the kernel waited in, the store's frame)")
for k, v in sorted(waits.items(), key=lambda kv: -sum(kv[1])):
    print(f"{len(v):5d} {sum(v):8.1f} {max(v):7.1f}  {k}")
EOF
perf script -i "$WORK/perf.data" --tid "$WRITER" -F tid,time,event,trace,ip,sym 2> /dev/null |
  python3 "$WORK/stalls.py" "$WRITER" "${STALL_MS:-10}"

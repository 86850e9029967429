#!/usr/bin/env python3
"""Counts the NATS messages of a running cluster by kind, for a bench's load phase.

    python3 deploy/bench/nats_sniff.py nats://127.0.0.1:4222 SECONDS OUT.json

Subscribes to `>` (every subject a client publishes, JetStream API requests included) for
SECONDS and writes {kind: count}; a kind is the subject with ids folded (`$JS.API.DIRECT.GET.
KV_amp_registry`, `amp.mbox.*.q.*`, `_INBOX`, ...). Needs nats-py (pip install nats-py).
A measuring aid only: it adds one subscriber's load to the server while it runs, and that
subscriber receives every message, so the cluster slows under it (parity.sh with 2,000
agents: 1,300 routes/s with it, 2,050 without) and its counts are read per route, never as
rates. Under heavy load nats-py may drop messages (a slow consumer), so counts are lower
bounds. `nats_per_process.py` counts each process's messages from `/connz` instead, at no
cost to the load.
"""
import asyncio, collections, json, re, sys

import nats

FOLD = [
    (re.compile(r"^_INBOX\..*"), "_INBOX"),
    (re.compile(r"^\$JS\.ACK\..*"), "$JS.ACK"),
    (re.compile(r"^\$KV\.([^.]+)\.([^.]+)\..*"), r"$KV.\1.\2.*"),
    (re.compile(r"^(\$JS\.API\.DIRECT\.GET\.[^.]+)\..*"), r"\1.*"),
    (re.compile(r"^(\$JS\.API\.[A-Z.]+?)\.(AMP|KV|OBJ)_?[A-Za-z0-9_-]*.*"), r"\1.\2"),
]


def kind(subject: str) -> str:
    for pattern, repl in FOLD:
        if pattern.match(subject):
            return pattern.sub(repl, subject)
    # amp.<kind>.<ids...>: keep the first two tokens, and the mailbox's q/a token.
    parts = subject.split(".")
    if len(parts) > 3 and parts[1] == "mbox":
        return f"amp.mbox.*.{parts[3]}.*"
    return ".".join(parts[:2]) + (".*" if len(parts) > 2 else "")


async def main(url: str, secs: float, out: str) -> None:
    counts: collections.Counter = collections.Counter()
    nc = await nats.connect(url)

    async def on(msg):
        counts[kind(msg.subject)] += 1

    await nc.subscribe(">", cb=on)
    await asyncio.sleep(secs)
    await nc.drain()
    json.dump(dict(counts.most_common()), open(out, "w"), indent=1)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), sys.argv[3]))

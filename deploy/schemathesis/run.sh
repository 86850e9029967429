#!/usr/bin/env bash
# Schemathesis (PyPI) against a live ampd: starts ampd on 127.0.0.1 (a free port, a temporary
# data dir, generous rate limits so the run explores rather than meets 429, attachments and
# federation on), loads the OpenAPI document it serves (GET /v1/openapi.json) and runs every
# check Schemathesis has: no 5xx, every answer conforms to the document (status, content
# type, headers, body schema), invalid data rejected, valid data accepted, and more.
# Authenticated operations get a registered agent's API key and POST /v1/route bodies are
# signed by that agent (deploy/schemathesis/hooks.py). Bounded in time (SCHEMATHESIS_MAX_TIME
# seconds, 180 by default). Exits non-zero on any failure and prints "N passed, N failed".
#
# AMPD_BIN: the ampd binary (default: cargo build --release -p ampd, then target/release/ampd).
# Installs schemathesis and cryptography into a virtualenv under ~/.cache/amp-tools.
set -euo pipefail
cd "$(dirname "$0")/../.."
here="$(pwd)/deploy/schemathesis"

venv="${XDG_CACHE_HOME:-$HOME/.cache}/amp-tools/schemathesis"
if [ ! -x "$venv/bin/schemathesis" ] || ! "$venv/bin/python" -c 'import cryptography' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis==4.32.5' 'cryptography>=42'
fi

if [ -z "${AMPD_BIN:-}" ]; then
  cargo build --release -p ampd --locked
  AMPD_BIN="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/ampd"
fi

work="$(mktemp -d)"
ampd_pid=""
cleanup() {
  if [ -n "$ampd_pid" ]; then
    kill "$ampd_pid" 2>/dev/null || true
    wait "$ampd_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
url="http://127.0.0.1:$port"
cat >"$work/ampd.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
domain = "amp.test"
data_dir = "$work/data"
shutdown_grace_secs = 2

[log]
filter = "warn"

[ingest.registration]
per_ip_per_minute = 1000000

[ingest.limits]
api_requests_per_minute = 1000000
tenant_requests_per_minute = 1000000
messages_per_minute = 1000000
pending_per_minute = 1000000
mailbox_quota = 1000000

[ingest.attachments]
enabled = true

[federation]
enabled = true
TOML
"$AMPD_BIN" --config "$work/ampd.toml" >"$work/ampd.log" 2>&1 &
ampd_pid=$!
for _ in $(seq 1 100); do
  curl -fsS "$url/readyz" >/dev/null 2>&1 && break
  if ! kill -0 "$ampd_pid" 2>/dev/null; then
    echo "ampd exited:"; cat "$work/ampd.log"; exit 1
  fi
  sleep 0.1
done
curl -fsS "$url/readyz" >/dev/null || { echo "ampd not ready:"; cat "$work/ampd.log"; exit 1; }

status=0
# Run from the temporary directory: Schemathesis keeps a cache (.schemathesis/) where it runs.
(cd "$work" && AMP_URL="$url" SCHEMATHESIS_HOOKS=hooks PYTHONPATH="$here" PYTHONDONTWRITEBYTECODE=1 \
  "$venv/bin/schemathesis" --config-file "$here/schemathesis.toml" run "$url/v1/openapi.json" \
  --url "$url" \
  --checks all \
  --max-time "${SCHEMATHESIS_MAX_TIME:-180}" \
  --workers 2 \
  --seed "${SCHEMATHESIS_SEED:-20261206}" \
  --request-timeout 40 \
  --suppress-health-check all \
  --report junit --report-dir "$work/report" \
  "$@") || status=$?

junit="$(ls "$work"/report/junit*.xml 2>/dev/null | head -1 || true)"
if [ -n "$junit" ]; then
  python3 - "$junit" <<'PY'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
cases = root.iter("testcase")
passed = failed = skipped = 0
for c in cases:
    if c.find("failure") is not None or c.find("error") is not None:
        failed += 1
    elif c.find("skipped") is not None:
        skipped += 1
    else:
        passed += 1
print(f"schemathesis operations: {passed} passed, {failed} failed, {skipped} skipped")
PY
fi
if grep -qE '"level":"(ERROR|error)"|panicked' "$work/ampd.log"; then
  echo "ampd logged errors during the run:"; grep -E '"level":"(ERROR|error)"|panicked' "$work/ampd.log" | head -20
  status=1
fi
exit "$status"

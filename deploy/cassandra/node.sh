#!/usr/bin/env bash
# A single-node Apache Cassandra for tests: CQL on loopback, files in one directory.
#
#   node.sh fetch
#       Downloads cassandra-all and its runtime jars from Maven Central (through `mvn` and the
#       pom.xml beside this script) into $AMP_CASSANDRA_HOME (default
#       ~/.cache/amp-cassandra/<version>). Idempotent: a marker file makes a second call instant.
#       Prints the home directory.
#
#   node.sh certs DIR
#       Makes a throwaway PKI for TLS tests in DIR with openssl and keytool: ca.pem (a CA),
#       server.pem/server.key (127.0.0.1, localhost, cassandra.amp.test, signed by the CA),
#       keystore.jks and truststore.jks (password amp-test-store, for Cassandra),
#       client.pem/client.key (a client certificate for mutual TLS, signed by the CA) and
#       other-ca.pem (an unrelated CA, to see a handshake fail). Idempotent.
#
#   node.sh run --dir DIR --native-port P --storage-port S [--parent-pid PID] [--tls-dir T]
#       Writes DIR/conf/cassandra.yaml and DIR/conf/logback.xml, then runs the node in the
#       foreground: this script's process *becomes* the JVM (exec), so a SIGTERM/SIGINT/SIGKILL
#       sent to it reaches Cassandra itself. With --parent-pid, a watchdog kills the JVM once
#       PID is gone, so a test process that dies (even by kill -9) leaves no JVM behind.
#       The log is DIR/system.log; "Starting listening for CQL clients" in it means ready.
#       With --tls-dir (a directory made by `certs`), the native port also speaks TLS with
#       T/keystore.jks: `client_encryption_options` with `optional: true`, so plain and TLS
#       clients share the port; TLS clients need a certificate signed by T/ca.pem.
#
# Environment:
#   AMP_CASSANDRA_VERSION  cassandra-all version (default 5.0.9)
#   AMP_CASSANDRA_HOME     where the jars go (default ~/.cache/amp-cassandra/<version>)
#   AMP_CASSANDRA_XMS      initial heap (default 256m)
#   AMP_CASSANDRA_XMX      maximum heap (default 768m)
#   AMP_CASSANDRA_JMX_PORT a loopback JMX port for nodetool (default: no JMX server at all)
#   JAVA_HOME / java on PATH: a JDK 17 (Cassandra 5.0 supports 11 and 17)
set -euo pipefail

case "${BASH_SOURCE[0]}" in
  */*) HERE="$(cd "${BASH_SOURCE[0]%/*}" && pwd)" ;;
  *) HERE="$(pwd)" ;;
esac
# The newest 5.0.x on Maven Central when this was written (pom.xml names the same one).
VERSION="${AMP_CASSANDRA_VERSION:-5.0.9}"
CASSANDRA_HOME="${AMP_CASSANDRA_HOME:-${HOME}/.cache/amp-cassandra/${VERSION}}"
LIB="${CASSANDRA_HOME}/lib"
MARKER="${CASSANDRA_HOME}/.fetched"

die() {
  echo "node.sh: $*" >&2
  exit 1
}

usage() {
  sed -n '2,33p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

java_bin() {
  if [ -n "${JAVA_HOME:-}" ] && [ -x "${JAVA_HOME}/bin/java" ]; then
    echo "${JAVA_HOME}/bin/java"
  elif command -v java >/dev/null 2>&1; then
    command -v java
  else
    die "java not found (set JAVA_HOME or put a JDK 17 on PATH)"
  fi
}

fetched() {
  [ -f "${MARKER}" ] && [ -f "${LIB}/cassandra-all-${VERSION}.jar" ]
}

cmd_fetch() {
  if fetched; then
    echo "${CASSANDRA_HOME}"
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn (Maven) not found; install maven to fetch Cassandra"
  mkdir -p "${CASSANDRA_HOME}"
  # Concurrent fetches (several tests starting at once) take turns; the loser finds the marker.
  # The lock is released when this shell exits or, under `run`, before the exec.
  if command -v flock >/dev/null 2>&1; then
    exec 9>"${CASSANDRA_HOME}/.lock"
    flock 9
    if fetched; then
      exec 9>&-
      echo "${CASSANDRA_HOME}"
      return 0
    fi
  fi
  local staging="${CASSANDRA_HOME}/lib.partial.$$"
  rm -rf "${staging}"
  echo "node.sh: fetching cassandra-all ${VERSION} with Maven into ${CASSANDRA_HOME}" >&2
  # Maven's output goes to a file, shown only on failure (Debian's 3.8.7 prints colour resets
  # even with -q -B).
  if ! mvn -q -B -Dstyle.color=never -f "${HERE}/pom.xml" \
    -Dcassandra.version="${VERSION}" \
    dependency:copy-dependencies \
    -DincludeScope=runtime \
    -DoutputDirectory="${staging}" >"${CASSANDRA_HOME}/fetch.log" 2>&1; then
    cat "${CASSANDRA_HOME}/fetch.log" >&2
    rm -rf "${staging}"
    die "mvn could not fetch org.apache.cassandra:cassandra-all:${VERSION} (log above)"
  fi
  [ -f "${staging}/cassandra-all-${VERSION}.jar" ] || die "cassandra-all-${VERSION}.jar missing after mvn"
  compgen -G "${staging}/jamm-*.jar" >/dev/null || die "no jamm jar after mvn (needed for -javaagent)"
  rm -rf "${LIB}"
  mv "${staging}" "${LIB}"
  echo "${VERSION}" >"${MARKER}"
  exec 9>&-
  echo "${CASSANDRA_HOME}"
}

cmd_certs() {
  local out="${1:?certs needs a directory}"
  command -v openssl >/dev/null 2>&1 || die "openssl not found (needed to make test certificates)"
  command -v keytool >/dev/null 2>&1 || die "keytool not found (it comes with the JDK)"
  mkdir -p "${out}"
  [ -f "${out}/keystore.jks" ] && [ -f "${out}/other-ca.pem" ] && return 0
  local pass="amp-test-store" log="${out}/certs.log"
  (
    set -e
    cd "${out}"
    # A CA, and an unrelated one for the wrong-CA test.
    for ca in ca other-ca; do
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=amp test ${ca}" \
        -keyout "${ca}.key" -out "${ca}.pem"
    done
    # The server: valid for the loopback address and two names (the hostname check).
    openssl req -newkey rsa:2048 -nodes -subj "/CN=cassandra.amp.test" \
      -keyout server.key -out server.csr
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:cassandra.amp.test\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile server.ext -out server.pem
    # A client certificate, for mutual TLS.
    openssl req -newkey rsa:2048 -nodes -subj "/CN=amp test client" \
      -keyout client.key -out client.csr
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile client.ext -out client.pem
    # Cassandra reads Java keystores: the server's key and chain (through PKCS#12), and a
    # truststore with the CA (what client certificates are checked against).
    cat server.pem ca.pem >server-chain.pem
    openssl pkcs12 -export -in server-chain.pem -inkey server.key -name server \
      -passout "pass:${pass}" -out server.p12
    rm -f keystore.jks truststore.jks
    keytool -importkeystore -noprompt -srckeystore server.p12 -srcstoretype PKCS12 \
      -srcstorepass "${pass}" -destkeystore keystore.jks -deststoretype JKS \
      -deststorepass "${pass}"
    keytool -importcert -noprompt -alias ca -file ca.pem -keystore truststore.jks \
      -storetype JKS -storepass "${pass}"
    rm -f ./*.csr ./*.ext ./*.srl server.p12 server-chain.pem
  ) >"${log}" 2>&1 || {
    cat "${log}" >&2
    die "could not make the test certificates in ${out} (log above)"
  }
}

write_config() {
  local dir="$1" native_port="$2" storage_port="$3" tls_dir="${4:-}"
  mkdir -p "${dir}/conf" "${dir}/data" "${dir}/commitlog" "${dir}/saved_caches" \
    "${dir}/hints" "${dir}/cdc_raw"
  # commitlog_sync: batch — a write is acknowledged only after its commit log section is
  # synced. With `periodic` (the production default, and ScyllaDB's) an acknowledged write
  # that is not yet covered by a sync marker is not replayed after a kill -9, and the store's
  # tests kill the node to prove acknowledged writes survive (as the nats kit's
  # `sync_interval: always` does for JetStream).
  cat >"${dir}/conf/cassandra.yaml" <<EOF
# Written by deploy/cassandra/node.sh: one test node on loopback; everything under ${dir}.
cluster_name: amp-test
num_tokens: 1
initial_token: 0
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:${storage_port}"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: ${storage_port}
native_transport_port: ${native_port}
start_native_transport: true
data_file_directories:
  - ${dir}/data
commitlog_directory: ${dir}/commitlog
saved_caches_directory: ${dir}/saved_caches
hints_directory: ${dir}/hints
cdc_raw_directory: ${dir}/cdc_raw
commitlog_sync: batch
# Paxos v2 (Cassandra 4.1+): lightweight transactions in 2 round trips instead of 4, what a
# current cluster runs; the store's appends and id claims are lightweight transactions.
paxos_variant: v2
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
auto_snapshot: false
snapshot_before_compaction: false
incremental_backups: false
hinted_handoff_enabled: false
cdc_enabled: false
key_cache_size: 8MiB
row_cache_size: 0MiB
counter_cache_size: 0MiB
memtable_heap_space: 64MiB
memtable_offheap_space: 64MiB
concurrent_reads: 8
concurrent_writes: 8
concurrent_counter_writes: 4
concurrent_compactors: 1
memtable_flush_writers: 1
user_defined_functions_enabled: false
materialized_views_enabled: false
sasi_indexes_enabled: false
transient_replication_enabled: false
EOF
  if [ -n "${tls_dir}" ]; then
    # TLS on the native port next to plain CQL (optional: true), so the TLS tests and the
    # others share one node. A TLS client must present a certificate signed by the CA
    # (mutual TLS); plain clients are not asked for one.
    cat >>"${dir}/conf/cassandra.yaml" <<EOF
client_encryption_options:
  enabled: true
  optional: true
  keystore: ${tls_dir}/keystore.jks
  keystore_password: amp-test-store
  truststore: ${tls_dir}/truststore.jks
  truststore_password: amp-test-store
  require_client_auth: true
EOF
  fi
  cat >"${dir}/conf/logback.xml" <<EOF
<!-- Written by deploy/cassandra/node.sh: INFO to ${dir}/system.log, nothing on stdout. -->
<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>${dir}/system.log</file>
    <append>true</append>
    <immediateFlush>true</immediateFlush>
    <encoder>
      <pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern>
    </encoder>
  </appender>
  <root level="INFO">
    <appender-ref ref="FILE" />
  </root>
</configuration>
EOF
}

cmd_run() {
  local dir="" native_port="" storage_port="" parent_pid="" tls_dir=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
      --native-port) native_port="${2:?--native-port needs a value}"; shift 2 ;;
      --storage-port) storage_port="${2:?--storage-port needs a value}"; shift 2 ;;
      --parent-pid) parent_pid="${2:?--parent-pid needs a value}"; shift 2 ;;
      --tls-dir) tls_dir="${2:?--tls-dir needs a value}"; shift 2 ;;
      *) die "run: unknown argument $1" ;;
    esac
  done
  [ -n "${dir}" ] && [ -n "${native_port}" ] && [ -n "${storage_port}" ] ||
    die "run needs --dir, --native-port and --storage-port"
  mkdir -p "${dir}"
  dir="$(cd "${dir}" && pwd)"
  if [ -n "${parent_pid}" ] && ! kill -0 "${parent_pid}" 2>/dev/null; then
    die "parent pid ${parent_pid} is not running"
  fi

  local java
  java="$(java_bin)"
  cmd_fetch >/dev/null
  local jamms=("${LIB}"/jamm-*.jar)
  [ -f "${jamms[0]}" ] || die "no jamm jar in ${LIB} (needed for -javaagent); remove ${MARKER} and fetch again"
  local jamm="${jamms[0]}"
  if [ -n "${tls_dir}" ]; then
    [ -f "${tls_dir}/keystore.jks" ] || die "no keystore.jks in ${tls_dir} (run: node.sh certs ${tls_dir})"
    tls_dir="$(cd "${tls_dir}" && pwd)"
  fi
  write_config "${dir}" "${native_port}" "${storage_port}" "${tls_dir}"

  local opts=(
    # jvm-server.options (minus -XX:+AlwaysPreTouch, which would make the whole heap resident,
    # and -XX:-UseBiasedLocking, which JDK 17 deprecates and already defaults to)
    -ea
    -da:net.openhft...
    -XX:+UseThreadPriorities
    -XX:+HeapDumpOnOutOfMemoryError
    -XX:+ExitOnOutOfMemoryError
    "-XX:HeapDumpPath=${dir}"
    -Xss256k
    -XX:+UseTLAB
    -XX:+ResizeTLAB
    -XX:+UseNUMA
    -XX:+PerfDisableSharedMem
    -Djava.net.preferIPv4Stack=true
    # jvm17-server.options: G1 (without the 16m regions sized for big heaps) and JPMS
    -XX:+UseG1GC
    -XX:+ParallelRefProcEnabled
    -XX:MaxTenuringThreshold=1
    -XX:MaxGCPauseMillis=300
    -Djdk.attach.allowAttachSelf=true
    --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
    --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
    --add-exports java.sql/java.sql=ALL-UNNAMED
    --add-exports java.base/java.lang.ref=ALL-UNNAMED
    --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
    --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
    --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
    --add-opens java.base/java.lang.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
    --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
    --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
    --add-opens java.base/jdk.internal.math=ALL-UNNAMED
    --add-opens java.base/jdk.internal.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
    --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
    --add-opens java.base/sun.nio.ch=ALL-UNNAMED
    --add-opens java.base/java.io=ALL-UNNAMED
    --add-opens java.base/java.lang.reflect=ALL-UNNAMED
    --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
    --add-opens java.base/java.lang=ALL-UNNAMED
    --add-opens java.base/java.util=ALL-UNNAMED
    -Dio.netty.tryReflectionSetAccessible=true
    -Dio.netty.allocator.useCacheForAllThreads=true
    -Dio.netty.allocator.maxOrder=11
    # cassandra-env.sh: jamm measures object sizes for memtable accounting
    "-javaagent:${jamm}"
    # bin/cassandra: heap, files, config
    "-Xms${AMP_CASSANDRA_XMS:-256m}"
    "-Xmx${AMP_CASSANDRA_XMX:-768m}"
    "-Dcassandra.storagedir=${dir}"
    "-Dcassandra.logdir=${dir}"
    "-Dcassandra.config=file://${dir}/conf/cassandra.yaml"
    "-Dlogback.configurationFile=file://${dir}/conf/logback.xml"
    -Dcassandra-foreground=yes
    # One node, alone on loopback: nothing to wait for.
    -Dcassandra.skip_wait_for_gossip_to_settle=0
    -Dcassandra.ring_delay_ms=1000
    -Dcassandra.superuser_setup_delay_ms=0
    -Dcassandra.available_processors="$(nproc 2>/dev/null || echo 2)"
  )
  # No JMX server unless asked for: Cassandra 5.0 starts one only when
  # cassandra.jmx.local.port (or .remote.port) is set, and a fixed port would collide between
  # test nodes. nodetool is not needed by the tests.
  if [ -n "${AMP_CASSANDRA_JMX_PORT:-}" ]; then
    opts+=("-Dcassandra.jmx.local.port=${AMP_CASSANDRA_JMX_PORT}" -Djava.rmi.server.hostname=127.0.0.1)
  fi

  cd "${dir}"
  if [ -n "${parent_pid}" ]; then
    # After `exec` below, $$ is the JVM. The watchdog ends with the JVM or kills it once the
    # parent is gone; it holds no stdout/stderr so it never keeps a caller's pipe open.
    local jvm_pid=$$
    (
      trap '' INT TERM
      while kill -0 "${jvm_pid}" 2>/dev/null; do
        if ! kill -0 "${parent_pid}" 2>/dev/null; then
          kill -KILL "${jvm_pid}" 2>/dev/null || true
          exit 0
        fi
        sleep 1
      done
    ) </dev/null >/dev/null 2>&1 &
  fi
  # exec: SIGTERM/SIGINT to this pid stop Cassandra (its shutdown hook drains), SIGKILL kills
  # it; there is no intermediate shell to outlive or to forget to forward a signal.
  exec "${java}" "${opts[@]}" -cp "${LIB}/*" org.apache.cassandra.service.CassandraDaemon
}

case "${1:-}" in
  fetch) shift; cmd_fetch "$@" ;;
  certs) shift; cmd_certs "$@" ;;
  run) shift; cmd_run "$@" ;;
  *) usage ;;
esac

#!/usr/bin/env bash
# Install, start and stop every real service the test suite needs, together.
set -euo pipefail
# shellcheck source=ops/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
OPS="$LIENTHONG_ROOT/ops"

usage() {
  cat <<'USAGE'
Usage: ops/services.sh COMMAND

  install   install or fetch what the services need, if missing: PostgreSQL and Prometheus
            (Debian packages), the Apache Kafka jars (Maven Central), the Python interoperability
            environment (PyPI). Idempotent; a second run only checks.
  up        install, then start the suite's services and print `export` lines describing them:
              Apache Kafka, one node        LIENTHONG_KAFKA_BOOTSTRAP
              Apache Kafka, three brokers   LIENTHONG_KAFKA_CLUSTER_BOOTSTRAP, LIENTHONG_KAFKA_CLUSTER_NAME
              Apache Kafka, secured node    LIENTHONG_KAFKA_SECURED_BOOTSTRAP (SASL_SSL, SCRAM-SHA-512),
                                            LIENTHONG_KAFKA_SECURED_MTLS_BOOTSTRAP, LIENTHONG_KAFKA_SECURED_CA,
                                            LIENTHONG_KAFKA_SECURED_ADMIN_SECRET (User:lienthong-admin),
                                            LIENTHONG_CITY_CA_DIR (ops/city-ca.sh)
              PostgreSQL                    LIENTHONG_PG_URL
              Python venv                   LIENTHONG_PYTHON
              Apicurio Registry (external)  LIENTHONG_APICURIO_URL
              Prometheus, promtool          LIENTHONG_PROMETHEUS, LIENTHONG_PROMTOOL
              headless Chromium             LIENTHONG_CHROMIUM
            If any service fails to start, everything this call started is stopped again.
            Use it as:  eval "$(ops/services.sh up)"   then   cargo test
  down      stop every service `up` started (safe to run when nothing runs)
  status    say which of them run

Ports are chosen free on 127.0.0.1, so two checkouts can run their suites side by side.
State lives in $LIENTHONG_STATE_DIR (default .lienthong/, git-ignored).
USAGE
}

# Instance names, so the suite's services never touch a developer's own `default` ones.
KAFKA_SINGLE=suite
KAFKA_CLUSTER=suite-cluster
KAFKA_SECURED=suite-secured
PG=suite
APICURIO=suite

install() {
  "$OPS/postgres.sh" install
  "$OPS/prometheus.sh" install
  "$OPS/kafka.sh" fetch
  command -v openssl >/dev/null 2>&1 || apt_install openssl
  # Headless Chromium for the status page's browser tests, with fonts that have Vietnamese.
  apt_install chromium fonts-dejavu-core
  "$OPS/apicurio.sh" fetch
  "$OPS/python-env.sh" create >/dev/null
}

down() {
  local rc=0
  "$OPS/kafka.sh" stop --name "$KAFKA_SINGLE" || rc=1
  # The suite's cluster is thrown away: three controlled shutdowns at once only wait each
  # other out, so give them 5 s before SIGKILL instead of 30.
  LIENTHONG_KAFKA_STOP_TIMEOUT=5 "$OPS/kafka.sh" stop --name "$KAFKA_CLUSTER" || rc=1
  "$OPS/kafka.sh" stop --name "$KAFKA_SECURED" || rc=1
  "$OPS/postgres.sh" stop --name "$PG" || rc=1
  "$OPS/apicurio.sh" stop --name "$APICURIO" || rc=1
  return $rc
}

up() {
  install
  # Services left by an earlier run that was killed would make the starts below refuse.
  down >/dev/null 2>&1 || true
  # Never leave half the services running: if any start fails, stop all of them. (A global,
  # because the EXIT trap runs after this function has returned.)
  UP_COMPLETE=""
  trap '[ -n "$UP_COMPLETE" ] || { log "a service failed to start; stopping the others"; down || true; }' EXIT
  local single cluster secured pg py apicurio
  single=$("$OPS/kafka.sh" start --name "$KAFKA_SINGLE" --brokers 1)
  cluster=$("$OPS/kafka.sh" start --name "$KAFKA_CLUSTER" --brokers 3)
  secured=$("$OPS/kafka.sh" start --name "$KAFKA_SECURED" --brokers 1 --secured)
  pg=$("$OPS/postgres.sh" start --name "$PG")
  apicurio=$("$OPS/apicurio.sh" start --name "$APICURIO")
  py=$("$OPS/python-env.sh" python)
  UP_COMPLETE=1
  printf 'export LIENTHONG_STATE_DIR=%q\n' "$LIENTHONG_STATE_DIR"
  printf 'export LIENTHONG_KAFKA_BOOTSTRAP=%q\n' "$single"
  printf 'export LIENTHONG_KAFKA_VERSION=%q\n' "$("$OPS/kafka.sh" version)"
  printf 'export LIENTHONG_KAFKA_CLUSTER_BOOTSTRAP=%q\n' "$cluster"
  printf 'export LIENTHONG_KAFKA_CLUSTER_NAME=%q\n' "$KAFKA_CLUSTER"
  local secured_dir="$LIENTHONG_STATE_DIR/kafka/$KAFKA_SECURED"
  printf 'export LIENTHONG_KAFKA_SECURED_BOOTSTRAP=%q\n' "$secured"
  printf 'export LIENTHONG_KAFKA_SECURED_MTLS_BOOTSTRAP=%q\n' "$(cat "$secured_dir/mtls-bootstrap")"
  printf 'export LIENTHONG_KAFKA_SECURED_ADMIN_SECRET=%q\n' "$(cat "$secured_dir/admin.secret")"
  printf 'export LIENTHONG_CITY_CA_DIR=%q\n' "$("$OPS/city-ca.sh" dir)"
  printf 'export LIENTHONG_KAFKA_SECURED_CA=%q\n' "$("$OPS/city-ca.sh" dir)/ca.crt"
  printf 'export LIENTHONG_PG_URL=%q\n' "$pg"
  printf 'export LIENTHONG_PYTHON=%q\n' "$py"
  printf 'export LIENTHONG_APICURIO_URL=%q\n' "$apicurio"
  printf 'export LIENTHONG_CHROMIUM=%q\n' "$(command -v chromium)"
  "$OPS/prometheus.sh" paths | sed -e 's/^/export LIENTHONG_/'
}

status() {
  local rc=0
  "$OPS/kafka.sh" status --name "$KAFKA_SINGLE" || rc=1
  "$OPS/kafka.sh" status --name "$KAFKA_CLUSTER" || rc=1
  "$OPS/kafka.sh" status --name "$KAFKA_SECURED" || rc=1
  "$OPS/postgres.sh" status --name "$PG" || rc=1
  "$OPS/apicurio.sh" status --name "$APICURIO" || rc=1
  return $rc
}

case "${1:-}" in
  install) install ;;
  up) up ;;
  down) down ;;
  status) status ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac

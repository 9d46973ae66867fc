#!/usr/bin/env bash
# Run real Apache Kafka (KRaft mode) locally from Maven Central jars, for tests and demos.
# Run `ops/kafka.sh --help` for the interface.
set -euo pipefail

# shellcheck source=ops/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KAFKA_VERSION=4.1.1
KAFKA_HOME="$LIENTHONG_CACHE_DIR/kafka-$KAFKA_VERSION"
KAFKA_LIB="$KAFKA_HOME/lib"
KAFKA_MARKER="$KAFKA_HOME/fetch-complete"
KAFKA_POM="$LIENTHONG_ROOT/ops/kafka/pom.xml"
KAFKA_LOG4J="$LIENTHONG_ROOT/ops/kafka/log4j2.properties"
KAFKA_STATE="$LIENTHONG_STATE_DIR/kafka"

START_TIMEOUT="${LIENTHONG_KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT="${LIENTHONG_KAFKA_STOP_TIMEOUT:-30}"
HEAP_OPTS="${LIENTHONG_KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
READY_LINE="Kafka Server started"
INSTALL_HINT="On Debian: apt-get install openjdk-17-jre-headless maven"

usage() {
  cat <<EOF
Usage: ops/kafka.sh COMMAND [OPTIONS]

Runs real Apache Kafka $KAFKA_VERSION (KRaft, no ZooKeeper) on 127.0.0.1 from jars fetched from
Maven Central. Each broker is a combined broker+controller JVM. Human messages go to stderr;
stdout carries only what a caller captures.

Commands:
  fetch
      Download the Kafka jars (mvn dependency:copy-dependencies on ops/kafka/pom.xml) into
      \$LIENTHONG_CACHE_DIR/kafka-$KAFKA_VERSION/lib, once. Later calls reuse them (instant); a
      download that did not complete, or a changed pom.xml, is redone. Needs java and mvn.
      Prints nothing on stdout.

  start [--name NAME] [--brokers 1|3] [--port PORT] [--secured] [--config KEY=VALUE]...
      Start cluster NAME (fetching the jars first if needed) and wait until every broker is
      ready ("$READY_LINE" in its log and its client port accepting connections).
      Prints exactly one line on stdout, the bootstrap list, e.g. 127.0.0.1:40123 or
      127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3, also written to
      \$LIENTHONG_STATE_DIR/kafka/NAME/bootstrap. Typical use:
          BOOTSTRAP=\$(ops/kafka.sh start --name suite)
      Fails if NAME is (even partly) running. A stopped or crashed NAME is wiped and formatted
      afresh: data never survives a start. On any failure every process started by this call
      is stopped, the failing broker's last log lines are shown, and the exit code is non-zero.
        --name NAME     cluster name (default: default); [A-Za-z0-9._-]
        --brokers N     1 (default): one node. 3: three nodes, ids 1..3, static quorum of 3
                        controllers; replication factor 3 and min.insync.replicas=2 for
                        internal and (by default) new topics, so one broker can be lost.
        --port PORT     first client port (default: \$LIENTHONG_KAFKA_PORT, else free ports are
                        chosen). Given PORT, the N brokers take client ports PORT..PORT+N-1 and
                        controller ports PORT+N..PORT+2N-1; all must be free.
        --secured       a secured cluster, as a city runs it: no plaintext listener. The
                        bootstrap ports take SASL_SSL with SCRAM-SHA-512; mTLS ports (PORT+2N..,
                        listed in mtls-bootstrap) take a client certificate of the city CA
                        (ops/city-ca.sh; the principal is its common name) and carry
                        inter-broker traffic; controllers speak mTLS. The StandardAuthorizer
                        allows only what an ACL grants (allow.everyone.if.no.acl.found=false);
                        super users are the bus admin User:$ADMIN_USER (its SCRAM secret is
                        made at format time, in admin.secret) and the brokers
                        (User:$BROKER_PRINCIPAL). Clients trust the CA's ca.crt;
                        \`lienthong acl sync\` writes the ACLs.
        --config K=V    extra broker setting appended to every server.properties (repeatable)

  stop [--name NAME]
      SIGTERM (controlled shutdown) to every broker of NAME, SIGKILL after
      \$LIENTHONG_KAFKA_STOP_TIMEOUT s (default 30); then makes sure no JVM of NAME is left.
      Deletes the data directories, keeps server.properties and broker.log for post-mortems.
      Succeeds quietly if NAME is not running.

  status [--name NAME]
      Exit 0 if every broker of NAME runs (process alive and client port open) and print the
      bootstrap list on stdout; per-broker details go to stderr. Exit 1 if some brokers are
      down, 3 if none runs or NAME was never started.

  kill --broker ID [--name NAME]
      SIGKILL broker ID (1..N) of NAME and wait until it is gone (for fault tests). The
      controllers fence it after broker.session.timeout.ms (4 s here): only then do its
      partitions get new leaders and leave its replica out of the ISR, so acks=all produce
      stalls for up to ~4 s after a kill.

  restart --broker ID [--name NAME]
      Start broker ID again on its same data directory and ports (after kill; a broker that
      still runs is first stopped with SIGTERM) and wait until it is ready. Its log is appended to.
      Prints the bootstrap list on stdout.

  version
      Print the Kafka version of the fetched jars (e.g. $KAFKA_VERSION). Fails if not fetched.

State of NAME: \$LIENTHONG_STATE_DIR/kafka/NAME/ (now $KAFKA_STATE/NAME/):
  cluster.env                      brokers, ports, cluster id
  bootstrap                        the bootstrap list
  mtls-bootstrap, admin.secret     secured clusters: the mTLS bootstrap list, the admin's secret
  broker-ID/server.properties      broker config (see there for every setting used)
  broker-ID/broker.log             broker stdout+stderr (log4j: ops/kafka/log4j2.properties)
  broker-ID/pid                    pid of the running broker JVM
  broker-ID/data/                  log.dirs (topic data and KRaft metadata log)

Environment:
  LIENTHONG_KAFKA_PORT           first client port for start (like --port)
  LIENTHONG_KAFKA_START_TIMEOUT  seconds to wait for readiness in start/restart (default 90)
  LIENTHONG_KAFKA_STOP_TIMEOUT   seconds from SIGTERM to SIGKILL in stop (default 30)
  LIENTHONG_KAFKA_HEAP_OPTS      broker JVM heap (default: -Xms256m -Xmx512m)
  LIENTHONG_STATE_DIR, LIENTHONG_CACHE_DIR   see ops/lib.sh

Needs java >= 17 and, to fetch, mvn (with access to Maven Central), plus python3.
  $INSTALL_HINT

Tools in the jars, to use with: java -cp "\$LIENTHONG_CACHE_DIR/kafka-$KAFKA_VERSION/lib/*" CLASS ...
  org.apache.kafka.tools.TopicCommand, org.apache.kafka.tools.ConsoleProducer,
  org.apache.kafka.tools.consumer.ConsoleConsumer, org.apache.kafka.tools.ProducerPerformance,
  org.apache.kafka.tools.consumer.group.ConsumerGroupCommand, kafka.admin.ConfigCommand,
  org.apache.kafka.tools.MetadataQuorumCommand, org.apache.kafka.tools.ConsumerPerformance,
  org.apache.kafka.tools.GetOffsetShell
  (add -Dlog4j2.configurationFile=ops/kafka/log4j2.properties for readable tool logging)
EOF
}

# ---------------------------------------------------------------------------------------------
# Small helpers

now_us() { local t=$EPOCHREALTIME; echo "${t//[!0-9]/}"; }
# secs_since START_US: elapsed seconds with one decimal.
secs_since() {
  local d=$(( $(now_us) - $1 ))
  printf '%d.%d' $((d / 1000000)) $(((d % 1000000) / 100000))
}

# A regex matching the path literally (for pgrep -f).
regex_escape() { printf '%s' "$1" | sed -e 's/[][\.*^$+?(){}|/]/\\&/g'; }

need_java() {
  need_cmd java "Kafka $KAFKA_VERSION needs Java 17 or newer. $INSTALL_HINT"
  local v major
  v=$(java -version 2>&1 | sed -n 's/.* version "\([^"]*\)".*/\1/p' | head -n1) || true
  major=${v%%.*}
  [ "$major" = 1 ] && major=$(echo "$v" | cut -d. -f2)
  if [[ "$major" =~ ^[0-9]+$ ]] && (( major < 17 )); then
    die "java is version $v; Kafka $KAFKA_VERSION needs Java 17 or newer. $INSTALL_HINT"
  fi
}

pom_digest() { sha256sum "$KAFKA_POM" | cut -d' ' -f1; }

fetched() { [ -f "$KAFKA_MARKER" ] && [ "$(cat "$KAFKA_MARKER")" = "$(pom_digest)" ] && [ -d "$KAFKA_LIB" ]; }

# ---------------------------------------------------------------------------------------------
# fetch

ensure_fetched() {
  fetched && return 0
  need_java
  need_cmd mvn "Maven is needed to fetch the Kafka jars from Maven Central. $INSTALL_HINT"
  mkdir -p "$KAFKA_HOME"
  # One download at a time (parallel test suites may all call start).
  exec 8>"$KAFKA_HOME/fetch.lock"
  flock -w 600 8 || die "timed out waiting for another 'ops/kafka.sh fetch' (lock $KAFKA_HOME/fetch.lock)"
  if fetched; then exec 8>&-; return 0; fi

  local t0 tmp out
  t0=$(now_us)
  tmp="$KAFKA_HOME/lib.partial"
  out="$KAFKA_HOME/mvn.log"
  rm -rf "$KAFKA_MARKER" "${tmp:?}" "${KAFKA_LIB:?}"
  log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_LIB ..."
  if ! mvn -q -B -Dstyle.color=never -f "$KAFKA_POM" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >"$out" 2>&1; then
    cat "$out" >&2
    rm -rf "${tmp:?}"
    die "mvn failed to fetch the Kafka jars (output above; is Maven Central reachable?)"
  fi
  # Sanity checks: the broker, the tools, and a working slf4j 1.x -> log4j2 binding (with
  # slf4j-api 2.x the 1.x binding is ignored and the broker logs nothing, not even readiness).
  local j
  for j in "kafka_2.13-$KAFKA_VERSION.jar" "kafka-tools-$KAFKA_VERSION.jar" \
           "kafka-clients-$KAFKA_VERSION.jar" log4j-slf4j-impl-; do
    compgen -G "$tmp/$j*" >/dev/null || die "fetched jars lack $j (see $KAFKA_POM)"
  done
  if compgen -G "$tmp/slf4j-api-2.*" >/dev/null || compgen -G "$tmp/log4j-slf4j2-impl-*" >/dev/null; then
    die "fetched jars contain slf4j 2.x ($(cd "$tmp" && echo *slf4j*)); Kafka's logging would be off"
  fi
  mv "$tmp" "$KAFKA_LIB"
  pom_digest >"$KAFKA_MARKER"   # written only after a complete download
  exec 8>&-
  local jars=("$KAFKA_LIB"/*.jar)
  log "fetched ${#jars[@]} jars in $(secs_since "$t0") s"
}

cmd_fetch() {
  [ $# -eq 0 ] || die "fetch takes no arguments (see --help)"
  ensure_fetched
  log "Apache Kafka $KAFKA_VERSION jars ready in $KAFKA_LIB"
}

cmd_version() {
  [ $# -eq 0 ] || die "version takes no arguments (see --help)"
  fetched || die "Kafka jars are not fetched yet; run: ops/kafka.sh fetch"
  local jars=("$KAFKA_LIB"/kafka-clients-*.jar)
  [ -f "${jars[0]}" ] || die "no kafka-clients jar in $KAFKA_LIB; run: ops/kafka.sh fetch"
  python3 - "${jars[0]}" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for line in z.read("kafka/kafka-version.properties").decode().splitlines():
        if line.startswith("version="):
            print(line.split("=", 1)[1].strip())
PY
}

# ---------------------------------------------------------------------------------------------
# Cluster state

NAME=default
CLUSTER_DIR=""
BROKERS=""           # from cluster.env
CLIENT_PORTS=()      # index 1..N
CONTROLLER_PORTS=()
MTLS_PORTS=()        # secured clusters only
CLUSTER_ID=""
SECURED=0            # from cluster.env
ADMIN_USER=lienthong-admin
BROKER_PRINCIPAL=kafka-broker
CA_DIR=""

set_name() {
  if ! [[ "$1" =~ ^[A-Za-z0-9._-]+$ ]] || [ "$1" = . ] || [ "$1" = .. ]; then
    die "invalid --name '$1' (allowed: letters, digits, . _ -)"
  fi
  NAME=$1
  CLUSTER_DIR="$KAFKA_STATE/$NAME"
}

broker_dir() { echo "$CLUSTER_DIR/broker-$1"; }

load_cluster() { # returns 1 if NAME has no cluster.env
  [ -f "$CLUSTER_DIR/cluster.env" ] || return 1
  # shellcheck disable=SC1091
  . "$CLUSTER_DIR/cluster.env"
  # shellcheck disable=SC2206
  CLIENT_PORTS=(_ $CLIENT_PORT_LIST)
  # shellcheck disable=SC2206
  CONTROLLER_PORTS=(_ $CONTROLLER_PORT_LIST)
  # shellcheck disable=SC2206
  MTLS_PORTS=(_ ${MTLS_PORT_LIST:-})
  SECURED=${SECURED:-0}
}

# broker_pid ID: the pid of broker ID if it runs. The pid file is trusted only while that process
# is alive and its command line names the broker's server.properties (pids get reused).
broker_pid() {
  local dir pid
  dir=$(broker_dir "$1")
  pid=$(cat "$dir/pid" 2>/dev/null || true)
  pid_alive "$pid" || return 0
  if grep -qxF "$dir/server.properties" < <(tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline"); then
    echo "$pid"
  fi
}
broker_alive() { [ -n "$(broker_pid "$1")" ]; }
pid_gone() { ! pid_alive "$1"; }
no_name_java() { [ -z "$(name_java_pids)" ]; }

address_list() { # address_list PORT...: 127.0.0.1:P1,127.0.0.1:P2,…
  local p out=""
  for p in "$@"; do out+="${out:+,}127.0.0.1:$p"; done
  echo "$out"
}

bootstrap_list() { address_list "${CLIENT_PORTS[@]:1:BROKERS}"; }
mtls_bootstrap_list() { address_list "${MTLS_PORTS[@]:1:BROKERS}"; }

# pids of any JVM (broker or format tool) whose command line names a server.properties of NAME
name_java_pids() {
  pgrep -f "$(regex_escape "$CLUSTER_DIR")/broker-[0-9]+/server\.properties" || true
}

show_log_tail() { # show_log_tail FILE [OFFSET_BYTES]
  local f=$1 off=${2:-0}
  [ -f "$f" ] || { log "(no log file $f)"; return 0; }
  {
    if grep -qE '^\[[^]]*\] (ERROR|FATAL) ' < <(tail -c +$((off + 1)) "$f"); then
      echo "----- first errors in $f -----"
      tail -c +$((off + 1)) "$f" | grep -E '^\[[^]]*\] (ERROR|FATAL) ' | head -n 5 | cut -c1-600 || true
    fi
    echo "----- last 30 lines of $f -----"
    tail -c +$((off + 1)) "$f" | tail -n 30 || true
    echo "----- end of $f -----"
  } >&2
}

# ---------------------------------------------------------------------------------------------
# Broker processes

# listener_properties ID: the listeners of broker ID. Open: PLAINTEXT. Secured: clients
# authenticate with SCRAM-SHA-512 over TLS (SASL_SSL, the bootstrap port) or with a certificate
# of the city CA (SSL with client auth, the mTLS port, also used between brokers); the
# controllers speak mTLS; the StandardAuthorizer allows only what an ACL grants, and only the
# bus's admin and the brokers themselves are super users.
listener_properties() {
  local id=$1
  if [ "$SECURED" != 1 ]; then
    cat <<EOF
listeners=PLAINTEXT://127.0.0.1:${CLIENT_PORTS[$id]},CONTROLLER://127.0.0.1:${CONTROLLER_PORTS[$id]}
advertised.listeners=PLAINTEXT://127.0.0.1:${CLIENT_PORTS[$id]},CONTROLLER://127.0.0.1:${CONTROLLER_PORTS[$id]}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
EOF
    return 0
  fi
  cat <<EOF
listeners=SASL_SSL://127.0.0.1:${CLIENT_PORTS[$id]},SSL://127.0.0.1:${MTLS_PORTS[$id]},CONTROLLER://127.0.0.1:${CONTROLLER_PORTS[$id]}
advertised.listeners=SASL_SSL://127.0.0.1:${CLIENT_PORTS[$id]},SSL://127.0.0.1:${MTLS_PORTS[$id]},CONTROLLER://127.0.0.1:${CONTROLLER_PORTS[$id]}
inter.broker.listener.name=SSL
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:SSL,SSL:SSL,SASL_SSL:SASL_SSL

# Secured (--secured): TLS everywhere, with certificates of the city CA (ops/city-ca.sh).
ssl.keystore.type=PEM
ssl.keystore.location=$CA_DIR/$BROKER_PRINCIPAL/$BROKER_PRINCIPAL.pem
ssl.truststore.type=PEM
ssl.truststore.location=$CA_DIR/ca.crt
ssl.client.auth=required
listener.name.sasl_ssl.ssl.client.auth=none
# A certificate's principal is its common name: User:26734, User:$BROKER_PRINCIPAL.
ssl.principal.mapping.rules=RULE:^CN=([^,]+)(,.*)?\$/\$1/,DEFAULT
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:$ADMIN_USER;User:$BROKER_PRINCIPAL
EOF
}

write_server_properties() { # write_server_properties ID EXTRA_CONFIG...
  local id=$1; shift
  local dir voters="" i rf isr
  dir=$(broker_dir "$id")
  for ((i = 1; i <= BROKERS; i++)); do voters+="${voters:+,}$i@127.0.0.1:${CONTROLLER_PORTS[$i]}"; done
  rf=$BROKERS
  isr=$(( BROKERS >= 3 ? 2 : 1 ))
  mkdir -p "$dir/data"
  {
    cat <<EOF
# Written by ops/kafka.sh start (cluster $NAME, broker $id of $BROKERS). Regenerated on every start.
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
$(listener_properties "$id")
log.dirs=$dir/data

# Topics: created explicitly only. Broker-wide defaults, inherited by topics without overrides.
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$isr

# Internal topics: replicated over all brokers, few partitions (fast first use).
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=$BROKERS
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
transaction.state.log.num.partitions=$BROKERS
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr

# Tests: no wait before the first rebalance.
group.initial.rebalance.delay.ms=0

# Faster fault handling: a SIGKILLed broker is fenced (and its partitions get new leaders)
# after 4 s instead of 9 s, and a killed broker (or single node) restarts sooner: the controller
# waits for the old registration's session to expire before it unfences the new one.
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=4000
EOF
    if [ $# -gt 0 ]; then
      echo
      echo "# Extra settings (--config)"
      printf '%s\n' "$@"
    fi
  } >"$dir/server.properties"
}

# launch_broker ID: start the JVM in its own session, detached from our stdout, append to log.
launch_broker() {
  local id=$1 dir
  dir=$(broker_dir "$id")
  rm -f "$dir/pid"
  # shellcheck disable=SC2086,SC2016
  setsid bash -c 'echo $$ >"$1"; shift; cd "$1"; shift; exec "$@"' _ "$dir/pid" "$dir" \
    java $HEAP_OPTS -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_LOG4J" -Dkafka.logs.dir="$dir" \
    -cp "$KAFKA_LIB/*" kafka.Kafka "$dir/server.properties" \
    >>"$dir/broker.log" 2>&1 </dev/null 8>&- 9>&- &
  local i
  for ((i = 0; i < 50; i++)); do
    [ -s "$dir/pid" ] && return 0
    sleep 0.1
  done
  die "broker $id did not start (no pid file $dir/pid)"
}

# Pid files of brokers started by this invocation, stopped if it fails.
STARTED_IDS=()
FORMAT_PIDS=()
SUCCESS=0
FAILED_ID=""

# stop_brokers SECS ID...: stop the brokers in parallel (stop_pidfile: SIGTERM, wait up to SECS,
# then SIGKILL), and wait until their JVMs are gone. Stopping all brokers of a cluster at once may
# leave the last ones waiting for a quorum in controlled shutdown: the SIGKILL bounds that.
stop_brokers() {
  local secs=$1; shift
  local id pid pids=() waits=()
  for id in "$@"; do
    pid=$(broker_pid "$id")
    if [ -z "$pid" ]; then          # not running (or a stale pid file naming another process)
      rm -f "$(broker_dir "$id")/pid"
      continue
    fi
    pids+=("$pid")
    stop_pidfile "$(broker_dir "$id")/pid" "$secs" &
    waits+=($!)
  done
  local w
  for w in "${waits[@]}"; do wait "$w" || true; done
  for pid in "${pids[@]}"; do
    wait_until 10 "pid $pid to exit" pid_gone "$pid" || log "pid $pid still exists"
  done
  return 0
}

on_exit() {
  local rc=$?
  (( rc == 130 || rc == 143 )) && log "interrupted by a signal"
  if (( ${#FORMAT_PIDS[@]} > 0 )); then
    kill -KILL "${FORMAT_PIDS[@]}" 2>/dev/null || true
  fi
  if (( SUCCESS == 0 )) && (( ${#STARTED_IDS[@]} > 0 )); then
    log "stopping the broker(s) started by this call: ${STARTED_IDS[*]}"
    stop_brokers 10 "${STARTED_IDS[@]}"
    # A JVM whose pid file never appeared is not covered by the pid files: find it by name.
    local left
    left=$(name_java_pids || true)
    # shellcheck disable=SC2086
    [ -n "$left" ] && kill -KILL $left 2>/dev/null
    log "logs kept in $CLUSTER_DIR"
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_ready SECS OFFSET ID...: every broker alive, ready line in its log (past OFFSET bytes),
# client port open. On failure sets FAILED_ID and returns 1 (2: bind conflict).
wait_ready() {
  local secs=$1 off=$2; shift 2
  local deadline=$((SECONDS + secs)) pending=("$@") id next dir
  while (( ${#pending[@]} > 0 )); do
    next=()
    for id in "${pending[@]}"; do
      dir=$(broker_dir "$id")
      if ! broker_alive "$id"; then
        FAILED_ID=$id
        if grep -q "Address already in use" < <(tail -c +$((off + 1)) "$dir/broker.log"); then
          log "broker $id exited: a port was taken (Address already in use)"
          return 2
        fi
        log "broker $id exited during startup"
        return 1
      fi
      if grep -qF "$READY_LINE" < <(tail -c +$((off + 1)) "$dir/broker.log") \
         && port_in_use "${CLIENT_PORTS[$id]}"; then
        continue
      fi
      next+=("$id")
    done
    pending=("${next[@]}")
    (( ${#pending[@]} == 0 )) && break
    if (( SECONDS >= deadline )); then
      FAILED_ID=${pending[0]}
      log "timed out after ${secs}s waiting for broker(s) ${pending[*]} to be ready (LIENTHONG_KAFKA_START_TIMEOUT)"
      return 1
    fi
    sleep 0.2
  done
}

lock_name() {
  mkdir -p "$KAFKA_STATE"
  exec 9>"$KAFKA_STATE/$NAME.lock"
  flock -w 300 9 || die "another ops/kafka.sh command on '$NAME' holds $KAFKA_STATE/$NAME.lock"
}

random_cluster_id() { # Kafka's Uuid string: 16 random bytes, url-safe base64 without padding
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    [[ "$id" == -* ]] || break
  done
  echo "$id"
}

# ---------------------------------------------------------------------------------------------
# Commands

parse_common() { # ALLOWED_OPTIONS ARGS...: sets NAME, BROKER_ID and OPT_* (start options)
  local allowed=$1; shift
  BROKER_ID=""; OPT_BROKERS=1; OPT_PORT="${LIENTHONG_KAFKA_PORT:-}"; OPT_CONFIG=(); OPT_SECURED=0
  set_name default
  while [ $# -gt 0 ]; do
    local opt=$1
    case "$opt" in
      -h|--help) usage; exit 0 ;;
      --*=*) set -- "${opt%%=*}" "${opt#*=}" "${@:2}"; continue ;;
    esac
    [[ " $allowed " == *" $opt "* ]] || die "unknown option '$opt' for this command (see --help)"
    if [ "$opt" = --secured ]; then OPT_SECURED=1; shift; continue; fi
    [ $# -ge 2 ] || die "option $opt needs a value"
    case "$opt" in
      --name) set_name "$2" ;;
      --broker) BROKER_ID=$2 ;;
      --brokers) OPT_BROKERS=$2 ;;
      --port) OPT_PORT=$2 ;;
      --config) [[ "$2" == *=* ]] || die "--config needs KEY=VALUE, got '$2'"; OPT_CONFIG+=("$2") ;;
    esac
    shift 2
  done
}

cmd_start() {
  parse_common "--name --brokers --port --config --secured" "$@"
  case "$OPT_BROKERS" in 1|3) ;; *) die "--brokers must be 1 or 3, got '$OPT_BROKERS'" ;; esac
  if [ -n "$OPT_PORT" ]; then
    local per=$(( OPT_SECURED == 1 ? 3 : 2 ))
    if ! [[ "$OPT_PORT" =~ ^[0-9]+$ ]] || (( OPT_PORT < 1024 || OPT_PORT + per * OPT_BROKERS - 1 > 65535 )); then
      die "invalid port '$OPT_PORT' (1024..65535, with room for $((per * OPT_BROKERS)) ports)"
    fi
  fi
  need_java
  need_cmd python3 "python3 is needed to pick free ports and read the version."
  ensure_fetched
  lock_name

  # Refuse a running (even partly) NAME.
  if load_cluster; then
    local i
    for ((i = 1; i <= BROKERS; i++)); do
      broker_alive "$i" && die "Kafka cluster '$NAME' is already running (broker $i, pid $(broker_pid "$i")); stop it first: ops/kafka.sh stop --name $NAME"
    done
  fi
  if [ -n "$(name_java_pids)" ]; then
    die "Kafka processes of '$NAME' are running without pid files (pids $(name_java_pids | tr '\n' ' ')); run: ops/kafka.sh stop --name $NAME"
  fi

  local t0 attempt rc i
  t0=$(now_us)
  BROKERS=$OPT_BROKERS
  SECURED=$OPT_SECURED
  if [ "$SECURED" = 1 ]; then
    CA_DIR=$("$LIENTHONG_ROOT/ops/city-ca.sh" dir)
    "$LIENTHONG_ROOT/ops/city-ca.sh" issue "$BROKER_PRINCIPAL" >/dev/null
  fi
  for attempt in 1 2 3; do
    rm -rf "${CLUSTER_DIR:?}"
    mkdir -p "$CLUSTER_DIR"
    choose_ports
    CLUSTER_ID=$(random_cluster_id)
    cat >"$CLUSTER_DIR/cluster.env" <<EOF
# Written by ops/kafka.sh start; read by its other commands.
BROKERS=$BROKERS
CLIENT_PORT_LIST="${CLIENT_PORTS[*]:1}"
CONTROLLER_PORT_LIST="${CONTROLLER_PORTS[*]:1}"
MTLS_PORT_LIST="${MTLS_PORTS[*]:1}"
SECURED=$SECURED
CA_DIR="$CA_DIR"
CLUSTER_ID=$CLUSTER_ID
KAFKA_VERSION=$KAFKA_VERSION
EOF
    if [ "$SECURED" = 1 ]; then
      # The bus admin's SCRAM secret, written into the cluster's metadata at format time.
      (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$CLUSTER_DIR/admin.secret")
    fi
    for ((i = 1; i <= BROKERS; i++)); do write_server_properties "$i" "${OPT_CONFIG[@]}"; done
    format_all
    log "starting $BROKERS broker(s) of '$NAME': client ports ${CLIENT_PORTS[*]:1}, controller ports ${CONTROLLER_PORTS[*]:1}"
    for ((i = 1; i <= BROKERS; i++)); do
      STARTED_IDS+=("$i")
      launch_broker "$i"
    done
    rc=0
    wait_ready "$START_TIMEOUT" 0 "${STARTED_IDS[@]}" || rc=$?
    (( rc == 0 )) && break
    if (( rc == 2 )) && [ -z "$OPT_PORT" ] && (( attempt < 3 )); then
      log "a chosen port was taken meanwhile; retrying with other ports"
      stop_brokers 10 "${STARTED_IDS[@]}"
      STARTED_IDS=()
      continue
    fi
    show_log_tail "$(broker_dir "$FAILED_ID")/broker.log"
    die "Kafka cluster '$NAME' failed to start (broker $FAILED_ID; log above)"
  done

  bootstrap_list >"$CLUSTER_DIR/bootstrap"
  SUCCESS=1
  if [ "$SECURED" = 1 ]; then
    mtls_bootstrap_list >"$CLUSTER_DIR/mtls-bootstrap"
    log "secured: SASL_SSL (SCRAM-SHA-512) at $(bootstrap_list), mTLS at $(mtls_bootstrap_list); CA $CA_DIR/ca.crt; admin User:$ADMIN_USER, secret in $CLUSTER_DIR/admin.secret"
  fi
  log "Apache Kafka $KAFKA_VERSION (KRaft, $BROKERS broker(s)) ready at $(bootstrap_list) in $(secs_since "$t0") s (cluster '$NAME', state in $CLUSTER_DIR)"
  bootstrap_list
}

choose_ports() {
  local i taken=() per=2
  [ "$SECURED" = 1 ] && per=3
  CLIENT_PORTS=(_); CONTROLLER_PORTS=(_); MTLS_PORTS=(_)
  if [ -n "$OPT_PORT" ]; then
    for ((i = 1; i <= BROKERS; i++)); do
      CLIENT_PORTS+=($((OPT_PORT + i - 1)))
      CONTROLLER_PORTS+=($((OPT_PORT + BROKERS + i - 1)))
      if [ "$SECURED" = 1 ]; then MTLS_PORTS+=($((OPT_PORT + 2 * BROKERS + i - 1))); fi
    done
    for i in "${CLIENT_PORTS[@]:1}" "${CONTROLLER_PORTS[@]:1}" "${MTLS_PORTS[@]:1}"; do require_free_port "$i"; done
  else
    local p
    for ((i = 1; i <= per * BROKERS; i++)); do
      p=$(free_port "${taken[@]}")
      taken+=("$p")
    done
    CLIENT_PORTS+=("${taken[@]:0:BROKERS}")
    CONTROLLER_PORTS+=("${taken[@]:BROKERS:BROKERS}")
    if [ "$SECURED" = 1 ]; then MTLS_PORTS+=("${taken[@]:$((2 * BROKERS)):BROKERS}"); fi
  fi
}

# Format every broker's data dir with the same cluster id (static quorum: no --standalone).
format_all() {
  local i dir failed=""
  FORMAT_PIDS=()
  for ((i = 1; i <= BROKERS; i++)); do
    dir=$(broker_dir "$i")
    local scram=()
    if [ "$SECURED" = 1 ]; then
      scram=(--add-scram "SCRAM-SHA-512=[name=$ADMIN_USER,password=$(cat "$CLUSTER_DIR/admin.secret")]")
    fi
    java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Dlog4j2.configurationFile="$KAFKA_LOG4J" \
      -cp "$KAFKA_LIB/*" kafka.tools.StorageTool format -t "$CLUSTER_ID" -c "$dir/server.properties" \
      "${scram[@]}" >"$dir/format.log" 2>&1 </dev/null 8>&- 9>&- &
    FORMAT_PIDS+=($!)
  done
  for ((i = 1; i <= BROKERS; i++)); do
    wait "${FORMAT_PIDS[$((i - 1))]}" || failed+=" $i"
  done
  FORMAT_PIDS=()
  if [ -n "$failed" ]; then
    for i in $failed; do show_log_tail "$(broker_dir "$i")/format.log"; done
    die "formatting the storage of broker(s)$failed failed (kafka.tools.StorageTool format; output above)"
  fi
}

cmd_stop() {
  parse_common "--name" "$@"
  [ -d "$CLUSTER_DIR" ] || return 0
  lock_name
  local ids=() i
  if load_cluster; then
    for ((i = 1; i <= BROKERS; i++)); do ids+=("$i"); done
  fi
  local running=()
  for i in "${ids[@]}"; do broker_alive "$i" && running+=("$i"); done
  if (( ${#running[@]} > 0 )); then
    local t0; t0=$(now_us)
    log "stopping Kafka cluster '$NAME' (broker(s) ${running[*]}) ..."
    stop_brokers "$STOP_TIMEOUT" "${ids[@]}"
    log "stopped Kafka cluster '$NAME' in $(secs_since "$t0") s"
  else
    for i in "${ids[@]}"; do rm -f "$(broker_dir "$i")/pid"; done
  fi
  # Whatever is left of NAME (e.g. lost pid files, an interrupted format): kill it.
  local left
  left=$(name_java_pids)
  if [ -n "$left" ]; then
    log "killing leftover Kafka JVM(s) of '$NAME': ${left//$'\n'/ }"
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null || true
    wait_until 10 "leftover JVMs of '$NAME' to exit" no_name_java \
      || die "could not kill Kafka JVM(s) of '$NAME': $(name_java_pids | tr '\n' ' ')"
  fi
  for i in "${ids[@]}"; do rm -rf "$(broker_dir "$i")/data"; done
  rm -f "$CLUSTER_DIR/bootstrap"
}

cmd_status() {
  parse_common "--name" "$@"
  if ! load_cluster; then
    log "Kafka cluster '$NAME': not started"
    exit 3
  fi
  local i up=0 pid state
  for ((i = 1; i <= BROKERS; i++)); do
    pid=$(broker_pid "$i")
    if pid_alive "$pid"; then
      if port_in_use "${CLIENT_PORTS[$i]}"; then state=running; up=$((up + 1)); else state="starting (port closed)"; fi
    else
      state=down; pid=-
    fi
    log "broker $i 127.0.0.1:${CLIENT_PORTS[$i]} (controller :${CONTROLLER_PORTS[$i]}) pid $pid: $state"
  done
  if (( up == BROKERS )); then
    log "Kafka cluster '$NAME': all $BROKERS broker(s) running"
    bootstrap_list
    return 0
  elif (( up > 0 )); then
    log "Kafka cluster '$NAME': $up of $BROKERS broker(s) running"
    exit 1
  fi
  log "Kafka cluster '$NAME': not running"
  exit 3
}

broker_arg() { # validates BROKER_ID against the loaded cluster
  [ -n "$BROKER_ID" ] || die "--broker ID is required (see --help)"
  load_cluster || die "Kafka cluster '$NAME' was never started (no $CLUSTER_DIR/cluster.env)"
  if ! [[ "$BROKER_ID" =~ ^[0-9]+$ ]] || (( BROKER_ID < 1 || BROKER_ID > BROKERS )); then
    die "--broker must be 1..$BROKERS for cluster '$NAME', got '$BROKER_ID'"
  fi
}

cmd_kill() {
  parse_common "--name --broker" "$@"
  broker_arg
  lock_name
  local pid
  pid=$(broker_pid "$BROKER_ID")
  pid_alive "$pid" || die "broker $BROKER_ID of '$NAME' is not running"
  kill -KILL "$pid" 2>/dev/null || true
  wait_until 10 "broker $BROKER_ID (pid $pid) to die" pid_gone "$pid" \
    || die "broker $BROKER_ID (pid $pid) survived SIGKILL"
  rm -f "$(broker_dir "$BROKER_ID")/pid"
  log "killed broker $BROKER_ID of '$NAME' (pid $pid, 127.0.0.1:${CLIENT_PORTS[$BROKER_ID]}) with SIGKILL"
}

cmd_restart() {
  parse_common "--name --broker" "$@"
  broker_arg
  need_java
  fetched || die "Kafka jars are missing from $KAFKA_LIB; cluster '$NAME' cannot be restarted"
  lock_name
  local dir off t0
  dir=$(broker_dir "$BROKER_ID")
  [ -d "$dir/data" ] || die "broker $BROKER_ID of '$NAME' has no data dir ($dir/data); was the cluster stopped? Use start"
  if broker_alive "$BROKER_ID"; then
    log "broker $BROKER_ID of '$NAME' is running; stopping it first (SIGTERM)"
    stop_brokers "$STOP_TIMEOUT" "$BROKER_ID"
  fi
  require_free_port "${CLIENT_PORTS[$BROKER_ID]}"
  require_free_port "${CONTROLLER_PORTS[$BROKER_ID]}"
  if [ "$SECURED" = 1 ]; then require_free_port "${MTLS_PORTS[$BROKER_ID]}"; fi
  t0=$(now_us)
  off=$(stat -c %s "$dir/broker.log" 2>/dev/null || echo 0)
  echo "===== restarted by ops/kafka.sh at $(date -Is) =====" >>"$dir/broker.log"
  STARTED_IDS+=("$BROKER_ID")
  launch_broker "$BROKER_ID"
  if ! wait_ready "$START_TIMEOUT" "$off" "$BROKER_ID"; then
    show_log_tail "$dir/broker.log" "$off"
    die "broker $BROKER_ID of '$NAME' failed to restart (log above)"
  fi
  SUCCESS=1
  log "broker $BROKER_ID of '$NAME' ready again at 127.0.0.1:${CLIENT_PORTS[$BROKER_ID]} in $(secs_since "$t0") s"
  bootstrap_list
}

main() {
  local cmd=${1:-}
  [ $# -gt 0 ] && shift
  case "$cmd" in
    fetch) cmd_fetch "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    kill) cmd_kill "$@" ;;
    restart) cmd_restart "$@" ;;
    version) cmd_version "$@" ;;
    -h|--help|help) usage ;;
    "") usage >&2; exit 2 ;;
    *) die "unknown command '$cmd' (see --help)" ;;
  esac
}

main "$@"

#!/usr/bin/env bash
# Apicurio Registry 2.6 (in memory) from Maven Central: an independent Confluent-compatible
# registry, for testing lienthong's registry client in external-registry mode. See --help.
set -euo pipefail
# shellcheck source=ops/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

VERSION=2.6.13.Final
HOME_DIR="$LIENTHONG_CACHE_DIR/apicurio-$VERSION"
JAR="$HOME_DIR/apicurio-registry-app-$VERSION-runner.jar"

usage() {
  cat <<USAGE
Usage: ops/apicurio.sh COMMAND [--name NAME] [--port PORT]

  fetch    download and unpack Apicurio Registry $VERSION (Maven Central) into
           $HOME_DIR, once
  start    start it in memory on 127.0.0.1:PORT (default: a free port), wait until its
           Confluent-compatible API answers; prints that API's base URL
           (http://127.0.0.1:PORT/apis/ccompat/v7). On failure, prints the log's tail and
           leaves nothing running.
  stop     stop it (SIGTERM, then SIGKILL); succeeds if it is not running
  status   exit 0 and print the URL if it runs

State (pid, port, log) lives in \$LIENTHONG_STATE_DIR/apicurio/NAME (default NAME: default).
USAGE
}

cmd=${1:-}; shift || true
NAME=default PORT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --name) NAME=${2:?--name needs a value}; shift 2 ;;
    --port) PORT=${2:?--port needs a value}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
DIR="$LIENTHONG_STATE_DIR/apicurio/$NAME"

fetch() {
  [ -f "$HOME_DIR/.complete" ] && return 0
  need_cmd mvn "On Debian: apt-get install maven"
  need_cmd java "On Debian: apt-get install openjdk-17-jre-headless"
  local tmp
  tmp=$(mktemp -d)
  log "fetching Apicurio Registry $VERSION from Maven Central ..."
  if ! mvn -q -B dependency:copy "-Dartifact=io.apicurio:apicurio-registry-app:$VERSION:tar.gz:all" \
      "-DoutputDirectory=$tmp" > "$tmp/mvn.log" 2>&1; then
    cat "$tmp/mvn.log" >&2
    rm -rf "$tmp"
    die "downloading Apicurio Registry $VERSION failed"
  fi
  rm -rf "$HOME_DIR" && mkdir -p "$HOME_DIR"
  tar xzf "$tmp"/apicurio-registry-app-*.tar.gz -C "$HOME_DIR" || die "unpacking Apicurio failed"
  rm -rf "$tmp"
  [ -f "$JAR" ] || die "the Apicurio archive holds no $JAR"
  touch "$HOME_DIR/.complete"
}

url_of() { echo "http://127.0.0.1:$1/apis/ccompat/v7"; }
answers() { curl -sf -o /dev/null "$(url_of "$1")/subjects"; }

start() {
  fetch
  command -v curl >/dev/null 2>&1 || apt_install curl
  if [ -f "$DIR/pid" ] && pid_alive "$(cat "$DIR/pid")"; then
    die "Apicurio '$NAME' is already running; stop it first: ops/apicurio.sh stop --name $NAME"
  fi
  if [ -n "$PORT" ]; then require_free_port "$PORT"; else PORT=$(free_port); fi
  mkdir -p "$DIR"
  local t0=$SECONDS
  setsid java -Xms128m -Xmx512m -Dquarkus.http.port="$PORT" -Dquarkus.http.host=127.0.0.1 \
    -jar "$JAR" > "$DIR/apicurio.log" 2>&1 < /dev/null &
  echo $! > "$DIR/pid"
  echo "$PORT" > "$DIR/port"
  if ! wait_until "${LIENTHONG_APICURIO_START_TIMEOUT:-90}" "Apicurio on port $PORT" answers "$PORT"; then
    tail -n 30 "$DIR/apicurio.log" >&2 || true
    stop_pidfile "$DIR/pid" 10
    die "Apicurio '$NAME' did not start"
  fi
  log "Apicurio Registry $VERSION ready at $(url_of "$PORT") in $((SECONDS - t0)) s"
  url_of "$PORT"
}

case "$cmd" in
  fetch) fetch ;;
  start) start ;;
  stop) stop_pidfile "$DIR/pid" 20 ;;
  status)
    if [ -f "$DIR/pid" ] && pid_alive "$(cat "$DIR/pid")" && answers "$(cat "$DIR/port")"; then
      url_of "$(cat "$DIR/port")"
    else
      exit 3
    fi ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# A local, throw-away PostgreSQL cluster for tests, from Debian's packages. See --help.
set -euo pipefail
# shellcheck source=ops/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

usage() {
  cat <<'EOF'
Usage: ops/postgres.sh COMMAND [--name NAME] [options]

A LOCAL TEST CLUSTER, NOT FOR REAL DATA: superuser role "lienthong", no password (trust
authentication) for connections from 127.0.0.1 and the cluster's own unix socket, listening on
127.0.0.1 only.

Commands:
  install                 install PostgreSQL from Debian's packages if its server binaries are missing
                          (without letting the package start its own cluster)
  start  [--port PORT] [--timeout SECS]
                          create a fresh cluster NAME (an old stopped one is wiped), start it on
                          127.0.0.1:PORT, wait until it accepts connections; prints the admin URL,
                          e.g. postgres://lienthong@127.0.0.1:PORT/postgres.
                          Fails if NAME is running or PORT is taken; on any failure it prints the
                          log's tail and leaves no server running.
  stop                    fast shutdown (then immediate, then SIGKILL; bounded) and delete NAME's data
                          (the log is kept). Succeeds if NAME is not running.
  pause                   like stop, but keep the data and the port, for resume
  resume [--timeout SECS] start a paused NAME again on the same data and port; prints the admin URL
  status                  prints one word: running, paused (stopped, data kept) or absent.
                          Exit status 0 only when running (3 otherwise). Details on stderr.
  createdb DB             create database DB in running NAME unless it exists; prints its URL
  url                     prints the admin URL of running NAME (fails if it is not running)

Options:
  --name NAME     cluster name (default: default); letters, digits, '.', '_', '-'
  --port PORT     port for start (default: $LIENTHONG_PG_PORT, else a free port)
  --timeout SECS  how long start/resume wait for readiness (default: $LIENTHONG_PG_START_TIMEOUT or 60)
  -h, --help      this help

Environment:
  LIENTHONG_PG_PORT            default port for start
  LIENTHONG_PG_START_TIMEOUT   default readiness timeout in seconds (60)
  LIENTHONG_PG_STOP_TIMEOUT    seconds given to the fast shutdown before harsher means (30)
  LIENTHONG_PG_BINDIR          PostgreSQL's bin directory (default: newest /usr/lib/postgresql/*/bin)
  LIENTHONG_STATE_DIR          state root (default: <repo>/.lienthong); NAME's state, pid, port and
                               log (postgres.log) are in $LIENTHONG_STATE_DIR/postgres/NAME

Data directory: $LIENTHONG_STATE_DIR/postgres/NAME/data. Run as root, the server runs as the OS
user "postgres" (PostgreSQL refuses root); if that user cannot reach the state directory (for
example under /root), or the path is too long for a unix socket, the data directory is put in
/tmp/lienthong-postgres-<uid>/NAME-<hash> instead, and the file "datadir" in the state directory
points to it. `status` shows where it is.
EOF
}

# Environment variables that would redirect libpq tools or the server elsewhere.
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSERVICE PGSERVICEFILE PGOPTIONS PGDATA \
  PGPASSWORD PGPASSFILE PGSSLMODE PGCONNECT_TIMEOUT PGTARGETSESSIONATTRS 2>/dev/null || true

PG_USER_ROLE=lienthong
NAME=default
PORT_OPT=""
TIMEOUT="${LIENTHONG_PG_START_TIMEOUT:-60}"
STOP_TIMEOUT="${LIENTHONG_PG_STOP_TIMEOUT:-30}"
CMD=""
ARGS=()

while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --name) [ $# -ge 2 ] || die "--name needs a value"; NAME=$2; shift 2 ;;
    --name=*) NAME=${1#*=}; shift ;;
    --port) [ $# -ge 2 ] || die "--port needs a value"; PORT_OPT=$2; shift 2 ;;
    --port=*) PORT_OPT=${1#*=}; shift ;;
    --timeout) [ $# -ge 2 ] || die "--timeout needs a value"; TIMEOUT=$2; shift 2 ;;
    --timeout=*) TIMEOUT=${1#*=}; shift ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) if [ -z "$CMD" ]; then CMD=$1; else ARGS+=("$1"); fi; shift ;;
  esac
done
[ -n "$CMD" ] || { usage >&2; exit 2; }
[[ "$NAME" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$ ]] || die "invalid --name '$NAME' (letters, digits, '.', '_', '-'; at most 40)"
[[ "$TIMEOUT" =~ ^[0-9]+$ ]] && [ "$TIMEOUT" -gt 0 ] || die "invalid --timeout '$TIMEOUT' (whole seconds > 0)"
[[ "$STOP_TIMEOUT" =~ ^[0-9]+$ ]] || die "invalid LIENTHONG_PG_STOP_TIMEOUT '$STOP_TIMEOUT'"

IS_ROOT=""; [ "$(id -u)" -eq 0 ] && IS_ROOT=1
STATE_ROOT="$LIENTHONG_STATE_DIR/postgres"
SD="$STATE_ROOT/$NAME"           # NAME's state directory (ours: pointer, port, pid, log, lock)
LOG="$SD/postgres.log"
FALLBACK_BASE="/tmp/lienthong-postgres-$(id -u)"

# ---------------------------------------------------------------------------------------------
# binaries

find_bindir() {
  if [ -n "${LIENTHONG_PG_BINDIR:-}" ]; then
    [ -x "$LIENTHONG_PG_BINDIR/postgres" ] || die "LIENTHONG_PG_BINDIR=$LIENTHONG_PG_BINDIR has no postgres binary"
    echo "$LIENTHONG_PG_BINDIR"; return 0
  fi
  local d
  # highest major version first
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -V -r); do
    if [ -x "$d/postgres" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/pg_isready" ] && [ -x "$d/psql" ]; then
      echo "$d"; return 0
    fi
  done
  return 1
}

cmd_install() {
  if BIN=$(find_bindir); then
    log "PostgreSQL server binaries present in $BIN"
    return 0
  fi
  # The Debian package would also create and start its own cluster "main" on port 5432; the
  # policy-rc.d of apt_install_no_autostart keeps it from starting.
  apt_install_no_autostart postgresql
  BIN=$(find_bindir) || die "installed the postgresql package but found no server binaries in /usr/lib/postgresql/*/bin"
  log "PostgreSQL installed: $("$BIN/postgres" --version)"
}

ensure_bin() {
  BIN=$(find_bindir) || { log "PostgreSQL server binaries missing; installing"; cmd_install; BIN=$(find_bindir); }
  if [ -n "$IS_ROOT" ]; then
    getent passwd postgres >/dev/null || die "running as root, but there is no OS user 'postgres' to run the server as (PostgreSQL refuses root); it comes with Debian's postgresql-common package"
  fi
}

# Close every file descriptor above 2 (the lock, and whatever the caller let us inherit), so that
# a server started from here holds none of them: a caller waiting for EOF on a pipe would hang.
close_extra_fds() {
  local f fd
  for f in /proc/$BASHPID/fd/*; do
    fd=${f##*/}
    if [[ "$fd" =~ ^[0-9]+$ ]] && [ "$fd" -gt 2 ]; then { exec {fd}>&-; } 2>/dev/null || true; fi
  done
}

# Run a command as the user that owns the cluster: "postgres" when we are root, else ourselves.
# From / (the postgres user may not be allowed into the current directory); only fds 0-2 open.
as_pg() {
  if [ -n "$IS_ROOT" ]; then
    (cd / && close_extra_fds && exec runuser -u postgres -- "$@")
  else
    (cd / && close_extra_fds && exec "$@")
  fi
}

# ---------------------------------------------------------------------------------------------
# state

data_dir() { # the data directory of NAME, from the pointer file; fails if there is none
  [ -f "$SD/datadir" ] || return 1
  local d; d=$(cat "$SD/datadir")
  [ -n "$d" ] || return 1
  echo "$d"
}

stored_port() { [ -f "$SD/port" ] && cat "$SD/port"; }

admin_url() { echo "postgres://$PG_USER_ROLE@127.0.0.1:$1/${2:-postgres}"; }

# Is PID a live (not zombie) process?
proc_live() {
  pid_alive "${1:-}" || return 1
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ "$st" != Z ] && [ "$st" != X ]
}

# Is PID the postmaster of data dir $2?
is_our_postmaster() {
  proc_live "$1" || return 1
  local cmdline
  cmdline=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
  [[ "$cmdline" == *postgres*" $2 "* ]]
}

# Print the postmaster pid of NAME if it is running.
running_pid() {
  local data pid
  data=$(data_dir) || return 1
  for pid in "$(head -n1 "$data/postmaster.pid" 2>/dev/null || true)" "$(cat "$SD/pid" 2>/dev/null || true)"; do
    if [ -n "$pid" ] && is_our_postmaster "$pid" "$data"; then echo "$pid"; return 0; fi
  done
  return 1
}

# Only ever delete data directories in the two places this script puts them.
safe_rm_data() {
  local d=$1
  case "$d" in
    "$SD/data"|"$FALLBACK_BASE/"?*) ;;
    *) die "refusing to delete '$d': not a data directory made by this script (see $SD/datadir)" ;;
  esac
  case "$d" in *..*) die "refusing to delete '$d'" ;; esac
  rm -rf -- "$d"
}

wipe_instance() {
  local d
  if d=$(data_dir); then safe_rm_data "$d"; fi
  rm -rf -- "$SD/data"
  rm -f -- "$SD/datadir" "$SD/port" "$SD/pid"
}

# Can the server's OS user reach and write DIR, and does the unix socket path fit?
data_dir_usable() {
  local dir=$1
  # sun_path holds 107 characters: DIR + "/.s.PGSQL." + up to 5 digits
  [ $(( ${#dir} + 15 )) -le 107 ] || { log "path $dir is too long for a unix socket"; return 1; }
  mkdir -p -- "$dir" || return 1
  if [ -n "$IS_ROOT" ]; then
    chown postgres:postgres -- "$dir" || return 1
    if ! runuser -u postgres -- test -w "$dir" 2>/dev/null; then
      log "the OS user 'postgres' cannot reach $dir (a parent directory is closed to it)"
      rmdir -- "$dir" 2>/dev/null || true
      return 1
    fi
  fi
  chmod 700 -- "$dir"
}

choose_data_dir() {
  local dir="$SD/data"
  if data_dir_usable "$dir"; then echo "$dir"; return 0; fi
  local hash; hash=$(printf '%s' "$SD" | sha256sum | cut -c1-8)
  if [ -L "$FALLBACK_BASE" ] || { [ -e "$FALLBACK_BASE" ] && [ ! -O "$FALLBACK_BASE" ]; }; then
    die "$FALLBACK_BASE exists but is not a directory owned by $(id -un); remove it"
  fi
  mkdir -p -- "$FALLBACK_BASE"; chmod 755 -- "$FALLBACK_BASE"
  dir="$FALLBACK_BASE/$NAME-$hash"
  rm -rf -- "$dir"
  data_dir_usable "$dir" || die "cannot make a data directory for the server's user in $dir either"
  log "data directory falls back to $dir (pointer in $SD/datadir)"
  echo "$dir"
}

# ---------------------------------------------------------------------------------------------
# server control

log_tail() {
  [ -f "$LOG" ] || return 0
  log "last lines of $LOG:"
  tail -n "${1:-40}" "$LOG" | sed 's/^/    /' >&2
}

# Stop NAME's server, if running. Fast shutdown for STOP_TIMEOUT s, then immediate, then SIGKILL
# of the postmaster's process group. Returns when no process of it is left.
stop_server() {
  local data pid
  data=$(data_dir) || return 0
  pid=$(running_pid) || { rm -f "$SD/pid"; return 0; }
  log "stopping PostgreSQL '$NAME' (pid $pid, fast shutdown)"
  if ! as_pg "$BIN/pg_ctl" stop -D "$data" -m fast -w -t "$STOP_TIMEOUT" -s >>"$LOG" 2>&1 </dev/null; then
    if is_our_postmaster "$pid" "$data"; then
      log "fast shutdown did not finish in ${STOP_TIMEOUT}s; immediate shutdown"
      as_pg "$BIN/pg_ctl" stop -D "$data" -m immediate -w -t 10 -s >>"$LOG" 2>&1 </dev/null || true
    fi
  fi
  if is_our_postmaster "$pid" "$data"; then
    # Each server child is its own process group (postgres calls setsid), so kill them by parent.
    local kids; kids=$(pgrep -P "$pid" | tr '\n' ' ' || true)
    log "PostgreSQL '$NAME' (pid $pid) still running; SIGKILL to it and its children ${kids}"
    # shellcheck disable=SC2086
    kill -KILL "$pid" $kids 2>/dev/null || true
    local deadline=$((SECONDS + 10)) k alive
    while (( SECONDS < deadline )); do
      alive=""
      for k in $pid $kids; do proc_live "$k" && alive=1; done
      [ -z "$alive" ] && break
      sleep 0.1
    done
    proc_live "$pid" && die "PostgreSQL '$NAME' pid $pid survived SIGKILL"
    rm -f "$data/postmaster.pid"
  fi
  rm -f "$SD/pid"
  log "PostgreSQL '$NAME' stopped"
}

# Start the server on the existing data directory and wait until it is ready. Prints nothing.
launch() {
  local data=$1 port=$2 pid
  log "starting PostgreSQL '$NAME' on 127.0.0.1:$port (data: $data; log: $LOG)"
  # pg_ctl's stdout/stderr (inherited by the server) go to the log file, opened here, so that the
  # log can live where the server's OS user could not create files.
  if ! as_pg "$BIN/pg_ctl" start -D "$data" -w -t "$TIMEOUT" -s </dev/null >>"$LOG" 2>&1; then
    die "PostgreSQL '$NAME' did not start (pg_ctl start failed or was not ready within ${TIMEOUT}s)"
  fi
  pid=$(running_pid) || die "PostgreSQL '$NAME' exited right after starting"
  echo "$pid" >"$SD/pid"
  wait_until "$TIMEOUT" "PostgreSQL '$NAME' to accept connections on 127.0.0.1:$port" \
    "$BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U "$PG_USER_ROLE" -d postgres \
    || die "PostgreSQL '$NAME' is not accepting connections on 127.0.0.1:$port after ${TIMEOUT}s"
  log "PostgreSQL '$NAME' ready on 127.0.0.1:$port (pid $pid)"
}

STARTING=""
on_exit() {
  local rc=$?
  if [ -n "$STARTING" ] && [ "$rc" -ne 0 ]; then
    STARTING=""
    log_tail 40
    log "cleaning up after the failed $CMD of '$NAME'"
    stop_server || true
    # a failed fresh start leaves no cluster behind (only its log); a failed resume keeps the data
    if [ "$CMD" = start ]; then wipe_instance || true; fi
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

lock() {
  mkdir -p -- "$SD"
  exec 9>"$SD/lock"
  flock -w 300 9 || die "another ops/postgres.sh is busy with '$NAME' (lock $SD/lock)"
}

write_config() {
  local data=$1 port=$2
  as_pg tee -a "$data/postgresql.conf" >/dev/null <<EOF

# ---- lienthong local test cluster (ops/postgres.sh) ----
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$data'
unix_socket_permissions = 0700
max_connections = 200
shared_buffers = 128MB
fsync = on
logging_collector = off
log_destination = 'stderr'
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'
EOF
  as_pg tee "$data/pg_hba.conf" >/dev/null <<'EOF'
# lienthong local test cluster: trust, from 127.0.0.1 and the cluster's own unix socket only.
# TYPE  DATABASE  USER  ADDRESS        METHOD
local   all       all                  trust
host    all       all   127.0.0.1/32   trust
EOF
}

# ---------------------------------------------------------------------------------------------
# commands

cmd_start() {
  lock
  local pid
  if pid=$(running_pid); then
    die "PostgreSQL '$NAME' is already running (pid $pid, port $(stored_port)); stop it first (ops/postgres.sh stop --name $NAME) or use another --name"
  fi
  ensure_bin
  local port=${PORT_OPT:-${LIENTHONG_PG_PORT:-}}
  if [ -z "$port" ]; then port=$(free_port); fi
  [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "invalid port '$port'"
  require_free_port "$port"

  if [ -e "$SD/datadir" ] || [ -e "$SD/data" ]; then log "wiping the old, stopped cluster '$NAME'"; fi
  wipe_instance
  [ -f "$LOG" ] && mv -f -- "$LOG" "$LOG.prev"
  : >"$LOG"
  STARTING=1
  local data t0=$SECONDS
  data=$(choose_data_dir)
  echo "$data" >"$SD/datadir"
  echo "$port" >"$SD/port"

  log "initdb $data"
  as_pg "$BIN/initdb" -D "$data" -U "$PG_USER_ROLE" --auth=trust -E UTF8 --locale=C --no-sync \
    --no-instructions </dev/null >>"$LOG" 2>&1 || die "initdb failed"
  write_config "$data" "$port"
  launch "$data" "$port"
  STARTING=""
  log "started in $((SECONDS - t0))s"
  admin_url "$port"
}

cmd_resume() {
  lock
  local pid data port
  if pid=$(running_pid); then
    die "PostgreSQL '$NAME' is already running (pid $pid, port $(stored_port))"
  fi
  data=$(data_dir) && [ -f "$data/PG_VERSION" ] \
    || die "no paused cluster '$NAME' to resume (no data); use: ops/postgres.sh start --name $NAME"
  port=$(stored_port) || die "no port recorded for '$NAME' in $SD/port"
  ensure_bin
  require_free_port "$port"
  STARTING=1
  launch "$data" "$port"
  STARTING=""
  admin_url "$port"
}

cmd_stop() {
  lock
  if running_pid >/dev/null; then ensure_bin; stop_server; else log "PostgreSQL '$NAME' is not running"; fi
  if data_dir >/dev/null || [ -e "$SD/data" ]; then
    wipe_instance
    log "deleted the data of '$NAME' (log kept: $LOG)"
  fi
}

cmd_pause() {
  lock
  data_dir >/dev/null || die "there is no cluster '$NAME' to pause"
  if ! running_pid >/dev/null; then log "PostgreSQL '$NAME' is not running (already paused)"; return 0; fi
  ensure_bin
  stop_server
  log "paused '$NAME': data kept in $(data_dir), port $(stored_port); ops/postgres.sh resume --name $NAME"
}

cmd_status() {
  local pid data
  if pid=$(running_pid); then
    data=$(data_dir)
    log "'$NAME' running: pid $pid, $(admin_url "$(stored_port)"), data $data, log $LOG"
    echo running; return 0
  fi
  if data=$(data_dir) && [ -f "$data/PG_VERSION" ]; then
    log "'$NAME' paused (not running): data $data, port $(stored_port || echo '?'), log $LOG"
    echo paused; return 3
  fi
  log "'$NAME' absent (not running, no data)"
  echo absent; return 3
}

cmd_url() {
  running_pid >/dev/null || die "PostgreSQL '$NAME' is not running; start it: ops/postgres.sh start --name $NAME"
  admin_url "$(stored_port)"
}

cmd_createdb() {
  [ ${#ARGS[@]} -eq 1 ] || die "usage: ops/postgres.sh createdb [--name NAME] DB"
  local db=${ARGS[0]}
  [[ "$db" =~ ^[A-Za-z_][A-Za-z0-9_-]{0,62}$ ]] || die "invalid database name '$db' (letters, digits, '_', '-'; not starting with a digit or '-')"
  lock
  running_pid >/dev/null || die "PostgreSQL '$NAME' is not running; start it: ops/postgres.sh start --name $NAME"
  ensure_bin
  local port url exists out
  port=$(stored_port); url=$(admin_url "$port")
  exists=$("$BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d "$url" -v db="$db" \
    <<<"SELECT 1 FROM pg_database WHERE datname = :'db';" 2>&1) || die "psql failed: $exists"
  if [ "$exists" = 1 ]; then
    log "database '$db' already exists in '$NAME'"
  else
    if ! out=$("$BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$url" -v db="$db" <<<'CREATE DATABASE :"db";' 2>&1); then
      case "$out" in *"already exists"*) log "database '$db' already exists in '$NAME'" ;;
        *) die "CREATE DATABASE $db failed: $out" ;; esac
    else
      log "created database '$db' in '$NAME'"
    fi
  fi
  admin_url "$port" "$db"
}

case "$CMD" in
  install)  cmd_install ;;
  start)    cmd_start ;;
  stop)     cmd_stop ;;
  pause)    cmd_pause ;;
  resume)   cmd_resume ;;
  status)   cmd_status ;;
  url)      cmd_url ;;
  createdb) cmd_createdb ;;
  help)     usage ;;
  *) die "unknown command '$CMD' (see --help)" ;;
esac

# shellcheck shell=bash
# Shared helpers for the scripts under ops/. Source it; do not run it.
#
# Layout (all overridable by environment):
#   LIENTHONG_ROOT       the repository root (derived from this file's place)
#   LIENTHONG_STATE_DIR  runtime state of started services: data dirs, logs, pid files
#                        (default: $LIENTHONG_ROOT/.lienthong, git-ignored)
#   LIENTHONG_CACHE_DIR  downloads kept between runs and between clones: Kafka jars, the Python
#                        virtual environment's wheels (default: ~/.cache/lienthong, outside git)

LIENTHONG_ROOT="${LIENTHONG_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
LIENTHONG_STATE_DIR="${LIENTHONG_STATE_DIR:-$LIENTHONG_ROOT/.lienthong}"
LIENTHONG_CACHE_DIR="${LIENTHONG_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/lienthong}"
export LIENTHONG_ROOT LIENTHONG_STATE_DIR LIENTHONG_CACHE_DIR

# Human-readable messages go to stderr, so that stdout carries only what a caller captures
# (an address, a path).
log() { printf '%s %s\n' "[$(basename "$0")]" "$*" >&2; }
die() { printf '%s ERROR: %s\n' "[$(basename "$0")]" "$*" >&2; exit 1; }

need_cmd() { # need_cmd CMD "how to get it"
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed. $2"
}

# Is something listening on 127.0.0.1:PORT?
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Fail clearly if PORT is taken.
require_free_port() {
  if port_in_use "$1"; then
    die "port $1 on 127.0.0.1 is already in use; choose another port (see --help)"
  fi
}

# Print a free loopback port, chosen by the kernel, that is not in the given exclusion list.
free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
    case " $* " in *" $p "*) continue ;; esac
    if ! port_in_use "$p"; then echo "$p"; return 0; fi
  done
  die "could not find a free port on 127.0.0.1"
}

# wait_until SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.2 s until it succeeds.
wait_until() {
  local secs=$1 what=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS >= deadline )); then
      log "timed out after ${secs}s waiting for $what"
      return 1
    fi
    sleep 0.2
  done
}

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# Stop the process whose pid is in FILE: SIGTERM, wait up to SECONDS, then SIGKILL.
stop_pidfile() {
  local file=$1 secs=${2:-30} pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if pid_alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + secs))
    while pid_alive "$pid" && (( SECONDS < deadline )); do sleep 0.2; done
    if pid_alive "$pid"; then
      log "pid $pid did not stop after ${secs}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$file"
}

# Install Debian packages if any of them is missing. Needs root (or sudo).
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "need root to install ${missing[*]} (apt-get); run as root or install them"
    sudo="sudo"
  fi
  log "installing Debian packages: ${missing[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 \
    || die "apt-get update failed; are Debian's package mirrors reachable?"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
    || die "apt-get install ${missing[*]} failed"
}

# Like apt_install, but the packages' maintainer scripts may not start services (Debian's
# invoke-rc.d and deb-systemd-invoke obey /usr/sbin/policy-rc.d; exit 101 means "forbidden").
# A policy-rc.d that already exists is left as it is; one made here is removed afterwards.
apt_install_no_autostart() {
  local sudo="" made="" rc=0
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "need root to install $* (apt-get); run as root or install them"
    sudo="sudo"
  fi
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# made by lienthong ops/lib.sh apt_install_no_autostart; removed after the install\nexit 101\n' \
      | $sudo tee /usr/sbin/policy-rc.d >/dev/null && $sudo chmod 755 /usr/sbin/policy-rc.d && made=1
  fi
  ( apt_install "$@" ) || rc=$?
  if [ -n "$made" ]; then $sudo rm -f /usr/sbin/policy-rc.d; fi
  return "$rc"
}

#!/usr/bin/env bash
# The Python virtual environment for the interoperability tests. See --help.
set -euo pipefail
# shellcheck source=ops/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

usage() {
  cat <<'EOF'
Usage: ops/python-env.sh COMMAND

Commands:
  create   make the virtual environment, unless it is already complete, and install
           ops/python-requirements.txt into it (binary wheels only); prints the path of its python.
           A second call returns at once.
  python   print the path of the venv's python; fails if `create` has not completed

The venv lives outside git, in $LIENTHONG_CACHE_DIR/venv-<hash> (default cache dir:
~/.cache/lienthong), so that runs and clones share it. The hash covers the requirements file and
the interpreter (its path and version): changing either makes a new venv. pip's download cache is
$LIENTHONG_CACHE_DIR/pip. The venv counts as complete only once its marker file
(.lienthong-complete) is written after a successful install; a half-made one is redone.

Environment:
  LIENTHONG_PYTHON     the interpreter to make the venv from (default: python3)
  LIENTHONG_CACHE_DIR  see above

Options:
  -h, --help  this help
EOF
}

PY=${LIENTHONG_PYTHON:-python3}
REQ="$LIENTHONG_ROOT/ops/python-requirements.txt"

venv_dir() {
  need_cmd "$PY" "Install Python 3 and its venv module (Debian: apt-get install python3 python3-venv), or set LIENTHONG_PYTHON."
  [ -f "$REQ" ] || die "requirements file $REQ is missing"
  local ident key
  ident=$("$PY" -c 'import sys, platform; print(sys.executable, platform.python_version(), sys.implementation.cache_tag)') \
    || die "'$PY' does not run"
  key=$( { cat "$REQ"; printf '\n--interpreter: %s\n' "$ident"; } | sha256sum | cut -c1-16)
  echo "$LIENTHONG_CACHE_DIR/venv-$key"
}

MARKER_NAME=.lienthong-complete

is_complete() { # is_complete VENV
  [ -f "$1/$MARKER_NAME" ] && [ -x "$1/bin/python" ] && "$1/bin/python" -c '' 2>/dev/null
}

cmd_python() {
  local venv; venv=$(venv_dir)
  is_complete "$venv" || die "the Python venv for $(basename "$REQ") does not exist yet (or is incomplete); run: ops/python-env.sh create"
  echo "$venv/bin/python"
}

cmd_create() {
  local venv; venv=$(venv_dir)
  if is_complete "$venv"; then echo "$venv/bin/python"; return 0; fi

  mkdir -p -- "$LIENTHONG_CACHE_DIR"
  exec 9>"$venv.lock"
  flock -w 900 9 || die "another ops/python-env.sh create holds $venv.lock"
  if is_complete "$venv"; then echo "$venv/bin/python"; return 0; fi   # made meanwhile

  "$PY" -c 'import venv' 2>/dev/null \
    || die "'$PY' has no venv module; on Debian: apt-get install python3-venv"
  local t0=$SECONDS
  if [ -e "$venv" ]; then log "removing the incomplete venv $venv"; rm -rf -- "$venv"; fi
  log "creating the venv $venv (from $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])'))"
  if ! "$PY" -m venv "$venv" >&2; then
    rm -rf -- "$venv"
    die "'$PY -m venv' failed; on Debian install python3-venv (apt-get install python3-venv)"
  fi
  log "installing $(basename "$REQ") (pip cache: $LIENTHONG_CACHE_DIR/pip)"
  if ! "$venv/bin/python" -m pip install --cache-dir "$LIENTHONG_CACHE_DIR/pip" --only-binary=:all: \
      --no-input --disable-pip-version-check --progress-bar off -r "$REQ" >&2; then
    die "pip install -r $REQ failed (see above); the venv stays incomplete and is redone on the next create"
  fi
  "$venv/bin/python" -m pip check >&2 || die "pip check found broken requirements in $venv"
  cp -- "$REQ" "$venv/python-requirements.txt"
  date -u +%FT%TZ >"$venv/$MARKER_NAME"
  log "venv ready in $((SECONDS - t0))s"
  echo "$venv/bin/python"
}

[ $# -ge 1 ] || { usage >&2; exit 2; }
case "$1" in
  -h|--help|help) usage ;;
  create) [ $# -eq 1 ] || die "create takes no arguments"; cmd_create ;;
  python) [ $# -eq 1 ] || die "python takes no arguments"; cmd_python ;;
  *) die "unknown command '$1' (see --help)" ;;
esac

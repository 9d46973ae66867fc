#!/usr/bin/env bash
# Prometheus and promtool from Debian's packages (install only; nothing is started here). See --help.
set -euo pipefail
# shellcheck source=ops/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

usage() {
  cat <<'EOF'
Usage: ops/prometheus.sh COMMAND

Commands:
  install   install Debian's "prometheus" package (prometheus and promtool) if missing, without
            leaving its system service running: services may not start during the install
            (policy-rc.d), a prometheus process that the install started anyway is stopped, and the
            service is disabled at boot (systemctl or update-rc.d).
  paths     print two lines, PROMETHEUS=/path/to/prometheus and PROMTOOL=/path/to/promtool
            (fails if they are not installed)
  version   print Prometheus's upstream version number (e.g. 2.42.0, without Debian's "+ds");
            the full version text goes to stderr

Options:
  -h, --help  this help
EOF
}

find_bin() { # find_bin NAME: print the path of NAME, preferring Debian's /usr/bin
  if [ -x "/usr/bin/$1" ]; then echo "/usr/bin/$1"; return 0; fi
  command -v "$1" 2>/dev/null
}

prometheus_pids() { pgrep -x prometheus 2>/dev/null | sort -n || true; }

stop_pids() { # TERM, up to 10 s, then KILL
  local p deadline=$((SECONDS + 10))
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "$@"; do
    while pid_alive "$p" && (( SECONDS < deadline )); do sleep 0.2; done
    if pid_alive "$p"; then log "pid $p did not stop; SIGKILL"; kill -KILL "$p" 2>/dev/null || true; fi
  done
}

disable_service() {
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    log "systemd is running: disabling and stopping prometheus.service"
    systemctl disable --now prometheus.service >&2 2>&1 || log "systemctl disable prometheus failed (ignored)"
  else
    if [ -x /etc/init.d/prometheus ] && command -v update-rc.d >/dev/null 2>&1; then
      # Debian's update-rc.d also removes the unit's systemd "wants" link made by the package
      log "no systemd here: disabling the service at boot (update-rc.d prometheus disable)"
      update-rc.d prometheus disable >&2 2>&1 || log "update-rc.d prometheus disable failed (ignored)"
    fi
  fi
}

cmd_install() {
  if [ -n "$(find_bin prometheus)" ] && [ -n "$(find_bin promtool)" ]; then
    log "prometheus and promtool already installed"
  else
    local before after new=() p
    before=$(prometheus_pids)
    apt_install_no_autostart prometheus
    if [ "$(id -u)" -eq 0 ]; then disable_service; fi
    after=$(prometheus_pids)
    for p in $after; do
      grep -qx "$p" <<<"$before" || new+=("$p")
    done
    if [ ${#new[@]} -gt 0 ]; then
      log "the package install started prometheus (pid ${new[*]}); stopping it"
      if [ -x /etc/init.d/prometheus ]; then /etc/init.d/prometheus stop >&2 2>&1 || true; fi
      stop_pids "${new[@]}"
    fi
  fi
  [ -n "$(find_bin prometheus)" ] || die "the prometheus package is installed but no prometheus binary was found"
  [ -n "$(find_bin promtool)" ] || die "the prometheus package is installed but no promtool binary was found"
  local running; running=$(prometheus_pids | tr '\n' ' ')
  if [ -n "${running// /}" ]; then
    log "warning: prometheus processes are running (pid $running), not started by this install; left alone"
  fi
  log "$("$(find_bin prometheus)" --version 2>&1 | head -n1)"
}

cmd_paths() {
  local prom tool
  prom=$(find_bin prometheus) || die "prometheus is not installed; run: ops/prometheus.sh install"
  tool=$(find_bin promtool) || die "promtool is not installed; run: ops/prometheus.sh install"
  echo "PROMETHEUS=$prom"
  echo "PROMTOOL=$tool"
}

cmd_version() {
  local prom out v
  prom=$(find_bin prometheus) || die "prometheus is not installed; run: ops/prometheus.sh install"
  out=$("$prom" --version 2>&1) || die "'$prom --version' failed: $out"
  printf '%s\n' "$out" >&2
  v=$(sed -n 's/^prometheus, version \([0-9][0-9.]*\).*/\1/p' <<<"$out" | head -n1)
  [ -n "$v" ] || die "cannot read a version number from '$prom --version'"
  echo "$v"
}

[ $# -ge 1 ] || { usage >&2; exit 2; }
case "$1" in
  -h|--help|help) usage ;;
  install) [ $# -eq 1 ] || die "install takes no arguments"; cmd_install ;;
  paths)   [ $# -eq 1 ] || die "paths takes no arguments"; cmd_paths ;;
  version) [ $# -eq 1 ] || die "version takes no arguments"; cmd_version ;;
  *) die "unknown command '$1' (see --help)" ;;
esac

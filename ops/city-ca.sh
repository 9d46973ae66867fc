#!/usr/bin/env bash
# The city's certificate authority for a secured Kafka cluster, with openssl (Debian's).
# Run `ops/city-ca.sh --help` for the interface.
set -euo pipefail

# shellcheck source=ops/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CA_DIR="${LIENTHONG_CITY_CA_DIR:-$LIENTHONG_STATE_DIR/city-ca}"

usage() {
  cat <<EOF
Usage: ops/city-ca.sh COMMAND [ARGS]

A certificate authority for the bus: the brokers' certificates, and client certificates for
agencies that authenticate with mutual TLS instead of SCRAM. Keys are EC P-256, unencrypted
PEM files readable only by their owner: keep the folder as secret as the keys in it.

Commands:
  init
      Create the CA (ca.key, ca.crt, valid 10 years) in the folder, once; later calls keep it.
      Prints the CA certificate's path on stdout.

  issue NAME
      Issue a key and certificate with common name NAME (the Kafka principal User:NAME), valid
      two years, for 127.0.0.1 and localhost, usable by a server and a client. Writes
      NAME/NAME.key, NAME/NAME.crt and NAME/NAME.pem (key, then certificate: what Kafka's PEM
      keystore takes). Issuing NAME again replaces them. Prints the folder NAME/ on stdout.

  dir
      Print the folder.

Folder: \$LIENTHONG_CITY_CA_DIR, default \$LIENTHONG_STATE_DIR/city-ca (now $CA_DIR).
A city's own PKI can replace this: Kafka and every lienthong client take PEM files.
EOF
}

need_openssl() {
  command -v openssl >/dev/null 2>&1 || apt_install openssl
  command -v openssl >/dev/null 2>&1 || die "openssl is needed (Debian: apt-get install openssl)"
}

cmd_init() {
  need_openssl
  mkdir -p "$CA_DIR"
  chmod 700 "$CA_DIR"
  if [ ! -s "$CA_DIR/ca.crt" ] || [ ! -s "$CA_DIR/ca.key" ]; then
    (
      umask 077
      openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$CA_DIR/ca.key" -out "$CA_DIR/ca.crt" -days 3650 -sha256 \
        -subj "/O=Ho Chi Minh City/OU=lienthong/CN=lienthong city CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    ) || die "openssl could not create the CA in $CA_DIR"
    log "city CA created in $CA_DIR"
  fi
  echo "$CA_DIR/ca.crt"
}

cmd_issue() {
  local name=${1:-}
  [[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] || die "issue needs a NAME of letters, digits, . _ - (got '$name')"
  cmd_init >/dev/null
  local out="$CA_DIR/$name"
  mkdir -p "$out"
  chmod 700 "$out"
  (
    umask 077
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout "$out/$name.key" -out "$out/$name.csr" -subj "/O=Ho Chi Minh City/CN=$name" 2>/dev/null
    openssl x509 -req -in "$out/$name.csr" -CA "$CA_DIR/ca.crt" -CAkey "$CA_DIR/ca.key" \
      -CAcreateserial -out "$out/$name.crt" -days 730 -sha256 -extfile <(
        printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" \
          "keyUsage=critical,digitalSignature,keyEncipherment" \
          "extendedKeyUsage=serverAuth,clientAuth" "basicConstraints=CA:FALSE"
      ) 2>/dev/null
    # Kafka's PEM keystore wants the key in PKCS#8 before the certificate.
    openssl pkcs8 -topk8 -nocrypt -in "$out/$name.key" -out "$out/$name.p8"
    cat "$out/$name.p8" "$out/$name.crt" >"$out/$name.pem"
    rm -f "$out/$name.csr" "$out/$name.p8"
  ) || die "openssl could not issue a certificate for $name"
  echo "$out"
}

main() {
  local cmd=${1:-}
  [ $# -gt 0 ] && shift
  case "$cmd" in
    init) cmd_init ;;
    issue) cmd_issue "$@" ;;
    dir) echo "$CA_DIR" ;;
    -h|--help|help) usage ;;
    "") usage >&2; exit 2 ;;
    *) die "unknown command '$cmd' (see --help)" ;;
  esac
}

main "$@"

#!/usr/bin/env bash
# Starts three berths on temp data dirs and free loopback ports (one open, as `berth serve`
# starts by default; one with credentials required; one with credentials required serving
# HTTPS with a certificate from a test CA made here with openssl), runs the real-client
# suite against them, checks each with `berth fsck`, and stops them (by PID) and removes
# the temp dir whatever happens.
#
#   tests/e2e/with-berth.sh PATH/TO/berth
set -euo pipefail
BERTH=${1:?usage: $0 PATH/TO/berth}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d /tmp/berth-e2e.XXXXXX)
pid=
apid=
tpid=
stop() {
  if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
  fi
}
cleanup() {
  stop "$pid"
  stop "$apid"
  stop "$tpid"
  rm -rf "$tmp"
}
trap cleanup EXIT
# Die by a signal: still run cleanup (EXIT traps do not fire for untrapped fatal signals).
trap 'exit 1' INT TERM HUP
trap 'trap "" PIPE; exec >/dev/null 2>&1; exit 141' PIPE

# wait_addr NAME: the address berth printed to $tmp/NAME.stdout.
wait_addr() {
  local addr=
  for _ in $(seq 100); do
    addr=$(sed -n 's/^listening on //p' "$tmp/$1.stdout")
    [ -n "$addr" ] && { echo "$addr"; return 0; }
    sleep 0.1
  done
  cat "$tmp/$1.stderr" >&2
  echo "berth ($1) did not report its address" >&2
  return 1
}

# One berth as started by default (open on loopback), one with credentials required.
"$BERTH" serve --listen 127.0.0.1:0 --data "$tmp/data" >"$tmp/open.stdout" 2>"$tmp/open.stderr" &
pid=$!
password="e2e-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
BERTH_ADMIN_PASSWORD="$password" "$BERTH" serve --listen 127.0.0.1:0 --data "$tmp/authdata" \
  >"$tmp/auth.stdout" 2>"$tmp/auth.stderr" &
apid=$!
# HTTPS: a test CA, the certificate berth starts with and the one the suite rotates to
# (tls/next.*), both for IP 127.0.0.1.
tls=$tmp/tls
mkdir -p "$tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=berth e2e CA" -addext basicConstraints=critical,CA:TRUE \
  -addext keyUsage=critical,keyCertSign,cRLSign -keyout "$tls/ca.key" -out "$tls/ca.crt" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$tls/ext.cnf"
for name in server next; do
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=berth e2e $name" -keyout "$tls/$name.key" -out "$tls/$name.csr" 2>/dev/null
  openssl x509 -req -in "$tls/$name.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial \
    -days 2 -sha256 -extfile "$tls/ext.cnf" -out "$tls/$name.crt" 2>/dev/null
done
BERTH_ADMIN_PASSWORD="$password" "$BERTH" serve --listen 127.0.0.1:0 --data "$tmp/tlsdata" \
  --tls-cert "$tls/server.crt" --tls-key "$tls/server.key" >"$tmp/tls.stdout" 2>"$tmp/tls.stderr" &
tpid=$!
addr=$(wait_addr open)
aaddr=$(wait_addr auth)
taddr=$(wait_addr tls)
echo "berth (pid $pid) listening on $addr; berth with auth (pid $apid) on $aaddr; with HTTPS (pid $tpid) on $taddr"

status=0
E2E_BERTH="$BERTH" E2E_AUTH_REG="$aaddr" E2E_AUTH_PASSWORD="$password" E2E_TLS_REG="$taddr" E2E_TLS_CA="$tls/ca.crt" \
  bash "$here/real-clients.sh" "$addr" || status=$?
if [ "$status" -ne 0 ]; then
  for name in open auth tls; do
    echo "--- berth log ($name) ---" >&2
    tail -n 50 "$tmp/$name.stderr" >&2
  done
fi
# Both registries must still be consistent after everything the clients did.
kill -TERM "$pid" "$apid" "$tpid"; wait "$pid" "$apid" "$tpid" || true; pid=; apid=; tpid=
"$BERTH" fsck --data "$tmp/data" || status=1
"$BERTH" fsck --data "$tmp/authdata" || status=1
"$BERTH" fsck --data "$tmp/tlsdata" || status=1
exit "$status"

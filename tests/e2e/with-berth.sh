#!/usr/bin/env bash
# Starts two berths on temp data dirs and free loopback ports (one open, as `berth serve`
# starts by default; one with credentials required), runs the real-client suite against
# them, checks both with `berth fsck`, and stops them (by PID) and removes the temp dir
# whatever happens.
#
#   tests/e2e/with-berth.sh PATH/TO/berth
set -euo pipefail
BERTH=${1:?usage: $0 PATH/TO/berth}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d /tmp/berth-e2e.XXXXXX)
pid=
apid=
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
addr=$(wait_addr open)
aaddr=$(wait_addr auth)
echo "berth (pid $pid) listening on $addr; berth with auth (pid $apid) on $aaddr"

status=0
E2E_AUTH_REG="$aaddr" E2E_AUTH_PASSWORD="$password" bash "$here/real-clients.sh" "$addr" || status=$?
if [ "$status" -ne 0 ]; then
  for name in open auth; do
    echo "--- berth log ($name) ---" >&2
    tail -n 50 "$tmp/$name.stderr" >&2
  done
fi
# Both registries must still be consistent after everything the clients did.
kill -TERM "$pid" "$apid"; wait "$pid" "$apid" || true; pid=; apid=
"$BERTH" fsck --data "$tmp/data" || status=1
"$BERTH" fsck --data "$tmp/authdata" || status=1
exit "$status"

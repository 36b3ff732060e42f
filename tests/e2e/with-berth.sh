#!/usr/bin/env bash
# Starts berth on a temp data dir and a free loopback port, runs the real-client suite
# against it, and stops berth (by PID) and removes the temp dir whatever happens.
#
#   tests/e2e/with-berth.sh PATH/TO/berth
set -euo pipefail
BERTH=${1:?usage: $0 PATH/TO/berth}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d /tmp/berth-e2e.XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
# Die by a signal: still run cleanup (EXIT traps do not fire for untrapped fatal signals).
trap 'exit 1' INT TERM HUP
trap 'trap "" PIPE; exec >/dev/null 2>&1; exit 141' PIPE

: >"$tmp/stdout"
"$BERTH" serve --listen 127.0.0.1:0 --data "$tmp/data" >"$tmp/stdout" 2>"$tmp/stderr" &
pid=$!
addr=
for _ in $(seq 100); do
  addr=$(sed -n 's/^listening on //p' "$tmp/stdout")
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/stderr" >&2; echo "berth exited early" >&2; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "berth did not report its address" >&2; exit 1; }
echo "berth (pid $pid) listening on $addr"

status=0
bash "$here/real-clients.sh" "$addr" || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- berth log ---" >&2
  tail -n 50 "$tmp/stderr" >&2
fi
# The registry must still be consistent after everything the clients did.
kill -TERM "$pid"; wait "$pid" || true; pid=
"$BERTH" fsck --data "$tmp/data" || status=1
exit "$status"

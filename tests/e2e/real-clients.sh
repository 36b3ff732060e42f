#!/usr/bin/env bash
# End-to-end test: drive a running registry with REAL clients.
#
#   tests/e2e/real-clients.sh HOST:PORT          (plain HTTP, no auth, loopback only)
#
# With E2E_AUTH_REG=HOST:PORT and E2E_AUTH_PASSWORD set (a second berth started with
# BERTH_ADMIN_PASSWORD, so credentials are required), access control is driven with the
# same clients too: docker/podman login and skopeo --creds through the token flow, a
# robot account pushing with its secret, a reader refused a push, anonymous pulls of a
# public namespace only.
#
# With E2E_TLS_REG=HOST:PORT and E2E_TLS_CA=FILE also set (a third berth serving HTTPS,
# started with the same BERTH_ADMIN_PASSWORD; the CA's directory also holds server.crt and
# server.key, the files that berth serves, and next.crt/next.key from the same CA), docker
# trusts the CA through /etc/docker/certs.d/HOST:PORT/ca.crt (created here, removed on
# exit), logs in and pushes/pulls over HTTPS, skopeo verifies the CA, and the certificate
# files are swapped for next.* while berth runs, then push/pull again.
#
# Clients: docker (a private dockerd started here), podman + buildah (private
# vfs storage), skopeo, and the `oras` Python library (tests/e2e/oras_check.py).
# Needs what tests/e2e/install-deps.sh installs, and root (dockerd, podman).
#
# Output: one `ok - ...` / `not ok - ...` line per check (on failure followed
# by `#`-prefixed log lines), then exactly `N passed, M failed`; exit 1 if M > 0.
#
# Everything is created in one temp dir (images, storage, the dockerd data
# root); every repository pushed lives under a fresh namespace e2e/run-<random>
# so runs against the same registry never see each other's content.  The EXIT
# trap stops the dockerd started here by PID (and its containerd by PID),
# unmounts anything left under the temp dir and removes it.
#
# Environment knobs: E2E_CMD_TIMEOUT (seconds per client command, default 120),
# E2E_TMP_BASE (default /tmp; keep it short: unix socket paths live under it),
# E2E_KEEP_TMP=1 (keep the temp dir for debugging).
set -euo pipefail

usage() { echo "usage: $0 HOST:PORT   (loopback registry address, e.g. 127.0.0.1:5000)" >&2; exit 2; }
[ $# -eq 1 ] || usage
REG=$1
case "$REG" in
  127.*:[0-9]*|localhost:[0-9]*|\[::1\]:[0-9]*) ;;
  *) echo "refusing non-loopback registry address: $REG" >&2; usage ;;
esac

[ "$(id -u)" -eq 0 ] || { echo "$0: run as root (it starts its own dockerd and uses podman)" >&2; exit 2; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CMD_TIMEOUT=${E2E_CMD_TIMEOUT:-120}
T=$(mktemp -d "${E2E_TMP_BASE:-/tmp}/berth-e2e.XXXXXX")
NS="e2e/run-$(od -An -N5 -tx1 /dev/urandom | tr -d ' \n')"
NONCE="$NS $(date +%s.%N)"
START=$(date +%s)
PASS=0
FAIL=0
N=0
DOCKERD_PID=""
CERTS_D=""   # /etc/docker/certs.d/<E2E_TLS_REG>, once created here
CERTS_D_PARENT_NEW=0   # whether /etc/docker/certs.d itself was created here
SUMMARY_DONE=0
mkdir -p "$T/logs" "$T/state" "$T/tmp" "$T/c" "$T/d"

# Keep every client away from the host's own configuration and state.
export TMPDIR="$T/tmp"
export DOCKER_HOST="unix://$T/d/docker.sock"
export DOCKER_CONFIG="$T/docker-config"
export DOCKER_BUILDKIT=0             # classic builder: no buildkit/network needed
export DOCKER_CLI_EXPERIMENTAL=enabled   # `docker manifest` on older CLIs
export REGISTRY_AUTH_FILE="$T/auth.json"
export CONTAINERS_REGISTRIES_CONF="$T/registries.conf"
printf 'unqualified-search-registries = []\n' >"$CONTAINERS_REGISTRIES_CONF"
printf '{"auths": {}}\n' >"$REGISTRY_AUTH_FILE"   # podman/buildah insist it exists
PM=(podman --root "$T/c/root" --runroot "$T/c/run" --storage-driver vfs
    --tmpdir "$T/c/tmp" --events-backend none --cgroup-manager cgroupfs)
BA=(buildah --root "$T/c/root" --runroot "$T/c/run" --storage-driver vfs)

# ---------------------------------------------------------------- plumbing ---
cleanup() {
  local -   # the set +e below stays local to this function
  set +e
  if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
    local cpid=""
    [ -f "$T/d/exec/containerd/containerd.pid" ] && cpid=$(cat "$T/d/exec/containerd/containerd.pid" 2>/dev/null)
    kill -TERM "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 1 80); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$DOCKERD_PID" 2>/dev/null && kill -KILL "$DOCKERD_PID" 2>/dev/null
    wait "$DOCKERD_PID" 2>/dev/null
    # dockerd stops the containerd it started; make sure of it, by its PID.
    if [ -n "$cpid" ] && kill -0 "$cpid" 2>/dev/null; then
      kill -TERM "$cpid" 2>/dev/null; sleep 1; kill -0 "$cpid" 2>/dev/null && kill -KILL "$cpid" 2>/dev/null
    fi
  fi
  DOCKERD_PID=""
  if [ -n "$CERTS_D" ]; then
    rm -rf "$CERTS_D"; CERTS_D=""
    [ "$CERTS_D_PARENT_NEW" = 1 ] && rmdir /etc/docker/certs.d 2>/dev/null
  fi
  # Anything still mounted under the temp dir (dockerd's private data-root
  # bind, overlay mounts after a crash): unmount, deepest first.
  if [ -d "$T" ]; then
    awk -v t="$T" 'index($5, t) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
      while read -r m; do umount -l "$m" 2>/dev/null; done
    if [ "${E2E_KEEP_TMP:-0}" = 1 ]; then echo "# kept $T" >&2; else rm -rf "$T"; fi
  fi
}

summary() {
  [ "$SUMMARY_DONE" = 1 ] && return
  SUMMARY_DONE=1
  echo "# run time $(( $(date +%s) - START ))s"
  echo "$PASS passed, $FAIL failed"
}

on_exit() {
  local rc=$?
  if [ "$SUMMARY_DONE" != 1 ]; then
    FAIL=$((FAIL + 1)); echo "not ok - script aborted unexpectedly (exit $rc)"
    cleanup; summary; exit 1
  fi
  cleanup
}
trap on_exit EXIT
trap 'exit 130' INT TERM HUP
# A closed stdout (e.g. piped into head): stop writing to it, then clean up as usual.
trap 'trap "" PIPE; exec >/dev/null 2>&1; exit 141' PIPE

# check "description" function [args...]: run the function in a subshell with
# errexit ON (it is not in a condition context there), output to a log; any
# failing command fails the check.  State between checks goes through files.
check() {
  local desc=$1; shift
  N=$((N + 1))
  local log="$T/logs/$N.log"
  set +e
  ( set -euo pipefail; "$@" ) >"$log" 2>&1
  local rc=$?
  set -e
  if [ $rc -eq 0 ]; then
    PASS=$((PASS + 1)); echo "ok - $desc"
  else
    FAIL=$((FAIL + 1)); echo "not ok - $desc"
    tail -n 25 "$log" | sed 's/^/#   /'
  fi
}

fail() { echo "FAILED: $*" >&2; exit 1; }
expect_eq() { # what actual expected
  [ "$2" = "$3" ] || fail "$1: got '$2', expected '$3'"
  echo "checked $1 = $3"
}
put() { printf '%s' "$2" >"$T/state/$1"; }
get() { [ -s "$T/state/$1" ] || fail "missing state '$1' (an earlier step failed)"; cat "$T/state/$1"; }
sha256_of() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }
json() { # json FILE PYTHON-EXPR  (expr sees the parsed document as `d`)
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

d()  { timeout "$CMD_TIMEOUT" docker "$@"; }
pm() { timeout "$CMD_TIMEOUT" "${PM[@]}" "$@"; }
ba() { timeout "$CMD_TIMEOUT" "${BA[@]}" "$@"; }
sk() { timeout "$CMD_TIMEOUT" skopeo "$@"; }
# dpush REF OUTFILE: docker push, failing if the daemon had to retry a layer
# (it silently retries registry errors up to 5 times, which would hide them).
dpush() {
  d push "$1" | tee "$2"
  if grep -q 'Retrying in' "$2"; then fail "docker push had to retry: the registry returned errors"; fi
}
skraw() { sk inspect --raw --tls-verify=false "docker://$1" >"$2"; }

# ---------------------------------------------------------------- registry ---
registry_up() {
  python3 - "$REG" <<'EOF'
import sys, urllib.request
r = urllib.request.urlopen(f"http://{sys.argv[1]}/v2/", timeout=10)
print(r.status, dict(r.headers))
assert r.status == 200, r.status
EOF
}

# ------------------------------------------------------------------ docker ---
DREPO1="$REG/$NS/docker-one"
DREPO2="$REG/$NS/docker-two"

docker_up() {
  for _ in $(seq 1 120); do
    if d info >/dev/null 2>&1; then d version; return 0; fi
    kill -0 "$1" 2>/dev/null || { tail -n 30 "$T/d/dockerd.log"; fail "dockerd exited"; }
    sleep 0.25
  done
  tail -n 30 "$T/d/dockerd.log"; fail "dockerd did not answer within 30s"
}

docker_build_push() {
  mkdir -p "$T/dctx"; cd "$T/dctx"
  printf 'hello from berth e2e %s\n' "$NONCE" >hello.txt
  printf 'FROM scratch\nCOPY hello.txt /hello.txt\nCMD ["/nonexistent"]\n' >Dockerfile
  d build -t "$DREPO1:v1" .
  dpush "$DREPO1:v1" "$T/dpush1.out"
  local digest; digest=$(sed -n 's/^v1: digest: \(sha256:[0-9a-f]\{64\}\) size: [0-9]*$/\1/p' "$T/dpush1.out")
  [ -n "$digest" ] || fail "no digest line in docker push output"
  expect_eq "RepoDigests[0]" "$(d inspect --format '{{index .RepoDigests 0}}' "$DREPO1:v1")" "$DREPO1@$digest"
  put docker_digest "$digest"
  put docker_id "$(d inspect --format '{{.Id}}' "$DREPO1:v1")"
}

docker_manifest_inspect() {
  local digest id; digest=$(get docker_digest); id=$(get docker_id)
  d manifest inspect --insecure "$DREPO1:v1" | tee "$T/dmi.json"
  expect_eq "schemaVersion" "$(json "$T/dmi.json" 'd["schemaVersion"]')" 2
  expect_eq "mediaType" "$(json "$T/dmi.json" 'd["mediaType"]')" application/vnd.docker.distribution.manifest.v2+json
  expect_eq "config.digest" "$(json "$T/dmi.json" 'd["config"]["digest"]')" "$id"
  expect_eq "layer count" "$(json "$T/dmi.json" 'len(d["layers"])')" 1
  # -v also returns the raw bytes the registry served: they must hash to the pushed digest.
  d manifest inspect --insecure -v "$DREPO1:v1" >"$T/dmiv.json"
  expect_eq "descriptor digest" "$(json "$T/dmiv.json" 'd["Descriptor"]["digest"]')" "$digest"
  python3 -c 'import base64,json,sys; sys.stdout.buffer.write(base64.b64decode(json.load(open(sys.argv[1]))["Raw"]))' \
    "$T/dmiv.json" >"$T/dmi.raw"
  expect_eq "sha256(raw manifest)" "$(sha256_of "$T/dmi.raw")" "$digest"
}

docker_roundtrip() {
  local id; id=$(get docker_id)
  d rmi "$DREPO1:v1"
  if d image inspect "$id" >/dev/null 2>&1; then fail "image still present after rmi"; fi
  d pull "$DREPO1:v1"
  expect_eq "image ID after pull" "$(d inspect --format '{{.Id}}' "$DREPO1:v1")" "$id"
  d create --name e2e-c1 "$DREPO1:v1"
  d cp e2e-c1:/hello.txt "$T/hello.out"
  d rm e2e-c1
  cmp "$T/dctx/hello.txt" "$T/hello.out"
  echo "file content identical"
}

docker_pull_by_digest() {
  local id digest; id=$(get docker_id); digest=$(get docker_digest)
  d rmi "$DREPO1:v1"
  if d image inspect "$id" >/dev/null 2>&1; then fail "image still present after rmi"; fi
  d pull "$DREPO1@$digest" | tee "$T/dpull.out"
  grep -qx "Digest: $digest" "$T/dpull.out" || fail "pull did not report Digest: $digest"
  expect_eq "image ID after pull by digest" "$(d inspect --format '{{.Id}}' "$DREPO1@$digest")" "$id"
  expect_eq "RepoDigests[0]" "$(d inspect --format '{{index .RepoDigests 0}}' "$id")" "$DREPO1@$digest"
}

docker_second_tag() {
  local id digest; id=$(get docker_id); digest=$(get docker_digest)
  d tag "$id" "$DREPO1:v1"
  d tag "$id" "$DREPO1:v1-again"
  dpush "$DREPO1:v1-again" "$T/dpush2.out"
  grep -q ': Layer already exists$' "$T/dpush2.out" || fail "layer was uploaded again instead of being found"
  if grep -q ': Pushed$' "$T/dpush2.out"; then fail "something was re-uploaded"; fi
  grep -qx "v1-again: digest: $digest size: [0-9]*" "$T/dpush2.out" || fail "second tag has a different digest"
  d manifest inspect --insecure -v "$DREPO1:v1-again" >"$T/dmi2.json"
  expect_eq "v1-again resolves to" "$(json "$T/dmi2.json" 'd["Descriptor"]["digest"]')" "$digest"
}

docker_shared_layer() {
  cd "$T/dctx"
  printf 'second image %s\n' "$NONCE" >two.txt
  printf 'FROM %s\nCOPY two.txt /two.txt\n' "$DREPO1:v1" >Dockerfile.two
  d build -f Dockerfile.two -t "$DREPO2:v1" .
  dpush "$DREPO2:v1" "$T/dpush3.out"
  # docker asks the registry to mount the base layer from the first repository.
  grep -q ": Mounted from $NS/docker-one\$" "$T/dpush3.out" || fail "shared layer was not cross-repo mounted"
  expect_eq "layers uploaded" "$(grep -c ': Pushed$' "$T/dpush3.out")" 1
  local id2; id2=$(d inspect --format '{{.Id}}' "$DREPO2:v1")
  d rmi "$DREPO2:v1"
  d pull "$DREPO2:v1"
  expect_eq "image ID after pull" "$(d inspect --format '{{.Id}}' "$DREPO2:v1")" "$id2"
  expect_eq "layer count" "$(d inspect --format '{{len .RootFS.Layers}}' "$DREPO2:v1")" 2
  d create --name e2e-c2 "$DREPO2:v1"
  d cp e2e-c2:/hello.txt "$T/hello2.out"; d cp e2e-c2:/two.txt "$T/two.out"
  d rm e2e-c2
  cmp "$T/dctx/hello.txt" "$T/hello2.out"; cmp "$T/dctx/two.txt" "$T/two.out"
  echo "both files identical"
}

# ---------------------------------------------------------- podman/buildah ---
PREPO="$REG/$NS/podman"
BREPO="$REG/$NS/buildah"
MREPO="$REG/$NS/multi"

# mounted_cat IMAGE PATH: print a file from a local podman image
mounted_cat() {
  local mnt; mnt=$(pm image mount "$1")
  cat "$mnt$2"
  pm image unmount "$1" >/dev/null
}

podman_roundtrip() {
  mkdir -p "$T/pctx"; cd "$T/pctx"
  printf 'podman %s\n' "$NONCE" >p.txt
  printf 'FROM scratch\nCOPY p.txt /p.txt\n' >Containerfile
  pm build --no-cache -t "$PREPO:v1" .
  local id; id=$(pm image inspect --format '{{.Id}}' "$PREPO:v1")
  pm push --tls-verify=false --digestfile "$T/pdigest" "$PREPO:v1"
  local digest; digest=$(cat "$T/pdigest")
  [[ $digest =~ ^sha256:[0-9a-f]{64}$ ]] || fail "bad digest file: $digest"
  put podman_digest "$digest"
  skraw "$PREPO:v1" "$T/pm.raw"
  expect_eq "sha256(raw manifest)" "$(sha256_of "$T/pm.raw")" "$digest"
  expect_eq "mediaType" "$(json "$T/pm.raw" 'd["mediaType"]')" application/vnd.oci.image.manifest.v1+json
  pm rmi "$PREPO:v1"
  if pm image exists "$PREPO:v1"; then fail "image still present after rmi"; fi
  pm pull --tls-verify=false "$PREPO:v1"
  expect_eq "image ID after pull" "$(pm image inspect --format '{{.Id}}' "$PREPO:v1")" "$id"
  expect_eq "digest after pull" "$(pm image inspect --format '{{.Digest}}' "$PREPO:v1")" "$digest"
  expect_eq "file content" "$(mounted_cat "$PREPO:v1" /p.txt)" "podman $NONCE"
}

buildah_roundtrip() {
  mkdir -p "$T/bctx"; cd "$T/bctx"
  printf 'buildah %s\n' "$NONCE" >b.txt
  local c; c=$(ba from scratch)
  ba copy "$c" b.txt /b.txt
  ba config --cmd /nonexistent --label org.berth.e2e=buildah "$c"
  ba commit "$c" "$BREPO:v1"
  ba rm "$c"
  local id; id=$(pm image inspect --format '{{.Id}}' "$BREPO:v1")
  ba push --tls-verify=false --digestfile "$T/bdigest" "$BREPO:v1"
  local digest; digest=$(cat "$T/bdigest")
  [[ $digest =~ ^sha256:[0-9a-f]{64}$ ]] || fail "bad digest file: $digest"
  put buildah_digest "$digest"
  ba rmi "$BREPO:v1"
  if pm image exists "$BREPO:v1"; then fail "image still present after rmi"; fi
  pm pull --tls-verify=false "$BREPO:v1"
  expect_eq "image ID after pull" "$(pm image inspect --format '{{.Id}}' "$BREPO:v1")" "$id"
  expect_eq "digest after pull" "$(pm image inspect --format '{{.Digest}}' "$BREPO:v1")" "$digest"
  expect_eq "label" "$(pm image inspect --format '{{index .Labels "org.berth.e2e"}}' "$BREPO:v1")" buildah
  expect_eq "file content" "$(mounted_cat "$BREPO:v1" /b.txt)" "buildah $NONCE"
}

podman_manifest_list() {
  mkdir -p "$T/mctx"; cd "$T/mctx"
  printf 'FROM scratch\nCOPY arch.txt /arch.txt\n' >Containerfile
  local arch
  for arch in amd64 arm64; do
    printf '%s %s\n' "$arch" "$NONCE" >arch.txt
    # --no-cache: buildah 1.28's cache ignores --platform for FROM scratch
    pm build --no-cache --platform "linux/$arch" -t "$MREPO:$arch" .
    expect_eq "built architecture" "$(pm image inspect --format '{{.Architecture}}' "$MREPO:$arch")" "$arch"
  done
  pm manifest create "$MREPO:v1"
  pm manifest add "$MREPO:v1" "containers-storage:$MREPO:amd64"
  pm manifest add "$MREPO:v1" "containers-storage:$MREPO:arm64"
  pm manifest push --all --tls-verify=false --digestfile "$T/mdigest" "$MREPO:v1" "docker://$MREPO:v1"
  local digest; digest=$(cat "$T/mdigest")
  [[ $digest =~ ^sha256:[0-9a-f]{64}$ ]] || fail "bad digest file: $digest"
  put list_digest "$digest"

  skraw "$MREPO:v1" "$T/list.raw"
  cat "$T/list.raw"; echo
  expect_eq "sha256(raw list)" "$(sha256_of "$T/list.raw")" "$digest"
  local mt; mt=$(json "$T/list.raw" 'd["mediaType"]')
  case "$mt" in
    application/vnd.oci.image.index.v1+json|application/vnd.docker.distribution.manifest.list.v2+json) echo "list mediaType $mt" ;;
    *) fail "pushed list has mediaType '$mt'" ;;
  esac
  expect_eq "entries" "$(json "$T/list.raw" 'len(d["manifests"])')" 2
  expect_eq "platforms" "$(json "$T/list.raw" '" ".join(sorted(m["platform"]["os"]+"/"+m["platform"]["architecture"] for m in d["manifests"]))')" "linux/amd64 linux/arm64"
  # every child manifest is there, content-addressed, and its config says the right arch
  local i child carch
  for i in 0 1; do
    child=$(json "$T/list.raw" "d['manifests'][$i]['digest']")
    carch=$(json "$T/list.raw" "d['manifests'][$i]['platform']['architecture']")
    skraw "$MREPO@$child" "$T/child.raw"
    expect_eq "sha256(child $carch)" "$(sha256_of "$T/child.raw")" "$child"
    sk inspect --config --tls-verify=false "docker://$MREPO@$child" >"$T/child.cfg"
    expect_eq "child $carch config architecture" "$(json "$T/child.cfg" 'd["architecture"]')" "$carch"
  done
}

podman_pull_list() {
  local list; list=$(get list_digest)
  pm manifest rm "$MREPO:v1" || true
  pm rmi -a -f
  expect_eq "local images left" "$(pm images -q | wc -l)" 0
  local arch
  for arch in arm64 amd64; do
    pm pull --tls-verify=false --platform "linux/$arch" "$MREPO:v1"
    expect_eq "pulled architecture" "$(pm image inspect --format '{{.Architecture}}' "$MREPO:v1")" "$arch"
    expect_eq "pulled file" "$(mounted_cat "$MREPO:v1" /arch.txt)" "$arch $NONCE"
    pm image inspect --format '{{.RepoDigests}}' "$MREPO:v1" | grep -q "$MREPO@$list" || fail "list digest not among RepoDigests"
    pm rmi -f "$MREPO:v1"
  done
}

# ------------------------------------------------------------------ skopeo ---
SREPO="$REG/$NS/skopeo-copy"
SMREPO="$REG/$NS/skopeo-multi"
SKTLS=(--src-tls-verify=false --dest-tls-verify=false)

skopeo_copy() {
  local src; src=$(get buildah_digest)
  sk copy "${SKTLS[@]}" "docker://$BREPO:v1" "docker://$SREPO:v1"
  local a b
  a=$(sk inspect --tls-verify=false --format '{{.Digest}}' "docker://$BREPO:v1")
  b=$(sk inspect --tls-verify=false --format '{{.Digest}}' "docker://$SREPO:v1")
  expect_eq "source digest" "$a" "$src"
  expect_eq "copy digest" "$b" "$src"
  skraw "$SREPO:v1" "$T/scopy.raw"
  expect_eq "sha256(raw copy)" "$(sha256_of "$T/scopy.raw")" "$src"
}

skopeo_copy_all() {
  local list; list=$(get list_digest)
  sk copy --all --preserve-digests "${SKTLS[@]}" "docker://$MREPO:v1" "docker://$SMREPO:v1"
  skraw "$SMREPO:v1" "$T/slist.raw"
  expect_eq "sha256(copied list)" "$(sha256_of "$T/slist.raw")" "$list"
  local i child
  for i in 0 1; do
    child=$(json "$T/slist.raw" "d['manifests'][$i]['digest']")
    skraw "$SMREPO@$child" "$T/schild.raw"
    expect_eq "sha256(copied child $i)" "$(sha256_of "$T/schild.raw")" "$child"
  done
}

skopeo_list_tags() {
  sk copy "${SKTLS[@]}" "docker://$PREPO:v1" "docker://$SREPO:v2"
  sk list-tags --tls-verify=false "docker://$SREPO" | tee "$T/tags.json"
  expect_eq "Repository" "$(json "$T/tags.json" 'd["Repository"]')" "$SREPO"
  expect_eq "Tags" "$(json "$T/tags.json" '" ".join(d["Tags"])')" "v1 v2"
}

skopeo_delete() {
  local bd pd; bd=$(get buildah_digest); pd=$(get podman_digest)
  sk delete --tls-verify=false "docker://$SREPO:v1"
  if sk inspect --tls-verify=false "docker://$SREPO:v1" >"$T/del.out" 2>&1; then
    cat "$T/del.out"; fail "deleted image still inspectable"
  fi
  cat "$T/del.out"
  grep -Eqi 'manifest unknown|not found|404' "$T/del.out" || fail "inspect failed, but not with 'manifest unknown'"
  if sk inspect --raw --tls-verify=false "docker://$SREPO@$bd" >/dev/null 2>&1; then fail "deleted digest still fetchable"; fi
  # Deletion is per repository: the source and the other tag are untouched.
  expect_eq "source after delete" "$(sk inspect --tls-verify=false --format '{{.Digest}}' "docker://$BREPO:v1")" "$bd"
  expect_eq "other tag after delete" "$(sk inspect --tls-verify=false --format '{{.Digest}}' "docker://$SREPO:v2")" "$pd"
}

# -------------------------------------------------------------------- oras ---
oras_checks() {
  local out="$T/oras.out" rc=0
  timeout "$CMD_TIMEOUT" python3 "$HERE/oras_check.py" "$REG" "$NS/oras-artifact" >"$out" 2>&1 || rc=$?
  local line seen=0
  while IFS= read -r line; do
    case "$line" in
      "ok - "*) PASS=$((PASS + 1)); seen=$((seen + 1)); echo "$line" ;;
      "not ok - "*) FAIL=$((FAIL + 1)); seen=$((seen + 1)); echo "$line" ;;
    esac
  done <"$out"
  if [ $rc -ne 0 ] && ! grep -q '^not ok - ' "$out"; then
    FAIL=$((FAIL + 1)); echo "not ok - oras: helper exited $rc without reporting a failed check"
  fi
  if [ $rc -eq 0 ] && [ $seen -eq 0 ]; then
    FAIL=$((FAIL + 1)); echo "not ok - oras: helper reported no checks"
  fi
  if [ $rc -ne 0 ] || [ $seen -eq 0 ]; then  # show a traceback or other noise
    { grep -v -e '^ok - ' -e '^not ok - ' -e '^oras helper finished' -e '^[[:space:]]*$' "$out" || true; } |
      tail -n 25 | sed 's/^/#   /'
  fi
  return 0
}

# ------------------------------------------------------------ access control ---
AREG=${E2E_AUTH_REG:-}
APW=${E2E_AUTH_PASSWORD:-}
# admin_api METHOD PATH JSON: call berth's admin API on the auth registry as admin.
admin_api() {
  curl -sS -f -X "$1" -u "admin:$APW" -H 'content-type: application/json' \
    --data "$3" "http://$AREG$2"
}

auth_challenge() {
  local code; code=$(curl -s -o /dev/null -w '%{http_code}' "http://$AREG/v2/")
  expect_eq "anonymous GET /v2/" "$code" 401
  curl -s -D - -o /dev/null "http://$AREG/v2/" | tee "$T/challenge.txt"
  grep -qi "^www-authenticate: Bearer realm=\"http://$AREG/token\",service=\"berth\"" "$T/challenge.txt" ||
    fail "no Bearer challenge naming the token endpoint"
}

auth_docker_login_push_pull() {
  echo "$APW" | d login --username admin --password-stdin "$AREG" | tee "$T/dlogin.out"
  grep -q 'Login Succeeded' "$T/dlogin.out" || fail "docker login did not succeed"
  d tag "$DREPO1:v1" "$AREG/team/app:v1"
  dpush "$AREG/team/app:v1" "$T/apush.out"
  d rmi "$AREG/team/app:v1"
  d pull "$AREG/team/app:v1"
  expect_eq "image ID after pull" "$(d inspect --format '{{.Id}}' "$AREG/team/app:v1")" "$(get docker_id)"
}

auth_wrong_password() {
  if echo "not-the-password" | d login --username admin --password-stdin "$AREG" >"$T/badlogin.out" 2>&1; then
    fail "docker login with a wrong password succeeded"
  fi
  cat "$T/badlogin.out"
  grep -qi 'unauthorized\|invalid username or password' "$T/badlogin.out" || fail "no clear refusal"
  echo "$APW" | d login --username admin --password-stdin "$AREG" >/dev/null
}

auth_podman_skopeo() {
  # podman also reads docker's config, and refuses to log in over docker's stored
  # identity (refresh) token: log docker out first.
  d logout "$AREG"
  pm login --tls-verify=false --username admin --password "$APW" "$AREG"
  pm pull --tls-verify=false "$PREPO:v1"
  pm push --tls-verify=false "$PREPO:v1" "$AREG/team/podman:v1"
  pm rmi "$AREG/team/podman:v1" || true
  pm pull --tls-verify=false "$AREG/team/podman:v1"
  sk copy --src-tls-verify=false --dest-tls-verify=false --dest-creds "admin:$APW" \
    "docker://$DREPO1:v1" "docker://$AREG/pub/app:v1"
  sk inspect --tls-verify=false --creds "admin:$APW" --format '{{.Digest}}' "docker://$AREG/pub/app:v1" |
    tee "$T/skdigest"
  expect_eq "digest copied with --creds" "$(cat "$T/skdigest")" "$(get docker_digest)"
  pm logout "$AREG"
}

auth_robot_push() {
  admin_api POST /api/v1/robots '{"name":"ci","grants":[{"repositories":"ci/*","actions":["pull","push"]}]}' >"$T/robot.json"
  local secret; secret=$(json "$T/robot.json" 'd["secret"]')
  echo "$secret" | d login --username ci --password-stdin "$AREG"
  d tag "$DREPO1:v1" "$AREG/ci/app:v1"
  dpush "$AREG/ci/app:v1" "$T/robotpush.out"
  d tag "$DREPO1:v1" "$AREG/team/robot:v1"
  if d push "$AREG/team/robot:v1" >"$T/robotdenied.out" 2>&1; then
    fail "the robot pushed outside its grant"
  fi
  cat "$T/robotdenied.out"
  grep -qi 'denied' "$T/robotdenied.out" || fail "docker did not report a denial"
}

auth_reader_denied() {
  admin_api POST /api/v1/users '{"name":"ann","password":"ann-pass-123"}'
  admin_api PUT /api/v1/namespaces/team/members/ann '{"role":"reader"}'
  echo "ann-pass-123" | d login --username ann --password-stdin "$AREG"
  d rmi "$AREG/team/app:v1"
  d pull "$AREG/team/app:v1"
  d tag "$AREG/team/app:v1" "$AREG/team/app:v2"
  if d push "$AREG/team/app:v2" >"$T/readerpush.out" 2>&1; then
    fail "a reader pushed"
  fi
  cat "$T/readerpush.out"
  grep -qi 'denied' "$T/readerpush.out" || fail "docker did not print a denied error"
  local code; code=$(curl -s -o /dev/null -w '%{http_code}' -u "admin:$APW" \
    -H 'accept: application/vnd.docker.distribution.manifest.v2+json' "http://$AREG/v2/team/app/manifests/v2")
  expect_eq "team/app:v2 after the refused push" "$code" 404
}

auth_immutable_tag() {
  echo "$APW" | d login --username admin --password-stdin "$AREG"
  d pull "$DREPO2:v1"
  d tag "$DREPO1:v1" "$AREG/imm/app:v1"
  d tag "$DREPO1:v1" "$AREG/imm/app:latest"
  dpush "$AREG/imm/app:v1" "$T/imm1.out"
  dpush "$AREG/imm/app:latest" "$T/imm2.out"
  admin_api POST /api/v1/immutability-rules '{"repositories":"imm/*","except":["latest"]}'
  d tag "$DREPO2:v1" "$AREG/imm/app:v1"
  if d push "$AREG/imm/app:v1" >"$T/immdenied.out" 2>&1; then
    fail "an immutable tag was overwritten"
  fi
  cat "$T/immdenied.out"
  grep -qi 'denied' "$T/immdenied.out" || fail "docker did not print a denial"
  grep -q 'immutable' "$T/immdenied.out" || fail "the denial does not say the tag is immutable"
  local served; served=$(curl -sS -I -u "admin:$APW" \
    -H 'accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$AREG/v2/imm/app/manifests/v1" | tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p')
  expect_eq "imm/app:v1 still serves" "$served" "$(get docker_digest)"
  d tag "$DREPO2:v1" "$AREG/imm/app:latest"
  dpush "$AREG/imm/app:latest" "$T/imm3.out"
}

# berth_cli ARGS...: the berth CLI against the auth registry, as the admin.
berth_cli() {
  BERTH_SERVER="http://$AREG" BERTH_USERNAME=admin BERTH_PASSWORD="$APW" \
    BERTH_LOGIN_FILE="$T/berth-login.json" timeout "$CMD_TIMEOUT" "$E2E_BERTH" "$@"
}

# pushed_digest FILE: the digest docker push printed.
pushed_digest() { sed -n 's/.*digest: \(sha256:[0-9a-f]*\).*/\1/p' "$1" | tail -n 1; }

# The 2 AM incident: latest is overwritten between two nodes' pulls; berth shows who got
# which digest, the move and who made it, and puts the tag back in one command.
auth_incident_replay() {
  echo "$APW" | d login --username admin --password-stdin "$AREG"
  d tag "$DREPO1:v1" "$AREG/pay/api:latest"
  dpush "$AREG/pay/api:latest" "$T/pay1.out"
  local old new; old=$(pushed_digest "$T/pay1.out")
  d pull "$AREG/pay/api:latest"                       # node 1: docker, from 127.0.0.1
  d tag "$DREPO2:v1" "$AREG/pay/api:latest"
  dpush "$AREG/pay/api:latest" "$T/pay2.out"          # the overwrite
  new=$(pushed_digest "$T/pay2.out")
  [ -n "$old" ] && [ -n "$new" ] && [ "$old" != "$new" ] || fail "push digests '$old' '$new'"
  curl -sS -f --interface 127.0.0.3 -u "admin:$APW" -o /dev/null \
    -H 'accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$AREG/v2/pay/api/manifests/latest"        # node 2: from 127.0.0.3
  sleep 1.5                                           # pull counts are written once a second
  berth_cli tag pulls pay/api latest --since 1h
  berth_cli tag pulls pay/api latest --since 1h --json >"$T/pulls.json"
  expect_eq "digests served for pay/api:latest" "$(json "$T/pulls.json" '[x["digest"] for x in d["digests"]]')" "['$new', '$old']"
  expect_eq "client of the new digest" "$(json "$T/pulls.json" '[c["client"] for c in d["digests"][0]["clients"]]')" "['127.0.0.3']"
  expect_eq "client of the old digest" "$(json "$T/pulls.json" '[c["client"] for c in d["digests"][1]["clients"]]')" "['127.0.0.1']"
  json "$T/pulls.json" 'd["digests"][1]["clients"][0]["user_agent"]' | grep -q docker ||
    fail "docker's pull is not recorded with docker's user agent"
  berth_cli tag history pay/api latest
  berth_cli audit --repository pay/api --kind tag.overwritten --json >"$T/audit.json"
  expect_eq "recorded overwrite" "$(json "$T/audit.json" '[(e["previous_digest"], e["digest"], e["actor"]["account"]) for e in d["events"]]')" "[('$old', '$new', 'admin')]"
  berth_cli tag restore pay/api latest --previous
  local served; served=$(curl -sS -I -u "admin:$APW" \
    -H 'accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$AREG/v2/pay/api/manifests/latest" | tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p')
  expect_eq "pay/api:latest after restore" "$served" "$old"
}

auth_anonymous_public_only() {
  admin_api PUT /api/v1/namespaces/pub '{"visibility":"public"}'
  d logout "$AREG"
  d rmi "$AREG/team/app:v1" "$AREG/team/app:v2" >/dev/null 2>&1 || true
  d pull "$AREG/pub/app:v1"
  if d pull "$AREG/team/app:v1" >"$T/anonpriv.out" 2>&1; then
    fail "anonymous pull of a private namespace succeeded"
  fi
  cat "$T/anonpriv.out"
}

# ------------------------------------------------------------------- https ---
TREG=${E2E_TLS_REG:-}
TCA=${E2E_TLS_CA:-}
TDIR=$(dirname "${TCA:-.}")

# served_fingerprint: SHA-256 fingerprint of the certificate a new connection to TREG gets.
served_fingerprint() {
  openssl s_client -connect "$TREG" </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256
}

tls_challenge() {
  curl -sS --cacert "$TCA" -D - -o /dev/null "https://$TREG/v2/" | tee "$T/tlschallenge.txt"
  grep -qi "^www-authenticate: Bearer realm=\"https://$TREG/token\"" "$T/tlschallenge.txt" ||
    fail "the challenge does not name the https:// token endpoint"
  if curl -sS -o /dev/null "http://$TREG/v2/"; then fail "plain HTTP was answered on the HTTPS port"; fi
  if curl -sS -o /dev/null "https://$TREG/v2/"; then fail "the certificate verified without the test CA"; fi
}

# tls_push_pull TAG SOURCE: push SOURCE as team/tls:TAG over HTTPS, rmi, pull, same image ID.
tls_push_pull() {
  local id; id=$(d inspect --format '{{.Id}}' "$2")
  d tag "$2" "$TREG/team/tls:$1"
  dpush "$TREG/team/tls:$1" "$T/tlspush-$1.out"
  d rmi "$TREG/team/tls:$1"
  d pull "$TREG/team/tls:$1"
  expect_eq "image ID after pull over HTTPS" "$(d inspect --format '{{.Id}}' "$TREG/team/tls:$1")" "$id"
}

tls_docker_login_push_pull() {
  [ -f "$CERTS_D/ca.crt" ] || fail "no $CERTS_D/ca.crt"
  echo "$APW" | d login --username admin --password-stdin "$TREG" | tee "$T/tlslogin.out"
  grep -q 'Login Succeeded' "$T/tlslogin.out" || fail "docker login did not succeed"
  tls_push_pull v1 "$DREPO1:v1"
}

tls_skopeo_verifies() {
  mkdir -p "$T/tlscerts"; cp "$TCA" "$T/tlscerts/ca.crt"
  sk inspect --cert-dir "$T/tlscerts" --creds "admin:$APW" --format '{{.Digest}}' \
    "docker://$TREG/team/tls:v1" | tee "$T/tlsdigest"
  grep -q "^v1: digest: $(cat "$T/tlsdigest") " "$T/tlspush-v1.out" || fail "skopeo saw another digest"
  mkdir -p "$T/nocerts"   # an empty --cert-dir: not even /etc/docker/certs.d
  if sk inspect --cert-dir "$T/nocerts" --creds "admin:$APW" "docker://$TREG/team/tls:v1" >"$T/tlsnoca.out" 2>&1; then
    fail "skopeo trusted the registry without the test CA"
  fi
  cat "$T/tlsnoca.out"
  grep -qi 'x509\|certificate' "$T/tlsnoca.out" || fail "refused, but not for the certificate"
}

tls_rotate() {
  local want; want=$(openssl x509 -in "$TDIR/next.crt" -noout -fingerprint -sha256)
  [ "$(served_fingerprint)" != "$want" ] || fail "the next certificate is served before the swap"
  # Swap the files under the running berth as certificate tools do: write aside, rename over.
  cp "$TDIR/next.key" "$TDIR/server.key.new"; cp "$TDIR/next.crt" "$TDIR/server.crt.new"
  mv -f "$TDIR/server.key.new" "$TDIR/server.key"; mv -f "$TDIR/server.crt.new" "$TDIR/server.crt"
  for _ in $(seq 1 50); do [ "$(served_fingerprint)" = "$want" ] && break; sleep 0.3; done
  expect_eq "certificate served after the swap" "$(served_fingerprint)" "$want"
  tls_push_pull v2 "$DREPO2:v1"
  d rmi "$TREG/team/tls:v1"
  d pull "$TREG/team/tls:v1"
  sk inspect --cert-dir "$T/tlscerts" --creds "admin:$APW" "docker://$TREG/team/tls:v2" >/dev/null
}

# -------------------------------------------------------------------- main ---
echo "# registry $REG, namespace $NS, temp dir $T"
check "registry answers GET /v2/ with 200" registry_up

dockerd --data-root "$T/d/root" --exec-root "$T/d/exec" --pidfile "$T/d/pid" \
  -H "unix://$T/d/docker.sock" --iptables=false --ip-forward=false --bridge=none \
  --max-download-attempts=1 \
  >"$T/d/dockerd.log" 2>&1 &
DOCKERD_PID=$!
check "docker: private dockerd is up" docker_up "$DOCKERD_PID"
check "docker: build FROM scratch and push (digest reported, RepoDigests match)" docker_build_push
check "docker: manifest inspect --insecure returns the v2 manifest, raw bytes hash to the digest" docker_manifest_inspect
check "docker: push/rmi/pull round trip (same image ID, file bytes identical)" docker_roundtrip
check "docker: pull by digest (repo@sha256:...)" docker_pull_by_digest
check "docker: second tag of the same image (layer already exists, same digest)" docker_second_tag
check "docker: second image sharing a layer (cross-repo mount, pull back)" docker_shared_layer

check "podman: build FROM scratch, push, rmi, pull (OCI manifest, same ID, digest, content)" podman_roundtrip
check "buildah: from scratch/copy/commit, push, pull back with podman" buildah_roundtrip
check "podman: two-platform manifest list, push --all, index with 2 entries verified by skopeo" podman_manifest_list
check "podman: pull the manifest list back for arm64 and amd64" podman_pull_list

check "skopeo: copy between repositories, digests match" skopeo_copy
check "skopeo: copy --all of the manifest list keeps the list digest" skopeo_copy_all
check "skopeo: list-tags" skopeo_list_tags
check "skopeo: delete, then inspect fails; other repo and tag untouched" skopeo_delete

oras_checks

if [ -n "$AREG" ]; then
  check "auth: anonymous GET /v2/ is challenged with the token endpoint" auth_challenge
  check "auth: docker login (token flow), push, rmi, pull" auth_docker_login_push_pull
  check "auth: docker login with a wrong password is refused" auth_wrong_password
  check "auth: podman login + push, skopeo copy/inspect with --creds" auth_podman_skopeo
  check "auth: robot account pushes with its secret, is denied outside its grant" auth_robot_push
  check "auth: a reader pulls but its push is denied (docker prints it), nothing changes" auth_reader_denied
  check "immutable: docker's push over an immutable tag is denied, the tag serves the old digest, latest still moves" auth_immutable_tag
  check "events: overwrite between two nodes' pulls; tag pulls shows both digests by client, audit the move, restore puts it back" auth_incident_replay
  check "auth: anonymous pull of a public namespace works, of a private one does not" auth_anonymous_public_only
fi

if [ -n "$TREG" ]; then
  # docker reads registry CAs only from here; the random port keeps it ours alone. (dockerd
  # also counts 127.0.0.0/8 as an insecure registry: it still speaks TLS to this port, which
  # answers nothing else, but skips verification; skopeo's check below is the strict one.)
  [ -d /etc/docker/certs.d ] || { mkdir -p /etc/docker/certs.d; CERTS_D_PARENT_NEW=1; }
  mkdir "/etc/docker/certs.d/$TREG"
  CERTS_D="/etc/docker/certs.d/$TREG"
  cp "$TCA" "$CERTS_D/ca.crt"
  check "https: challenge names https:// realm; plain HTTP and unknown CAs are refused" tls_challenge
  check "https: docker (test CA in certs.d) logs in, pushes and pulls over HTTPS" tls_docker_login_push_pull
  check "https: skopeo verifies the test CA and fails without it" tls_skopeo_verifies
  check "https: certificate files swapped on disk are served without a restart; push/pull again" tls_rotate
fi

cleanup
summary
[ "$FAIL" -eq 0 ]

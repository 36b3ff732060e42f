#!/usr/bin/env bash
# Install what tests/e2e/real-clients.sh needs, idempotently, on Debian bookworm, as root.
#
#   tests/e2e/install-deps.sh [--with-distribution]
#
# Fast no-op when everything is present: `apt-get update` runs only if a
# package is missing, pip only if `import oras` fails.
#
# What is really needed (the e2e script runs everything as root):
#   docker.io  dockerd + docker CLI (pulls in containerd, runc, tini)
#   podman, buildah, skopeo  (pull in golang-github-containers-common with
#              /etc/containers/policy.json, conmon, runc, and uidmap via buildah)
#   python3 + the PyPI package `oras` (the oras-py library, not the oras CLI)
#   openssl    the test CA and server certificates of the HTTPS berth (with-berth.sh)
#   curl       the admin API and the HTTPS challenge checks
# Not needed: fuse-overlayfs (the script uses the vfs storage driver) and
# uidmap on its own (only for rootless use; buildah depends on it anyway).
# --with-distribution also installs docker-registry (CNCF Distribution 2.8),
# handy to run the e2e script against a reference registry; the script itself
# never uses it.
set -euo pipefail

ORAS_PY_SPEC=${ORAS_PY_SPEC:-oras==0.2.43}   # the version oras_check.py was written against
PKGS=(docker.io podman buildah skopeo openssl curl)
for arg in "$@"; do
  case "$arg" in
    --with-distribution) PKGS+=(docker-registry) ;;
    *) echo "usage: $0 [--with-distribution]" >&2; exit 2 ;;
  esac
done

[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }

installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }

command -v python3 >/dev/null 2>&1 || PKGS+=(python3 python3-pip)

missing=()
for p in "${PKGS[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # No recommends: they add nothing the tests use (needrestart, apparmor, git, ...).
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! python3 -c 'import oras.provider' >/dev/null 2>&1; then
  echo "installing python package: $ORAS_PY_SPEC"
  pip_args=(install -q "$ORAS_PY_SPEC")
  # Debian's own python3 is "externally managed" (PEP 668); pyenv/venv pythons are not.
  if python3 -c 'import os, sys, sysconfig; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
    pip_args+=(--break-system-packages)
  fi
  python3 -m pip --version >/dev/null 2>&1 || {
    export DEBIAN_FRONTEND=noninteractive; apt-get update -q; apt-get install -y -q --no-install-recommends python3-pip; }
  python3 -m pip "${pip_args[@]}"
fi

# Verify: fail loudly here rather than half-way through the e2e run.
for c in dockerd docker podman buildah skopeo openssl curl python3 timeout sha256sum; do
  command -v "$c" >/dev/null 2>&1 || { echo "missing command after install: $c" >&2; exit 1; }
done
[ -f /etc/containers/policy.json ] || { echo "missing /etc/containers/policy.json (golang-github-containers-common)" >&2; exit 1; }
python3 -c 'import oras.provider, oras.oci' || { echo "python package oras does not import" >&2; exit 1; }
echo "e2e dependencies present"

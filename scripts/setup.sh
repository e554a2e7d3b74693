#!/usr/bin/env bash
# Installs and builds everything vmbench needs, skipping what is already there:
# apt packages (QEMU, kernel source and build tools, PostgreSQL for the results
# store's tests), vhost-device-vsock, the guest kernel (cached in
# ~/.cache/vmbench), the static guest agent, the freestanding guests (the vsock
# test guest, the vmexit suite's guest) and vmbench.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "setup: $*" >&2; }

packages=(qemu-system-x86 qemu-utils linux-source-6.1 build-essential flex bison bc
          libelf-dev libssl-dev cpio xz-utils e2fsprogs debootstrap postgresql
          chromium)  # chromium: the HTML report's browser test (headless)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# qemu-system-x86 and qemu-utils must come from the same QEMU release (a newer
# qemu-utils from backports conflicts with bookworm's qemu-system-x86).
qemu_mismatch=0
if dpkg-query -W qemu-system-x86 qemu-utils >/dev/null 2>&1; then
  [ "$(dpkg-query -W -f='${Version}' qemu-system-x86)" = "$(dpkg-query -W -f='${Version}' qemu-utils)" ] || qemu_mismatch=1
fi
if [ ${#missing[@]} -gt 0 ] || [ $qemu_mismatch = 1 ]; then
  [ "$(id -u)" = 0 ] || { say "need root to install: ${missing[*]}; run: sudo apt-get install ${missing[*]}"; exit 1; }
  say "installing apt packages: ${missing[*]:-qemu version alignment}"
  apt-get update -qq
  v=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
  [ -n "$v" ] && [ "$v" != "(none)" ] || { say "apt has no qemu-system-x86 package"; exit 1; }
  rest=()
  for p in "${missing[@]}"; do
    case "$p" in qemu-system-x86|qemu-utils) ;; *) rest+=("$p") ;; esac
  done
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --allow-downgrades \
    "qemu-system-x86=$v" "qemu-utils=$v" "qemu-system-common=$v" "qemu-block-extra=$v" "${rest[@]}" >/dev/null
fi

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v vhost-device-vsock >/dev/null; then
  say "installing vhost-device-vsock (cargo install; a few minutes)"
  cargo install --locked --quiet vhost-device-vsock --version 0.3.0
fi
# cargo-fuzz runs the fuzz targets (scripts/fuzz.sh, which the tests run). It
# needs a nightly toolchain, so it is installed only where there is one.
if cargo +nightly --version >/dev/null 2>&1 && ! cargo fuzz --version >/dev/null 2>&1; then
  say "installing cargo-fuzz (cargo install; a minute)"
  cargo install --locked --quiet cargo-fuzz --version 0.13.2
fi

kernel-config/build.sh
say "building the static guest agent"
scripts/build-agent.sh
say "building the vsock test guest"
scripts/build-test-guest.sh
say "building the vmexit guest"
scripts/build-vmexit-guest.sh
say "building vmbench"
cargo build --release --quiet -p vmbench
say "ready: target/release/vmbench (and the VMM alone, target/release/vmbench-vmm)"

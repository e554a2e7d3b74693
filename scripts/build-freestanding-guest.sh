#!/usr/bin/env bash
# Builds one of vmbench's freestanding x86-64 guests (a crate with its own
# cargo workspace over the shared `freestanding` crate) as a static, non-PIE
# ELF placed at 1 MiB by freestanding/linker.ld, entered at linux_start
# (64-bit Linux boot protocol) or, through its Xen PVH note, at pvh_start:
#   scripts/build-freestanding-guest.sh CRATE_DIR BIN TARGET_DIR [cargo args...]
# puts the guest at TARGET_DIR/release/BIN. Used by build-test-guest.sh (the
# vsock test guest) and build-vmexit-guest.sh (the vmexit benchmark guest).
# Only the host target exists here, so the guest is built for
# x86_64-unknown-linux-gnu with no C runtime and no libc. Prints nothing on
# success (cargo's output is shown only when the build fails).
#
# No SSE: the nested KVM of our CI hosts runs guests through KVM's instruction
# emulator, which cannot execute xorps, movss and most other SSE instructions
# (the VMM stops with "KVM internal error ... emulation failure"), and LLVM
# uses them for any copy or zeroing of 16 bytes or more. The guests have no
# floating point, so turning SSE off changes nothing else. rustc warns that
# x86_64-unknown-linux-gnu's float ABI needs SSE2 (rust-lang/rust#116344) and
# will one day refuse; the warning is why a successful build's output is
# dropped. With LTO all Rust code, core's included, is compiled this way.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 CRATE_DIR BIN TARGET_DIR [cargo args...]" >&2; exit 2; }
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
crate=$1 bin=$2 target_dir=$3
shift 3
flags=(
  -C relocation-model=static          # addresses fixed at link time: no GOT, no PIE
  -C target-feature=-sse,-sse2
  -C link-arg=-nostartfiles           # no crt1.o: the entry points are ours
  -C link-arg=-nostdlib
  -C link-arg=-static
  -C "link-arg=-Wl,-T,$root/freestanding/linker.ld"
  -C link-arg=-Wl,--build-id=none
)
# CARGO_ENCODED_RUSTFLAGS (0x1f-separated) keeps a path with spaces whole.
encoded=$(printf '%s\x1f' "${flags[@]}")
if ! output=$(CARGO_ENCODED_RUSTFLAGS="${encoded%$'\x1f'}" CARGO_TARGET_DIR="$target_dir" \
    cargo build --release --quiet --manifest-path "$crate/Cargo.toml" --bin "$bin" "$@" 2>&1); then
  printf '%s\n' "$output" >&2
  exit 1
fi

#!/usr/bin/env bash
# Builds the freestanding virtio-vsock test guest (tests/vsock-guest, its own
# cargo workspace) as a static, non-PIE ELF placed at 1 MiB by its linker
# script, entered at linux_start (64-bit Linux boot protocol) or, through its
# Xen PVH note, at pvh_start:
#   target/vsock-guest/release/vsock-guest
# Only the host target exists here, so the guest is built for
# x86_64-unknown-linux-gnu with no C runtime and no libc. Prints nothing on
# success (cargo's output is shown only when the build fails); extra
# arguments go to cargo.
#
# No SSE: the nested KVM of our CI hosts runs guests through KVM's instruction
# emulator, which cannot execute xorps, movss and most other SSE instructions
# (the VMM stops with "KVM internal error ... emulation failure"), and LLVM
# uses them for any copy or zeroing of 16 bytes or more. The guest has no
# floating point, so turning SSE off changes nothing else. rustc warns that
# x86_64-unknown-linux-gnu's float ABI needs SSE2 (rust-lang/rust#116344) and
# will one day refuse; the warning is why a successful build's output is
# dropped. With LTO all Rust code, core's included, is compiled this way.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
guest="$root/tests/vsock-guest"
flags=(
  -C relocation-model=static          # addresses fixed at link time: no GOT, no PIE
  -C target-feature=-sse,-sse2
  -C link-arg=-nostartfiles           # no crt1.o: the entry points are ours
  -C link-arg=-nostdlib
  -C link-arg=-static
  -C "link-arg=-Wl,-T,$guest/linker.ld"
  -C link-arg=-Wl,--build-id=none
)
# CARGO_ENCODED_RUSTFLAGS (0x1f-separated) keeps a path with spaces whole.
encoded=$(printf '%s\x1f' "${flags[@]}")
if ! output=$(CARGO_ENCODED_RUSTFLAGS="${encoded%$'\x1f'}" CARGO_TARGET_DIR="$root/target/vsock-guest" \
    cargo build --release --quiet --manifest-path "$guest/Cargo.toml" --bin vsock-guest "$@" 2>&1); then
  printf '%s\n' "$output" >&2
  exit 1
fi

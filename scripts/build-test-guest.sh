#!/usr/bin/env bash
# Builds the freestanding virtio-vsock test guest (tests/vsock-guest, its own
# cargo workspace) as described in build-freestanding-guest.sh:
#   target/vsock-guest/release/vsock-guest
# Extra arguments go to cargo.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "$root/scripts/build-freestanding-guest.sh" "$root/tests/vsock-guest" vsock-guest \
  "$root/target/vsock-guest" "$@"

#!/usr/bin/env bash
# Builds the vmexit suite's freestanding guest (vmexit-guest, its own cargo
# workspace) as described in build-freestanding-guest.sh:
#   target/vmexit-guest/release/vmexit-guest
# Extra arguments go to cargo.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "$root/scripts/build-freestanding-guest.sh" "$root/vmexit-guest" vmexit-guest \
  "$root/target/vmexit-guest" "$@"

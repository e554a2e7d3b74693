#!/usr/bin/env bash
# Builds the guest agent (vmbench-init) as a static, non-PIE executable:
# target/x86_64-unknown-linux-gnu/release/vmbench-init.
# The explicit --target keeps these flags off build scripts and proc-macros,
# which cannot be linked statically.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static -C strip=symbols" \
  cargo build --release --quiet -p vmbench-init --target x86_64-unknown-linux-gnu "$@"

#!/usr/bin/env bash
# The whole test suite: installs what the tests need (scripts/setup.sh), checks
# formatting and lints, then runs every crate's unit tests and the end-to-end
# tests that boot real guests, and each fuzz target for a short time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The vsock test guest is its own workspace (built for bare metal); its
# logic is unit-tested on the host.
guest=(--manifest-path tests/vsock-guest/Cargo.toml)
cargo fmt "${guest[@]}" -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
CARGO_TARGET_DIR=target/vsock-guest-host cargo clippy "${guest[@]}" --all-targets --quiet -- -D warnings
cargo build --workspace --bins --quiet
status=0
(
  rc=0
  CARGO_TARGET_DIR=target/vsock-guest-host cargo test "${guest[@]}" 2>&1 || rc=1
  # --show-output: a passing test that skipped says so (libtest hides its stdout otherwise).
  cargo test --workspace -- --show-output 2>&1 || rc=1
  exit $rc
) | tee target/test.log || status=1
# Each fuzz target for 20 s (README "Fuzzing"): a crash fails the suite.
FUZZ_PROFILE=dev scripts/fuzz.sh all 20 2>&1 | tee -a target/test.log || status=1
# Each skipped test printed why; list them so a reader of the CI log sees them together.
if grep -q "SKIPPED:" target/test.log; then
  echo "--- skipped tests:"
  grep "SKIPPED:" target/test.log
fi
exit $status

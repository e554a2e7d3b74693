#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ (README "Fuzzing"): TARGET, or all of
# them in turn, for SECONDS each (default 60). Prints per target how many
# inputs it ran and whether it found a crash; exits non-zero if any did,
# naming the input that crashed (kept in target/fuzz/artifacts/TARGET/).
#
#   scripts/fuzz.sh [TARGET|all] [SECONDS]
#
# FUZZ_PROFILE=dev builds without optimisation: a quicker build, slower runs
# (what scripts/test.sh uses). Needs a nightly toolchain and cargo-fuzz
# (scripts/setup.sh installs cargo-fuzz when nightly is there); without
# nightly it prints "SKIPPED: no nightly toolchain" and exits 0.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"

say() { echo "fuzz: $*" >&2; }

targets=(frame_decoder collector_session systemd_record cpio_reader qcow2_chain
         block_device vsock_device mmio_transport)
target=${1:-all}
seconds=${2:-60}
profile=${FUZZ_PROFILE:-release}

if [ "$target" != all ] && [[ ! " ${targets[*]} " =~ " $target " ]]; then
  say "no target '$target'; the targets: ${targets[*]}"
  exit 2
fi
if ! [[ "$seconds" =~ ^[1-9][0-9]{0,5}$ ]]; then
  say "SECONDS must be a whole number from 1 to 999999, not '$seconds'"
  exit 2
fi
# Release (cargo-fuzz's default) keeps debug assertions and overflow checks;
# -O would drop them.
case "$profile" in
  release) build_flags=(); bin_dir=release ;;
  dev) build_flags=(--dev); bin_dir=debug ;;
  *) say "FUZZ_PROFILE must be release or dev, not '$profile'"; exit 2 ;;
esac
[ "$target" = all ] && run=("${targets[@]}") || run=("$target")

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "SKIPPED: no nightly toolchain"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  say "cargo-fuzz is not installed: run scripts/setup.sh (or cargo install cargo-fuzz)"
  exit 1
fi

# Their own target directory: sanitizer flags and nightly would otherwise
# invalidate the stable build's cache.
out=target/fuzz
target_dir=$out/$profile
fuzz=(cargo +nightly fuzz)
say "building the fuzz targets ($profile)"
if [ "$target" = all ]; then build_one=(); else build_one=("$target"); fi
"${fuzz[@]}" build "${build_flags[@]}" --target-dir "$target_dir" "${build_one[@]}"
bin=$target_dir/$(rustc +nightly -vV | sed -n 's/^host: //p')/$bin_dir

# The targets make files and sockets; they go in a directory of their own,
# in memory where there is one.
scratch_base=/tmp
[ -w /dev/shm ] && scratch_base=/dev/shm
scratch=$(mktemp -d "$scratch_base/vmbench-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

crashed=()
for t in "${run[@]}"; do
  corpus=$out/corpus/$t
  artifacts=$out/artifacts/$t
  log=$out/logs/$t.log
  mkdir -p "$corpus" "$artifacts" "$(dirname "$log")" "$scratch/$t"
  # The first corpus directory collects what the run finds; the committed
  # seeds (and crash regressions) are read from the second.
  seeds=()
  [ -d "fuzz/seeds/$t" ] && seeds=("fuzz/seeds/$t")
  rc=0
  TMPDIR="$scratch/$t" "$bin/$t" -max_total_time="$seconds" -print_final_stats=1 \
    -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$artifacts/" \
    "$corpus" "${seeds[@]}" >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  # A run that crashed prints no final stats: its last progress line then.
  [ -n "$runs" ] || runs=$(sed -n 's/^#\([0-9][0-9]*\)[[:space:]].*/\1/p' "$log" | tail -1)
  if [ "$rc" = 0 ]; then
    echo "fuzz: $t: ${runs:-?} executions in ${seconds} s, no crash"
  else
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    echo "fuzz: $t: CRASH after ${runs:-?} executions (exit $rc): ${artifact:-no input written, see $log}"
    grep -m1 -E "panicked at|ERROR: (libFuzzer|AddressSanitizer)" "$log" | sed 's/^/fuzz:   /' || true
    [ -n "$artifact" ] && echo "fuzz:   reproduce: $bin/$t $artifact"
    crashed+=("$t")
  fi
done
echo "fuzz: $((${#run[@]} - ${#crashed[@]})) passed, ${#crashed[@]} failed"
if [ ${#crashed[@]} -gt 0 ]; then
  say "crashes in: ${crashed[*]} (logs in $out/logs/)"
  exit 1
fi

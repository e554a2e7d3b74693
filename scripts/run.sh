#!/usr/bin/env bash
# The main job: install what vmbench needs (see scripts/setup.sh), then run it.
#   scripts/run.sh                 # = vmbench boot --vms 4
#   scripts/run.sh boot --vms 8 --mem-mib 512
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
[ $# -gt 0 ] || set -- boot --vms 4
exec target/release/vmbench "$@"

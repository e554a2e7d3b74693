#!/usr/bin/env bash
# Builds the vmbench guest kernel (vmlinux) from tinyconfig plus fragments/*.config.
#
#   kernel-config/build.sh [--source DIR] [--print-path]
#
# Source: Debian's linux-source-6.1 tarball (/usr/src/linux-source-6.1.tar.xz), or the
# kernel tree given with --source. Output: ~/.cache/vmbench/kernel/<key>/vmlinux, where
# <key> hashes the source identity and the fragments; ~/.cache/vmbench/kernel/current
# points at the newest build. A second build with the same inputs does nothing.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${VMBENCH_CACHE:-$HOME/.cache/vmbench}
source_dir=""
print_path=0
while [ $# -gt 0 ]; do
  case "$1" in
    --source) source_dir=$(realpath "$2"); shift 2 ;;
    --print-path) print_path=1; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "kernel-config/build.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "kernel-config/build.sh: $*" >&2; exit 1; }

# The fragments' hash; host/build.rs computes the same value to tell a stale build.
fragments_sha256=$(cd "$here/fragments" && for f in $(ls *.config | LC_ALL=C sort); do printf '%s\n' "$f"; cat "$f"; done | sha256sum | cut -d' ' -f1)

if [ -z "$source_dir" ]; then
  tarball=/usr/src/linux-source-6.1.tar.xz
  [ -f "$tarball" ] || die "no kernel source: $tarball is missing; run: apt-get install linux-source-6.1 (or pass --source DIR)"
  deb_version=$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null || echo unknown)
  source_id="debian:linux-source-6.1=$deb_version"
else
  [ -f "$source_dir/Makefile" ] || die "--source $source_dir is not a kernel tree (no Makefile)"
  kver=$(make -s -C "$source_dir" kernelversion 2>/dev/null) || die "--source $source_dir: 'make kernelversion' failed"
  rev=$(git -C "$source_dir" describe --always --dirty 2>/dev/null || echo nogit)
  source_id="tree:$source_dir:$kver:$rev"
fi

key=$(printf 'source=%s\nfragments=%s\n' "$source_id" "$fragments_sha256" | sha256sum | cut -c1-16)
out="$cache/kernel/$key"
if [ $print_path = 1 ]; then echo "$out/vmlinux"; exit 0; fi

mkdir -p "$cache/kernel"
exec 9>"$cache/kernel/.lock"
flock 9

if [ -f "$out/vmlinux" ]; then
  ln -sfn "$key" "$cache/kernel/current"
  echo "kernel: up to date: $out/vmlinux"
  exit 0
fi

for tool in make gcc flex bison bc; do
  command -v $tool >/dev/null || die "'$tool' is missing; run: apt-get install build-essential flex bison bc libelf-dev libssl-dev"
done

if [ -z "$source_dir" ]; then
  src="$cache/src/linux-source-6.1-$deb_version"
  if [ ! -f "$src/.vmbench-extracted" ]; then
    echo "kernel: extracting $tarball"
    rm -rf "$src" && mkdir -p "$src"
    tar -xf "$tarball" -C "$src" --strip-components=1
    touch "$src/.vmbench-extracted"
  fi
else
  src="$source_dir"
fi

build="$out/build"
rm -rf "$out" && mkdir -p "$build"
log="$out/build.log"
echo "kernel: building $key from $source_id (about 5 minutes on 2 cores); log: $log"
{
  make -C "$src" O="$build" tinyconfig
  "$src/scripts/kconfig/merge_config.sh" -m -O "$build" "$build/.config" "$here"/fragments/*.config
  make -C "$src" O="$build" olddefconfig
} >"$log" 2>&1 || { tail -n 20 "$log" >&2; die "configuring the kernel failed (log: $log)"; }

# Every option a fragment asks for must survive olddefconfig: a dropped one is a
# dependency the fragments forgot, and a guest that silently lacks it.
missing=""
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=*) grep -qxF "$line" "$build/.config" || missing="$missing $line" ;;
    "# CONFIG_"*" is not set") opt=${line#\# }; opt=${opt%% *}
      if grep -q "^$opt=" "$build/.config"; then missing="$missing $line"; fi ;;
  esac
done < <(cat "$here"/fragments/*.config)
[ -z "$missing" ] || die "options requested by the fragments are not in the final .config:$missing"

make -C "$src" O="$build" -j"$(nproc)" vmlinux >>"$log" 2>&1 || { tail -n 30 "$log" >&2; die "kernel build failed (log: $log)"; }

cp "$build/.config" "$out/config"
printf 'source=%s\nfragments_sha256=%s\nrelease=%s\n' "$source_id" "$fragments_sha256" \
  "$(cat "$build/include/config/kernel.release")" > "$out/inputs"
cp "$build/vmlinux" "$out/vmlinux.tmp" && mv "$out/vmlinux.tmp" "$out/vmlinux"
rm -rf "$build"
ln -sfn "$key" "$cache/kernel/current"
echo "kernel: built $out/vmlinux"

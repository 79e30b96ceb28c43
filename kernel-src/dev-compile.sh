#!/bin/sh
# dev-compile.sh - compile every kernel-src/*.c to LLVM IR (.ll) against one guest
# kernel's headers, with the flag set from DESIGN.md plus -fno-vectorize
# -fno-slp-vectorize -g0, and kernel-src/shim first on the include path.
#
#   kernel-src/dev-compile.sh K O [outdir]
#   K = .../usr/src/linux-headers-<ver>-common[-rt]   (the headers)
#   O = .../usr/src/linux-headers-<ver>-<flavour>     (generated headers + .config)
#   outdir defaults to /tmp/ciel-ir/<basename of O>
# Or: kernel-src/dev-compile.sh --kernel 6.1.0-56-amd64 [outdir]  (the cache's kernels/ layout:
#     $CIEL_KERNELS, else ${CIEL_CACHE:-~/.cache/ciel}/kernels, where `ciel build` extracts them)
# SOURCES="a.c b.c" overrides the list of files (default: every kernel-src/*.c).
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
CLANG=${CLANG:-clang-14}

if [ "${1:-}" = "--kernel" ]; then
	ver=$2
	base=${CIEL_KERNELS:-${CIEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ciel}/kernels}/$ver/usr/src
	O=$base/linux-headers-$ver
	flav=${ver#*-*-}			# amd64 / rt-amd64 / cloud-amd64
	abi=${ver%-"$flav"}			# 6.1.0-56
	case $flav in rt-*) K=$base/linux-headers-$abi-common-rt ;; *) K=$base/linux-headers-$abi-common ;; esac
	OUT=${3:-/tmp/ciel-ir/$ver}
else
	K=$1
	O=$2
	OUT=${3:-/tmp/ciel-ir/$(basename "$O")}
fi
[ -d "$K/include" ] || { echo "no headers at K=$K" >&2; exit 2; }
[ -f "$O/include/generated/autoconf.h" ] || { echo "no generated headers at O=$O" >&2; exit 2; }
mkdir -p "$OUT"

RES=$($CLANG -print-file-name=include)
status=0
for src in ${SOURCES:-"$HERE"/*.c}; do
	name=$(basename "$src" .c)
	if ! $CLANG -nostdinc -isystem "$RES" -I"$HERE/shim" -I"$HERE" \
		-I"$K/arch/x86/include" -I"$O/arch/x86/include/generated" \
		-I"$K/include" -I"$O/include" \
		-I"$K/arch/x86/include/uapi" -I"$O/arch/x86/include/generated/uapi" \
		-I"$K/include/uapi" -I"$O/include/generated/uapi" \
		-include "$K/include/linux/compiler-version.h" \
		-include "$K/include/linux/kconfig.h" \
		-include "$K/include/linux/compiler_types.h" \
		-D__KERNEL__ -DKBUILD_MODNAME='"ciel"' --target=x86_64-linux-gnu -std=gnu11 -O2 \
		-fno-strict-aliasing -fno-common -fshort-wchar -fno-delete-null-pointer-checks \
		-fno-strict-overflow -fPIC -fno-stack-protector -fno-builtin -fno-jump-tables \
		-fno-asynchronous-unwind-tables -mno-sse -mno-mmx -mno-sse2 -mno-3dnow -mno-avx \
		-fno-vectorize -fno-slp-vectorize -g0 \
		-S -emit-llvm -o "$OUT/$name.ll" "$src"; then
		echo "FAILED: $src" >&2
		status=1
		continue
	fi
	echo "$OUT/$name.ll"
done
exit $status

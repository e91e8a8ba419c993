#!/usr/bin/env bash
# Two builds of the locating gather-reduce kernel over a raw store's own file and a flat copy of
# its values, the same rows, alternating in one process (see Tools/kernel_ab.c):
#   Tools/kernel_ab.sh WORKDIR REV [LOG2_ROWS...]              A: the kernel at git revision REV,
#                                                             B: this checkout's (default sizes 16 20 24)
#   Tools/kernel_ab.sh WORKDIR --frame-pointer [LOG2_ROWS...]  A: this checkout's with the frame
#                                                             pointer SwiftPM compiles C with, B: without,
#                                                             as Package.swift builds CGatherKernel
# Both builds take Package.swift's flags otherwise. For each size: a raw bf16 store of 64 values
# a row (memtool create, as Tools/bench_reduce.sh makes it), its flat copy and the rows of 4096
# uniform queries (memtool bench --reduced-rows), both files put in 2 MiB folios
# (Tools/pagecache.py), then the comparison.
source "$(dirname "$0")/prelude.sh"
usage="usage: kernel_ab.sh WORKDIR REV|--frame-pointer [LOG2_ROWS...]"
work=${1:?$usage}
against=${2:?$usage}
shift 2
mkdir -p "$work"
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
(cd "$root" && swift build -c release --product memtool >/dev/null)
memtool="$root/.build/release/memtool"
if [ "$against" = --frame-pointer ]; then
    names=("with the frame pointer" "without")
    kernel_object a "$build/a.o" -fPIC -fno-omit-frame-pointer
else
    names=("$(git -C "$root" rev-parse --short "$against")" "this checkout")
    mkdir -p "$build/rev/include"
    git -C "$root" show "$against:Sources/CGatherKernel/gather_kernel.c" > "$build/rev/gather_kernel.c"
    git -C "$root" show "$against:Sources/CGatherKernel/include/gather_kernel.h" > "$build/rev/include/gather_kernel.h"
    kernel_dir="$build/rev" kernel_object a "$build/a.o" -fPIC -fomit-frame-pointer
fi
kernel_object b "$build/b.o" -fPIC -fomit-frame-pointer
clang -O2 -I "$root/Sources/CGatherKernel/include" -o "$build/kernel_ab" "$root/Tools/kernel_ab.c" "$build/a.o" "$build/b.o"
for e in ${*:-16 20 24}; do
    rows=$((1 << e)); side=$((1 << (e / 2)))
    store="$work/r$e.pkm"
    if [ ! -f "$store" ] || ! "$memtool" inspect "$store" --json | grep -q '"complete" : true'; then
        "$memtool" create "$store" --synthetic --grid "${side}x$((rows / side))" --rows "$rows" --dim 64 --scoring pkm \
            --heads 4 --key-dim 32 --topk 32 --codec raw > /dev/null
    fi
    "$memtool" bench "$store" --distribution uniform --queries 4096 --batch 256 --no-brute-force --threads 1 \
        --reduced-rows "$work/rows$e" > /dev/null
    python3 -c "import numpy, sys; numpy.load(sys.argv[1]).astype('<i8').tofile(sys.argv[2])" "$work/rows$e.rows.npy" "$work/rows$e.bin"
    python3 "$root/Tools/pagecache.py" "$store" "$store.flat"
    "$build/kernel_ab" "$store" "$store.flat" "$work/rows$e.bin" "${names[@]}"
done

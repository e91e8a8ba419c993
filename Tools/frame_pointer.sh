#!/usr/bin/env bash
# The locating gather-reduce kernel with and without the frame pointer, over a raw store's own
# file and a flat copy of its values, the same rows, one process (see Tools/frame_pointer.c):
#   Tools/frame_pointer.sh WORKDIR [LOG2_ROWS...]        (default 16 20 24)
# For each size: a raw bf16 store of 64 values a row (memtool create, as Tools/bench_reduce.sh
# makes it), its flat copy and the rows of 4096 uniform queries (memtool bench --reduced-rows),
# both files put in 2 MiB folios (Tools/pagecache.py), then the comparison.
source "$(dirname "$0")/prelude.sh"
work=${1:?usage: frame_pointer.sh WORKDIR [LOG2_ROWS...]}
shift
mkdir -p "$work"
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
(cd "$root" && swift build -c release --product memtool >/dev/null)
memtool="$root/.build/release/memtool"
kernel_object fp "$build/fp.o" -fPIC -fno-omit-frame-pointer
kernel_object nofp "$build/nofp.o" -fPIC -fomit-frame-pointer
clang -O2 -I "$root/Sources/CGatherKernel/include" -o "$build/frame_pointer" "$root/Tools/frame_pointer.c" "$build/fp.o" "$build/nofp.o"
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
    "$build/frame_pointer" "$store" "$store.flat" "$work/rows$e.bin"
done

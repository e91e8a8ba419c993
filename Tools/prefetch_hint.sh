#!/usr/bin/env bash
# The gather-reduce kernel prefetching into the second cache level against the first, same
# rows, one process (see Tools/prefetch_hint.c):
#   Tools/prefetch_hint.sh [LOG2_ROWS...]        (default 16 18 20 24; 4 KiB pages, then 2 MiB at the first and last)
source "$(dirname "$0")/prelude.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for build in second:1 first:3; do
    kernel_object "${build%%:*}" "$work/${build%%:*}.o" -DPKM_PREFETCH_LOCALITY="${build##*:}"
done
clang -O2 -o "$work/prefetch_hint" "$root/Tools/prefetch_hint.c" "$work/second.o" "$work/first.o"
sizes=(${*:-16 18 20 24})
for e in "${sizes[@]}"; do "$work/prefetch_hint" "$e" 0; done
"$work/prefetch_hint" "${sizes[0]}" 1
"$work/prefetch_hint" "${sizes[-1]}" 1

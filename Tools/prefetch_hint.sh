#!/usr/bin/env bash
# The gather-reduce kernel prefetching into the second cache level against the first, same
# rows, one process (see Tools/prefetch_hint.c):
#   Tools/prefetch_hint.sh [LOG2_ROWS...]        (default 16 18 20 24; 4 KiB pages, then 2 MiB at the first and last)
source "$(dirname "$0")/prelude.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
kernel="$root/Sources/CGatherKernel"
for build in second:1 first:3; do
    name=${build%%:*} locality=${build##*:}
    renames=()
    # Every function the kernel exports, renamed per build, so that both link into one program.
    for f in $(grep -oE '\bpkm_[a-z0-9_]+\(' "$kernel/include/gather_kernel.h" | tr -d '(' | sort -u); do
        renames+=("-D$f=${name}_${f#pkm_}")
    done
    clang -O2 -DPKM_PREFETCH_LOCALITY="$locality" "${renames[@]}" -I "$kernel/include" -c "$kernel/gather_kernel.c" -o "$work/$name.o"
done
clang -O2 -o "$work/prefetch_hint" "$root/Tools/prefetch_hint.c" "$work/second.o" "$work/first.o"
sizes=(${*:-16 18 20 24})
for e in "${sizes[@]}"; do "$work/prefetch_hint" "$e" 0; done
"$work/prefetch_hint" "${sizes[0]}" 1
"$work/prefetch_hint" "${sizes[-1]}" 1

#!/usr/bin/env bash
# The gather-reduce kernel's code paths against each other, same rows, one process:
#   Tools/kernel_paths.sh [LOG2_ROWS...]        (default 16 20 24)
source "$(dirname "$0")/prelude.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
clang -O2 -I "$root/Sources/CGatherKernel/include" -o "$work/kernel_paths" "$root/Tools/kernel_paths.c" \
    "$root/Sources/CGatherKernel/gather_kernel.c" -lm
for e in ${*:-16 20 24}; do "$work/kernel_paths" "$e"; done

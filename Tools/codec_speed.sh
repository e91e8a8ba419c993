#!/usr/bin/env bash
# Decode speed of row-granular codec candidates (Tools/codec_speed.c), one thread:
#   Tools/codec_speed.sh [LOG2_ROWS]        (default 20: 128 MiB of bf16 rows)
source "$(dirname "$0")/prelude.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
clang -O2 -mssse3 -o "$work/codec_speed" "$root/Tools/codec_speed.c" -lm
"$work/codec_speed" "${1:-20}"

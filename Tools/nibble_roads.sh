#!/usr/bin/env bash
# What decoding a nibble slot costs the reduce: the nibble kernel over a table's slots against the
# raw kernel over the same rows decoded, both flat in huge pages, one process (Tools/nibble_roads.c):
#   Tools/nibble_roads.sh [LOG2_ROWS...]        (default 16 20 24)
source "$(dirname "$0")/prelude.sh"
kernel_harness nibble_roads "$@"

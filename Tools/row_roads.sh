#!/usr/bin/env bash
# How the kernel that locates its rows finds them: flat, sharded as a raw store keeps them, and
# the sharded code over a flat layout, same rows, one process (Tools/row_roads.c):
#   Tools/row_roads.sh [LOG2_ROWS...]        (default 16 20 24)
source "$(dirname "$0")/prelude.sh"
kernel_harness row_roads "$@"

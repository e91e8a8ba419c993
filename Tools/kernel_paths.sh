#!/usr/bin/env bash
# The gather-reduce kernel's code paths against each other, same rows, one process:
#   Tools/kernel_paths.sh [LOG2_ROWS...]        (default 16 20 24)
source "$(dirname "$0")/prelude.sh"
kernel_harness kernel_paths "$@"

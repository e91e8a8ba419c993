#!/usr/bin/env bash
# The C API from C under AddressSanitizer: builds libpkmstore with ASan (scratch .build-asan),
# compiles Tests/CAPI/capi_check.c with ASan against it, and runs it on a small synthetic store
# made by the release memtool. Part of Tools/test.sh.
source "$(dirname "$0")/prelude.sh"
cd "$root"
swift build -c release --product pkmstore -Xswiftc -sanitize=address -Xcc -fsanitize=address --scratch-path .build-asan
swift build -c release --product memtool
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.build/release/memtool create "$work/capi.pkm" --synthetic --rows 4096 --dim 16 --heads 2 --key-dim 8 --topk 4 \
    --scoring tucker --top-m 8 --layers 2 > /dev/null
.build/release/memtool create "$work/gated.pkm" --synthetic --rows 4096 --dim 16 --heads 2 --key-dim 8 --topk 4 \
    --gate-dim 4 --gate-activation gelu > /dev/null
lib="$root/.build-asan/release"
clang -std=c11 -Wall -Wextra -Werror -O1 -g -fsanitize=address -fuse-ld=lld -I Sources/CPKMStore/include \
    Tests/CAPI/capi_check.c -L "$lib" -lpkmstore -Wl,-rpath,"$lib" -lm -o "$work/capi_check"
"$work/capi_check" "$work/capi.pkm" "$work/gated.pkm"

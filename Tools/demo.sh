#!/usr/bin/env bash
# The main job end to end on a small synthetic memory: create a store, inspect it, verify it,
# read it back with the independent Python reader, and measure the storage layer.
source "$(dirname "$0")/prelude.sh"
cd "$root"
bash Tools/bootstrap.sh
swift build -c release --product memtool
memtool=.build/release/memtool
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== create a synthetic Tucker memory: 65,536 slots, 4 heads, over 65,536 x 64 bf16 values"
$memtool create "$work/demo.pkm" --synthetic --seed 7 --rows 65536 --dim 64 --dtype bf16 \
    --scoring tucker --heads 4 --key-dim 128 --topk 32 --top-m 64
echo "== inspect"
$memtool inspect "$work/demo.pkm"
echo "== verify"
$memtool verify "$work/demo.pkm"
echo "== read every row with the Python reader written from Spec/FORMAT.md"
python3 Tools/pkmstore_reader.py "$work/demo.pkm" --summary
echo "== lookup benchmark"
$memtool bench "$work/demo.pkm" --queries 2048 --batch 128
echo "== storage benchmark (small)"
$memtool storage-bench --rows 131072 --reads 131072 --dtypes bf16 --directory "$work"

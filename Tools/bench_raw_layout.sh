#!/usr/bin/env bash
# Raw rows of format version 4 (each row followed by its checksum) against version 5 (rows on
# cache lines, checksums in a line per group), read by the same memtool, with PyTorch's
# embedding_bag over the same rows, in one session:
#   Tools/bench_raw_layout.sh WORKDIR OLD_MEMTOOL [EXPONENTS...]     (default exponents: 20 24)
# OLD_MEMTOOL is a memtool that writes version 4 (a release build of 7d025e2, say); it creates
# each table of 2^e rows (64 bf16 values, PKM H=4, k=32: 128 rows per query); this checkout's
# release memtool copies it into version 5 (`compact --codec raw`) and measures both, with and
# without row checks, alternating, three rounds; the table shows each figure's median.
# Results: WORKDIR/layout-results/*.json and a table on stdout.
source "$(dirname "$0")/prelude.sh"
work=${1:?usage: bench_raw_layout.sh WORKDIR OLD_MEMTOOL [EXPONENTS...]}
old=${2:?usage: bench_raw_layout.sh WORKDIR OLD_MEMTOOL [EXPONENTS...]}
shift 2
exponents=${*:-20 24}
memtool="$root/.build/release/memtool"
results="$work/layout-results"
mkdir -p "$results"
bash "$root/Tools/bootstrap.sh"
(cd "$root" && swift build -c release --product memtool >/dev/null)
for e in $exponents; do
    rows=$((1 << e)); side=$((1 << (e / 2))); cols=$((rows / side))
    v4="$work/l$e-v4.pkm" v5="$work/l$e-v5.pkm"
    if [ ! -f "$v4" ]; then
        "$old" create "$v4" --synthetic --grid "${side}x${cols}" --rows "$rows" --dim 64 --scoring pkm \
            --heads 4 --key-dim 32 --topk 32 --codec raw > /dev/null
    fi
    if [ ! -f "$v5" ]; then cp "$v4" "$v5" && "$memtool" compact "$v5" --codec raw > /dev/null; fi
    opts=(--distribution uniform --queries 4096 --batch 256 --no-brute-force --threads 1 --flat-path "$work/flat$e")
    # One unrecorded pass: it writes the flat copy, the rows for embedding_bag, and fills the page cache.
    "$memtool" bench "$v5" "${opts[@]}" --reduced-rows "$work/rows$e" > /dev/null
    for round in 1 2 3; do
        for version in v4 v5; do
            store="$work/l$e-$version.pkm"
            "$memtool" bench "$store" "${opts[@]}" --json "$results/$e-$version-checks-$round.json" > /dev/null
            "$memtool" bench "$store" "${opts[@]}" --no-row-checks --json "$results/$e-$version-nochecks-$round.json" > /dev/null
        done
        python3 "$root/Tools/peers/embedding_bag.py" "$work/flat$e" bf16 "$rows" 64 "$work/rows$e" --batch 256 --threads 1 \
            > "$results/$e-embedding-bag-$round.json"
    done
    rm -f "$work/flat$e" "$work/rows$e".*.npy
done
python3 - "$results" $exponents <<'PY'
import json, os, statistics, sys
results, exponents = sys.argv[1], sys.argv[2:]
print("| rows | v4, checks on | v5, checks on | v4, checks off | v5, checks off | memory limit | embedding_bag | v5/v4 (on) | v5 on / eb | v5 off / eb |")
print("|---|---|---|---|---|---|---|---|---|---|")
for e in exponents:
    med = lambda name, key: statistics.median(json.load(open(os.path.join(results, f"{e}-{name}-{r}.json")))[key] for r in (1, 2, 3))
    v4on, v5on = med("v4-checks", "rowsPerSecond"), med("v5-checks", "rowsPerSecond")
    v4off, v5off = med("v4-nochecks", "rowsPerSecond"), med("v5-nochecks", "rowsPerSecond")
    limit = med("v5-checks", "memoryLimitReduceQueriesPerSecond") * 128
    eb = med("embedding-bag", "rowsPerSecond")
    m = lambda x: f"{x / 1e6:.1f} M rows/s"
    print(f"| 2^{e} | {m(v4on)} | {m(v5on)} | {m(v4off)} | {m(v5off)} | {m(limit)} | {m(eb)} | {v5on / v4on:.2f} | {v5on / eb:.2f} | {v5off / eb:.2f} |")
PY

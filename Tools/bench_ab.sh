#!/usr/bin/env bash
# Two builds of memtool on the same raw stores, alternating, with PyTorch's embedding_bag over the
# same rows, in one session: what a change to the read path or the kernel is worth.
#   Tools/bench_ab.sh WORKDIR OLD_MEMTOOL [EXPONENTS...]      (default exponents: 16 20 24)
# OLD_MEMTOOL is a release memtool of an earlier commit (git worktree add /tmp/old COMMIT, then
# swift build -c release --product memtool there); it must read this checkout's stores. For each
# table of 2^e rows (64 bf16 values, PKM H=4, k=32: 128 rows per query, uniform queries, batches
# of 256) and 1 and 2 threads: both memtools' `bench` with the default row checks (each also
# measuring its memory limit, its kernel over a flat copy), then embedding_bag; three rounds,
# medians; the store and the flat copy in the same page-cache state (Tools/pagecache.py).
# CODEC=nibble (or zstd) reads the raw store's copy in that codec (`memtool compact --codec`);
# CACHE_BYTES=N passes --cache-bytes N to both (0 keeps a nibble table's slots in place);
# ROUNDS=N for N rounds.
# Results: WORKDIR/ab-results-CODEC[-cacheN]/*.json and a table on stdout.
source "$(dirname "$0")/prelude.sh"
work=${1:?usage: bench_ab.sh WORKDIR OLD_MEMTOOL [EXPONENTS...]}
old=${2:?usage: bench_ab.sh WORKDIR OLD_MEMTOOL [EXPONENTS...]}
shift 2
exponents=${*:-16 20 24}
codec=${CODEC:-raw}
rounds=${ROUNDS:-3}
memtool="$root/.build/release/memtool"
results="$work/ab-results-$codec${CACHE_BYTES:+-cache$CACHE_BYTES}"
mkdir -p "$results"
bash "$root/Tools/bootstrap.sh"
(cd "$root" && swift build -c release --product memtool >/dev/null)
python3 -c "import torch" 2>/dev/null || { echo "bench_ab: PyTorch is not installed (Tools/bootstrap.sh)" >&2; exit 1; }
for e in $exponents; do
    rows=$((1 << e)); side=$((1 << (e / 2))); cols=$((rows / side))
    store="$work/ab$e.pkm"
    if [ ! -f "$store" ]; then
        "$memtool" create "$store" --synthetic --grid "${side}x${cols}" --rows "$rows" --dim 64 --scoring pkm \
            --heads 4 --key-dim 32 --topk 32 --codec raw > /dev/null
    fi
    if [ "$codec" != raw ]; then
        [ -f "$work/ab$e-$codec.pkm" ] || "$memtool" compact "$store" --output "$work/ab$e-$codec.pkm" --codec "$codec" > /dev/null
        store="$work/ab$e-$codec.pkm"
    fi
    opts=(--distribution uniform --queries 4096 --batch 256 --no-brute-force --flat-path "$work/flat$e")
    [ -n "${CACHE_BYTES:-}" ] && opts+=(--cache-bytes "$CACHE_BYTES")
    # One unrecorded pass: it writes the flat copy, the rows for embedding_bag, and fills the page cache.
    "$memtool" bench "$store" "${opts[@]}" --threads 2 --reduced-rows "$work/rows$e" > /dev/null
    for round in $(seq 1 "$rounds"); do
        # The store and the flat copy in the same page-cache state, 2 MiB folios (Tools/pagecache.py), at
        # the start of every round: this VM pages out file pages idle for a minute (DAMON).
        python3 "$root/Tools/pagecache.py" "$store" "$work/flat$e"
        for t in 1 2; do
            "$old" bench "$store" "${opts[@]}" --threads "$t" --json "$results/$e-t$t-old-$round.json" > /dev/null
            "$memtool" bench "$store" "${opts[@]}" --threads "$t" --json "$results/$e-t$t-new-$round.json" > /dev/null
            python3 "$root/Tools/peers/embedding_bag.py" "$work/flat$e" bf16 "$rows" 64 "$work/rows$e" --batch 256 \
                --threads "$t" > "$results/$e-t$t-embedding-bag-$round.json"
        done
    done
    rm -f "$work/flat$e" "$work/rows$e".*.npy
done
python3 - "$results" "$rounds" $exponents <<'PY'
import json, os, statistics, sys
results, rounds, exponents = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print("| rows | threads | old store | new store | old limit | new limit | embedding_bag | new/old store | new/old limit | new store / eb | new limit / eb |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for e in exponents:
    for t in (1, 2):
        med = lambda name, key: statistics.median(
            json.load(open(os.path.join(results, f"{e}-t{t}-{name}-{r}.json")))[key] for r in range(1, rounds + 1))
        old, new = med("old", "rowsPerSecond"), med("new", "rowsPerSecond")
        old_limit = med("old", "memoryLimitReduceQueriesPerSecond") * 128
        new_limit = med("new", "memoryLimitReduceQueriesPerSecond") * 128
        eb = med("embedding-bag", "rowsPerSecond")
        m = lambda x: f"{x / 1e6:.1f} M rows/s"
        print(f"| 2^{e} | {t} | {m(old)} | {m(new)} | {m(old_limit)} | {m(new_limit)} | {m(eb)} | {new / old:.2f} | "
              f"{new_limit / old_limit:.2f} | {new / eb:.2f} | {new_limit / eb:.2f} |")
PY

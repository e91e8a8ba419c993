#!/usr/bin/env bash
# Two builds of memtool on a store opened with none of its pages in memory, alternating: what the
# store's reads are worth once a table read cold is in memory, and in which page size it is mapped.
#   Tools/bench_cold_open.sh WORKDIR OLD_MEMTOOL [EXPONENTS...]      (default exponents: 24)
# OLD_MEMTOOL is a release memtool of an earlier commit (git worktree add /tmp/old COMMIT, then
# swift build -c release --product memtool there). For each table of 2^e rows (CODEC, default raw;
# 64 bf16 values, PKM H=4, k=32: 128 rows per query, uniform queries, batches of 256), ROUNDS
# rounds (default 3) of: the whole page cache dropped (needs root), then `bench` of the old build
# and, after another drop, of this one, on THREADS threads (default 1), with the default row checks
# and background check (the reduce passes run once the check is done), each measuring its memory
# limit (its kernel over a flat copy in huge pages) in the same run; after each, how much of the
# store a fresh map covers with 2 MiB pages (Tools/pagecache.py --report). Each round ends with
# the peer, PyTorch's embedding_bag (Tools/peers/embedding_bag.py), over the rows the new build
# reduced, from the flat copy put in 2 MiB folios (Tools/pagecache.py): the store's rows/s
# against it, for both builds.
# Results: WORKDIR/cold-open/*.json and lines on stdout.
source "$(dirname "$0")/prelude.sh"
work=${1:?usage: bench_cold_open.sh WORKDIR OLD_MEMTOOL [EXPONENTS...]}
old=${2:?usage: bench_cold_open.sh WORKDIR OLD_MEMTOOL [EXPONENTS...]}
shift 2
exponents=${*:-24}
codec=${CODEC:-raw}; rounds=${ROUNDS:-3}; threads=${THREADS:-1}
memtool="$root/.build/release/memtool"
results="$work/cold-open"
mkdir -p "$results"
bash "$root/Tools/bootstrap.sh"
(cd "$root" && swift build -c release --product memtool >/dev/null)
python3 -c "import torch" 2>/dev/null || { echo "bench_cold_open: PyTorch is not installed (Tools/bootstrap.sh)" >&2; exit 1; }
for e in $exponents; do
    rows=$((1 << e)); side=$((1 << (e / 2))); cols=$((rows / side))
    store="$work/cold$e-$codec.pkm"
    if [ ! -f "$store" ]; then
        "$memtool" create "$store" --synthetic --grid "${side}x${cols}" --rows "$rows" --dim 64 --scoring pkm \
            --heads 4 --key-dim 32 --topk 32 --codec "$codec" > /dev/null
    fi
    for round in $(seq 1 "$rounds"); do
        for which in old new; do
            bin=$old; [ "$which" = new ] && bin=$memtool
            out="$results/$e-$codec-t$threads-$which-$round.json"
            sync; echo 3 > /proc/sys/vm/drop_caches
            "$bin" bench "$store" --distribution uniform --queries 4096 --batch 256 --no-brute-force --threads "$threads" \
                --reduced-rows "$work/rows$e" --json "$out" > /dev/null
            python3 - "$out" "2^$e $codec, $threads thread(s), round $round, $which" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
limit = d["memoryLimitReduceQueriesPerSecond"] * d["rowsPerQuery"]
print(f"{sys.argv[2]}: store {d['rowsPerSecond'] / 1e6:.1f} M rows/s, memory limit {limit / 1e6:.1f}, "
      f"store/limit {d['reduceToMemoryLimit']:.2f}, lookups (reading the table in) {d['lookupQueriesPerSecond']:.0f} queries/s, "
      f"every row checked {d['everyRowChecked']}")
PY
            python3 "$root/Tools/pagecache.py" --report "$store"
        done
        peer="$results/$e-$codec-t$threads-embedding-bag-$round.json"
        python3 "$root/Tools/pagecache.py" "$store.flat" 2> /dev/null
        python3 "$root/Tools/peers/embedding_bag.py" "$store.flat" bf16 "$rows" 64 "$work/rows$e" --batch 256 --threads "$threads" > "$peer"
        python3 - "$peer" "$results/$e-$codec-t$threads" "$round" <<'PY'
import json, sys
peer = json.load(open(sys.argv[1]))["rowsPerSecond"]
store = {w: json.load(open(f"{sys.argv[2]}-{w}-{sys.argv[3]}.json"))["rowsPerSecond"] for w in ("old", "new")}
print(f"  embedding_bag {peer / 1e6:.1f} M rows/s; store/embedding_bag: old {store['old'] / peer:.2f}, new {store['new'] / peer:.2f}")
PY
    done
    rm -f "$work/rows$e".*.npy
done

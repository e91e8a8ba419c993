#!/usr/bin/env bash
# The fused lookup-reduce against PyTorch's embedding_bag over the same rows, in one session.
#   Tools/bench_reduce.sh WORKDIR [EXPONENTS...]       (default exponents: 16 20 24 26)
# For each table of 2^e rows (raw codec, 64 bf16 values per row, a PKM layer with H=4, k=32, so
# 128 rows per query, uniform queries, batches of 256) and 1 and 2 threads: `memtool bench` with the
# default row checks (the background check done before the reduce passes), with --no-row-checks,
# with --no-background-check (reads test each row's group: the road before 2026-12-07's ninth
# session), and with --resident (the table loaded into memory in
# huge pages at open; left out, "-" in the table, where the store, its flat copy and the loaded
# table would not all fit in 90% of the machine's memory: at 2^26 on 24 GiB it pushed the store
# out of the page cache, and the runs after it read from disk), each also measuring the memory limit (the same kernel over a flat copy, no
# checks, read into huge-page memory when it fits a quarter of it), then
# Tools/peers/embedding_bag.py reducing exactly the rows the first run reduced; ROUNDS rounds of
# these five (default 3), alternating, each round ended by a short unrecorded run of the store,
# and the table shows medians (this VM's rates drift by half between minutes). Before each thread
# count's runs the store and the flat copy embedding_bag maps are put in the same page-cache state
# (Tools/pagecache.py).
# Then, for each table, the store and embedding_bag taking turns in one process on one thread
# (Tools/peers/reduce_interleaved.py), a second table of their per-round ratios.
# Results: WORKDIR/results/reduce-*.json and the tables on stdout.
source "$(dirname "$0")/prelude.sh"
work=${1:?usage: bench_reduce.sh WORKDIR [EXPONENTS...]}
shift
exponents=${*:-16 20 24 26}
rounds=${ROUNDS:-3}
memtool="$root/.build/release/memtool"
mkdir -p "$work/results"
bash "$root/Tools/bootstrap.sh"
(cd "$root" && swift build -c release --product memtool >/dev/null)
python3 -c "import torch" 2>/dev/null || { echo "bench_reduce: PyTorch is not installed (Tools/bootstrap.sh)" >&2; exit 1; }
# pkmstore, for the run taking turns in one process, built from this checkout.
python3 -m pip install -q --disable-pip-version-check "$root/python" 2>&1 | grep -v "Running pip as the 'root' user" || true
for e in $exponents; do
    rows=$((1 << e)); side=$((1 << (e / 2))); cols=$((rows / side))
    store="$work/r$e.pkm"
    if [ ! -f "$store" ] || ! "$memtool" inspect "$store" --json | grep -q '"complete" : true'; then
        "$memtool" create "$store" --synthetic --grid "${side}x${cols}" --rows "$rows" --dim 64 --scoring pkm \
            --heads 4 --key-dim 32 --topk 32 --codec raw > /dev/null
    fi
    bench=("$memtool" bench "$store" --distribution uniform --queries 4096 --batch 256 --no-brute-force)
    # One unrecorded pass: it writes the flat copy and brings both files into the page cache.
    "${bench[@]}" --threads 2 > /dev/null
    table_kib=$((rows * 128 / 1024))
    memory_kib=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
    resident=$(( (3 * table_kib + table_kib / 10) * 10 <= memory_kib * 9 ))
    for round in $(seq 1 "$rounds"); do
        for t in 1 2; do
            # The store and the flat copy in the same page-cache state, 2 MiB folios (Tools/pagecache.py):
            # this VM pages out file pages idle for a minute (DAMON).
            python3 "$root/Tools/pagecache.py" "$store" "$store.flat"
            echo "== 2^$e rows, $t thread(s), round $round" >&2
            out="$work/results/reduce-$e-t$t"
            "${bench[@]}" --threads "$t" --reduced-rows "$work/rows$e" --json "$out-checks-$round.json" >&2
            "${bench[@]}" --threads "$t" --no-row-checks --json "$out-nochecks-$round.json" >&2
            "${bench[@]}" --threads "$t" --no-background-check --json "$out-lazy-$round.json" >&2
            [ "$resident" = 1 ] && "${bench[@]}" --threads "$t" --resident --json "$out-resident-$round.json" >&2
            python3 "$root/Tools/peers/embedding_bag.py" "$store.flat" bf16 "$rows" 64 "$work/rows$e" --batch 256 --threads "$t" \
                > "$out-embedding-bag-$round.json"
            cat "$out-embedding-bag-$round.json" >&2
            # Unrecorded: the run that followed the Python peer was the slowest of its round for
            # no reason of its own (2026-12-06: the store with checks, at 0.6-0.7x its other rounds).
            "${bench[@]}" --threads "$t" --queries 512 > /dev/null
        done
    done
    # The two taking turns in one process, one thread (Tools/peers/reduce_interleaved.py): the
    # ratio of passes milliseconds apart, steadier than that of runs minutes apart on this VM.
    python3 "$root/Tools/pagecache.py" "$store" "$store.flat"
    python3 "$root/Tools/peers/reduce_interleaved.py" "$store" "$store.flat" "$work/rows$e" --batch 256 \
        > "$work/results/reduce-$e-interleaved.json"
    cat "$work/results/reduce-$e-interleaved.json" >&2
    rm -f "$store.flat" "$work/rows$e".*.npy
done
python3 - "$work/results" "$rounds" $exponents <<'PY'
import json, os, statistics, sys
results, rounds, exponents = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print("| rows | threads | store, checks on | store, checks off | store, resident | memory limit | embedding_bag | store/eb (on) | store/eb (off) | resident/eb | limit/eb | store/eb (on, no background check) | reduce p50, batch 256 (on / resident) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for e in exponents:
    for t in (1, 2):
        paths = lambda kind: [os.path.join(results, f"reduce-{e}-t{t}-{kind}-{i}.json") for i in range(1, rounds + 1)]
        runs = lambda kind: [json.load(open(p)) for p in paths(kind)]
        med = lambda kind, f: statistics.median(f(d) for d in runs(kind)) if all(map(os.path.exists, paths(kind))) else None
        rate = lambda d: d["rowsPerSecond"]
        on, off, res, eb, lazy = (med(kind, rate) for kind in ("checks", "nochecks", "resident", "embedding-bag", "lazy"))
        limit = med("checks", lambda d: d["memoryLimitReduceQueriesPerSecond"] * d["rowsPerQuery"])
        p50 = lambda kind: med(kind, lambda d: d["reduceBatchMilliseconds"]["p50"])
        m = lambda x: "-" if x is None else f"{x / 1e6:.1f} M rows/s"
        r = lambda x: "-" if x is None else f"{x / eb:.2f}"
        ms = lambda x: "-" if x is None else f"{x:.3f}"
        print(f"| 2^{e} | {t} | {m(on)} | {m(off)} | {m(res)} | {m(limit)} | {m(eb)} | {r(on)} | {r(off)} | {r(res)} | "
              f"{r(limit)} | {r(lazy)} | {ms(p50('checks'))} / {ms(p50('resident'))} ms |")
print()
print("| rows | store/eb, one thread, taking turns in one process: median (lowest-highest) of the rounds | store | embedding_bag | every row checked before the rounds |")
print("|---|---|---|---|---|")
for e in exponents:
    d = json.load(open(os.path.join(results, f"reduce-{e}-interleaved.json")))
    q = d["storeOverEmbeddingBag"]
    print(f"| 2^{e} | {q['median']:.2f} ({q['lowest']:.2f}-{q['highest']:.2f}) of {d['rounds']} | "
          f"{d['storeRowsPerSecond'] / 1e6:.1f} M rows/s | {d['embeddingBagRowsPerSecond'] / 1e6:.1f} M rows/s | "
          f"{'yes' if d.get('everyRowChecked') else 'no'}, after {d.get('backgroundCheckWaitMilliseconds', 0):.0f} ms |")
PY

#!/usr/bin/env bash
# The three codecs of one table read by the same memtool, with PyTorch's embedding_bag over the
# same rows and (at 2^24 with --peers) the compressed-array peers, in one session:
#   Tools/bench_codecs.sh WORKDIR [--peers] [EXPONENTS...]     (default exponents: 16 20 24)
# For each table of 2^e rows (64 bf16 values, PKM H=4, k=32: 128 rows per query, uniform
# queries, batches of 256): a raw store, and its copies re-encoded as nibble and zstd
# (`memtool compact --codec`); `memtool bench` on each, with the default row checks, one thread
# (THREADS=N for N), alternating, three rounds (ROUNDS=N for N); embedding_bag over the flat copy of
# the same rows, on as many threads; the table shows
# medians, the shards' bytes against the raw values, and nibble against raw and embedding_bag.
# Every store and the flat copy are first put in the same page-cache state (Tools/pagecache.py).
# With --peers, Tools/peers/compressed_arrays.py stores the 2^24 table in tensorstore (zarr v3,
# sharded, small inner chunks) and blosc2 and reads random rows from each.
# Results: WORKDIR/codec-results[-tN]/*.json and a table on stdout.
source "$(dirname "$0")/prelude.sh"
work=${1:?usage: bench_codecs.sh WORKDIR [--peers] [EXPONENTS...]}
shift
peers=0
if [ "${1:-}" = --peers ]; then peers=1; shift; fi
exponents=${*:-16 20 24}
rounds=${ROUNDS:-3}
threads=${THREADS:-1}
memtool="$root/.build/release/memtool"
results="$work/codec-results$([ "$threads" = 1 ] || echo "-t$threads")"
mkdir -p "$results"
bash "$root/Tools/bootstrap.sh"
(cd "$root" && swift build -c release --product memtool >/dev/null)
for e in $exponents; do
    rows=$((1 << e)); side=$((1 << (e / 2))); cols=$((rows / side))
    raw="$work/c$e-raw.pkm"
    if [ ! -f "$raw" ]; then
        "$memtool" create "$raw" --synthetic --grid "${side}x${cols}" --rows "$rows" --dim 64 --dtype bf16 --scoring pkm \
            --heads 4 --key-dim 32 --topk 32 --codec raw > /dev/null
    fi
    for codec in nibble zstd; do
        [ -f "$work/c$e-$codec.pkm" ] || "$memtool" compact "$raw" --output "$work/c$e-$codec.pkm" --codec "$codec" > /dev/null
    done
    for codec in raw nibble zstd; do
        "$memtool" inspect "$work/c$e-$codec.pkm" --json > "$results/$e-$codec-inspect.json"
    done
    opts=(--distribution uniform --queries 4096 --batch 256 --no-brute-force --threads "$threads" --flat-path "$work/flat$e")
    # One unrecorded pass: it writes the flat copy, the rows for embedding_bag, and fills the page cache.
    "$memtool" bench "$raw" "${opts[@]}" --reduced-rows "$work/rows$e" > /dev/null
    for round in $(seq 1 "$rounds"); do
        # Every file in the same page-cache state, 2 MiB folios (Tools/pagecache.py), at
        # the start of every round: this VM pages out file pages idle for a minute (DAMON).
        python3 "$root/Tools/pagecache.py" "$work/c$e-raw.pkm" "$work/c$e-nibble.pkm" "$work/c$e-zstd.pkm" "$work/flat$e"
        for codec in raw nibble zstd; do
            echo "== 2^$e rows, $codec, round $round" >&2
            "$memtool" bench "$work/c$e-$codec.pkm" "${opts[@]}" --json "$results/$e-$codec-$round.json" > /dev/null
        done
        python3 "$root/Tools/peers/embedding_bag.py" "$work/flat$e" bf16 "$rows" 64 "$work/rows$e" --batch 256 --threads "$threads" \
            > "$results/$e-embedding-bag-$round.json"
    done
    if [ "$peers" = 1 ] && [ "$e" = 24 ]; then
        python3 "$root/Tools/peers/compressed_arrays.py" "$work/flat$e" "$rows" 64 "$work/peers$e" > "$results/$e-peers.json"
        cat "$results/$e-peers.json" >&2
    fi
    rm -f "$work/flat$e" "$work/rows$e".*.npy
done
python3 - "$results" "$rounds" $exponents <<'PY'
import json, os, statistics, sys
results, rounds, exponents = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print("| rows | raw | nibble | zstd | embedding_bag | nibble/raw | nibble/eb | raw/eb | zstd/raw | shards/raw values: raw, nibble, zstd | nibble slots in memory |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for e in exponents:
    med = lambda name: statistics.median(json.load(open(os.path.join(results, f"{e}-{name}-{r}.json")))["rowsPerSecond"] for r in range(1, rounds + 1))
    raw, nib, zst, eb = med("raw"), med("nibble"), med("zstd"), med("embedding-bag")
    sizes = []
    for codec in ("raw", "nibble", "zstd"):
        s = json.load(open(os.path.join(results, f"{e}-{codec}-inspect.json")))
        sizes.append(f"{s['shardBytes'] / s['rawBytes']:.3f}")
    m = lambda x: f"{x / 1e6:.1f} M rows/s"
    copied = sum(json.load(open(os.path.join(results, f"{e}-nibble-{r}.json"))).get("slotsInMemory", False) for r in range(1, rounds + 1))
    print(f"| 2^{e} | {m(raw)} | {m(nib)} | {m(zst)} | {m(eb)} | {nib / raw:.2f} | {nib / eb:.2f} | {raw / eb:.2f} | {zst / raw:.2f} | "
          + ", ".join(sizes) + f" | {copied} of {rounds} rounds |")
    peers = os.path.join(results, f"{e}-peers.json")
    if os.path.exists(peers):
        for name, p in json.load(open(peers))["peers"].items():
            if "ratio" in p:
                cold = p["cold_rows_per_second"]
                print(f"|  | {name}: {p['ratio']:.3f} of the raw values, random rows {p['warm_rows_per_second'] / 1e6:.3f} M rows/s warm"
                      + (f", {cold / 1e6:.3f} cold" if cold else "") + " |||||||||")
PY

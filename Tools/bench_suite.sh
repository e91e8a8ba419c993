#!/usr/bin/env bash
# The lookup benchmark across table sizes, with its baselines and peers on the same memories and queries.
#   [CODEC=raw] Tools/bench_suite.sh WORKDIR [EXPONENTS...]       (default exponents: 16 18 20 22 24 26 28 30)
# For each size 2^e of virtual slots: a synthetic PKM memory (H=4, d=128, k=32, 64 bf16 values per row,
# shards of CODEC, zstd by default; E=1 up to 2^24 slots, then E=4, and E=16 from 2^28), `memtool bench` warm (clustered) and
# cold (uniform, page cache dropped), and the numpy and FAISS peers on the warm queries. Results go to
# WORKDIR/results/*.json; Tools/bench_chart.py draws them. Stores are kept for re-runs (delete WORKDIR to redo).
source "$(dirname "$0")/prelude.sh"
work=${1:?usage: bench_suite.sh WORKDIR [EXPONENTS...]}
shift
exponents=${*:-16 18 20 22 24 26 28 30}
codec=${CODEC:-zstd}
memtool="$root/.build/release/memtool"
mkdir -p "$work/results"
(cd "$root" && swift build -c release --product memtool >/dev/null)
python3 -c "import faiss" 2>/dev/null || echo "bench_suite: faiss is not installed (pip install faiss-cpu); the FAISS peer is skipped" >&2
[ -f "$work/results/disk.json" ] || bash "$root/Tools/disk_baseline.sh" "$work" > "$work/results/disk.json"
for e in $exponents; do
    slots=$((1 << e)); side=$((1 << (e / 2))); cols=$((slots / side))
    if [ "$e" -le 24 ]; then expansion=1; elif [ "$e" -le 26 ]; then expansion=4; else expansion=16; fi
    rows=$((slots / expansion))
    store="$work/p$e.pkm"
    if [ ! -f "$store" ] || ! "$memtool" inspect "$store" --json | grep -q '"complete" : true'; then
        "$memtool" create "$store" --synthetic --grid "${side}x${cols}" --rows "$rows" --expansion "$expansion" --dim 64 \
            --scoring pkm --heads 4 --key-dim 128 --topk 32 --codec "$codec" > /dev/null
    fi
    q="$work/q$e.npy"
    [ -f "$q" ] || python3 "$root/Tools/peers/make_queries.py" "$q" 2048 4 128 --clustered
    echo "== 2^$e slots: warm" >&2
    # One unrecorded pass first: it builds the flat copy and brings both files into the page cache.
    "$memtool" bench "$store" --distribution "replay:$q" --queries 2048 --batch 256 --no-brute-force > /dev/null
    # The store in 2 MiB folios, as Tools/bench_reduce.sh and bench_codecs.sh leave theirs: a store
    # fresh from create is in 4 KiB pages, which ran both codecs at under half the memory limit at 2^24.
    python3 "$root/Tools/pagecache.py" "$store"
    "$memtool" bench "$store" --distribution "replay:$q" --queries 2048 --batch 256 --json "$work/results/warm-$e.json" >&2
    echo "== 2^$e slots: cold" >&2
    "$memtool" bench "$store" --cold --distribution uniform --queries 512 --batch 256 --json "$work/results/cold-$e.json" >&2
    "$memtool" query "$store" --queries "$q" --output "$work/out.npy" --indices "$work/idx.npy" --weights "$work/w.npy" \
        --addresses "$work/addr.npy" > /dev/null
    proj=""
    if [ "$expansion" -gt 1 ]; then
        python3 -c "from pkmtools.reader import StoreReader; import numpy as np; r = StoreReader('$store'); np.save('$work/proj.npy', r.tensor(next(n for n in r.tensor_names() if n.endswith('projectors'))))"
        proj="$work/proj.npy"
    fi
    python3 "$root/Tools/peers/numpy_lookup.py" "$store.flat" bf16 "$rows" 64 "$work/addr.npy" "$work/w.npy" $proj \
        --reference "$work/out.npy" > "$work/results/numpy-$e.json"
    if python3 -c "import faiss" 2>/dev/null; then
        python3 "$root/Tools/peers/faiss_pkm.py" "$store" "$q" 32 --indices "$work/idx.npy" > "$work/results/faiss-$e.json"
    fi
    cat "$work/results/numpy-$e.json" "$work/results/faiss-$e.json" 2>/dev/null >&2 || true
    rm -f "$store.flat"   # the upper bound's copy is as large as the raw table
done

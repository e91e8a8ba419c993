#!/usr/bin/env bash
# Search at every batch size against FAISS at the same batch, with the machine's limits measured
# in the same run: for each size 2^E (PKM, H=4, d=128, k=32; E > 24 uses 2^24 rows and
# E = 2^(E-24)), memtool bench at batches 1, 4, 16 and 256, the FAISS peer at each, and
# Tools/peers/roofline.py (sgemm GFLOP/s, two-thread key streaming GB/s). Writes WORKDIR/results
# and prints a markdown table whose "of limit" column is the search's share of the bound that
# applies: key bytes / scan rate, or 2·B·H·2·n·d / sgemm rate, whichever is larger.
#
#   bash Tools/bench_search.sh WORKDIR [EXPONENTS...]      (default 20 26 30)
source "$(dirname "$0")/prelude.sh"
work=${1:?usage: bench_search.sh WORKDIR [EXPONENTS...]}
shift
exponents=${*:-20 26 30}
memtool="$root/.build/release/memtool"
mkdir -p "$work/results"
(cd "$root" && swift build -c release --product memtool >/dev/null)
python3 "$root/Tools/peers/make_queries.py" "$work/q.npy" 1024 4 128
for e in $exponents; do
    side=$((1 << (e / 2))); cols=$(((1 << e) / side))
    if [ "$e" -le 24 ]; then rows=$((1 << e)); expansion=1; else rows=$((1 << 24)); expansion=$((1 << (e - 24))); fi
    store="$work/s$e.pkm"
    if [ ! -f "$store" ] || ! "$memtool" inspect "$store" --json | grep -q '"complete" : true'; then
        "$memtool" create "$store" --synthetic --grid "${side}x${cols}" --rows "$rows" --expansion "$expansion" --dim 64 \
            --scoring pkm --heads 4 --key-dim 128 --topk 32 --codec raw > /dev/null
    fi
    python3 "$root/Tools/peers/roofline.py" $((4 * 2 * (side + cols) * 128 * 4 / 2)) 128 > "$work/results/roofline-$e.json"
    for b in 1 4 16 256; do
        queries=$(( b == 256 ? 1024 : 256 ))
        "$memtool" bench "$store" --queries "$queries" --batch "$b" --distribution "replay:$work/q.npy" --no-brute-force \
            --no-memory-limit --json "$work/results/store-$e-$b.json" > /dev/null
        python3 "$root/Tools/peers/faiss_pkm.py" "$store" "$work/q.npy" 32 --batch "$b" > "$work/results/faiss-$e-$b.json"
    done
done
python3 - "$work/results" $exponents <<'PY'
import json, sys
d, exps = sys.argv[1], sys.argv[2:]
print("| slots | batch | search q/s | p50 ms | p99 ms | FAISS q/s | FAISS p50 ms | store / FAISS | bound | of limit |")
print("|---|---|---|---|---|---|---|---|---|---|")
for e in exps:
    roof = json.load(open(f"{d}/roofline-{e}.json"))
    for b in (1, 4, 16, 256):
        s, f = json.load(open(f"{d}/store-{e}-{b}.json")), json.load(open(f"{d}/faiss-{e}-{b}.json"))
        n = int(2 ** (int(e) / 2))
        key_bytes = 4 * 2 * n * 128 * 4
        scan_ms = key_bytes / roof["key_scan_gbps"] / 1e6
        flop_ms = 2 * b * 4 * 2 * n * 128 / roof["sgemm_gflops"] / 1e6
        bound, limit = ("keys", scan_ms) if scan_ms >= flop_ms else ("sgemm", flop_ms)
        p50 = s["searchBatchMilliseconds"]["p50"]
        print(f"| 2^{e} | {b} | {s['searchQueriesPerSecond']:,.0f} | {p50:.3f} | {s['searchBatchMilliseconds']['p99']:.3f} | "
              f"{f['queries_per_second']:,.0f} | {f['batch_p50_ms']:.3f} | {s['searchQueriesPerSecond'] / f['queries_per_second']:.2f} | "
              f"{bound} {limit:.3f} ms | {limit / p50:.2f} |")
    print(f"| | | sgemm {roof['sgemm_gflops']:.0f} GFLOP/s, key scan {roof['key_scan_gbps']:.1f} GB/s (same run) | | | | | | | |")
PY

#!/usr/bin/env bash
# Cold random rows of the raw and nibble codecs against the disk's own random 4 KiB read rate at
# queue depth 32, in one session:
#   Tools/bench_cold.sh WORKDIR [EXPONENTS...]       (default exponents: 30)
# For each size 2^e of virtual slots, the memory of Tools/bench_suite.sh (H=4, d=128, k=32, 64 bf16
# values a row; E=1 up to 2^24 slots, 4 at 2^26, 16 from 2^28), written raw and compacted to nibble;
# then, after an unrecorded pass of each, ROUNDS rounds (default 3), each codec in turn: `memtool
# bench --cold` (the page cache dropped, uniform queries, QUERIES of them, default 4096, in batches
# of 256, one thread). fio's QD32 rate
# (Tools/disk_baseline.sh, over a file as large as the raw store) is measured before the first round
# and after the last. The table: each round's rows/s, and the median against the lower and the
# higher of the two fio rates.
# Results: WORKDIR/cold-results/*.json and a table on stdout.
source "$(dirname "$0")/prelude.sh"
work=${1:?usage: bench_cold.sh WORKDIR [EXPONENTS...]}
shift
exponents=${*:-30}
rounds=${ROUNDS:-3}; queries=${QUERIES:-4096}
memtool="$root/.build/release/memtool"
results="$work/cold-results"
mkdir -p "$results"
bash "$root/Tools/bootstrap.sh"
(cd "$root" && swift build -c release --product memtool >/dev/null)
for e in $exponents; do
    slots=$((1 << e)); side=$((1 << (e / 2))); cols=$((slots / side))
    if [ "$e" -le 24 ]; then expansion=1; elif [ "$e" -le 26 ]; then expansion=4; else expansion=16; fi
    raw="$work/cold$e-raw.pkm"
    if [ ! -f "$raw" ] || ! "$memtool" inspect "$raw" --json | grep -q '"complete" : true'; then
        "$memtool" create "$raw" --synthetic --grid "${side}x${cols}" --rows "$((slots / expansion))" --expansion "$expansion" \
            --dim 64 --scoring pkm --heads 4 --key-dim 128 --topk 32 --codec raw > /dev/null
    fi
    [ -f "$work/cold$e-nibble.pkm" ] || "$memtool" compact "$raw" --output "$work/cold$e-nibble.pkm" --codec nibble > /dev/null
    size=$(( $(stat -c %s "$raw") / 1073741824 + 1 ))G
    bash "$root/Tools/disk_baseline.sh" "$work" "$size" > "$results/$e-disk-before.json"
    cold() {
        "$memtool" bench "$work/cold$e-$1.pkm" --cold --distribution uniform --queries "$queries" --batch 256 \
            --threads 1 --no-brute-force --no-memory-limit --json "$2" > /dev/null
    }
    # One unrecorded pass of each first: just after fio has written and removed its file, both
    # codecs read at a fifth to two thirds of their later rate here.
    for codec in raw nibble; do cold "$codec" "$results/$e-$codec-0.json"; done
    for round in $(seq 1 "$rounds"); do
        for codec in raw nibble; do
            echo "== 2^$e slots, $codec, round $round" >&2
            cold "$codec" "$results/$e-$codec-$round.json"
        done
    done
    bash "$root/Tools/disk_baseline.sh" "$work" "$size" > "$results/$e-disk-after.json"
done
python3 - "$results" "$rounds" $exponents <<'PY'
import json, os, statistics, sys
results, rounds, exponents = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
load = lambda name: json.load(open(os.path.join(results, name)))
print("| slots | disk QD32 before, after | raw rows/s (rounds) | nibble rows/s (rounds) | raw / disk | nibble / disk |")
print("|---|---|---|---|---|---|")
for e in exponents:
    disk = [load(f"{e}-disk-{w}.json")["fio_randread_4k_qd32"] for w in ("before", "after")]
    cells, ratios = [], []
    for codec in ("raw", "nibble"):
        rates = [load(f"{e}-{codec}-{r}.json")["rowsPerSecond"] for r in range(1, rounds + 1)]
        cells.append(", ".join(f"{x / 1e3:.1f} k" for x in rates))
        m = statistics.median(rates)
        ratios.append(f"{m / max(disk):.2f}-{m / min(disk):.2f}")
    print(f"| 2^{e} | {disk[0]:,}, {disk[1]:,} reads/s | {cells[0]} | {cells[1]} | {ratios[0]} | {ratios[1]} |")
PY

#!/usr/bin/env bash
# The disk's own random 4 KiB read rate at queue depth 1 and 32 (fio, direct I/O), on the filesystem
# holding DIR, for comparison with `memtool bench --cold`. Prints one JSON line.
#   Tools/disk_baseline.sh DIR [SIZE]
source "$(dirname "$0")/prelude.sh"
dir=${1:?usage: disk_baseline.sh DIR [SIZE]}
size=${2:-4G}
command -v fio >/dev/null || { echo "disk_baseline: fio is not installed (apt-get install fio)" >&2; exit 1; }
file="$dir/fio-baseline.tmp"
trap 'rm -f "$file"' EXIT
rate() {
    fio --name=b --filename="$file" --size="$size" --rw=randread --bs=4k --direct=1 --ioengine=libaio \
        --iodepth="$1" --runtime=15 --time_based --group_reporting --output-format=json 2>/dev/null |
        python3 -c 'import json,sys; print(round(json.load(sys.stdin)["jobs"][0]["read"]["iops"]))'
}
qd1=$(rate 1)
qd32=$(rate 32)
echo "{\"fio_randread_4k_qd1\": $qd1, \"fio_randread_4k_qd32\": $qd32, \"size\": \"$size\"}"

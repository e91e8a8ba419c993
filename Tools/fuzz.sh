#!/usr/bin/env bash
# Fuzzes one decoder with libFuzzer (-sanitize=fuzzer,address) for a time budget, growing the
# committed corpus in Tests/FuzzCorpus/TARGET. A crash leaves crash-* in Tests/FuzzCorpus/crashers/
# and exits non-zero; commit the (fixed) input into Tests/FuzzCorpus/TARGET so the test suite,
# which replays the corpus, keeps it as a regression test.
#
#   bash Tools/fuzz.sh TARGET [SECONDS]     TARGET: shard, manifest, tensor, safetensors, npy, all
source "$(dirname "$0")/prelude.sh"
cd "$root"
target="${1:?usage: Tools/fuzz.sh shard|manifest|tensor|safetensors|npy|all [seconds]}"
seconds="${2:-60}"
scratch=.build/fuzz
swift build --product pkm-fuzz --scratch-path "$scratch" -c debug \
  -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library -Xswiftc -DFUZZING
binary="$scratch/debug/pkm-fuzz"
targets="$target"
[ "$target" = all ] && targets="shard manifest tensor safetensors npy"
mkdir -p Tests/FuzzCorpus/crashers
for t in $targets; do
  mkdir -p "Tests/FuzzCorpus/$t" "$scratch/new-$t"
  echo "== fuzzing $t for $seconds s"
  # New inputs go to a scratch directory; a merge keeps only those that add coverage.
  PKM_FUZZ_TARGET="$t" "$binary" "$scratch/new-$t" "Tests/FuzzCorpus/$t" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=70000 \
    -artifact_prefix=Tests/FuzzCorpus/crashers/ -print_final_stats=1
  PKM_FUZZ_TARGET="$t" "$binary" -merge=1 "Tests/FuzzCorpus/$t" "$scratch/new-$t" 2>/dev/null
  rm -rf "$scratch/new-$t"
done

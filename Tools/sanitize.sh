#!/usr/bin/env bash
# Runs the concurrency tests under ThreadSanitizer and the whole suite under AddressSanitizer,
# each in its own build directory (.build/tsan, .build/asan). Slow: about 10 minutes per
# sanitizer on a 2-core machine, so CI runs the plain suite and this script runs on demand.
#
#   bash Tools/sanitize.sh            # both
#   bash Tools/sanitize.sh thread     # one of: thread, address
#   CONFIG=release bash Tools/sanitize.sh   # the optimised build (objects are released earlier there)
source "$(dirname "$0")/prelude.sh"
cd "$root"
bash Tools/bootstrap.sh
for sanitizer in "${@:-thread address}"; do
  for s in $sanitizer; do
    case "$s" in
      thread)
        # Threads and processes reading while another process writes, the shard cache under
        # contention, searches split across workers (by query, by head, bfloat16 first stage), and
        # the worker pool they are split on.
        filter="ConcurrencyTests|ConcurrentProcessTests|RoundTripTests|LifetimeTests|BruteForceTests|ExactSelectionTests|WorkerPoolTests" ;;
      address)
        filter=""
        # Two leaks inside XCTest and Foundation.Process are the toolchain's; everything else fails the run.
        export LSAN_OPTIONS="suppressions=$PWD/Tools/lsan-suppressions.txt:print_suppressions=0" ;;
      *) echo "unknown sanitizer '$s' (thread or address)" >&2; exit 2 ;;
    esac
    config=${CONFIG:-debug}
    flags=(-c "$config" --sanitize="$s" --scratch-path ".build-$s-$config")
    [ "$config" = release ] && flags+=(-Xswiftc -enable-testing)
    echo "== swift test ${flags[*]} ${filter:+--filter \"$filter\"}"
    swift build --build-tests "${flags[@]}"
    swift test --skip-build "${flags[@]}" ${filter:+--filter "$filter"}
  done
done

#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: bootstrap, then every Swift test twice, on the
# debug build and on the release build users run; then the C API from C under AddressSanitizer,
# and the Python package, installed with pip, under pytest. In the release pass the command-line tests and the
# kill and corruption harnesses drive the plain `swift build -c release` memtool; the library
# tests are built optimised with -enable-testing (for @testable) in a scratch folder of their own.
# Arguments are passed to both `swift test` runs (for example --filter).
source "$(dirname "$0")/prelude.sh"
cd "$root"
bash Tools/bootstrap.sh

echo "== debug build"
swift build --build-tests
swift test --skip-build "$@"

echo "== release build"
swift build -c release --product memtool
swift build -c release --build-tests -Xswiftc -enable-testing --scratch-path .build-release-tests
MEMTOOL="$PWD/.build/release/memtool" swift test -c release --skip-build --scratch-path .build-release-tests "$@"

echo "== C API under AddressSanitizer"
bash Tools/capi_check.sh

echo "== Python package"
python3 -m pip install -q --disable-pip-version-check ./python 2>&1 | grep -v "Running pip as the 'root' user" || true
python3 -m pytest -q python/tests

#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: bootstrap, build, swift test.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
bash Tools/bootstrap.sh
swift build --build-tests
swift test --skip-build "$@"

#!/usr/bin/env bash
# Installs what building, testing and the Python tools need; safe to run again (does nothing when all is there).
set -euo pipefail

need_apt=()
for pkg in liblmdb-dev libzstd-dev libopenblas-dev pkg-config; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "bootstrap: installing ${need_apt[*]}" >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# The Python reader of Spec/FORMAT.md and the reference programs.
if ! python3 -c "import lmdb, zstandard, xxhash, numpy" 2>/dev/null; then
    echo "bootstrap: installing Python packages lmdb zstandard xxhash numpy" >&2
    python3 -m pip install -q --disable-pip-version-check lmdb zstandard xxhash numpy 2>&1 | grep -v "Running pip as the 'root' user" || true
fi

if ! command -v swift >/dev/null 2>&1; then
    if [ -x /opt/swift/usr/bin/swift ]; then
        echo "bootstrap: add /opt/swift/usr/bin to PATH" >&2
    else
        echo "bootstrap: a Swift 6 toolchain is required (swift not found)" >&2
        exit 1
    fi
fi

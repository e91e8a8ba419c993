#!/usr/bin/env bash
# Installs what building, testing and the Python tools need; safe to run again (does nothing when all is there).
#   bash Tools/bootstrap.sh            # build, tests, Python reader and references, the FAISS peer
#   bash Tools/bootstrap.sh --peers    # also PyTorch (CPU), the embedding_bag peer of Tools/bench_reduce.sh
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

# The benchmark's peers (Tools/peers): FAISS for the product-key search. Optional: the benchmark
# says so and skips that peer when it is missing.
if ! python3 -c "import faiss" 2>/dev/null; then
    python3 -m pip install -q --disable-pip-version-check faiss-cpu 2>&1 | grep -v "Running pip as the 'root' user" || true
    python3 -c "import faiss" 2>/dev/null || echo "bootstrap: faiss-cpu could not be installed; the FAISS peer will be skipped" >&2
fi
# PyTorch's embedding_bag, the lookup-reduce peer (Tools/peers/embedding_bag.py): large, so only on request.
if [ "${1:-}" = "--peers" ] && ! python3 -c "import torch" 2>/dev/null; then
    echo "bootstrap: installing torch==2.13.0+cpu" >&2
    python3 -m pip install -q --disable-pip-version-check "torch==2.13.0+cpu" 2>&1 | grep -v "Running pip as the 'root' user" || true
    python3 -c "import torch" 2>/dev/null || echo "bootstrap: torch could not be installed; the embedding_bag peer will be unavailable" >&2
fi
command -v fio >/dev/null 2>&1 || { SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"; DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq fio >/dev/null 2>&1 || echo "bootstrap: fio could not be installed; Tools/disk_baseline.sh needs it" >&2; }

if ! command -v swift >/dev/null 2>&1; then
    if [ -x /opt/swift/usr/bin/swift ]; then
        echo "bootstrap: add /opt/swift/usr/bin to PATH" >&2
    else
        echo "bootstrap: a Swift 6 toolchain is required (swift not found)" >&2
        exit 1
    fi
fi

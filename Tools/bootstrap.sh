#!/usr/bin/env bash
# Installs what building, testing and the Python tools need; safe to run again (does nothing when all is there).
#   bash Tools/bootstrap.sh    # build, tests (Swift, C API, Python package), the Python tools, the FAISS and PyTorch peers
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
# PyTorch (CPU) and the product-key-memory package: the Python package's tests serve real PKM
# layers and compare with their forward; embedding_bag is also the lookup-reduce peer of
# Tools/bench_reduce.sh. torch first, so that product-key-memory does not pull a CUDA build.
if ! python3 -c "import torch" 2>/dev/null; then
    echo "bootstrap: installing torch==2.13.0+cpu" >&2
    python3 -m pip install -q --disable-pip-version-check "torch==2.13.0+cpu" 2>&1 | grep -v "Running pip as the 'root' user" || true
    python3 -c "import torch" 2>/dev/null || echo "bootstrap: torch could not be installed (registry unreachable?); the tests that need it are skipped" >&2
fi
if ! python3 -c "import product_key_memory, pytest, setuptools" 2>/dev/null; then
    echo "bootstrap: installing product-key-memory pytest setuptools" >&2
    python3 -m pip install -q --disable-pip-version-check product-key-memory pytest setuptools 2>&1 | grep -v "Running pip as the 'root' user" || true
    python3 -c "import product_key_memory" 2>/dev/null || echo "bootstrap: product-key-memory could not be installed; its tests are skipped" >&2
fi
# Ray: pkmstore.distributed serves a split store's parts from Ray actors; its tests start a local cluster.
if ! python3 -c "import ray" 2>/dev/null; then
    echo "bootstrap: installing ray" >&2
    python3 -m pip install -q --disable-pip-version-check ray 2>&1 | grep -v "Running pip as the 'root' user" || true
    python3 -c "import ray" 2>/dev/null || echo "bootstrap: ray could not be installed; the distributed tests are skipped" >&2
fi
# tensorstore and blosc2: the compressed-array peers of Tools/bench_codecs.sh (Tools/peers/compressed_arrays.py).
if ! python3 -c "import tensorstore, blosc2" 2>/dev/null; then
    echo "bootstrap: installing tensorstore and blosc2" >&2
    python3 -m pip install -q --disable-pip-version-check tensorstore blosc2 2>&1 | grep -v "Running pip as the 'root' user" || true
    python3 -c "import tensorstore, blosc2" 2>/dev/null || echo "bootstrap: tensorstore or blosc2 could not be installed; the compressed-array peers are skipped" >&2
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

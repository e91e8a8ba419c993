"""Stores from Python: rows, tensors, the lookup-reduce and errors, checked against the
independent reader of Tools/pkmtools (written from Spec/FORMAT.md) and numpy."""
import os
import threading
import time

import numpy as np
import pytest

import pkmstore
from conftest import import_tensors, write_small_store
from pkmtools.reader import StoreReader


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("codec", ["raw", "zstd", "nibble"])
def test_rows_match_the_independent_reader(tmp_path, dtype, codec):
    rng = np.random.default_rng(1)
    tensors = {"row_keys": rng.standard_normal((1, 1, 16, 4), np.float32),
               "col_keys": rng.standard_normal((1, 1, 16, 4), np.float32),
               "values": (rng.standard_normal((256, 24)) * 0.02).astype(np.float32)}
    tensors["values"][::17, 3] = 7.5  # rows the nibble code does not cover: stored whole
    config = {"scoring": "pkm", "topK": 2, "topM": 0, "activation": "softmax", "addressing": "identity", "addressKey": 0}
    path = str(tmp_path / "s.pkm")
    if codec == "nibble" and dtype == "f16":
        with pytest.raises(pkmstore.PKMStoreError, match="f16"):
            import_tensors(path, str(tmp_path / "src"), tensors, config, codec=codec, dtype=dtype, rows_per_shard=50)
        return
    import_tensors(path, str(tmp_path / "src"), tensors, config, codec=codec, dtype=dtype, rows_per_shard=50)
    reference = StoreReader(path).all_floats()
    with pkmstore.open(path) as store:
        assert (store.layout.rows, store.layout.dim, store.layout.dtype, store.layout.codec) == (256, 24, dtype, codec)
        assert store.layout.complete and store.layout.shard_count == 6
        picks = rng.integers(0, 256, 300)
        assert np.array_equal(store.rows(picks), reference[picks])
        code_table = ["__nibble_codes"] if codec == "nibble" else []  # the store's code (Spec/FORMAT.md)
        assert store.tensor_names() == code_table + ["layers/default/col_keys", "layers/default/row_keys"]
        assert np.array_equal(store.tensor("layers/default/row_keys"), tensors["row_keys"])
        assert store.verify() == []


def test_gather_reduce_matches_numpy(small_store):
    path, tensors = small_store
    values = tensors["values"].astype(np.float64)
    rng = np.random.default_rng(2)
    idx = rng.integers(0, 1024, 500)
    w = rng.standard_normal((500, 4)).astype(np.float32)
    targets = rng.integers(0, 3, 500)
    with pkmstore.open(path) as store:
        out = store.gather_reduce(idx, w, chunks=4, targets=targets, outputs=3)
        expected = np.zeros((3, 16))
        for i, (r, t) in enumerate(zip(idx, targets)):
            expected[t] += np.repeat(w[i].astype(np.float64), 4) * values[r]
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
        single = store.gather_reduce(idx[:10], np.ascontiguousarray(w[:10, 0]))
        np.testing.assert_allclose(single[0], (w[:10, 0, None] * values[idx[:10]]).sum(0), rtol=1e-5, atol=1e-5)


def test_results_are_written_in_place_and_queries_read_in_place(small_store):
    path, _ = small_store
    with pkmstore.MemoryLayer(path) as layer:
        q = np.random.default_rng(3).standard_normal((8, 2, 2, 8), np.float32)
        out = np.empty((8, 16), np.float32)
        idx = np.empty((8, 2, 4), np.int64)
        w = np.empty((8, 2, 4, 1), np.float32)
        result, i2, w2 = layer.lookup(q, out=out, indices=idx, weights=w)
        assert result is out and i2 is idx and w2 is w
        torch = pytest.importorskip("torch")
        tq = torch.from_numpy(q.copy())
        again, _, _ = layer.lookup(tq)                  # a CPU tensor through DLPack, no copy
        assert np.array_equal(again, out)
        from pkmstore.arrays import as_array
        assert as_array(tq, np.float32, "q").ctypes.data == tq.data_ptr()


def test_bad_input_raises_with_the_reason(small_store, tmp_path):
    path, _ = small_store
    with pytest.raises(pkmstore.NotFoundError, match="no store"):
        pkmstore.open(str(tmp_path / "missing.pkm"))
    not_a_store = tmp_path / "junk.pkm"
    not_a_store.write_bytes(os.urandom(10000))
    with pytest.raises(pkmstore.PKMStoreError):
        pkmstore.open(str(not_a_store))
    store = pkmstore.open(path)
    with pytest.raises(pkmstore.ArgumentError, match="out of range"):
        store.rows(np.array([1024]))
    with pytest.raises(pkmstore.ArgumentError, match="dtype int32"):
        store.rows(np.array([1], np.int32))
    with pytest.raises(pkmstore.NotFoundError, match="not in the store"):
        store.tensor("nope")
    store.close()
    store.close()  # closing twice is harmless
    with pytest.raises(pkmstore.ClosedError):
        store.rows(np.array([1]))
    layer = pkmstore.MemoryLayer(path)
    q = np.zeros((2, 2, 2, 8), np.float32)
    with pytest.raises(pkmstore.ArgumentError, match="dtype float64"):
        layer.lookup(q.astype(np.float64))
    with pytest.raises(pkmstore.ArgumentError, match="C-contiguous"):
        layer.lookup(np.zeros((2, 2, 2, 16), np.float32)[..., ::2])
    with pytest.raises(pkmstore.ArgumentError, match=r"\[B, 2, 2, 8\]"):
        layer.lookup(np.zeros((2, 2, 8), np.float32)[None].reshape(1, 2, 2, 8)[:, :1])
    bad = q.copy()
    bad[1, 0, 1, 3] = np.nan
    with pytest.raises(pkmstore.ArgumentError, match="query 1"):
        layer.lookup(bad)
    torch = pytest.importorskip("torch")
    with pytest.raises(pkmstore.ArgumentError, match="dtype torch.bfloat16, which numpy cannot read in place"):
        layer.lookup(torch.zeros((2, 2, 2, 8), dtype=torch.bfloat16))  # was a bare RuntimeError from DLPack
    layer.close()


def test_an_import_of_a_bad_file_names_it(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(pkmstore.InputFileError, match="bad.safetensors"):
        pkmstore.import_(str(tmp_path / "x.pkm"), str(bad))
    with pytest.raises(pkmstore.ArgumentError, match="scoring 'fast'"):
        pkmstore.import_(str(tmp_path / "x.pkm"), str(bad), scoring="fast")


def test_threads_share_a_layer(small_store):
    path, _ = small_store
    layer = pkmstore.MemoryLayer(path, threads=1)
    q = np.random.default_rng(4).standard_normal((32, 2, 2, 8), np.float32)
    expected, _, _ = layer.lookup(q)
    results = [None] * 8

    def work(i):
        results[i] = layer.lookup(q)[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(r, expected) for r in results)


def test_export_round_trips(small_store, tmp_path):
    path, tensors = small_store
    exported = str(tmp_path / "e.safetensors")
    pkmstore.export(path, exported)
    from pkmtools.tensorio import read_safetensors
    back = read_safetensors(exported)
    assert np.array_equal(back["values"], tensors["values"]) and np.array_equal(back["row_keys"], tensors["row_keys"])


def test_a_forked_child_reads_and_closes_an_inherited_store_without_harming_the_parent(tmp_path):
    """As DataLoader workers do: a child forked after the parent opened the store reads it, and
    opens it again, and closes both; the parent reads on. LMDB handles are not used or released
    across fork(): until 2026-12-07 the child's close freed the parent's reader slots and every
    later read of the parent failed with MDB_BAD_RSLOT."""
    path, _ = write_small_store(tmp_path, codec="zstd")
    store = pkmstore.open(path, cache_bytes=0)  # every read through a reader slot
    rows, weights = np.arange(0, 1024, 3), np.ones(342, np.float32)
    expected = store.gather_reduce(rows, weights)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        status = 1
        try:
            again = pkmstore.open(path, cache_bytes=0)
            same = np.array_equal(store.gather_reduce(rows, weights), expected) and np.array_equal(again.gather_reduce(rows, weights), expected)
            again.close()
            store.close()
            status = 0 if same else 2
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    for _ in range(3):
        assert np.array_equal(store.gather_reduce(rows, weights), expected)


def _reduce_in_worker(args):
    layer, store, queries, rows, weights = args
    return layer.lookup(queries)[0], store.gather_reduce(rows, weights)


def test_stores_and_layers_pickle_as_their_path_for_spawned_workers(small_store):
    """A spawned worker (DataLoader with the spawn context, any multiprocessing on macOS) gets
    its arguments pickled: a store or layer reopens there by path and options, and answers as
    the parent's does. It used to fail with "cannot pickle '_thread.lock' object"."""
    import multiprocessing
    import pickle
    path, _ = small_store
    store = pkmstore.open(path, cache_bytes=1 << 20)
    layer = store.layer()
    queries = np.random.default_rng(3).standard_normal((5, 2, 2, 8)).astype(np.float32)
    rows, weights = np.arange(0, 1024, 5), np.ones(205, np.float32)
    expected = (layer.lookup(queries)[0], store.gather_reduce(rows, weights))
    again = pickle.loads(pickle.dumps(store))
    assert again.path == path and again is not store and np.array_equal(again.gather_reduce(rows, weights), expected[1])
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        output, reduced = pool.map(_reduce_in_worker, [(layer, store, queries, rows, weights)])[0]
    assert np.array_equal(output, expected[0]) and np.array_equal(reduced, expected[1])
    store.close()
    with pytest.raises(pkmstore.ClosedError):
        pickle.dumps(store)


def test_export_never_replaces_a_store_and_reports_a_full_device(small_store):
    path, tensors = small_store
    before = open(path, "rb").read()
    with pytest.raises(pkmstore.ArgumentError, match="holds an LMDB database or lock file"):
        pkmstore.export(path, path)
    assert open(path, "rb").read() == before
    if os.path.exists("/dev/full"):
        with pytest.raises(pkmstore.StorageError, match="No space left on device"):
            pkmstore.export(path, "/dev/full")


def test_openblas_runs_the_kernels_pkmstore_names_on_intel_cpus():
    """OpenBLAS 0.3.21 falls back to its SSE3 kernels on Intel models it does not know; loading
    pkmstore names the AVX-512 (or AVX2) ones first on an Intel CPU that runs them, unless the
    user chose, and leaves no variable behind for the processes it starts."""
    import ctypes
    import subprocess
    import sys
    from pkmstore import _native
    with open("/proc/cpuinfo") as f:
        info = f.read(1 << 16)
    flags = next((set(l.split(":", 1)[1].split()) for l in info.splitlines() if l.startswith("flags")), set())
    user_chose = "OPENBLAS_CORETYPE" in os.environ
    expected = None
    if "GenuineIntel" in info and not user_chose:
        if {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"} <= flags:
            expected = "SkylakeX"
        elif {"avx2", "fma"} <= flags:
            expected = "Haswell"
    assert _native.blas_kernels_asked == expected
    child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('OPENBLAS_CORETYPE', '-'))"],
                           capture_output=True, text=True, check=True)
    assert child.stdout.strip() == (os.environ["OPENBLAS_CORETYPE"] if user_chose else "-")
    if expected is None:
        pytest.skip("pkmstore names no OpenBLAS kernels here (not an Intel CPU with AVX2 or AVX-512, or the user chose)")
    corename = _native.lib.openblas_get_corename
    corename.restype = ctypes.c_char_p
    assert corename().decode().lower() == expected.lower()


def raw_pkm_store(tmp_path, side, seed):
    """A raw bf16 store of a one-head PKM layer over side x side random rows of 64; its path."""
    rng = np.random.default_rng(seed)
    tensors = {"row_keys": rng.standard_normal((1, 1, side, 4), np.float32),
               "col_keys": rng.standard_normal((1, 1, side, 4), np.float32),
               "values": rng.standard_normal((side * side, 64), np.float32)}
    config = {"scoring": "pkm", "topK": 2, "topM": 0, "activation": "softmax", "addressing": "identity", "addressKey": 0}
    path = str(tmp_path / "raw.pkm")
    import_tensors(path, str(tmp_path / "src"), tensors, config, codec="raw", dtype="bf16")
    return path


def test_a_forked_child_closes_a_store_whose_check_is_running(tmp_path):
    """A child forked while the store's background check may still run (a DataLoader worker,
    say), which has no such thread, reads the store and closes it."""
    path = raw_pkm_store(tmp_path, side=512, seed=6)
    store = pkmstore.open(path)
    first = store.rows(np.array([0, 262_143]))  # starts the check of 32,768 groups
    pid = os.fork()
    if pid == 0:
        status = 0 if np.array_equal(store.rows(np.array([0, 262_143])), first) else 3
        store.close()
        os._exit(status)
    for _ in range(600):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child did not close the store within 30 s")
    assert os.waitstatus_to_exitcode(status) == 0
    store.close()
    with pkmstore.open(path, background_check=False) as lazy:
        assert np.array_equal(lazy.rows(np.array([0, 262_143])), first)


def test_wait_checked_says_when_every_row_is_checked(tmp_path):
    """After one read a raw store's background check checks every row in memory, which
    wait_checked waits for and reports; without the check two rows read leave the rest to later
    reads; a resident store is checked at open."""
    path = raw_pkm_store(tmp_path, side=64, seed=7)
    two = np.array([0, 4095])
    with pkmstore.open(path, background_check=False) as lazy:
        lazy.rows(two)
        assert not lazy.wait_checked(0.2)
    with pkmstore.open(path) as store:
        assert not store.wait_checked(0)  # nothing read: no check has started
        store.rows(two)
        assert store.wait_checked(60)
    with pkmstore.open(path, resident=True) as resident:
        assert resident.wait_checked(0)
    with pkmstore.open(path) as store, pytest.raises(pkmstore.ArgumentError):
        store.wait_checked(-1)

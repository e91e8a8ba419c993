"""Stores of several memory layers reading one value table (Spec/FORMAT.md, "Layers"), built
from Python from checkpoints that Tools/make_layers.py writes with the numpy reference's
results for each layer (pool windows included)."""
import os

import numpy as np
import pytest

import pkmstore

def test_each_layer_answers_as_the_reference(layered):
    path, folder = layered
    with pkmstore.open(path) as store:
        assert store.layers() == ["block0.memory", "block1.memory", "block2.memory"]
        assert all(name.startswith("layers/block") for name in store.tensor_names())
    for l in range(3):
        with pkmstore.MemoryLayer(path, layer=f"block{l}.memory") as layer:
            q = np.load(os.path.join(folder, f"queries{l}.npy"))
            out, idx, w = layer.lookup(q)
            expected = np.load(os.path.join(folder, f"expected_output{l}.npy"))
            assert np.array_equal(idx, np.load(os.path.join(folder, f"expected_indices{l}.npy")))
            assert np.abs(out - expected).max() <= 1e-5 * np.abs(expected).max()
            assert layer.config["poolRows"] == 4096


def test_layers_of_one_open_store_share_it(layered):
    path, folder = layered
    store = pkmstore.open(path)
    layers = [store.layer(name) for name in store.layers()]
    store.close()  # the layers keep it open
    for l, layer in enumerate(layers):
        out, idx, _ = layer.lookup(np.load(os.path.join(folder, f"queries{l}.npy")))
        assert np.array_equal(idx, np.load(os.path.join(folder, f"expected_indices{l}.npy")))
        layer.close()
    with pytest.raises(pkmstore.ClosedError):
        store.layer("block0.memory")


def test_a_resident_store_answers_the_same(layered):
    path, folder = layered
    with pkmstore.open(path, resident=True) as store:
        assert np.array_equal(store.rows(np.arange(0, 4096, 7)), pkmstore.open(path).rows(np.arange(0, 4096, 7)))
    with pkmstore.MemoryLayer(path, layer="block2.memory", resident=True) as layer:
        out, idx, _ = layer.lookup(np.load(os.path.join(folder, "queries2.npy")))
        assert np.array_equal(idx, np.load(os.path.join(folder, "expected_indices2.npy")))
        expected = np.load(os.path.join(folder, "expected_output2.npy"))
        assert np.abs(out - expected).max() <= 1e-5 * np.abs(expected).max()


def test_a_layer_exports_as_a_single_layer_checkpoint(layered, tmp_path):
    path, folder = layered
    exported, single = str(tmp_path / "l1.safetensors"), str(tmp_path / "single.pkm")
    pkmstore.export(path, exported, layer="block1.memory")
    pkmstore.import_(single, exported)
    with pkmstore.open(single) as store:
        assert store.layers() == ["default"]
    with pkmstore.MemoryLayer(single) as layer:
        out, idx, _ = layer.lookup(np.load(os.path.join(folder, "queries1.npy")))
        assert np.array_equal(idx, np.load(os.path.join(folder, "expected_indices1.npy")))
        assert layer.config["poolRows"] == layer.config["physicalRows"] == 2048


def test_choosing_a_layer_is_required_and_checked(layered):
    path, _ = layered
    with pytest.raises(pkmstore.NotFoundError, match="holds 3 layers .*block0.memory"):
        pkmstore.MemoryLayer(path)
    with pytest.raises(pkmstore.NotFoundError, match="no layer '../x'"):
        pkmstore.MemoryLayer(path, layer="../x")
    with pytest.raises(pkmstore.PKMStoreError, match="layer name"):
        pkmstore.import_(path, os.path.join(layered[1], "layer0.safetensors"), layer="a/b")
    with pytest.raises(pkmstore.PKMStoreError, match="differ from the store's rows"):
        pkmstore.import_(path, os.path.join(layered[1], "layer0.safetensors"), layer="shifted", pool_offset=7)
    with pkmstore.open(path) as store:
        assert "shifted" not in store.layers()

"""The golden cases of Spec/golden (computed by Tools/reference_retrieval.py, an independent numpy
program) served through pkmstore: same slots, weights and outputs."""
import numpy as np
import pytest

import pkmstore
from conftest import golden_cases, import_tensors, load_golden


@pytest.mark.parametrize("codec", ["raw", "zstd", "nibble"])
@pytest.mark.parametrize("name", golden_cases())
def test_golden_case(tmp_path, name, codec):
    config, tensors, q, expected = load_golden(name)
    if "poolRows" in config:
        # A layer reading a window of a pool is imported here with the window's rows as its own
        # table (the same answers); test_layers.py adds layers to a shared pool.
        window = (np.arange(config["physicalRows"]) + config["poolOffset"]) % config["poolRows"]
        tensors["values"] = tensors["values"][window]
        if "gates" in tensors:
            tensors["gates"] = tensors["gates"][window]
    config = dict(config, poolRows=config["physicalRows"], poolOffset=0)
    path = str(tmp_path / "g.pkm")
    import_tensors(path, str(tmp_path / "src"), tensors, config, codec=codec, dtype="f32")
    with pkmstore.MemoryLayer(path, threads=2) as layer:
        # The address key is stored only for keyed addressing (Spec/RETRIEVAL.md).
        stored = dict(config, addressKey=config["addressKey"] if config["addressing"] == "keyed" else 0)
        assert layer.config == stored
        out, idx, w = layer.lookup(q, gate_input=expected.get("gate_inputs"))
        assert idx.reshape(-1).tolist() == expected["indices"]
        np.testing.assert_allclose(w.reshape(-1), expected["weights"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.reshape(-1), expected["output"], rtol=1e-5, atol=1e-5)
        idx2, w2 = layer.search(q)
        assert np.array_equal(idx2, idx) and np.array_equal(w2, w)

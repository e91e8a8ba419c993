import json
import os
import subprocess
import sys

import numpy as np
import pytest

import pkmstore

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "..", "Spec", "golden")
TOOLS = os.path.join(os.path.dirname(__file__), "..", "..", "Tools")


def golden_cases():
    return sorted(f[:-5] for f in os.listdir(GOLDEN) if f.endswith(".json"))


def load_golden(name):
    """A golden case of Spec/golden: config, float tensors, queries and the reference's results."""
    doc = json.load(open(os.path.join(GOLDEN, name + ".json")))
    scale = doc["scale"]
    tensors = {n: (np.array(t["ints"], np.float64).reshape(t["shape"]) / scale).astype(np.float32)
               for n, t in doc["tensors"].items()}
    if "virtual_map" in doc:
        tensors["virtual_map"] = np.array(doc["virtual_map"], np.int64)
    q = (np.array(doc["queries"]["ints"], np.float64).reshape(doc["queries"]["shape"]) / scale).astype(np.float32)
    expected = dict(doc["expected"])
    if "gate_inputs" in doc:  # a gated layer's gate inputs [B, g] (Spec/RETRIEVAL.md, "Gates")
        g = doc["gate_inputs"]
        expected["gate_inputs"] = (np.array(g["ints"], np.float64).reshape(g["shape"]) / scale).astype(np.float32)
    return doc["config"], tensors, q, expected


def import_tensors(path, folder, tensors, config, **options):
    """Imports `tensors` (saved as .npy files in `folder`) with the config's choices."""
    os.makedirs(folder, exist_ok=True)
    for name, array in tensors.items():
        np.save(os.path.join(folder, name + ".npy"), array)
    pkmstore.import_(path, folder, scoring=config["scoring"], topk=config["topK"], top_m=config["topM"] or None,
                     activation=config["activation"], addressing=config["addressing"],
                     address_key=config["addressKey"] if config["addressing"] == "keyed" else None,
                     gate_activation=config.get("gateActivation") if config.get("gateDim") else None, **options)


def write_small_store(tmp_path, codec="raw"):
    """A PKM store of 1,024 rows x 16 f32 values in `codec`, and its values."""
    rng = np.random.default_rng(5)
    tensors = {"row_keys": rng.standard_normal((2, 1, 32, 8), np.float32),
               "col_keys": rng.standard_normal((2, 1, 32, 8), np.float32),
               "values": rng.standard_normal((1024, 16), np.float32)}
    config = {"scoring": "pkm", "topK": 4, "topM": 0, "activation": "softmax", "addressing": "identity", "addressKey": 0}
    path = str(tmp_path / f"small-{codec}.pkm")
    import_tensors(path, str(tmp_path / f"src-{codec}"), tensors, config, codec=codec)
    return path, tensors


@pytest.fixture
def small_store(tmp_path):
    """A PKM store of 1,024 rows x 16 f32 values (raw codec) and its values."""
    return write_small_store(tmp_path)


@pytest.fixture(scope="module")
def layered(tmp_path_factory):
    """A store of three layers built with pkmstore.import_, and the checkpoints' folder."""
    folder = str(tmp_path_factory.mktemp("layers"))
    subprocess.run([sys.executable, os.path.join(TOOLS, "make_layers.py"), folder, "--layers", "3"], check=True)
    path = os.path.join(folder, "m.pkm")
    for l in range(3):
        spec = json.load(open(os.path.join(folder, f"layer{l}.json")))
        extra = {} if l == 0 else dict(values_from_store=True, window=spec["window"], pool_offset=spec["offset"])
        pkmstore.import_(path, os.path.join(folder, f"layer{l}.safetensors"), layer=spec["name"], codec="raw", **extra)
    return path, folder

import json
import os

import numpy as np
import pytest

import pkmstore

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "..", "Spec", "golden")


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
    return doc["config"], tensors, q, doc["expected"]


def import_tensors(path, folder, tensors, config, **options):
    """Imports `tensors` (saved as .npy files in `folder`) with the config's choices."""
    os.makedirs(folder, exist_ok=True)
    for name, array in tensors.items():
        np.save(os.path.join(folder, name + ".npy"), array)
    pkmstore.import_(path, folder, scoring=config["scoring"], topk=config["topK"], top_m=config["topM"] or None,
                     activation=config["activation"], addressing=config["addressing"],
                     address_key=config["addressKey"] if config["addressing"] == "keyed" else None, **options)


@pytest.fixture
def small_store(tmp_path):
    """A PKM store of 1,024 rows x 16 f32 values (raw codec) and its values."""
    rng = np.random.default_rng(5)
    tensors = {"row_keys": rng.standard_normal((2, 1, 32, 8), np.float32),
               "col_keys": rng.standard_normal((2, 1, 32, 8), np.float32),
               "values": rng.standard_normal((1024, 16), np.float32)}
    config = {"scoring": "pkm", "topK": 4, "topM": 0, "activation": "softmax", "addressing": "identity", "addressKey": 0}
    path = str(tmp_path / "small.pkm")
    import_tensors(path, str(tmp_path / "src"), tensors, config, codec="raw")
    return path, tensors

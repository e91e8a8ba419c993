"""pkmstore.distributed (Spec/DISTRIBUTED.md): a split store's layers served by Ray actors on a
local cluster, checked against the numpy reference (Tools/make_layers.py) and the whole store,
refusing wrong parts at open, and exact while actors are killed in the middle of a stream."""
import json
import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest

import pkmstore

ray = pytest.importorskip("ray", reason="ray is not installed (Tools/bootstrap.sh installs it)")
import pkmstore.distributed as dist  # noqa: E402

LAYERS = ["block0.memory", "block1.memory", "block2.memory"]
SPLITS = {"rows3": ("rows", 3), "rows4": ("rows", 4), "dims2": ("dims", 2), "dims4": ("dims", 4)}


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def splits(layered, tmp_path_factory):
    """The layered store split every way of SPLITS, by pkmstore.distributed.split."""
    path, _ = layered
    base = tmp_path_factory.mktemp("splits")
    return {name: (dist.split(path, str(base / name), parts, by=axis), str(base / name))
            for name, (axis, parts) in SPLITS.items()}


def whole(path, name, q):
    with pkmstore.MemoryLayer(path, layer=name) as layer:
        return layer.lookup(q)


@pytest.mark.parametrize("split", sorted(SPLITS))
def test_each_layer_over_the_parts_answers_as_the_reference_and_the_store(layered, splits, split):
    path, folder = layered
    manifest, directory = splits[split]
    assert manifest["axis"] == SPLITS[split][0] and len(manifest["parts"]) == SPLITS[split][1]
    for l, name in enumerate(LAYERS):
        q = np.load(os.path.join(folder, f"queries{l}.npy"))
        o, i, w = whole(path, name, q)
        with dist.MemoryLayer(directory, layer=name) as layer:
            out, idx, wt = layer.lookup(q)
        assert np.array_equal(idx, np.load(os.path.join(folder, f"expected_indices{l}.npy")))
        expected = np.load(os.path.join(folder, f"expected_output{l}.npy"))
        assert np.abs(out - expected).max() <= 1e-5 * np.abs(expected).max()
        # Against the whole store: the same slots and weights, outputs up to the order of float sums.
        assert np.array_equal(idx, i) and np.array_equal(wt, w)
        assert np.abs(out - o).max() <= 1e-6 * np.abs(o).max(), f"{split} {name}"


def test_parts_return_sums_not_rows(layered, splits):
    path, folder = layered
    _, directory = splits["rows3"]
    q = np.load(os.path.join(folder, "queries1.npy"))
    with dist.MemoryLayer(directory, layer=LAYERS[1]) as layer:
        idx, w = layer.search(q)
        sums = layer.sums(idx, w)
        assert sums.shape == (q.shape[0], layer.expansion, layer.value_dim)
        # The store's own reduce in steps gives the same sums.
        with pkmstore.open(path) as store, pkmstore.MemoryLayer(path, layer=LAYERS[1]) as local:
            rows, proj = local.address(idx.reshape(-1))
            per = local.heads * local.top_k
            targets = (np.arange(rows.size) // per) * local.expansion + proj
            ref = store.gather_reduce(rows, w.reshape(-1, local.cores), chunks=local.cores, targets=targets,
                                      outputs=q.shape[0] * local.expansion)
        assert np.abs(sums.reshape(ref.shape) - ref).max() <= 1e-6 * np.abs(ref).max()


def test_a_part_alone_searches_but_does_not_look_up(layered, splits):
    path, folder = layered
    _, directory = splits["rows3"]
    q = np.load(os.path.join(folder, "queries0.npy"))
    with pkmstore.MemoryLayer(os.path.join(directory, "part-1.pkm"), layer=LAYERS[0]) as part:
        idx, _ = part.search(q)
        assert np.array_equal(idx, np.load(os.path.join(folder, "expected_indices0.npy")))
        with pytest.raises(pkmstore.ArgumentError, match="part 1 of 3"):
            part.lookup(q)
    with pkmstore.open(os.path.join(directory, "part-1.pkm")) as store:
        record = store.part()
        assert record["index"] == 1 and record["parts"] == 3 and record["axis"] == "rows"
        assert store.layout.rows == record["count"]
    with pkmstore.open(path) as store:
        assert store.part() is None


def broken_copy(directory, tmp_path, name):
    target = str(tmp_path / name)
    shutil.copytree(directory, target)
    return target


def test_wrong_parts_are_refused_at_open_naming_them(layered, splits, tmp_path):
    path, _ = layered
    _, directory = splits["rows3"]
    missing = broken_copy(directory, tmp_path, "missing")
    os.remove(os.path.join(missing, "part-2.pkm"))
    with pytest.raises(dist.SplitError, match="part 2 .*part-2.pkm"):
        dist.MemoryLayer(missing, layer=LAYERS[0])

    other = dist.split(path, str(tmp_path / "other"), 3)
    foreign = broken_copy(directory, tmp_path, "foreign")
    shutil.copy(str(tmp_path / "other" / "part-1.pkm"), os.path.join(foreign, "part-1.pkm"))
    with pytest.raises(dist.SplitError, match=f"part 1 .*split '{other['split']}'"):
        dist.MemoryLayer(foreign, layer=LAYERS[0])

    shifted = broken_copy(directory, tmp_path, "dims-part")
    shutil.copy(os.path.join(splits["dims4"][1], "part-1.pkm"), os.path.join(shifted, "part-1.pkm"))
    with pytest.raises(dist.SplitError, match="part 1 .*axis 'dims'"):
        dist.MemoryLayer(shifted, layer=LAYERS[0])

    not_a_part = broken_copy(directory, tmp_path, "not-a-part")
    shutil.copy(path, os.path.join(not_a_part, "part-0.pkm"))
    with pytest.raises(dist.SplitError, match="part 0 .*not a part"):
        dist.MemoryLayer(not_a_part, layer=LAYERS[0], search_part=1)

    for change, message in [(lambda m: m["parts"][1].update(first=m["parts"][1]["first"] - 1), "part 1 .*overlaps"),
                            (lambda m: m["parts"][2].update(first=m["parts"][2]["first"] + 1), "part 2 .*in no part"),
                            (lambda m: m.update(version=2), "version 2"),
                            (lambda m: m["parts"][0].update(file="../m.pkm"), "not a file name")]:
        edited = broken_copy(directory, tmp_path, f"edited{len(os.listdir(tmp_path))}")
        manifest = json.load(open(os.path.join(edited, "split.json")))
        change(manifest)
        json.dump(manifest, open(os.path.join(edited, "split.json"), "w"))
        with pytest.raises(dist.SplitError, match=message):
            dist.MemoryLayer(edited, layer=LAYERS[0])

    with pytest.raises(pkmstore.NotFoundError, match="no layer 'nope'"):
        dist.MemoryLayer(directory, layer="nope")
    with pytest.raises(dist.SplitError, match="no split.json"):
        dist.MemoryLayer(str(tmp_path), layer=LAYERS[0])


def test_split_refuses_what_it_cannot_cut(layered, tmp_path):
    path, _ = layered
    with pytest.raises(pkmstore.ArgumentError, match="divide"):
        dist.split(path, str(tmp_path / "d3"), 3, by="dims")
    with pytest.raises(pkmstore.ArgumentError, match="parts"):
        dist.split(path, str(tmp_path / "many"), 5000)
    with pytest.raises(pkmstore.ArgumentError, match="already exists"):
        dist.split(path, str(tmp_path), 2)
    with pytest.raises(pkmstore.ArgumentError, match="by must be"):
        dist.split(path, str(tmp_path / "x"), 2, by="columns")
    assert not os.path.exists(str(tmp_path / "d3")) and not os.path.exists(str(tmp_path / "d3.splitting"))


def test_actors_killed_during_a_stream_of_lookups_give_only_exact_answers(layered, splits):
    path, folder = layered
    _, directory = splits["rows3"]
    q = np.load(os.path.join(folder, "queries1.npy"))
    reference, _, _ = whole(path, LAYERS[1], q)
    answers, failures, stop = [], [], threading.Event()
    with dist.MemoryLayer(directory, layer=LAYERS[1], max_restarts=-1, max_task_retries=-1) as layer:
        before = layer.actor_pids()

        def stream():
            while not stop.is_set():
                try:
                    answers.append(layer.lookup(q)[0])
                except dist.PartError as e:  # allowed, never a wrong answer
                    failures.append(str(e))

        worker = threading.Thread(target=stream)
        worker.start()
        for victim in (1, 2, 1):
            time.sleep(0.5)
            os.kill(layer.actor_pids()[victim], signal.SIGKILL)
        time.sleep(1.0)
        seen = len(answers)
        deadline = time.time() + 60
        while len(answers) < seen + 5 and time.time() < deadline:
            time.sleep(0.1)
        stop.set()
        worker.join(120)
        after = layer.actor_pids()
    print(f"{len(answers)} answers, {len(failures)} failed lookups while 3 actors were killed")
    assert after[1] != before[1] and after[2] != before[2], "the killed actors were restarted"
    assert len(answers) >= seen + 5, f"lookups went on after the kills ({len(answers)} answers, failures {failures[:2]})"
    for out in answers:
        assert np.abs(out - reference).max() <= 1e-6 * np.abs(reference).max()


def test_a_part_that_stays_dead_fails_naming_it(layered, splits):
    _, folder = layered
    _, directory = splits["rows3"]
    q = np.load(os.path.join(folder, "queries0.npy"))
    with dist.MemoryLayer(directory, layer=LAYERS[0], max_restarts=0, max_task_retries=0) as layer:
        layer.lookup(q)
        os.kill(layer.actor_pids()[1], signal.SIGKILL)
        time.sleep(0.5)
        with pytest.raises(dist.PartError, match=r"part 1 \(part-1.pkm\)"):
            layer.lookup(q)


@pytest.mark.parametrize("split", ["rows3", "dims4"])
def test_bytes_moved_follow_the_formula(layered, splits, split):
    _, folder = layered
    manifest, directory = splits[split]
    q = np.load(os.path.join(folder, "queries1.npy"))
    with dist.MemoryLayer(directory, layer=LAYERS[1]) as layer:
        idx, _ = layer.search(q)
        layer.lookup(q)
        t = layer.traffic()
        b, n, c, e, v, p = q.shape[0], layer.heads * layer.top_k, layer.cores, layer.expansion, layer.value_dim, len(manifest["parts"])
        if manifest["axis"] == "rows":
            rows, _ = layer._search.address(idx.reshape(-1))
            touched = len({next(k for k in reversed(range(p)) if r >= manifest["parts"][k]["first"]) for r in rows})
            assert t["calls"] == touched
            assert t["bytesSent"] == b * n * (16 + 4 * c)
            assert t["bytesReceived"] == touched * b * e * v * 4
        else:
            assert t["calls"] == p
            assert t["bytesSent"] == p * b * n * (16 + 4 * max(1, c // p))
            assert t["bytesReceived"] == b * e * v * 4


def test_a_real_pytorch_pkm_served_from_a_split_store_equals_its_forward(tmp_path):
    """The product-key-memory package's PKM converted, split by rows, served by pkmstore.torch
    over Ray: its own forward's output and slots."""
    torch = pytest.importorskip("torch")
    product_key_memory = pytest.importorskip("product_key_memory")
    import pkmstore.torch
    torch.manual_seed(3)
    pkm = product_key_memory.PKM(dim=48, heads=4, num_keys=48, topk=16, dim_head=24).eval()
    captured = []
    pkm.values.register_forward_pre_hook(lambda module, args, kwargs: captured.append(args[0].clone()), with_kwargs=True)
    path = str(tmp_path / "pkm.pkm")
    pkmstore.torch.convert_pkm(pkm, path)
    dist.split(path, str(tmp_path / "pkm.split"), 3)
    with dist.MemoryLayer(str(tmp_path / "pkm.split")) as layer:
        served = pkmstore.torch.StorePKM(pkm, layer)
        x = torch.randn(3, 7, 48)
        with torch.no_grad():
            expected = pkm(x)
        got = served(x)
    assert ((got - expected).abs().max() / expected.abs().max()).item() <= 1e-5
    package = captured[0].reshape(21, 4, 16).numpy()
    assert np.array_equal(np.sort(package, axis=-1), np.sort(served.last_indices, axis=-1))


def test_a_gated_layer_over_parts_split_by_rows_answers_as_the_store(tmp_path):
    """A gated layer (Spec/RETRIEVAL.md, "Gates") split by rows: each part gates the rows it holds
    (pkm_store_gate_scores) before summing them; the answers equal the whole store's up to the
    order of float sums. A split by columns, which cannot compute a gate, is refused."""
    rng = np.random.default_rng(41)
    folder = tmp_path / "src"
    folder.mkdir()
    tensors = {"row_keys": rng.standard_normal((2, 1, 32, 8)), "col_keys": rng.standard_normal((2, 1, 32, 8)),
               "values": rng.standard_normal((1024, 12)), "gates": rng.standard_normal((1024, 5))}
    for name, a in tensors.items():
        np.save(folder / f"{name}.npy", a.astype(np.float32))
    path = str(tmp_path / "gated.pkm")
    pkmstore.import_(path, str(folder), topk=6, gate_activation="gelu", codec="raw")
    q = rng.standard_normal((7, 2, 2, 8)).astype(np.float32)
    u = rng.standard_normal((7, 5)).astype(np.float32)
    o, i, w = pkmstore.MemoryLayer(path).lookup(q, gate_input=u)
    dist.split(path, str(tmp_path / "rows"), 3, by="rows")
    with dist.MemoryLayer(str(tmp_path / "rows")) as layer:
        assert layer.gate_dim == 5 and layer.gate_activation == "gelu"
        out, idx, wt = layer.lookup(q, gate_input=u)
        # Another gate input gives another answer: the parts do apply the gate.
        doubled = layer.lookup(q, gate_input=2 * u)[0]
        with pytest.raises(pkmstore.ArgumentError, match="gate_input"):
            layer.lookup(q)
    assert np.array_equal(idx, i) and np.array_equal(wt, w)
    assert np.abs(out - o).max() <= 1e-5 * np.abs(o).max()
    assert np.abs(doubled - o).max() > 1e-2 * np.abs(o).max()
    with pytest.raises(pkmstore.PKMStoreError, match="is gated"):
        dist.split(path, str(tmp_path / "dims"), 2, by="dims")

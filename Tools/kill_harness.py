#!/usr/bin/env python3
"""Kills memtool create / import / compact / adding and removing a layer with SIGKILL at random
moments and checks the store.

    kill_harness.py --memtool PATH [--trials 200] [--seed 1] [--rows 30000] [--codec zstd]
                    [--compact-codec raw] [--json OUT.json]

--codec is the codec create and import write (bf16 rows for nibble), --compact-codec the one the
re-encoding compaction writes.

Each trial runs one writer and kills it after a delay drawn uniformly from 0 to 1.2x the time a
clean run of the same command took. Every second create and import trial instead kills the
writer once its store file has grown past a share, drawn uniformly from 0.2 to 0.9, of the file a
clean run leaves: a delay alone lands mid-write only by chance when the machine runs other work
beside the harness, and the trials that land mid-write are the ones that test most. Then it
checks, with `memtool verify` and the independent reader Tools/pkmstore_reader.py:

- create / import: the store is absent, or holds no commit yet (a creation killed before its
  first commit, which the re-run takes over), or opens and verifies with either all its content
  or a whole-shard prefix of rows equal to the clean run's rows, reported as incomplete;
- compact: the store is byte-identical to the original or is the complete compacted store;
  either way its content equals the original's;
- add-layer (`import --layer extra` into a complete store, reading its values) and
  remove-layer: the store verifies and holds exactly the old set of layers with the old content,
  or the new set with a clean run's content;
- then the same command runs again to completion (a removal only when it had not happened
  yet), and the content equals a clean run's (SHA-256 over rows, tensors and the
  retrieval records), with no leftover files.

Exit status 0 when every trial passed, 1 otherwise; a summary goes to stdout.
"""
import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

READER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pkmstore_reader.py")


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


def reader(store, *args):
    return run([sys.executable, READER, store, *args])


def digest(store):
    r = reader(store, "--digest")
    if r.returncode != 0:
        raise RuntimeError(f"python reader failed on {store}: {r.stderr.strip()}")
    value, state = r.stdout.split(maxsplit=1)
    return value, state.strip()


def rows_bytes(store):
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        r = reader(store, "--dump", f.name)
        if r.returncode != 0:
            raise RuntimeError(f"python reader failed on {store}: {r.stderr.strip()}")
        return open(f.name, "rb").read()


def file_sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class Harness:
    def __init__(self, memtool, work, rows, codec="zstd", compact_codec="raw"):
        self.memtool, self.work = memtool, work
        self.storage = ["--rows-per-shard", "256", "--commit-bytes", "131072", "--codec", codec]
        dtype = ["--dtype", "bf16"] if codec == "nibble" else []
        self.template = os.path.join(work, "template.pkm")
        self.checkpoint = os.path.join(work, "checkpoint.safetensors")
        synth = ["--synthetic", "--seed", "9", "--rows", str(rows), "--dim", "64", "--heads", "1", "--key-dim", "16", *dtype]
        self.commands = {
            "create": lambda s: [memtool, "create", s, *synth, *self.storage],
            "import": lambda s: [memtool, "import", s, "--from", self.checkpoint, *self.storage, *dtype],
            "compact": lambda s: [memtool, "compact", s, "--codec", compact_codec],
            "compact-copy": lambda s: [memtool, "compact", s],
            "add-layer": lambda s: [memtool, "import", s, "--from", self.checkpoint, "--layer", "extra"],
            "remove-layer": lambda s: [memtool, "remove-layer", s, "extra"],
        }
        # Layer changes start from a complete store: the template, or the template with the layer added.
        self.start = {"compact": self.template, "compact-copy": self.template, "add-layer": self.template}
        self.duration = {}
        start = time.monotonic()
        self.must(self.commands["create"](self.template))
        self.duration["create"] = time.monotonic() - start
        self.must([memtool, "export", self.template, "--to", self.checkpoint])
        self.expected_digest, _ = digest(self.template)
        self.expected_rows = rows_bytes(self.template)
        self.template_sha = file_sha(self.template)
        probe = os.path.join(work, "probe.pkm")
        # create and import are timed twice and the faster run kept: a first run on cold caches
        # overstates the time, and then most kills land after the writer has finished.
        self.final_bytes = {}
        for op in ["create", "import", "import"]:
            self.remove(probe)
            start = time.monotonic()
            self.must(self.commands[op](probe))
            self.duration[op] = min(self.duration.get(op, float("inf")), time.monotonic() - start)
            self.final_bytes[op] = os.path.getsize(probe)
        if digest(probe)[0] != self.expected_digest:
            raise RuntimeError("a clean import of the exported memory differs from the memory")
        for op in ["compact", "compact-copy"]:
            self.remove(probe)
            shutil.copyfile(self.template, probe)
            start = time.monotonic()
            self.must(self.commands[op](probe))
            self.duration[op] = time.monotonic() - start
            if digest(probe)[0] != self.expected_digest:
                raise RuntimeError(f"a clean {op} changed the content")
        self.layered = os.path.join(work, "layered.pkm")
        shutil.copyfile(self.template, self.layered)
        start = time.monotonic()
        self.must(self.commands["add-layer"](self.layered))
        self.duration["add-layer"] = time.monotonic() - start
        self.layered_digest, _ = digest(self.layered)
        self.start["remove-layer"] = self.layered
        self.remove(probe)
        shutil.copyfile(self.layered, probe)
        start = time.monotonic()
        self.must(self.commands["remove-layer"](probe))
        self.duration["remove-layer"] = time.monotonic() - start
        if digest(probe)[0] != self.expected_digest:
            raise RuntimeError("adding a layer and removing it again changed the content")
        self.remove(probe)

    def must(self, cmd):
        r = run(cmd)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.strip()}")

    @staticmethod
    def remove(store):
        for suffix in ["", "-lock", ".compacting", ".compacting-lock"]:
            if os.path.exists(store + suffix):
                os.remove(store + suffix)

    def trial(self, op, delay, grown_past=None):
        """Kills the writer after `delay` seconds, or once its store file is `grown_past` bytes
        or more when that is given. Returns (outcome, problem or None)."""
        store = os.path.join(self.work, "trial.pkm")
        self.remove(store)
        if op in self.start:
            shutil.copyfile(self.start[op], store)
        cmd = self.commands[op](store)
        child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if grown_past is None:
            time.sleep(delay)
        else:
            while child.poll() is None and not (os.path.exists(store) and os.path.getsize(store) >= grown_past):
                time.sleep(0.0002)
        killed = child.poll() is None
        if killed:
            child.send_signal(signal.SIGKILL)
        child.wait()
        outcome = self.inspect_killed(op, store) if killed else "finished before the kill"
        if outcome.startswith("FAIL"):
            return outcome, outcome
        expected = {"add-layer": self.layered_digest}.get(op, self.expected_digest)
        # Re-running a finished import is a no-op; removing a removed layer is refused, so it is not re-run.
        if not (op == "remove-layer" and digest(store)[0] == expected):
            rerun = run(cmd)
            if rerun.returncode != 0:
                return outcome, f"the re-run failed: {rerun.stderr.strip()}"
        if run([self.memtool, "verify", store]).returncode != 0:
            return outcome, "verify failed after the re-run"
        if digest(store) != (expected, "complete"):
            return outcome, "the re-run's content differs from a clean run's"
        leftovers = [s for s in [".compacting", ".compacting-lock"] if os.path.exists(store + s)]
        if leftovers:
            return outcome, f"leftover files after the re-run: {leftovers}"
        return outcome, None

    def inspect_killed(self, op, store):
        if not os.path.exists(store):
            return "killed before the store existed"
        verify = run([self.memtool, "verify", store])
        if verify.returncode != 0:
            if not op.startswith("compact") and "interrupted" in verify.stderr:
                return "killed before the first commit"
            return f"FAIL: verify after the kill: {verify.stderr.strip() or verify.stdout.strip()}"
        value, state = digest(store)
        if op.endswith("-layer"):
            layers = reader(store, "--layers").stdout.split("\n")
            names = [line.split(" ", 1)[0] for line in layers if line]
            if value == self.expected_digest and names == ["default"]:
                return "without the layer"
            if value == self.layered_digest and names == ["default", "extra"]:
                return "with the layer"
            return f"FAIL: layers {names} with content {'of neither set' if value not in (self.expected_digest, self.layered_digest) else 'of the other set'}"
        if op.startswith("compact"):
            if value != self.expected_digest:
                return "FAIL: the store's content changed"
            return "original intact" if file_sha(store) == self.template_sha else "compacted store in place"
        if state == "complete":
            return "complete" if value == self.expected_digest else "FAIL: complete with different content"
        committed = rows_bytes(store)
        if self.expected_rows[:len(committed)] != committed:
            return "FAIL: the committed prefix differs from the clean run's rows"
        return "incomplete prefix"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--memtool", required=True)
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rows", type=int, default=30000)
    ap.add_argument("--codec", default="zstd", choices=["raw", "zstd", "nibble"])
    ap.add_argument("--compact-codec", default="raw", choices=["raw", "zstd", "nibble"])
    ap.add_argument("--json")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = tempfile.mkdtemp(prefix="pkm-kill-")
    try:
        h = Harness(os.path.abspath(args.memtool), work, args.rows, args.codec, args.compact_codec)
        ops = ["create", "import", "compact", "compact-copy", "add-layer", "remove-layer"]
        outcomes, failures = {op: {} for op in ops}, []
        for t in range(args.trials):
            op = ops[t % len(ops)]
            delay = rng.uniform(0, 1.2 * h.duration[op])
            grown_past = None
            if op in ("create", "import") and (t // len(ops)) % 2 == 1:
                grown_past = int(rng.uniform(0.2, 0.9) * h.final_bytes[op])
            outcome, problem = h.trial(op, delay, grown_past)
            outcomes[op][outcome] = outcomes[op].get(outcome, 0) + 1
            if problem:
                moment = f"at {grown_past} bytes" if grown_past else f"after {delay:.3f} s"
                failures.append({"trial": t, "op": op, "killed": moment, "problem": problem})
                print(f"trial {t} ({op}, killed {moment}): {problem}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {"trials": args.trials, "seed": args.seed, "rows": args.rows, "codec": args.codec, "compact_codec": args.compact_codec,
               "clean_seconds": {k: round(v, 3) for k, v in h.duration.items()},
               "outcomes": outcomes, "failures": failures}
    for op in ops:
        print(f"{op:13s} " + ", ".join(f"{n} {o}" for o, n in sorted(outcomes[op].items())))
    print(f"{args.trials} trials, {len(failures)} failed")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A split store served by Ray actors against the single store, in one session (Spec/DISTRIBUTED.md).

    python3 Tools/bench_distributed.py WORKDIR [--rows 1048576] [--wide-rows 65536] [--seconds 2]

Builds (with the release memtool, once) two synthetic raw-codec stores: the bench layer (PKM,
H 4, k 32, d 128, v 64 bf16) and a wide one (v 1024), splits each by rows into 1, 2 and 4 parts
and the wide one also by dims, starts a local Ray cluster (num_cpus = the machine's cores), and
for batches of 1, 32 and 256 uniform queries measures, in the same run: the single store's
`pkmstore.MemoryLayer.lookup`, the distributed lookup (lookups/s, p50 and p99 per call), the
bytes moved per query (counted on the arrays sent and received, beside the formula), Ray's
round trip for an empty actor call, and each part's own time for its partial sums (the
PartServer called in this process, no Ray). Prints a markdown table and a cluster estimate from
the measured rates; writes WORKDIR/distributed.json.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def timed(fn, seconds, at_least=5):
    """Latencies (s) of calls of fn repeated for `seconds` after one warm call."""
    fn()
    out, start = [], time.perf_counter()
    while len(out) < at_least or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return np.array(out)


def in_flight(fn, seconds, threads):
    """Calls per second of fn with `threads` calls in flight at once (one per thread)."""
    import threading
    counts, stop = [0] * threads, threading.Event()

    def loop(i):
        while not stop.is_set():
            fn()
            counts[i] += 1
    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    start = time.perf_counter()
    for t in workers:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in workers:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def summary(lat, batch):
    return {"lookupsPerSecond": batch * len(lat) / lat.sum(), "p50Milliseconds": 1e3 * float(np.percentile(lat, 50)),
            "p99Milliseconds": 1e3 * float(np.percentile(lat, 99))}


def make_store(memtool, path, rows, dim):
    if os.path.exists(path):
        return
    side = 1 << ((rows.bit_length() - 1) // 2)
    subprocess.run([memtool, "create", path, "--synthetic", "--rows", str(rows), "--grid", f"{side}x{rows // side}", "--dim", str(dim),
                    "--scoring", "pkm", "--heads", "4", "--key-dim", "128", "--topk", "32", "--codec", "raw"],
                   check=True, stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workdir")
    ap.add_argument("--rows", type=int, default=1 << 20)
    ap.add_argument("--wide-rows", type=int, default=1 << 16)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--batches", default="1,32,256")
    ap.add_argument("--in-flight", type=int, default=4, help="lookups kept in flight at once for the throughput column")
    args = ap.parse_args()

    import ray
    import pkmstore
    import pkmstore.distributed as dist

    os.makedirs(args.workdir, exist_ok=True)
    memtool = os.path.join(ROOT, ".build", "release", "memtool")
    stores = {"v64": (os.path.join(args.workdir, "v64.pkm"), args.rows, 64, [("rows", 1), ("rows", 2), ("rows", 4)]),
              "v1024": (os.path.join(args.workdir, "v1024.pkm"), args.wide_rows, 1024,
                        [("rows", 1), ("rows", 2), ("rows", 4), ("dims", 2), ("dims", 4)])}
    cores = os.cpu_count()
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    batches = [int(b) for b in args.batches.split(",")]
    rng = np.random.default_rng(0)
    report = {"machine": f"{cores} cores", "ray": ray.__version__, "pkmstore": pkmstore.version(), "inFlight": args.in_flight, "runs": []}

    # Ray's own cost: the round trip of an empty call to an actor.
    @ray.remote(num_cpus=0)
    class Echo:
        def ping(self):
            return None
    echo = Echo.remote()
    ray.get(echo.ping.remote())
    report["rayRoundTripMilliseconds"] = summary(timed(lambda: ray.get(echo.ping.remote()), 1.0), 1)["p50Milliseconds"]
    ray.kill(echo)

    for name, (path, rows, dim, splits) in stores.items():
        make_store(memtool, path, rows, dim)
        local = pkmstore.MemoryLayer(path)
        n = local.heads * local.top_k
        for batch in batches:
            q = rng.standard_normal((batch, local.heads, 2, local.key_dim)).astype(np.float32)
            single = summary(timed(lambda: local.lookup(q), args.seconds), batch)
            single["inFlightLookupsPerSecond"] = batch * in_flight(lambda: local.lookup(q), args.seconds, args.in_flight)
            search = summary(timed(lambda: local.search(q), args.seconds / 2), batch)
            row = {"store": name, "rows": rows, "dim": dim, "batch": batch, "single": single, "search": search, "splits": []}
            for axis, parts in splits:
                directory = os.path.join(args.workdir, f"{name}-{axis}{parts}")
                if not os.path.exists(directory):
                    dist.split(path, directory, parts, by=axis)
                with dist.MemoryLayer(directory) as layer:
                    out, _, _ = layer.lookup(q)
                    ref, _, _ = local.lookup(q)
                    error = float(np.abs(out - ref).max() / np.abs(ref).max())
                    before = layer.traffic()
                    measured = summary(timed(lambda: layer.lookup(q), args.seconds), batch)
                    after = layer.traffic()
                    queries = after["queries"] - before["queries"]
                    sent = (after["bytesSent"] - before["bytesSent"]) / queries
                    received = (after["bytesReceived"] - before["bytesReceived"]) / queries
                    calls = (after["calls"] - before["calls"]) / (queries / batch)
                    concurrent = batch * in_flight(lambda: layer.lookup(q), args.seconds, args.in_flight)
                # Each part's own work for this batch, without Ray: the PartServer in this process.
                manifest = dist.read_manifest(directory)
                idx, w = local.search(q)
                addr, proj = local.address(idx.reshape(-1))
                targets = (np.arange(addr.size) // n) * local.expansion + proj
                part_ms = []
                for k, entry in enumerate(manifest["parts"]):
                    server = dist.PartServer(os.path.join(directory, entry["file"]), dist._expected_record(manifest, k), manifest["layers"])
                    if axis == "rows":
                        m = (addr >= entry["first"]) & (addr < entry["first"] + entry["count"])
                        call = (addr[m] - entry["first"], np.ascontiguousarray(w.reshape(-1, 1)[m]), 1, targets[m], batch)
                    else:
                        call = (addr, np.ascontiguousarray(w.reshape(-1, 1)), 1, targets, batch)
                    part_ms.append(summary(timed(lambda: server.sums(*call), args.seconds / 4), batch)["p50Milliseconds"])
                    server.store.close()
                touched = min(parts, calls)
                formula_sent = n * 20 if axis == "rows" else parts * n * 20
                formula_received = touched * dim * 4 if axis == "rows" else dim * 4
                measured["inFlightLookupsPerSecond"] = concurrent
                row["splits"].append({"axis": axis, "parts": parts, "lookup": measured, "maxRelativeError": error,
                                      "bytesSentPerQuery": sent, "bytesReceivedPerQuery": received, "callsPerBatch": calls,
                                      "formulaBytesSentPerQuery": formula_sent, "formulaBytesReceivedPerQuery": formula_received,
                                      "partSumsP50Milliseconds": part_ms})
                print(f"{name} b{batch} {axis}{parts}: {measured['lookupsPerSecond']:.0f} lookups/s, p50 {measured['p50Milliseconds']:.2f} ms "
                      f"(single {single['lookupsPerSecond']:.0f}/s, {single['p50Milliseconds']:.2f} ms), "
                      f"{(sent + received) / 1024:.1f} KiB/query, error {error:.1e}", file=sys.stderr)
            report["runs"].append(row)
        local.close()
    ray.shutdown()
    json.dump(report, open(os.path.join(args.workdir, "distributed.json"), "w"), indent=1)
    print_tables(report)
    print_estimate(report)


def print_tables(report):
    print(f"Ray round trip of an empty actor call: {report['rayRoundTripMilliseconds']:.3f} ms p50 ({report['machine']}, ray {report['ray']})\n")
    f = report["inFlight"]
    print(f"| store | batch | single store lookups/s (p50 / p99 ms) | {f} in flight | split | parts | lookups/s (p50 / p99 ms) | {f} in flight | "
          "vs single (1 / {f} in flight) | KiB sent + received per query (formula) | slowest part's sums p50 | max rel. error |".replace("{f}", str(f)))
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in report["runs"]:
        s = r["single"]
        for x in r["splits"]:
            m = x["lookup"]
            print(f"| {r['store']} ({r['rows']} x {r['dim']}) | {r['batch']} | {s['lookupsPerSecond']:,.0f} ({s['p50Milliseconds']:.2f} / "
                  f"{s['p99Milliseconds']:.2f}) | {s['inFlightLookupsPerSecond']:,.0f} | {x['axis']} | {x['parts']} | "
                  f"{m['lookupsPerSecond']:,.0f} ({m['p50Milliseconds']:.2f} / {m['p99Milliseconds']:.2f}) | {m['inFlightLookupsPerSecond']:,.0f} | "
                  f"{m['lookupsPerSecond'] / s['lookupsPerSecond']:.2f} / {m['inFlightLookupsPerSecond'] / s['inFlightLookupsPerSecond']:.2f} | "
                  f"{x['bytesSentPerQuery'] / 1024:.2f} + {x['bytesReceivedPerQuery'] / 1024:.2f} "
                  f"({x['formulaBytesSentPerQuery'] / 1024:.2f} + {x['formulaBytesReceivedPerQuery'] / 1024:.2f}) | "
                  f"{max(x['partSumsP50Milliseconds']):.3f} ms | {x['maxRelativeError']:.1e} |")


def print_estimate(report, hosts=8, gbits=25.0):
    """A cluster of `hosts` part hosts on `gbits` Gb/s links, from this run's measured parts: the
    bytes per query of Spec/DISTRIBUTED.md with P = hosts (every part touched), each part's sums
    time scaled from the 4-part run (a part sums 1/P of the work either way), the caller's search
    and Ray's round trip as measured here."""
    link = gbits * 1e9 / 8
    print(f"\nEstimate for {hosts} hosts, one part each, on {gbits:g} Gb/s links (largest batch of the run):\n")
    print("| store | split | bytes per query | caller link limit (q/s) | parts' limit (q/s) | caller search limit (q/s) | "
          "latency per batch (search + Ray + part + wire) | estimate (q/s) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in report["runs"]:
        if r["batch"] != max(x["batch"] for x in report["runs"]):
            continue
        b, dim, n = r["batch"], r["dim"], 4 * 32
        for x in r["splits"]:
            if x["parts"] != 4:
                continue
            sent = n * 20 if x["axis"] == "rows" else hosts * n * 20
            received = hosts * dim * 4 if x["axis"] == "rows" else dim * 4
            per_query = sent + received
            part_s = max(x["partSumsP50Milliseconds"]) / 1e3 * 4 / hosts
            search_rate = r["search"]["lookupsPerSecond"]
            latency = b / search_rate + report["rayRoundTripMilliseconds"] / 1e3 + part_s + b * per_query / link
            limits = (link / per_query, b / part_s, search_rate)
            print(f"| {r['store']} | {x['axis']} | {per_query / 1024:.1f} KiB | {limits[0]:,.0f} | {limits[1]:,.0f} | {limits[2]:,.0f} | "
                  f"{latency * 1e3:.2f} ms | {min(limits):,.0f} |")


if __name__ == "__main__":
    main()

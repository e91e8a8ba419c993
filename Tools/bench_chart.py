#!/usr/bin/env python3
"""Draws lookups/s against table size from Tools/bench_suite.sh results, as an SVG (no plotting library),
and prints the same results as Markdown tables for BENCHMARKS.md.

    bench_chart.py RESULTS_DIR OUT.svg
"""
import glob
import json
import math
import os
import sys

results, out = sys.argv[1], sys.argv[2]


def series(prefix, key):
    points = []
    for path in glob.glob(os.path.join(results, f"{prefix}-*.json")):
        e = int(path.rsplit("-", 1)[1].split(".")[0])
        value = json.load(open(path)).get(key)
        if value:
            points.append((e, value))
    return sorted(points)


lines = [
    ("store lookup, warm", series("warm", "lookupQueriesPerSecond"), "#1f77b4", ""),
    ("store lookup-reduce, warm", series("warm", "reduceQueriesPerSecond"), "#2ca02c", ""),
    ("upper bound reduce (flat, uncompressed), warm", series("warm", "upperBoundReduceQueriesPerSecond"), "#2ca02c", "6,4"),
    ("store search, warm", series("warm", "searchQueriesPerSecond"), "#9467bd", ""),
    ("FAISS MultiIndexQuantizer search", series("faiss", "queries_per_second"), "#9467bd", "6,4"),
    ("numpy memmap lookup-reduce", series("numpy", "queries_per_second"), "#8c564b", "2,3"),
    ("store lookup, cold", series("cold", "lookupQueriesPerSecond"), "#d62728", ""),
    ("upper bound reduce, cold", series("cold", "upperBoundReduceQueriesPerSecond"), "#d62728", "6,4"),
]
W, H, L, R, T, B = 960, 560, 80, 380, 40, 60
xs = [e for _, pts, _, _ in lines for e, _ in pts]
ys = [v for _, pts, _, _ in lines for _, v in pts]
if not xs:
    sys.exit("no results found in " + results)
codec = next((json.load(open(p)).get("codec") for p in sorted(glob.glob(os.path.join(results, "warm-*.json")))), None)
x0, x1 = min(xs), max(xs)
y0, y1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
px = lambda e: L + (e - x0) / max(1, x1 - x0) * (W - L - R)
py = lambda v: T + (y1 - math.log10(v)) / max(1, y1 - y0) * (H - T - B)
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{L}" y="22" font-size="15">Queries per second against table size (PKM, H=4, d=128, k=32, 64 bf16 per row, {codec or "?"} shards; 2 cores)</text>']
for p in range(y0, y1 + 1):
    y = py(10 ** p)
    svg.append(f'<line x1="{L}" y1="{y}" x2="{W - R}" y2="{y}" stroke="#ddd"/><text x="{L - 8}" y="{y + 4}" text-anchor="end">1e{p}</text>')
for e in range(x0, x1 + 1, 2):
    x = px(e)
    svg.append(f'<line x1="{x}" y1="{T}" x2="{x}" y2="{H - B}" stroke="#eee"/><text x="{x}" y="{H - B + 18}" text-anchor="middle">2^{e}</text>')
svg.append(f'<text x="{(L + W - R) / 2}" y="{H - 15}" text-anchor="middle">virtual slots</text>')
svg.append(f'<text x="20" y="{(T + H - B) / 2}" transform="rotate(-90 20 {(T + H - B) / 2})" text-anchor="middle">queries/s (log scale)</text>')
for i, (name, pts, color, dash) in enumerate(lines):
    if not pts:
        continue
    path = " ".join(f"{'M' if j == 0 else 'L'}{px(e):.1f},{py(v):.1f}" for j, (e, v) in enumerate(pts))
    svg.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>')
    for e, v in pts:
        svg.append(f'<circle cx="{px(e):.1f}" cy="{py(v):.1f}" r="3" fill="{color}"/>')
    ly = T + 10 + 22 * i
    svg.append(f'<line x1="{W - R + 15}" y1="{ly}" x2="{W - R + 45}" y2="{ly}" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>'
               f'<text x="{W - R + 52}" y="{ly + 4}">{name}</text>')
svg.append("</svg>")
open(out, "w").write("\n".join(svg))
print(f"wrote {out}\n")


def load(prefix, e):
    path = os.path.join(results, f"{prefix}-{e}.json")
    return json.load(open(path)) if os.path.exists(path) else {}


def f(x, fmt="{:,.0f}"):
    return "–" if x is None else fmt.format(x)


sizes = sorted({e for e, _ in series("warm", "queries")})
print("| slots | search q/s | FAISS search q/s | lookup q/s | reduce q/s | upper bound q/s | reduce / upper bound | cache hits | numpy peer q/s | brute force q/s (speed-up) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for e in sizes:
    w, fa, npy = load("warm", e), load("faiss", e), load("numpy", e)
    brute = w.get("bruteForceQueriesPerSecond")
    speed = f" ({w['searchQueriesPerSecond'] / brute:,.0f}x)" if brute else ""
    print(f"| 2^{e} | {f(w.get('searchQueriesPerSecond'))} | {f(fa.get('queries_per_second'))} | {f(w.get('lookupQueriesPerSecond'))} | "
          f"{f(w.get('reduceQueriesPerSecond'))} | {f(w.get('upperBoundReduceQueriesPerSecond'))} | {f(w.get('reduceToUpperBound'), '{:.2f}')} | "
          f"{f(w.get('cacheHitRate') and 100 * w['cacheHitRate'], '{:.1f}%')} | {f(npy.get('queries_per_second'))} | {f(brute)}{speed} |")
print()
disk = os.path.join(results, "disk.json")
qd32 = json.load(open(disk))["fio_randread_4k_qd32"] if os.path.exists(disk) else None
print("| slots | cold lookup q/s | cold reduce q/s | rows/s | rows/s ÷ disk QD32 | cold upper bound q/s | reduce / upper bound | disk bytes per query | disk reads/s (4 KiB) | peak RSS |")
print("|---|---|---|---|---|---|---|---|---|---|")
for e in sizes:
    c = load("cold", e)
    if not c:
        continue
    rows = c.get("rowsPerSecond")
    print(f"| 2^{e} | {f(c.get('lookupQueriesPerSecond'))} | {f(c.get('reduceQueriesPerSecond'))} | {f(rows)} | "
          f"{f(rows and qd32 and rows / qd32, '{:.2f}')} | {f(c.get('upperBoundReduceQueriesPerSecond'))} | "
          f"{f(c.get('reduceToUpperBound'), '{:.2f}')} | {f(c.get('diskBytesPerQuery'))} | {f(c.get('diskReadsPerSecond'))} | "
          f"{f(c.get('peakRSSBytes') and c['peakRSSBytes'] / 2**30, '{:.2f} GiB')} |")
if qd32:
    d = json.load(open(disk))
    print(f"\nDisk (fio, 4 KiB random reads, direct I/O): {d['fio_randread_4k_qd1']:,} reads/s at queue depth 1, {d['fio_randread_4k_qd32']:,} at 32.")

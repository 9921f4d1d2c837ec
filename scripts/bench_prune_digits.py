"""Digits pruning benchmark (issue 3): runs recipes/digits_prune.yaml, then re-times the fp32
baseline against each pruned .tflite in interleaved rounds. Writes benchmarks/prune_digits.md.

    python scripts/bench_prune_digits.py [--rounds 5] [--out runs/bench_prune]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pipeline  # noqa: E402,F401


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default="/tmp/edgepipe-bench-prune")
    args = ap.parse_args()
    from edge_runner.bench import benchmark
    from pipeline import engine, recipe

    load = os.getloadavg()[0]
    rfile = ROOT / "recipes" / "digits_prune.yaml"
    t0 = time.perf_counter()
    engine.run(recipe.load(rfile), args.out, force=True)
    wall = time.perf_counter() - t0
    rep = json.loads((Path(args.out) / "report.json").read_text())
    rows = [r for r in rep["artifacts"] if r["format"] == "tflite"]
    base = rows[0]
    p50 = {r["path"]: [] for r in rows}
    for _ in range(args.rounds):
        for r in rows:
            b = benchmark(Path(args.out) / r["path"], threads=1, warmup=20, min_runs=200,
                          min_seconds=0.5)
            p50[r["path"]].append(b["latency_ms"]["p50"])
    ratio = {k: statistics.median(b / v for b, v in zip(p50[base["path"]], p50[k])) for k in p50}
    lines = ["## Pruning on digits (issue 3)", "",
             f"Command: `python scripts/bench_prune_digits.py --rounds {args.rounds}` (runs "
             f"`recipes/digits_prune.yaml`, {wall:.0f} s; load average {load:.1f} at start). "
             f"Accuracy is each .tflite's on the test split (359 images; 1 image = 0.28 points). "
             f"Speed-up: median over {args.rounds} interleaved rounds of the baseline p50 / this "
             f"file's p50, 1 thread.", "",
             "| file | quant | params | nonzero | gzip KB | accuracy | Δ vs baseline (points) "
             "| speed-up vs fp32 baseline | gzip ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['path']} | {r['quantization']} | {r['params']:,} | {r['nonzero_params']:,} | "
            f"{r['gzip_bytes'] / 1024:.1f} | {r['accuracy']:.4f} | "
            f"{(r['accuracy'] - base['accuracy']) * 100:+.2f} | {ratio[r['path']]:.2f}x | "
            f"{base['gzip_bytes'] / r['gzip_bytes']:.1f}x |")
    chan = next((r for r in rep["artifacts"] if r.get("channels")), None)
    if chan:
        lines += ["", "Channels after structured pruning (layer: before → after): " + ", ".join(
            f"{c['layer']}: {c.get('out_before', c.get('before'))} → "
            f"{c.get('out_after', c.get('after'))}" for c in chan["channels"]
            if isinstance(c, dict) and "layer" in c)]
    lines.append("")
    (ROOT / "benchmarks" / "prune_digits.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

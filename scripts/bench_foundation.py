"""Benchmark of the foundation (issue 2); writes benchmarks/foundation.md.

1. The default recipe end to end: wall time of a fresh run and of an unchanged re-run (both as
   the `edgepipe` command a user types), and the digits accuracy of the fp32 and int8 .tflite.
2. keras.applications.MobileNetV2 224x224 (weights=None) exported fp32 / float16 / dynamic / int8
   and timed with edge-runner at 1 and 2 threads, the formats interleaved round by round.

    python scripts/bench_foundation.py [--rounds 3] [--skip-recipe] [--skip-mobilenet]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pipeline  # noqa: E402,F401


def load_note() -> str:
    la = os.getloadavg()
    return f"load average at start {la[0]:.2f} on {os.cpu_count()} cores"


def bench_recipe() -> list[str]:
    out = Path(tempfile.mkdtemp(prefix="edgepipe-bench-"))
    exe = [sys.executable, "-m", "pipeline.cli", "run", str(ROOT / "recipes" / "digits.yaml"),
           "--out", str(out)]
    t0 = time.perf_counter()
    subprocess.run(exe, check=True, capture_output=True)
    fresh = time.perf_counter() - t0
    t0 = time.perf_counter()
    rerun = subprocess.run(exe, check=True, capture_output=True, text=True)
    again = time.perf_counter() - t0
    skipped = rerun.stderr.count("up to date, skipped")
    rep = json.loads((out / "report.json").read_text())
    rows = {r["quantization"]: r for r in rep["artifacts"] if r["format"] == "tflite"}
    fp32, int8 = rows["fp32"], rows["int8"]
    shutil.rmtree(out)
    return [
        "## Default recipe (`recipes/digits.yaml`), end to end",
        "",
        "| measure | value | goal |",
        "|---|---|---|",
        f"| fresh run, wall time | {fresh:.1f} s | ≤ 180 s |",
        f"| unchanged re-run, wall time | {again:.1f} s ({skipped} of {len(rep['stages']) + 1} stages "
        f"skipped) | ≤ 20 s, no stage re-run |",
        f"| fp32 .tflite accuracy (digits test split) | {fp32['accuracy'] * 100:.2f}% | ≥ 97% |",
        f"| int8 .tflite accuracy | {int8['accuracy'] * 100:.2f}% "
        f"({(int8['accuracy'] - fp32['accuracy']) * 100:+.2f} points) | within 1 point of fp32 |",
        f"| fp32 / int8 size (gzip) | {fp32['size_bytes'] / 1024:.0f} KB ({fp32['gzip_bytes'] / 1024:.0f})"
        f" / {int8['size_bytes'] / 1024:.0f} KB ({int8['gzip_bytes'] / 1024:.0f}) | |",
        f"| fp32 / int8 host p50 (1 thread) | {fp32['latency_ms']['host']['p50']:.3f} ms / "
        f"{int8['latency_ms']['host']['p50']:.3f} ms | |",
        "",
    ]


def bench_mobilenet(rounds: int) -> list[str]:
    import numpy as np

    from edge_runner.bench import benchmark
    from pipeline import models, tflite
    from pipeline.artifacts import sizes

    model = models.from_spec("keras.applications.MobileNetV2", (224, 224, 3), 1000)
    calib = np.random.default_rng(0).random((16, 224, 224, 3), dtype=np.float32)
    folder = Path(tempfile.mkdtemp(prefix="edgepipe-mnv2-"))
    modes = ["fp32", "float16", "dynamic", "int8"]
    paths = {}
    for m in modes:
        paths[m] = folder / f"mnv2_{m}.tflite"
        paths[m].write_bytes(tflite.convert(model, m, calib))
    p50 = {(m, t): [] for m in modes for t in (1, 2)}
    for _ in range(rounds):  # interleaved: every format once per round, so drift hits all alike
        for t in (1, 2):
            for m in modes:
                b = benchmark(paths[m], threads=t, warmup=5, min_runs=20, min_seconds=2.0)
                p50[(m, t)].append(b["latency_ms"]["p50"])
    med = {k: statistics.median(v) for k, v in p50.items()}
    lines = ["## keras.applications.MobileNetV2 224×224 (weights=None), host, edge-runner p50",
             "", f"Median over {rounds} interleaved rounds of p50s (each ≥ 20 runs and ≥ 2 s).", "",
             "| format | size MB | gzip MB | p50 1 thread (ms) | vs fp32 | p50 2 threads (ms) | vs fp32 |",
             "|---|---|---|---|---|---|---|"]
    for m in modes:
        s = sizes(paths[m])
        lines.append(f"| {m} | {s['size_bytes'] / 1e6:.2f} | {s['gzip_bytes'] / 1e6:.2f} | "
                     f"{med[(m, 1)]:.2f} | {med[('fp32', 1)] / med[(m, 1)]:.2f}x | "
                     f"{med[(m, 2)]:.2f} | {med[('fp32', 2)] / med[(m, 2)]:.2f}x |")
    shutil.rmtree(folder)
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-recipe", action="store_true")
    ap.add_argument("--skip-mobilenet", action="store_true")
    args = ap.parse_args()
    lines = ["# Foundation (issue 2)", "",
             f"Command: `python scripts/bench_foundation.py --rounds {args.rounds}`; "
             f"{load_note()}; measured {time.strftime('%Y-%m-%d')}.", ""]
    if not args.skip_recipe:
        lines += bench_recipe()
    if not args.skip_mobilenet:
        lines += bench_mobilenet(args.rounds)
    dest = ROOT / "benchmarks" / "foundation.md"
    dest.parent.mkdir(exist_ok=True)
    dest.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

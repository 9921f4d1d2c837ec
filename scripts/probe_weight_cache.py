"""Probe: does a whole model run slower than its ops timed alone once their weights, each small
enough for the L2 cache, no longer fit in it together? (Why the latency predictor under-predicts
the deep keras.applications MobileNetV2s: benchmarks/latency.md.)

    python scripts/probe_weight_cache.py

Builds chains of 1x1 convolutions (c -> e -> c, repeated, every op with its own weights), fills a
fresh latency table with their ops exactly as `edgepipe latency table` does, times the whole chain
the same way, and prints whole / sum of its ops timed alone for chains of growing weight bytes
(fp32, 1 thread, fastest invoke of 6 interleaved passes).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pipeline  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

#: (spatial size, narrow, wide channels): 8, 216 and 480 KiB of weights per op (L2 here: 512 KiB)
CHAINS = [(8, 32, 64), (8, 96, 576), (4, 128, 960)]
REPEATS = 8


def main() -> int:
    import tf_keras as keras

    from pipeline.latency import Timing
    from pipeline.latency.build import fill, measure_model
    from pipeline.latency.measure import HostTarget
    from pipeline.latency.ops import signatures
    from pipeline.latency.table import Table

    L = keras.layers
    target = HostTarget(Timing(warmup=5, min_runs=20, min_seconds=0.15, rounds=6), "fp32")
    with tempfile.TemporaryDirectory(prefix="edgepipe-probe-") as tmp:
        table = Table.open(Path(tmp) / "table.json", target.identity)
        for hw, c, e in CHAINS:
            i = keras.Input((hw, hw, c))
            x = i
            for _ in range(REPEATS):
                x = L.Conv2D(c, 1, activation="relu")(L.Conv2D(e, 1, activation="relu")(x))
            chain = keras.Model(i, x)
            fill(table, signatures(chain), target)
            s = measure_model(table, chain, target, f"chain {hw} {c} {e}")
            alone = table.lookup(s["ops"], "min_ms")
            print(f"{hw}x{hw}, {c}<->{e} x{REPEATS}: {c * e * 4 / 1024:.0f} KiB of weights per op, "
                  f"{2 * REPEATS * c * e * 4 / 2**20:.1f} MiB in all; whole {s['min_ms']:.3f} ms, "
                  f"ops alone {alone:.3f} ms: whole / sum {s['min_ms'] / alone:.2f}", flush=True)
            keras.backend.clear_session()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

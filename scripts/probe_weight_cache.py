"""Probe: does a whole model run slower than its ops timed alone once their weights, each small
enough for the L2 cache alone, no longer fit together? (Why the latency predictor under-predicts
the deep keras.applications MobileNetV2s: benchmarks/latency.md.)

    python scripts/probe_weight_cache.py

Builds chains of 1x1 convolutions (c -> e -> c, repeated, every op with its own weights), times
each distinct op alone and the whole chain with edge-runner (fp32, 1 thread, fastest invoke of 6
interpreters), and prints whole / sum of ops alone for chains of growing weight bytes.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pipeline  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

CHAINS = [(8, 32, 64), (8, 96, 576), (4, 160, 960)]  # (spatial size, narrow, wide channels)
REPEATS = 8


def fastest(model, tmp: Path) -> float:
    from edge_runner.bench import benchmark

    from pipeline.latency.build import convert

    p = tmp / "m.tflite"
    p.write_bytes(convert(model, "fp32"))
    return min(benchmark(p, threads=1, warmup=5, min_runs=20, min_seconds=0.15)["latency_ms"]["min"]
               for _ in range(6))


def main() -> int:
    import tf_keras as keras

    L = keras.layers
    with tempfile.TemporaryDirectory(prefix="edgepipe-probe-") as tmp:
        for hw, c, e in CHAINS:
            def conv(cin, cout):
                i = keras.Input((hw, hw, cin))
                return keras.Model(i, L.Conv2D(cout, 1, activation="relu")(i))
            alone = fastest(conv(c, e), Path(tmp)) + fastest(conv(e, c), Path(tmp))
            i = keras.Input((hw, hw, c))
            x = i
            for _ in range(REPEATS):
                x = L.Conv2D(c, 1, activation="relu")(L.Conv2D(e, 1, activation="relu")(x))
            whole = fastest(keras.Model(i, x), Path(tmp))
            total = REPEATS * alone
            print(f"{hw}x{hw}, {c}<->{e} x{REPEATS}: {c * e * 4 / 1e3:.0f} KB of weights per op, "
                  f"{2 * REPEATS * c * e * 4 / 1e6:.1f} MB in all; whole {whole:.3f} ms, ops alone "
                  f"{total:.3f} ms: whole / sum {whole / total:.2f}", flush=True)
            keras.backend.clear_session()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

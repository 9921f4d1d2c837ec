"""Probe: does the runtime fold a ZeroPadding2D (a PAD op in the .tflite) into the depthwise
convolution after it, as MobileNetV2 has them? (Why the latency table times such a pad with its
convolution: pipeline/latency/ops.py.)

    python scripts/probe_pad_fusion.py

Times, with edge-runner (fp32, 1 thread, fastest invoke of 4 interleaved passes), at MobileNetV2's
four stride-2 depthwise sizes: pad + depthwise, the depthwise alone on the padded input, the pad
alone.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pipeline  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)


def main() -> int:
    import tf_keras as keras

    from edge_runner.bench import benchmark
    from pipeline.latency.build import convert

    L = keras.layers
    pad = ((0, 1), (0, 1))
    cases = {}
    for hw, c in [(64, 96), (32, 144), (16, 192), (8, 576)]:
        x = keras.Input((hw, hw, c))
        cases[f"pad + depthwise {hw} px x {c}"] = keras.Model(
            x, L.DepthwiseConv2D(3, 2, "valid")(L.ZeroPadding2D(pad)(x)))
        x = keras.Input((hw + 1, hw + 1, c))
        cases[f"depthwise alone {hw + 1} px x {c}"] = keras.Model(
            x, L.DepthwiseConv2D(3, 2, "valid")(x))
        x = keras.Input((hw, hw, c))
        cases[f"pad alone {hw} px x {c}"] = keras.Model(x, L.ZeroPadding2D(pad)(x))
    with tempfile.TemporaryDirectory(prefix="edgepipe-probe-") as tmp:
        paths = {}
        for i, (name, model) in enumerate(cases.items()):
            paths[name] = Path(tmp) / f"{i}.tflite"
            paths[name].write_bytes(convert(model, "fp32"))
        best = dict.fromkeys(cases, float("inf"))
        for _ in range(4):
            for name, p in paths.items():
                r = benchmark(p, threads=1, warmup=5, min_runs=20, min_seconds=0.15)
                best[name] = min(best[name], r["latency_ms"]["min"])
    for name, ms in best.items():
        print(f"{name:32s} {ms:.4f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

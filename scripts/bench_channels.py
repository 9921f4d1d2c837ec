"""Benchmark structured channel pruning: fp32 TFLite latency of pruned vs unpruned models.

MobileNetV2 224x224 and ResNet50 224x224 (weights=None: latency does not depend on the values),
50% of the channels of every prunable group removed (round_to 8, criterion l1), against the
unpruned model and, for reference, Keras' own MobileNetV2 alpha=0.5. Each model is converted with
`tf.lite.TFLiteConverter.from_keras_model` and timed by `edge_runner.bench.benchmark` at one
thread; the models are timed in interleaved rounds (A, B, C, A, B, C, ...) and each speed-up is
the median over rounds of the per-round ratio, so that drift on a shared machine cancels out.

    python scripts/bench_channels.py                 # writes benchmarks/channels.md
    python scripts/bench_channels.py --rounds 3 --out /tmp/channels.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import numpy as np
import tensorflow as tf
import tf_keras as keras

from edge_runner.backends import load
from edge_runner.bench import benchmark
from pipeline.artifacts import atomic_write_text, sizes
from pipeline.compress import prune_channels_detailed
from pipeline.compress.lowrank import count_macs

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (224, 224, 3)


def calibrate_bn(model, x: np.ndarray):
    """Set each BatchNorm's moving mean/variance to the statistics of its input on `x`.

    With `weights=None` the activations of these deep models shrink towards 0 layer after layer
    (to ~1e-10 at the classifier, a uniform softmax), which would make the TFLite-vs-Keras check
    meaningless. Calibrated statistics keep activations at a natural scale.
    """
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            a = keras.Model(model.inputs, layer.input)(x, training=False).numpy()
            a = a.reshape(-1, a.shape[-1])
            gamma, beta, _, _ = layer.get_weights()
            layer.set_weights([gamma, beta, a.mean(0), a.var(0)])
    return model


def build_models(ratio: float) -> dict:
    """name -> (keras model, pruning report or None), in benchmark order."""
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(1).uniform(0, 1, (4,) + SHAPE).astype(np.float32)
    models = {}
    mnv2 = calibrate_bn(keras.applications.MobileNetV2(input_shape=SHAPE, weights=None), x)
    models["mobilenet_v2"] = (mnv2, None)
    models[f"mobilenet_v2 pruned {ratio:.0%}"] = prune_channels_detailed(mnv2, ratio)
    models["mobilenet_v2 alpha=0.5"] = (calibrate_bn(
        keras.applications.MobileNetV2(input_shape=SHAPE, alpha=0.5, weights=None), x), None)
    r50 = calibrate_bn(keras.applications.ResNet50(input_shape=SHAPE, weights=None), x)
    models["resnet50"] = (r50, None)
    models[f"resnet50 pruned {ratio:.0%}"] = prune_channels_detailed(r50, ratio)
    return models


def to_tflite(model, path: Path) -> Path:
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-seconds", type=float, default=2.0, help="timed seconds per model/round")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "channels.md")
    args = ap.parse_args(argv)

    t_start = time.time()
    models = build_models(args.ratio)
    info, paths = {}, {}
    x = np.random.default_rng(0).uniform(0, 1, (2,) + SHAPE).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, report) in models.items():
            t0 = time.time()
            paths[name] = to_tflite(model, Path(tmp) / (name.replace(" ", "_") + ".tflite"))
            got, ref = load(str(paths[name]), threads=1).predict(x), model.predict(x, verbose=0)
            diff = float(np.abs(got - ref).max() / np.abs(ref - ref.mean()).max())
            info[name] = {"params": model.count_params(), "macs": count_macs(model),
                          **sizes(paths[name]), "tflite_vs_keras": diff, "report": report}
            print(f"{name}: converted in {time.time() - t0:.0f}s, params {model.count_params():,}, "
                  f"tflite vs keras: relative max error {diff:.1e}", file=sys.stderr)
        p50 = {name: [] for name in models}
        load_before = os.getloadavg()[0]
        for r in range(args.rounds):  # interleaved: every model once per round
            for name in models:
                res = benchmark(str(paths[name]), threads=1, warmup=3, min_runs=5,
                                min_seconds=args.min_seconds)
                p50[name].append(res["latency_ms"]["p50"])
            args.load = (load_before, os.getloadavg()[0])
            print(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]:.1f} ms" for n, v in p50.items()),
                  file=sys.stderr)
    pairs = [("mobilenet_v2", n) for n in models if n.startswith("mobilenet_v2 ")]
    pairs += [("resnet50", n) for n in models if n.startswith("resnet50 ")]
    speed = {b: statistics.median(p50[a][i] / p50[b][i] for i in range(args.rounds))
             for a, b in pairs}
    text = render(args, models, info, p50, speed, time.time() - t_start)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, text)
    print(text)
    return 0


def render(args, models, info, p50, speed, seconds) -> str:
    ratio = f"{args.ratio:.0%}"
    base = {n: ("mobilenet_v2" if n.startswith("mobilenet") else "resnet50") for n in models}
    lines = [
        "## Structured channel pruning (`method: channels`)",
        "",
        f"fp32 TFLite, 224x224x3 input, batch 1, 1 thread (XNNPACK), `weights=None`; {ratio} "
        "of the channels of every prunable group removed (`criterion=l1`, `round_to=8`, "
        "`min_channels=8`; the classifier output is never pruned). Latency: p50 of "
        f"`edge_runner.bench.benchmark` per model, {args.rounds} interleaved rounds of "
        f"≥{args.min_seconds:g} s each; speed-up = median over rounds of the per-round ratio "
        "to the unpruned model. The machine is shared (2 cores; 1-minute load average "
        f"{args.load[0]:.1f} before the timed rounds, {args.load[1]:.1f} after), so absolute "
        "times are noisy; the interleaved ratios are the result.",
        "",
        "| model | params | MACs | .tflite MB | gzip MB | p50 ms (median of rounds) | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in models:
        i = info[name]
        up = f"{speed[name]:.2f}x" if name in speed else "1.00x (reference)"
        lines.append(
            f"| {name} | {i['params']:,} | {i['macs'] / 1e6:,.0f} M | "
            f"{i['size_bytes'] / 1e6:.2f} | {i['gzip_bytes'] / 1e6:.2f} | "
            f"{statistics.median(p50[name]):.1f} | {up} |")
    lines += ["", "Per-round p50 (ms):", ""]
    for name in models:
        lines.append(f"- {name}: " + ", ".join(f"{v:.1f}" for v in p50[name]))
    goal = speed.get(f"mobilenet_v2 pruned {ratio}")
    if goal is not None:
        lines += ["", f"Goal (issue 3): MobileNetV2 pruned {ratio} ≥ 2.5x faster than unpruned: "
                  f"**{'met' if goal >= 2.5 else 'not met'}** ({goal:.2f}x)."]
    ref = speed.get("mobilenet_v2 alpha=0.5")
    if ref is not None:
        lines += ["", f"Reference: Keras' own MobileNetV2 alpha=0.5 runs {ref:.2f}x faster than "
                  "alpha=1.0 in the same rounds (issue 3 quotes about 3.2x on this host kind)."]
    lines += ["", "BatchNorm moving statistics are set from 4 random images first, so activations "
              "keep a natural scale (`weights=None` alone lets them vanish). Pruned models: groups "
              "pruned / left whole, params and MACs relative to the unpruned model, TFLite vs "
              "Keras on 2 random images (max |difference| / max |output - mean output|):", ""]
    for name, (_, report) in models.items():
        if report is None:
            continue
        skipped = "; ".join(f"{', '.join(s['producers'])}: {', '.join(s['reasons'])}"
                            for s in report["skipped"]) or "none"
        lines.append(
            f"- {name}: {len(report['groups'])} groups pruned, left whole: {skipped}; params "
            f"{report['params_after'] / report['params_before']:.3f} of {base[name]}; MACs "
            f"{info[name]['macs'] / info[base[name]]['macs']:.3f}; TFLite vs Keras "
            f"{info[name]['tflite_vs_keras']:.1e}")
    lines += ["", f"Reproduce (about {seconds / 60:.0f} min here): "
              f"`/work/venv/bin/python scripts/bench_channels.py --rounds {args.rounds} "
              f"--min-seconds {args.min_seconds:g}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

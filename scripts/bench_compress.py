"""Benchmark unstructured pruning, quantization, clustering and low-rank on .tflite files.

Digits (the default recipe's data and model: 32x32 grayscale, small_cnn filters [16, 32], dense
64, trained like recipes/digits.yaml): every number is measured on the .tflite file itself
(accuracy on the test split, size and gzip size on disk, zeros counted in the flatbuffer's weight
buffers, latency by `edge_runner.bench.benchmark`):
  - fp32 vs PTQ int8 vs QAT int8 accuracy;
  - magnitude pruning to 80% -> QAT int8 with the prune-preserving scheme (picked automatically):
    sparsity kept in the int8 file, gzip size against the fp32 baseline's gzip, accuracy;
  - latency of the 80%-sparse files against the dense ones (interleaved rounds);
  - weight clustering (16 clusters): gzip ratio and accuracy, fp32 and cluster-preserving QAT int8;
  - low-rank factorization at 50% rank: params ratio and accuracy.
MobileNetV2 224x224 (`weights=None`, BatchNorm statistics set from random images): fp32 vs PTQ
int8 vs QAT int8 latency at 1 thread, interleaved, and the op counts of both int8 files.

    python scripts/bench_compress.py                   # writes benchmarks/compress.md
    python scripts/bench_compress.py --part digits --rounds 3 --out /tmp/compress.md
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

ROOT = Path(__file__).resolve().parents[1]
DIGITS = {"name": "digits", "input_size": [32, 32], "channels": 1}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def interleaved(paths: dict[str, Path], rounds: int, min_seconds: float) -> dict[str, list[float]]:
    """p50 (ms) per round of every file, timed A, B, C, A, B, C, ... at one thread."""
    from edge_runner.bench import benchmark

    p50 = {name: [] for name in paths}
    for r in range(rounds):
        for name, path in paths.items():
            res = benchmark(str(path), threads=1, warmup=5, min_runs=20, min_seconds=min_seconds)
            p50[name].append(res["latency_ms"]["p50"])
        log(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]:.3f} ms" for n, v in p50.items()))
    return p50


def ratio(p50: dict, a: str, b: str) -> float:
    """Median over rounds of time(a) / time(b): > 1 means b is faster."""
    return statistics.median(x / y for x, y in zip(p50[a], p50[b]))


# ----- digits ------------------------------------------------------------------------------------

def digits_part(args, tmp: Path) -> dict:
    from pipeline import models, tflite
    from pipeline.artifacts import atomic_write_bytes, sizes
    from pipeline.compress.magnitude import overall_sparsity
    from pipeline.data import load_dataset
    from pipeline.stages.cluster import ClusterConfig, cluster_model
    from pipeline.stages.lowrank import LowRankConfig, lowrank_model
    from pipeline.stages.prune import PruneConfig, prune_model
    from pipeline.stages.quantize import QuantizeConfig, quantize_model
    from pipeline.training import FitConfig, fit
    from pipeline.zoo import small_cnn

    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()  # the same numbers on every run
    ds = load_dataset(DIGITS, seed=0)
    base = small_cnn(ds.input_shape, ds.num_classes, filters=(16, 32), dense=64)
    t0 = time.time()
    fit(base, ds, FitConfig(epochs=30, batch_size=32, learning_rate=0.002, patience=6), seed=0)
    log(f"base trained in {time.time() - t0:.0f}s: keras accuracy "
        f"{models.accuracy(base, ds.x_test, ds.y_test):.4f}")
    rows: dict[str, dict] = {}

    def export(name: str, model, mode: str) -> None:
        path = tmp / f"{name}.tflite"
        calib = ds.calibration() if mode == "int8" else None
        atomic_write_bytes(path, tflite.convert(model, mode, calib))
        m = tflite.validate(path, None, ds.x_test, ds.y_test)
        rows[name] = {"path": path, "accuracy": m["accuracy"], **sizes(path),
                      "params": models.count_params(model)[0],
                      "nonzero": models.count_params(model)[1],
                      "kernel_zeros": _overall_zeros(path)}
        log(f"{name}: accuracy {m['accuracy']:.4f}, {rows[name]['size_bytes']} B, gzip "
            f"{rows[name]['gzip_bytes']} B")

    def quantize(name: str, model, **cfg) -> dict:
        path = tmp / f"{name}.tflite"
        m = quantize_model(model, ds, QuantizeConfig(**cfg), path, seed=0)
        rows[name] = {"path": path, "accuracy": m["accuracy"], "size_bytes": m["size_bytes"],
                      "gzip_bytes": m["gzip_bytes"], "params": m["params"],
                      "nonzero": m["nonzero_params"], "scheme": m.get("scheme"),
                      "kernel_zeros": m.get("tflite_overall_sparsity"),
                      "kernels": m.get("tflite_sparsity")}
        log(f"{name}: accuracy {m['accuracy']:.4f} (float {m['float_accuracy']:.4f}), gzip "
            f"{m['gzip_bytes']} B, kernel zeros {m.get('tflite_overall_sparsity')}")
        return m

    export("fp32", base, "fp32")
    export("ptq_int8", base, "int8")
    quantize("qat_int8", base, mode="qat", epochs=3, batch_size=32, learning_rate=1e-4)

    t0 = time.time()
    pruned, pm = prune_model(base, ds, PruneConfig(method="magnitude", sparsity=0.8,
                                                   skip_first=True, epochs=8, batch_size=32,
                                                   learning_rate=5e-4), seed=0)
    log(f"pruned in {time.time() - t0:.0f}s: keras sparsity {overall_sparsity(pruned):.3f}, "
        f"accuracy {models.accuracy(pruned, ds.x_test, ds.y_test):.4f}")
    export("pruned80_fp32", pruned, "fp32")
    export("pruned80_ptq_int8", pruned, "int8")
    quantize("pruned80_pqat_int8", pruned, mode="qat", epochs=3, batch_size=32, learning_rate=1e-4)

    clustered, cm = cluster_model(base, ds, ClusterConfig(clusters=16, epochs=3, batch_size=32,
                                                          learning_rate=1e-4), seed=0)
    export("cluster16_fp32", clustered, "fp32")
    quantize("cluster16_cqat_int8", clustered, mode="qat", epochs=2, batch_size=32,
             learning_rate=1e-4)
    rows["cluster16_fp32"]["unique"] = max(cm["unique_values"][k] for k in ("conv1", "fc"))

    low, lm = lowrank_model(base, ds, LowRankConfig(ratio=0.5, epochs=5, batch_size=32,
                                                     learning_rate=5e-4), seed=0)
    export("lowrank50_fp32", low, "fp32")
    rows["lowrank50_fp32"].update(macs=lm["macs_after"], macs_before=lm["macs_before"],
                                  after_svd=lm["accuracy_after_svd"], layers=lm["lowrank"])

    paths = {n: rows[n]["path"] for n in ("fp32", "pruned80_fp32", "ptq_int8",
                                          "pruned80_pqat_int8", "qat_int8")}
    p50 = interleaved(paths, args.rounds, args.min_seconds)
    return {"rows": rows, "p50": p50, "prune": pm, "cluster": cm, "n_test": len(ds.y_test),
            "keras_accuracy": models.accuracy(base, ds.x_test, ds.y_test)}


def _overall_zeros(path: Path) -> float:
    from pipeline.tflite import kernel_sparsity

    return kernel_sparsity(path)[1]


# ----- MobileNetV2 -------------------------------------------------------------------------------

def mobilenet_part(args, tmp: Path) -> dict:
    import tf_keras as keras

    from pipeline import tflite
    from pipeline.compress.quantize import quantize_aware

    shape = (224, 224, 3)
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(1).uniform(0, 1, (4,) + shape).astype(np.float32)
    model = keras.applications.MobileNetV2(input_shape=shape, weights=None)
    for layer in model.layers:  # BatchNorm statistics from random images (see bench_channels)
        if isinstance(layer, keras.layers.BatchNormalization):
            a = keras.Model(model.inputs, layer.input)(x, training=False).numpy()
            a = a.reshape(-1, a.shape[-1])
            gamma, beta, _, _ = layer.get_weights()
            layer.set_weights([gamma, beta, a.mean(0), a.var(0)])
    calib = np.random.default_rng(2).uniform(0, 1, (8,) + shape).astype(np.float32)
    paths, ops = {}, {}
    t0 = time.time()
    paths["fp32"] = tmp / "mnv2_fp32.tflite"
    paths["fp32"].write_bytes(tflite.convert(model, "fp32"))
    paths["ptq_int8"] = tmp / "mnv2_ptq_int8.tflite"
    paths["ptq_int8"].write_bytes(tflite.convert(model, "int8", calib))
    log(f"mobilenet fp32 + ptq int8 converted in {time.time() - t0:.0f}s")
    t0 = time.time()
    qat, info = quantize_aware(model)
    # one pass in training mode over the calibration images sets the fake-quant ranges
    qat(calib, training=True)
    paths["qat_int8"] = tmp / "mnv2_qat_int8.tflite"
    paths["qat_int8"].write_bytes(tflite.convert(qat, "int8", calib))
    log(f"mobilenet qat int8 converted in {time.time() - t0:.0f}s ({info.scheme})")
    for k in ("ptq_int8", "qat_int8"):
        ops[k] = tflite.op_counts(paths[k])
    p50 = interleaved(paths, args.rounds, args.min_seconds_mnv2)
    peer = peer_medians(paths, args.rounds, tmp)
    return {"p50": p50, "peer": peer, "ops": ops,
            "sizes": {k: p.stat().st_size for k, p in paths.items()}}


def peer_medians(paths: dict[str, Path], rounds: int, tmp: Path) -> dict[str, list[float]] | None:
    """The same files timed by LiteRT's own `litert-benchmark` (1 thread, median of 30 runs),
    interleaved likewise: a yardstick for edge-runner's numbers. None when the tool is missing."""
    import json
    import shutil
    import subprocess

    tool = shutil.which("litert-benchmark") or str(Path(sys.executable).with_name("litert-benchmark"))
    if not Path(tool).exists():
        return None
    out = {name: [] for name in paths}
    for _ in range(rounds):
        for name, path in paths.items():
            res = tmp / f"{name}.json"
            subprocess.run([tool, "--model", str(path), "--num_threads", "1", "--num_runs", "30",
                            "--warmup_runs", "5", "--result_json", str(res)],
                           check=True, capture_output=True, timeout=600)
            out[name].append(json.loads(res.read_text())["latency"]["median_ms"])
    log("litert-benchmark: " + ", ".join(f"{n} {statistics.median(v):.1f} ms" for n, v in out.items()))
    return out


# ----- report ------------------------------------------------------------------------------------

def render(args, d: dict | None, mb: dict | None, seconds: float, load: tuple) -> str:
    lines = ["## Unstructured pruning, quantization, clustering, low-rank (issues 3 and 4)", ""]
    if d:
        r = d["rows"]
        base_gz = r["fp32"]["gzip_bytes"]
        lines += [
            "Digits, 32x32 grayscale, the default recipe's `small_cnn` (filters [16, 32], dense 64) "
            "trained as in `recipes/digits.yaml`. Accuracy is measured on each .tflite on the "
            f"test split ({d['n_test']} images: 1 image = {100 / d['n_test']:.2f} points); sizes on "
            "disk; 'kernel "
            "zeros' = fraction of zeros over the weight tensors stored in the file (read from the "
            "flatbuffer's buffers); gzip ratio = fp32 baseline gzip / this file's gzip.",
            "",
            "| file | accuracy | params | nonzero | size KB | gzip KB | gzip ratio | kernel zeros |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, row in r.items():
            lines.append(
                f"| {name} | {row['accuracy']:.4f} | {row['params']:,} | {row['nonzero']:,} | "
                f"{row['size_bytes'] / 1024:.1f} | {row['gzip_bytes'] / 1024:.1f} | "
                f"{base_gz / row['gzip_bytes']:.1f}x | {row['kernel_zeros'] or 0:.3f} |")
        f32, ptq, qat = (r[k]["accuracy"] for k in ("fp32", "ptq_int8", "qat_int8"))
        pq = r["pruned80_pqat_int8"]
        gz = base_gz / pq["gzip_bytes"]
        kern = pq.get("kernels") or {}
        pruned_kernels = {k: v for k, v in kern.items() if "conv0" not in k}
        lines += [
            "",
            f"- Quantization: PTQ int8 {ptq:.4f} and QAT int8 {qat:.4f} against fp32 {f32:.4f}, "
            f"i.e. {(ptq - f32) * 100:+.2f} and {(qat - f32) * 100:+.2f} points (goals: PTQ within "
            f"1 point: **{'met' if f32 - ptq <= 0.01 else 'not met'}**; QAT within 0.5 points: "
            f"**{'met' if f32 - qat <= 0.005 else 'not met'}**). QAT: `quantize_model`, 3 epochs "
            "at learning rate 1e-4.",
            f"- Magnitude pruning to 80% (polynomial schedule fitted to 8 epochs of steps, stem conv "
            f"left dense: {d['prune']['overall_sparsity']:.3f} of all kernel weights zero) then QAT "
            f"with `{pq['scheme']}` (chosen automatically): the pruned kernels in the int8 file are "
            f"{min(pruned_kernels.values()) if pruned_kernels else 0:.3f}–"
            f"{max(pruned_kernels.values()) if pruned_kernels else 0:.3f} zeros (goal ≥ 0.79: "
            f"**{'met' if pruned_kernels and min(pruned_kernels.values()) >= 0.79 else 'not met'}**"
            f"); gzip {pq['gzip_bytes'] / 1024:.1f} KB vs the fp32 baseline's "
            f"{base_gz / 1024:.1f} KB = **{gz:.1f}x** (goal ≥ 10x: "
            f"**{'met' if gz >= 10 else 'not met'}**); accuracy {pq['accuracy']:.4f} vs fp32 "
            f"{f32:.4f} (goal within 1 point: "
            f"**{'met' if f32 - pq['accuracy'] <= 0.01 else 'not met'}**).",
            f"- Clustering, 16 clusters (k-means++, 3 epochs fine-tuning): at most "
            f"{r['cluster16_fp32']['unique']} distinct values per kernel; fp32 file gzip ratio "
            f"{base_gz / r['cluster16_fp32']['gzip_bytes']:.1f}x, accuracy "
            f"{r['cluster16_fp32']['accuracy']:.4f}; with cluster-preserving QAT int8 "
            f"(`{r['cluster16_cqat_int8']['scheme']}`): gzip ratio "
            f"{base_gz / r['cluster16_cqat_int8']['gzip_bytes']:.1f}x, accuracy "
            f"{r['cluster16_cqat_int8']['accuracy']:.4f}.",
        ]
        lr = r["lowrank50_fp32"]
        fact = [f"{x['name']} {x['fan_in']}x{x['fan_out']} -> rank {x['rank']}"
                for x in lr["layers"] if x["factorized"]]
        kept = [x["name"] for x in lr["layers"] if not x["factorized"]]
        lines += [
            f"- Low-rank at 50% rank (SVD, 5 epochs fine-tuning): {', '.join(fact) or 'nothing'}"
            f"{'; left whole (no saving at that rank): ' + ', '.join(kept) if kept else ''}. "
            f"Params {lr['params']:,} vs {r['fp32']['params']:,} = "
            f"**{lr['params'] / r['fp32']['params']:.2f}x**, MACs {lr['macs']:,} vs "
            f"{lr['macs_before']:,}; accuracy {lr['accuracy']:.4f} (right after SVD, before "
            f"fine-tuning: {lr['after_svd']:.4f}) vs fp32 {f32:.4f}.",
            "",
        ]
        p50 = d["p50"]
        sp = ratio(p50, "fp32", "pruned80_fp32")
        sq = ratio(p50, "ptq_int8", "pruned80_pqat_int8")
        lines += [
            f"Latency (1 thread, XNNPACK, p50, {args.rounds} interleaved rounds of ≥"
            f"{args.min_seconds:g} s; ratio = median of per-round ratios): 80%-sparse fp32 vs "
            f"dense fp32 **{sp:.2f}x**, 80%-sparse PQAT int8 vs dense PTQ int8 **{sq:.2f}x**. "
            "As expected, unstructured sparsity buys no speed on this runtime (the kernels are "
            "stored dense, zeros included, and computed like any other weight): it only shrinks "
            "the compressed file. Structured channel pruning is what buys latency "
            "(see the channels section). At this size (1.5 M MACs, well under 0.1 ms) int8 is "
            f"no faster than fp32 here either (PTQ int8 vs fp32: {ratio(p50, 'ptq_int8', 'fp32'):.2f}x "
            "the time); see MobileNetV2 below for a real network.",
            "",
            "Per-round p50 (ms): " + "; ".join(
                f"{n}: {', '.join(f'{v:.3f}' for v in vals)}" for n, vals in p50.items()),
            "",
        ]
    if mb:
        p50 = mb["p50"]
        q_vs_p = ratio(p50, "qat_int8", "ptq_int8")  # > 1: PTQ faster
        up_q = ratio(p50, "fp32", "qat_int8")
        up_p = ratio(p50, "fp32", "ptq_int8")
        extra = {k: {op: n for op, n in mb["ops"][k].items()
                     if op in ("QUANTIZE", "DEQUANTIZE")} for k in mb["ops"]}
        lines += [
            "MobileNetV2 224x224x3 (`weights=None`; latency does not depend on the values), "
            f"1 thread, XNNPACK, {args.rounds} interleaved rounds of ≥{args.min_seconds_mnv2:g} s:",
            "",
            "| file | MB | p50 ms (median of rounds) | speed-up vs fp32 |",
            "|---|---:|---:|---:|",
        ]
        for k in ("fp32", "ptq_int8", "qat_int8"):
            up = 1.0 if k == "fp32" else ratio(p50, "fp32", k)
            lines.append(f"| {k} | {mb['sizes'][k] / 1e6:.2f} | {statistics.median(p50[k]):.1f} | "
                         f"{up:.2f}x |")
        if mb.get("peer"):
            peer = mb["peer"]
            lines += ["", "The same files timed by LiteRT's own `litert-benchmark` (1 thread, median of "
                      "30 runs, same interleaving): " + ", ".join(
                          f"{k} {statistics.median(peer[k]):.1f} ms" for k in peer)
                      + f"; fp32 / QAT int8 = {ratio(peer, 'fp32', 'qat_int8'):.2f}x, "
                      f"fp32 / PTQ int8 = {ratio(peer, 'fp32', 'ptq_int8'):.2f}x."]
        lines += [
            "",
            f"QAT int8 takes {q_vs_p:.3f}x the time of PTQ int8 (goal within 5%: "
            f"**{'met' if q_vs_p <= 1.05 else 'not met'}**); speed-up over fp32 (fp32 time / "
            f"int8 time): QAT int8 {up_q:.2f}x (goal ≥ 2.3x: "
            f"**{'met' if up_q >= 2.3 else 'not met'}**), PTQ int8 {up_p:.2f}x. "
            f"QUANTIZE/DEQUANTIZE ops: PTQ {extra['ptq_int8'] or 'none'}, QAT "
            f"{extra['qat_int8'] or 'none'} (op counts equal: "
            f"{'yes' if mb['ops']['ptq_int8'] == mb['ops']['qat_int8'] else 'no'}). The QAT "
            "model is `quantize_model` as built (no training: fake-quant ranges from one pass "
            "over 8 random images), which is enough for latency." + (
                "" if up_p >= 1.5 else
                " On this host (AMD EPYC vCPU, AVX2 without VNNI, shared) int8 is not faster "
                "than fp32 at all, by edge-runner and by litert-benchmark alike, so the 2.3x "
                "goal cannot be met by any int8 file here (the design notes' 2.4x was not "
                "reproduced).") + (
                " What this run does show is QAT int8 against PTQ int8: the same ops, the same "
                "speed." if mb["ops"]["ptq_int8"] == mb["ops"]["qat_int8"] and q_vs_p <= 1.05
                else ""),
            "",
            "Per-round p50 (ms): " + "; ".join(
                f"{n}: {', '.join(f'{v:.1f}' for v in vals)}" for n, vals in p50.items()),
            "",
        ]
    lines += [
        f"Shared machine (2 cores): 1-minute load average {load[0]:.1f} before the timed rounds, "
        f"{load[1]:.1f} after; absolute times are noisy, the interleaved ratios are the result.",
        "",
        f"Reproduce (about {seconds / 60:.0f} min here): `/work/venv/bin/python "
        f"scripts/bench_compress.py --part {args.part} --rounds {args.rounds}`",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    from pipeline.artifacts import atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("all", "digits", "mobilenet"), default="all")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-seconds", type=float, default=1.0, help="timed seconds, digits files")
    ap.add_argument("--min-seconds-mnv2", type=float, default=2.0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "compress.md")
    args = ap.parse_args(argv)
    t0 = time.time()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        d = digits_part(args, Path(tmp)) if args.part in ("all", "digits") else None
        mb = mobilenet_part(args, Path(tmp)) if args.part in ("all", "mobilenet") else None
    text = render(args, d, mb, time.time() - t0, (load_before, os.getloadavg()[0]))
    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

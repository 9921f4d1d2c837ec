"""Benchmark the task recipes: regression MAE per int8 variant, fidelity SNR and latency.

Regression (recipes/diabetes.yaml): for each seed, the recipe's model is trained and pruned with
the recipe's own train and prune settings, then converted to fp32, PTQ int8 and QAT int8 (QAT with
the recipe's settings), each int8 file once with int8 inputs/outputs and once with float ones.
MAE is measured on each .tflite itself (test split, the target's units).

Fidelity (recipes/digits_autoencoder.yaml): the autoencoder trained and pruned as in the recipe,
then fp32, PTQ int8 and QAT int8 .tflite files (float I/O, the default for fidelity). SNR, cosine
similarity and max |difference| of each file's outputs against the Keras model's on the test
images, per output; host latency (edge_runner.bench.benchmark, 1 thread) timed in interleaved
rounds, the median of the rounds' p50 reported, speed-ups as medians of per-round ratios.

    python scripts/bench_tasks.py                         # writes benchmarks/tasks.md
    python scripts/bench_tasks.py --seeds 0 --out /tmp/tasks.md   # quick look
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

from edge_runner.bench import benchmark
from pipeline import models, recipe, tasks, tflite
from pipeline.artifacts import atomic_write_text
from pipeline.data import load_dataset
from pipeline.stages.prune import prune_model
from pipeline.stages.quantize import QuantizeConfig, qat_model, quantize_model
from pipeline.training import fit

ROOT = Path(__file__).resolve().parents[1]


def _stage(r, name: str, **match):
    return next(s.config for s in r.stages if s.name == name
                and all(getattr(s.config, k) == v for k, v in match.items()))


def trained(r, seed: int):
    """The recipe's model trained and pruned with the recipe's settings, and its dataset."""
    ds = load_dataset(r.dataset, seed=seed)
    model = models.from_spec(r.model, ds.input_shape, tasks.output_units(ds), seed=seed)
    tasks.bind(r.task, model, ds)
    fit(model, ds, _stage(r, "train"), seed=seed)
    pruned, _ = prune_model(model, ds, _stage(r, "prune"), seed=seed)
    return pruned, ds


def variants(r, model, ds, folder: Path, seed: int, ios: tuple[str, ...]) -> dict[str, dict]:
    """{name: .tflite metrics} for fp32, PTQ int8 and QAT int8 in each I/O type."""
    out = {"fp32": tflite.export(model, folder / "fp32.tflite", "fp32", ds)}
    for io in ios:
        out[f"ptq_int8 ({io} I/O)"] = quantize_model(
            model, ds, QuantizeConfig(mode="ptq_int8", io=io), folder / f"ptq_{io}.tflite")
    qat_cfg = _stage(r, "quantize", mode="qat")
    calib = ds.calibration(qat_cfg.calibration)
    qat, _ = qat_model(model, ds, qat_cfg, seed=seed, calibration=calib)
    reference = tasks.predict(model, ds.x_test)
    for io in ios:
        out[f"qat_int8 ({io} I/O)"] = tflite.export(qat, folder / f"qat_{io}.tflite", "int8", ds,
                                                    reference=reference, calibration=calib, io=io)
    return out


def regression(seeds: list[int], folder: Path) -> dict:
    r = recipe.load(ROOT / "recipes" / "diabetes.yaml")
    rows = []
    for seed in seeds:
        t0 = time.time()
        model, ds = trained(r, seed)
        sub = folder / f"reg{seed}"
        sub.mkdir()
        files = variants(r, model, ds, sub, seed, ("int8", "float32"))
        row = {"seed": seed, "keras": files["fp32"]["keras_mae"],
               **{k: m["mae"] for k, m in files.items()}, "seconds": round(time.time() - t0, 1)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return {"rows": rows, "n_test": len(ds.x_test)}


def fidelity(seed: int, rounds: int, folder: Path) -> dict:
    r = recipe.load(ROOT / "recipes" / "digits_autoencoder.yaml")
    model, ds = trained(r, seed)
    files = variants(r, model, ds, folder, seed, ("float32",))
    paths = {"fp32": folder / "fp32.tflite", "ptq_int8 (float32 I/O)": folder / "ptq_float32.tflite",
             "qat_int8 (float32 I/O)": folder / "qat_float32.tflite"}
    p50: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(rounds):  # interleaved: every file once per round
        for k, p in paths.items():
            p50[k].append(benchmark(p, threads=1, warmup=20, min_runs=200,
                                    min_seconds=0.5)["latency_ms"]["p50"])
    names = tasks.output_names(model)
    out = {}
    for k in paths:
        m = files[k]
        per = {n: {q: m[f"{n}/{q}" if len(names) > 1 else q] for q in ("snr_db", "cosine",
                                                                        "max_abs_diff")}
               for n in names}
        out[k] = {"outputs": per, "p50_ms": statistics.median(p50[k]),
                  "speedup": statistics.median(a / b for a, b in zip(p50["fp32"], p50[k])),
                  "size_bytes": m["size_bytes"]}
    return {"files": out, "rounds": rounds, "n_test": len(ds.x_test), "seed": seed}


def render(reg: dict, fid: dict, command: str) -> str:
    cols = ["keras", "fp32", "ptq_int8 (int8 I/O)", "ptq_int8 (float32 I/O)", "qat_int8 (int8 I/O)",
            "qat_int8 (float32 I/O)"]
    lines = ["## Tasks: regression MAE per int8 variant, fidelity SNR and latency", "",
             f"`{command}` (scripts/bench_tasks.py). Every metric is measured on the .tflite file "
             "itself on the test split.", "",
             f"### Regression: recipes/diabetes.yaml (MAE, target units; lower is better; "
             f"{reg['n_test']} test patients)", "",
             "The recipe's MLP, trained and 50%-magnitude-pruned with the recipe's settings, per "
             "seed; PTQ int8 and QAT int8 files each converted with int8 and with float32 inputs "
             "and outputs (the recipe's default for regression is float32 I/O).", "",
             "| seed | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for row in reg["rows"]:
        lines.append(f"| {row['seed']} | " + " | ".join(f"{row[c]:.2f}" for c in cols) + " |")
    mean = {c: statistics.mean(r[c] for r in reg["rows"]) for c in cols}
    lines.append("| mean | " + " | ".join(f"{mean[c]:.2f}" for c in cols) + " |")
    same = max(abs(r[f"{q} (int8 I/O)"] - r[f"{q} (float32 I/O)"]) for r in reg["rows"]
               for q in ("ptq_int8", "qat_int8"))
    lines += ["", f"int8 against float32 inputs/outputs: largest MAE difference {same:.2g} "
              "(float I/O only moves the quantize/dequantize ops, with the same scales, into the "
              "file; the output tensor is int8 either way). QAT starts its activation ranges "
              "from the float model's on the calibration inputs."]
    lines += ["", f"### Fidelity: recipes/digits_autoencoder.yaml (seed {fid['seed']}, "
              f"{fid['n_test']} test images, host latency median of {fid['rounds']} interleaved "
              f"rounds, 1 thread)", "",
              "| file | output | SNR dB | cosine | max abs diff | size KB | p50 ms | speed-up vs fp32 |",
              "|---|---|---|---|---|---|---|---|"]
    for k, f in fid["files"].items():
        for n, q in f["outputs"].items():
            lines.append(f"| {k} | {n} | {q['snr_db']:.1f} | {q['cosine']:.5f} | "
                         f"{q['max_abs_diff']:.3g} | {f['size_bytes'] / 1024:.1f} | "
                         f"{f['p50_ms']:.4f} | {f['speedup']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "tasks.md")
    args = ap.parse_args(argv)
    command = "python scripts/bench_tasks.py" + (" " + " ".join(argv or sys.argv[1:])
                                                 if (argv or sys.argv[1:]) else "")
    with tempfile.TemporaryDirectory() as tmp:
        reg = regression(args.seeds, Path(tmp))
        fdir = Path(tmp) / "fid"
        fdir.mkdir()
        fid = fidelity(args.seeds[0], args.rounds, fdir)
    atomic_write_text(args.out, render(reg, fid, command))
    print(args.out.read_text())


if __name__ == "__main__":
    main()

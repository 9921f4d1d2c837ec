"""Benchmark knowledge distillation on digits: teacher vs the same student from scratch vs distilled.

For each label budget (all training labels; 20% of them) and each seed: train the teacher on the
labeled images, train the student from scratch on them, and distil the same student (same initial
weights, same optimizer, epochs, early stopping, data order) from the frozen teacher. With 20% of
the labels a second distilled student also sees the other 80% of the training images without
labels (teacher soft targets only: the Distiller's label -1). Every model is exported to fp32 and
int8 .tflite (pipeline.tflite.export, validated) and its test accuracy is measured on the file.
Host latency (edge_runner.bench.benchmark, 1 thread) of teacher and student .tflite files is
timed in interleaved rounds; speed-ups are medians of per-round ratios.

    python scripts/bench_distill.py                       # writes benchmarks/distill.md
    python scripts/bench_distill.py --seeds 0 --epochs 5 --out /tmp/distill.md   # quick look
    python scripts/bench_distill.py --json raw.json; ... --render raw.json         # re-render
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import numpy as np

from edge_runner.bench import benchmark
from pipeline import models, tflite
from pipeline.artifacts import atomic_write_text
from pipeline.data import load_dataset
from pipeline.stages.distill import DistillConfig, distill
from pipeline.training import FitConfig, fit

ROOT = Path(__file__).resolve().parents[1]
DATA = {"name": "digits", "input_size": [32, 32], "channels": 1}
TEACHER = {"zoo": "small_cnn", "options": {"filters": [32, 64], "dense": 128}}
STUDENT = {"zoo": "small_cnn", "options": {"filters": [8, 16], "dense": 32, "dropout": 0.0}}
MODES = ("fp32", "int8")


def labeled_subset(ds, fraction: float, seed: int):
    """(labeled-only dataset, all-images dataset with label -1 where the label is hidden)."""
    n = len(ds.x_train)
    keep = np.sort(np.random.default_rng(seed + 100).permutation(n)[: int(round(n * fraction))])
    hidden = np.full(n, -1, dtype=np.int64)
    hidden[keep] = ds.y_train[keep]
    return (dataclasses.replace(ds, x_train=ds.x_train[keep], y_train=ds.y_train[keep]),
            dataclasses.replace(ds, y_train=hidden))


def export_all(model, ds, folder: Path, name: str) -> dict:
    out = {}
    for mode in MODES:
        path = folder / f"{name}_{mode}.tflite"
        m = tflite.export(model, path, mode, ds)
        out[mode] = {"accuracy": m["accuracy"], "size_bytes": m["size_bytes"], "path": str(path)}
    out["params"] = models.count_params(model)[0]
    out["keras_accuracy"] = models.accuracy(model, ds.x_test, ds.y_test)
    return out


def cosine(lr: float, epochs: int):
    """Per-epoch cosine decay of the learning rate from `lr` to ~0 over `epochs`."""
    import tf_keras as keras

    return keras.callbacks.LearningRateScheduler(
        lambda e: lr * 0.5 * (1 + math.cos(math.pi * e / epochs)))


def one_run(fraction: float, seed: int, args, folder: Path) -> dict:
    ds_all = load_dataset(DATA, seed=seed)
    ds, ds_unlabeled = labeled_subset(ds_all, fraction, seed)
    # Every arm gets the same budget of optimizer steps: a fixed number of epochs (x 1/fraction
    # with fewer labels, whose epochs are shorter), a cosine-decayed learning rate, no early
    # stopping, the final weights. (A pilot with early stopping on the 144-image validation split
    # stopped teachers early at 74-98%: ties and BatchNorm's lagging moving statistics.)
    epochs = round(args.epochs / fraction)
    settings = dict(batch_size=args.batch_size, learning_rate=args.learning_rate, epochs=epochs,
                    patience=None)
    fit_cfg = FitConfig(**settings)
    kd_cfg = DistillConfig(student=STUDENT, temperature=args.temperature, alpha=args.alpha,
                           **settings)
    # all training images, most unlabeled: epochs are as long as with 100% labels
    kd_unl_cfg = kd_cfg.model_copy(update={"epochs": args.epochs})
    cos = cosine(args.learning_rate, epochs)
    tag = f"f{fraction:g}_s{seed}"
    res: dict = {"fraction": fraction, "seed": seed, "n_labeled": len(ds.x_train),
                 "n_images": len(ds_all.x_train), "n_test": len(ds.x_test)}
    t0 = time.time()
    teacher = models.from_spec(TEACHER, ds.input_shape, ds.num_classes, seed=seed)
    res["teacher_fit"] = fit(teacher, ds, fit_cfg, seed=seed, prefix=f"{tag} teacher",
                              callbacks=[cos])
    res["teacher"] = export_all(teacher, ds, folder, f"{tag}_teacher")

    scratch = models.from_spec(STUDENT, ds.input_shape, ds.num_classes, seed=seed)
    res["scratch_fit"] = fit(scratch, ds, fit_cfg, seed=seed, prefix=f"{tag} scratch",
                              callbacks=[cos])
    res["scratch"] = export_all(scratch, ds, folder, f"{tag}_scratch")

    student = models.from_spec(STUDENT, ds.input_shape, ds.num_classes, seed=seed)
    res["distilled_fit"] = distill(teacher, student, ds, kd_cfg, seed=seed, prefix=f"{tag} kd",
                                   callbacks=[cos])
    res["distilled"] = export_all(student, ds, folder, f"{tag}_distilled")

    if fraction < 1:
        student_u = models.from_spec(STUDENT, ds.input_shape, ds.num_classes, seed=seed)
        res["distilled_unlabeled_fit"] = distill(
            teacher, student_u, ds_unlabeled, kd_unl_cfg, seed=seed, prefix=f"{tag} kd+unlabeled",
            callbacks=[cosine(args.learning_rate, args.epochs)])
        res["distilled_unlabeled"] = export_all(student_u, ds, folder, f"{tag}_distilled_unl")
    res["seconds"] = round(time.time() - t0, 1)
    print(json.dumps({k: v for k, v in res.items() if not k.endswith("_fit")}, default=str),
          flush=True)
    return res


def latency(files: dict[str, str], rounds: int) -> dict:
    """name -> per-round p50 (ms), the files timed in interleaved rounds."""
    p50 = {k: [] for k in files}
    for _ in range(rounds):
        for name, path in files.items():
            r = benchmark(path, threads=1, warmup=20, min_runs=300, min_seconds=0.5)
            p50[name].append(r["latency_ms"]["p50"])
    return p50


# --------------------------------------------------------------------------------------------
ARMS = (("teacher", "teacher"), ("scratch", "student from scratch"),
        ("distilled", "student distilled"),
        ("distilled_unlabeled", "student distilled + unlabeled 80% images"))


def _ms(values: list[float]) -> str:
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}" \
        if len(values) > 1 else f"{100 * values[0]:.2f}"


def render(runs: list[dict], lat: dict, args, command: str, seconds: float) -> str:
    L = ["## Knowledge distillation (digits)", "",
         f"Reproduce: `{command}` ({seconds / 60:.0f} min on this 2-core shared host; `--json FILE` "
         f"keeps the raw results, `--render FILE` rewrites this page from them).", "",
         f"Dataset: scikit-learn digits resized to 32x32x1; {runs[0]['n_images']} training images, "
         f"144 validation, {runs[0]['n_test']} test (split per seed). Teacher "
         f"`{json.dumps(TEACHER['options'])}` small_cnn, student `{json.dumps(STUDENT['options'])}` "
         f"small_cnn. All arms: Adam, batch {args.batch_size}, {args.epochs} epochs, learning rate "
         f"{args.learning_rate} cosine-decayed per epoch, no early stopping, final weights; with a "
         f"fraction f of the labels the epochs are divided by f, so that every arm takes the "
         f"same number of optimizer steps (the transfer-set arm sees all images per epoch and "
         f"keeps {args.epochs} epochs). Scratch and distilled students start from the same weights and "
         f"see the same batches. Distillation: T = {args.temperature}, alpha = {args.alpha} "
         f"(weight of the label CE). Accuracy is measured on the exported .tflite files "
         f"(test split), mean ± sample std over seeds {', '.join(str(s) for s in args.seeds)}; "
         f"per-seed values in brackets.", ""]
    for fraction in args.fractions:
        rs = [r for r in runs if r["fraction"] == fraction]
        t_mean = statistics.mean(r["teacher"]["fp32"]["accuracy"] for r in rs)
        L += [f"### {fraction:.0%} of the training labels ({rs[0]['n_labeled']} labeled images)", "",
              "| model | params | fp32 .tflite acc % | int8 .tflite acc % | % of teacher (fp32) "
              "| per seed fp32 % | int8 KB |", "|---|---:|---:|---:|---:|---|---:|"]
        for key, label in ARMS:
            if key not in rs[0]:
                continue
            fp = [r[key]["fp32"]["accuracy"] for r in rs]
            i8 = [r[key]["int8"]["accuracy"] for r in rs]
            L.append(f"| {label} | {rs[0][key]['params']:,} | {_ms(fp)} | {_ms(i8)} | "
                     f"{100 * statistics.mean(fp) / t_mean:.1f} | "
                     f"[{', '.join(f'{100 * a:.1f}' for a in fp)}] | "
                     f"{rs[0][key]['int8']['size_bytes'] / 1024:.1f} |")
        ratio = rs[0]["teacher"]["params"] / rs[0]["scratch"]["params"]
        s_mean = statistics.mean(r["scratch"]["fp32"]["accuracy"] for r in rs)
        d_mean = statistics.mean(r["distilled"]["fp32"]["accuracy"] for r in rs)
        wins = sum(r["distilled"]["fp32"]["accuracy"] > r["scratch"]["fp32"]["accuracy"]
                   for r in rs)
        ties = sum(r["distilled"]["fp32"]["accuracy"] == r["scratch"]["fp32"]["accuracy"]
                   for r in rs)
        diffs = ", ".join(f"{100 * (r['distilled']['fp32']['accuracy'] - r['scratch']['fp32']['accuracy']):+.1f}"
                          for r in rs)
        L += ["", f"Paired per seed, distilled − scratch: {diffs} points "
              f"(one test image = {100 / rs[0]['n_test']:.2f} points).", "",
              "Goals (fp32 .tflite accuracy): "
              f"params {ratio:.1f}x fewer (goal ≥ 4x: {'met' if ratio >= 4 else 'NOT met'}); "
              f"distilled mean {100 * d_mean:.2f}% vs scratch {100 * s_mean:.2f}% "
              f"({'beats' if d_mean > s_mean else 'does NOT beat'} scratch; distilled better on "
              f"{wins}/{len(rs)} seeds, tied on {ties}); distilled = {100 * d_mean / t_mean:.1f}% "
              f"of the teacher's {100 * t_mean:.2f}% (goal ≥ 99%: "
              f"{'met' if d_mean >= 0.99 * t_mean else 'NOT met'})"
              + ("; the scratch student clears the 99% bar too: little room on this data."
                 if s_mean >= 0.99 * t_mean else "."), ""]
        if "distilled_unlabeled" in rs[0]:
            u_mean = statistics.mean(r["distilled_unlabeled"]["fp32"]["accuracy"] for r in rs)
            L += [f"With the unlabeled images as transfer set the distilled student reaches "
                  f"{100 * u_mean:.2f}% ({100 * u_mean / t_mean:.1f}% of the teacher).", ""]
    if lat:
        slower = statistics.median(lat["student_int8"]) > statistics.median(lat["student_fp32"])
        L += ["### Host latency (one thread, XNNPACK, `edge_runner.bench.benchmark`)", "",
              f"Seed-0 files, {len(next(iter(lat.values())))} interleaved rounds of ≥300 runs; "
              "p50 is the median over rounds of each round's p50; speed-up is the median of "
              "per-round teacher/student ratios.", "",
              "| mode | teacher p50 ms | student p50 ms | student speed-up |", "|---|---:|---:|---:|"]
        for mode in MODES:
            t, s = lat[f"teacher_{mode}"], lat[f"student_{mode}"]
            L.append(f"| {mode} | {statistics.median(t):.4f} | {statistics.median(s):.4f} | "
                     f"{statistics.median(a / b for a, b in zip(t, s)):.2f}x |")
        L.append("")
        if slower:
            shrink = runs[0]["distilled"]["fp32"]["size_bytes"] / \
                runs[0]["distilled"]["int8"]["size_bytes"]
            L += ["On this host int8 is slower than fp32 for models this small (quantize/dequantize "
                  "and int8 kernel overheads outweigh the arithmetic saved); int8 still makes the "
                  f"student's file {shrink:.1f}x smaller. Measure on the board before choosing.", ""]
    L += ["### Reading the numbers", "",
          "* The gaps between arms are of the size of the per-seed spread; with 3 seeds and a "
          "359-image test split the ordering is suggestive, not statistically significant.",
          "* T and alpha were not tuned (the usual 4 and 0.1); teacher and student were fixed "
          "before any run.",
          "* Protocol history, reported because it changed the conclusion: a one-seed pilot used "
          "early stopping on validation accuracy (patience 15, at most 60 epochs). On the "
          "144-image validation split it stopped the 20%-label teacher at 81.9% test accuracy, "
          "below the scratch student (91.6%), and the distilled student copied the weak teacher "
          "(76.3%); at 100% labels the distilled student reached 98.6% against a 99.7% teacher "
          "(98.9%: short of the 99% goal). A second attempt (patience 12, at most 50 epochs) "
          "stopped teachers at 96.9-98.9%. Ties on a tiny validation split keep the earliest best "
          "epoch, and BatchNorm's moving statistics lag when there are few steps. The fixed step "
          "budget above replaced early stopping before this 3-seed run.", ""]
    return "\n".join(L)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.2])
    ap.add_argument("--epochs", type=int, default=40, help="epochs at 100%% labels "
                    "(x 1/fraction with fewer labels: the same number of steps)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--learning-rate", type=float, default=2e-3)
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--rounds", type=int, default=5, help="latency rounds (0: skip)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "distill.md"))
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--render", metavar="JSON", help="only rewrite --out from a --json file")
    args = ap.parse_args(argv)
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        text = render(saved["runs"], saved["latency_p50_ms"], argparse.Namespace(**saved["args"]),
                      saved["command"], saved["seconds"])
        atomic_write_text(args.out, text)
        print(text)
        return 0
    command = "python scripts/bench_distill.py" + (
        " " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        runs = [one_run(f, s, args, folder) for f in args.fractions for s in args.seeds]
        first = runs[0]
        lat = latency({f"{who}_{mode}": first[key][mode]["path"] for who, key in
                       (("teacher", "teacher"), ("student", "distilled")) for mode in MODES},
                      args.rounds) if args.rounds else {}
    seconds = time.time() - t0
    text = render(runs, lat, args, command, seconds)
    atomic_write_text(args.out, text)
    if args.json:
        atomic_write_text(args.json, json.dumps(
            {"command": command, "seconds": seconds, "args": vars(args), "runs": runs,
             "latency_p50_ms": lat}, indent=1, default=str))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark (not a test): NetAdapt (`adapt`) against uniform channel pruning and against the width
multiplier of the same family, at the same latency MEASURED on this host, on digits.

    python scripts/bench_adapt.py [--seeds 0 1 2] [--ratio 0.5] [--model small_cnn|mobilenet]
                                  [--out benchmarks/adapt.md]

Per seed: train the recipes/digits_adapt.yaml model (`--model small_cnn`: the recipe's 16/32/64 CNN;
`--model mobilenet`: the zoo's MobileNetV2-style net at width 0.5, with the recipe's training, on
the same 32x32 digits); adapt it to `--ratio` x its measured latency (fp32, no quantization, so the
three compare like for like); then find by bisection on MEASURED latency (each candidate timed next
to the trained model) (a) the uniform channel-pruning ratio and (b) the width whose
latency matches the adapted model's (the zoo `width` and the head's channels for mobilenet, every
layer for small_cnn); fine-tune (a) with the same epochs adapt's final fine-tuning got, train (b)
from scratch like the original. Reports test accuracy lost against the trained model, latency
ratios, and the time adaptation took.

The issue asks for budgets where uniform pruning loses at least a point: each run keeps its rows in
`<out>.json` under its ratio and the section shows every ratio run so far (the default 0.5 first,
then a tighter one where uniform lost less than a point, then the mobilenet), each with its verdict,
the machine load, and the tightest ratio adapt can reach (every prunable group at `min_channels`,
timed side by side with the trained model). A seed whose budget adapt cannot meet is reported as
such.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import pipeline  # noqa: E402,F401


# --model: the recipe's own model (None), or the zoo model that replaces it
MODELS = {"small_cnn": None,
          "mobilenet": {"zoo": "mobilenet", "options": {"width": 0.5, "bn_momentum": 0.9}}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--model", choices=sorted(MODELS), default="small_cnn")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "adapt.md")
    ap.add_argument("--report-only", action="store_true",
                    help="measure nothing: write the section again from <out>.json")
    args = ap.parse_args(argv)

    from pipeline.artifacts import atomic_write_text

    store = args.out.with_suffix(".json")
    runs = json.loads(store.read_text()) if store.exists() else {}
    if not args.report_only:
        runs[run_key(args.model, args.ratio)] = measure(args)
        atomic_write_text(store, json.dumps(runs, indent=1) + "\n")
    lines = [
        "## Adaptation (NetAdapt) vs uniform channel pruning vs width multiplier, digits, host",
        "",
        "`python scripts/bench_adapt.py --seeds 0 1 2 --ratio R [--model mobilenet]` for each "
        "section below (the rows are kept in "
        f"{store.relative_to(ROOT) if store.is_relative_to(ROOT) else store}). Models: "
        "recipes/digits_adapt.yaml's small_cnn (16/32 filters, dense 64), and the zoo's "
        "MobileNetV2-style `mobilenet` at width 0.5 with the same training, on 32x32 digits; "
        "latency fp32, 1 thread, edge-runner, each model timed side by side with the trained one "
        "(ratios). Adapt aims at R x the trained model's latency; uniform pruning (one ratio for "
        "every group, the classifier's input kept) and the width multiplier (small_cnn: every "
        "layer scaled; mobilenet: the zoo `width` and the head) are bisected to the adapted "
        "model's measured ratio. Accuracy is on the test split; loss is against the trained "
        "model. The issue asks for budgets where uniform pruning loses at least a point: the "
        "default ratio 0.5 is run first, a tighter one when uniform loses less there, then "
        "`--model mobilenet` when no budget the small_cnn can reach makes uniform lose a point.",
    ]
    for key in sorted(runs, key=lambda k: (k.count(":"), -float(k.rpartition(":")[2]))):
        model, _, r = key.rpartition(":")
        lines += [""] + section(float(r), runs[key], model or "small_cnn")
    lines.append("")
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines))
    return 0


def measure(args) -> dict:
    """Train, adapt and bisect the baselines for each seed; the run's record for the store."""
    from pipeline import models, recipe as R
    from pipeline.compress.channels import prune_channels
    from pipeline.data import load_dataset
    from pipeline.errors import UserError
    from pipeline.latency import Timing, target_session
    from pipeline.latency.build import convert
    from pipeline.stages.adapt import adapt_model
    from pipeline.training import FitConfig, fit

    rec = R.load(ROOT / "recipes" / "digits_adapt.yaml")
    if MODELS[args.model] is not None:
        rec = rec.model_copy(update={"model": rec.model.model_copy(update=MODELS[args.model])})
    train_cfg = rec.stages[0].config  # the recipe's train settings
    # the benchmark compares accuracies: no accuracy gate on adapt's result
    adapt_cfg = rec.stages[2].config.model_copy(update={"latency_ratio": args.ratio,
                                                        "quantization": ["fp32"],
                                                        "max_accuracy_drop": 1.0})
    tune_cfg = FitConfig(epochs=adapt_cfg.epochs, batch_size=adapt_cfg.batch_size,
                         learning_rate=adapt_cfg.learning_rate, patience=adapt_cfg.patience)
    opts = dict(rec.model.options)

    def build(options, ds, seed=0):
        return models.from_spec(rec.model.model_copy(update={"options": options}),
                                ds.input_shape, ds.num_classes, seed=seed)

    tmp = Path(tempfile.mkdtemp(prefix="bench-adapt-"))
    rows, floor, load0 = [], None, os.getloadavg()
    with target_session("host", Timing(min_seconds=0.3, rounds=3)) as sessions:
        target = sessions[0].target

        def ratio(base_path, model) -> float:
            p = tmp / "cand.tflite"
            p.write_bytes(convert(model, "fp32"))
            base, ms = target.time([base_path, p])
            return ms["ms"] / base["ms"]

        def bisect(make, goal, lo, hi, steps=6):
            """The knob in [lo, hi] whose model's measured latency ratio is closest to goal
            (latency falls as the knob rises for pruning; `make` hides the direction)."""
            best = None
            for _ in range(steps):
                mid = (lo + hi) / 2
                r = ratio(base_path, make(mid))
                if best is None or abs(r - goal) < abs(best[1] - goal):
                    best = (mid, r)
                if r > goal:
                    lo = mid
                else:
                    hi = mid
            return best

        for seed in args.seeds:
            ds = load_dataset(rec.dataset, seed=seed)
            model = build(opts, ds, seed)
            fit(model, ds, train_cfg, seed=seed)
            acc0 = models.accuracy(model, ds.x_test, ds.y_test)
            base_path = tmp / f"base{seed}.tflite"
            base_path.write_bytes(convert(model, "fp32"))
            if floor is None:  # the smallest network adapt's grid allows, timed side by side:
                # every prunable group at min_channels (nothing protected, as in adapt's grid)
                floor = ratio(base_path, prune_channels(model, 0.999,
                                                        round_to=adapt_cfg.round_to,
                                                        min_channels=adapt_cfg.min_channels))
            t0 = time.time()
            try:
                res = adapt_model(model, ds, adapt_cfg, tmp / f"adapt{seed}", seed=seed)
            except UserError as e:  # budget missed: say so, keep the other seeds
                rows.append({"seed": seed, "acc0": acc0, "failed": str(e),
                             "took": time.time() - t0})
                print(rows[-1], flush=True)
                continue
            took = time.time() - t0
            adapted = res["model"]
            r_ad = ratio(base_path, adapted)
            acc_ad = models.accuracy(adapted, ds.x_test, ds.y_test)

            u, r_u = bisect(lambda x: prune_channels(model, x, protect=["classifier"]),
                            r_ad, 0.0, 0.95)
            uni = prune_channels(model, u, protect=["classifier"])
            fit(uni, ds, tune_cfg, seed=seed)
            acc_u = models.accuracy(uni, ds.x_test, ds.y_test)

            def narrow(w):  # width multiplier: knob 1 - w so that latency falls as it rises
                if args.model == "mobilenet":  # the head too (the zoo keeps it at 256 below
                    # width 1), so that every layer narrows
                    head = max(8, round(opts.get("head_channels", 256) * (1 - w)))
                    return build({**opts, "width": opts["width"] * (1 - w),
                                  "head_channels": head}, ds, seed)
                return build({**opts, "filters": [max(1, round(c * (1 - w)))
                                                  for c in opts["filters"]],
                              "dense": max(1, round(opts["dense"] * (1 - w)))}, ds, seed)

            w, r_w = bisect(narrow, r_ad, 0.0, 0.95)
            wide = narrow(w)
            fit(wide, ds, train_cfg, seed=seed)
            acc_w = models.accuracy(wide, ds.x_test, ds.y_test)
            rows.append({"seed": seed, "acc0": acc0, "adapt": (acc_ad, r_ad), "uniform": (acc_u, r_u, u),
                         "width": (acc_w, r_w, 1 - w), "took": took,
                         "iterations": len(res["metrics"]["iterations"])})
            print(rows[-1], flush=True)

    return {"seeds": args.seeds, "rows": rows, "floor": floor,
            "load": [round(v, 2) for v in (*load0, *os.getloadavg())]}


def run_key(model: str, ratio: float) -> str:
    """Key of a run in the .json store: the ratio alone for small_cnn (the first runs')."""
    return f"{ratio:g}" if model == "small_cnn" else f"{model}:{ratio:g}"


def section(ratio: float, run: dict, model: str = "small_cnn") -> list[str]:
    """One ratio's table, mean losses and verdicts."""
    rows = run["rows"]
    load = run.get("load")
    floor = run.get("floor")
    lines = [
        f"### {model}: budget {ratio:g} x the trained model's latency (seeds "
        f"{' '.join(map(str, run['seeds']))})",
        "",
        "Load average (1/5/15 min) at start and end: "
        + (f"{load[:3]} → {load[3:]}" if load else "not recorded by that run")
        + "; smallest network adapt may reach (every group at min_channels): "
        + (f"{floor:.2f}x." if floor else "not measured by that run."),
        "",
        "| seed | trained acc | adapt: acc (loss), latency | uniform: acc (loss), latency, ratio | "
        "width: acc (loss), latency, width | adapt took |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        a0 = r["acc0"]
        if r.get("failed"):
            lines.append(f"| {r['seed']} | {a0:.4f} | budget missed: {r['failed'].replace('|', '/')} | | | "
                         f"{r['took']:.0f} s |")
            continue
        lines.append(
            f"| {r['seed']} | {a0:.4f} | {r['adapt'][0]:.4f} ({a0 - r['adapt'][0]:+.4f}), "
            f"{r['adapt'][1]:.2f}x | {r['uniform'][0]:.4f} ({a0 - r['uniform'][0]:+.4f}), "
            f"{r['uniform'][1]:.2f}x, r={r['uniform'][2]:.2f} | {r['width'][0]:.4f} "
            f"({a0 - r['width'][0]:+.4f}), {r['width'][1]:.2f}x, w={r['width'][2]:.2f} | "
            f"{r['took']:.0f} s, {r['iterations']} it. |")
    ok = [r for r in rows if not r.get("failed")]
    if not ok:
        return lines + ["", "Adapt met the budget for no seed."]
    loss = {k: float(np.mean([r["acc0"] - r[k][0] for r in ok])) for k in ("adapt", "uniform",
                                                                           "width")}
    lines += ["", f"Mean accuracy loss over {len(ok)} seed(s) (positive: lost): adapt "
              f"{loss['adapt']:+.4f}, uniform {loss['uniform']:+.4f}, width {loss['width']:+.4f}. "
              + ("Uniform pruning loses at least a point here, as the issue's comparison needs; "
                 "the goal (adapt loses less than half of what uniform loses) is "
                 f"{'met' if loss['adapt'] < loss['uniform'] / 2 else 'NOT met'}."
                 if loss["uniform"] >= 0.01 else
                 "Uniform pruning loses less than a point here, so this budget does not test the "
                 "issue's goal (it needs budgets where uniform loses at least one).")
              + f" Mean adapt time {np.mean([r['took'] for r in ok]):.0f} s on a shared 2-core "
              "host."]
    for k in ("uniform", "width"):  # a baseline its own knob kept off adapt's latency
        off = [r for r in ok if abs(r[k][1] - r["adapt"][1]) > 0.05]
        if not off:
            continue
        text = (f"The {k} baseline could not land within 0.05 of the adapted model's latency "
                "ratio on " + ", ".join(f"seed {r['seed']} ({r[k][1]:.2f}x against "
                                       f"{r['adapt'][1]:.2f}x)" for r in off))
        # the knob at the end of its range: pruned 90%+ / width 10% or less of the trained one
        end = [f"seed {r['seed']}" for r in off
               if (r[k][2] >= 0.9 if k == "uniform" else r[k][2] <= 0.1)]
        if end:
            text += (f"; at the end of its range ({', '.join(end)}) its smallest network is that "
                     "slow: channel counts stay at least 8")
            if model == "mobilenet":
                text += " (mobilenet: each block's expansion layer keeps 6x its input)"
        lines += ["", text + ". It is compared at the closest latency its bisection measured."]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())

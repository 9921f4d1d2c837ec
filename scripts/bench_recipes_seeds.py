"""Run every ready recipe with several seeds and give the spread of each gated metric.

A ready recipe must pass its own gates on any machine of this kind, whatever floating-point
order the CPU gives. Changing the seed changes the data splits, the initial weights and the
batch order at once: a protocol that passes on three seeds does not depend on one lucky draw.
Each run is `pipeline.engine.run` on the recipe's own text with only its `seed:` line replaced
(the file is not edited), in a fresh run folder. A run that breaks a gate is recorded with the
gate's message (and counted as a failure in the table), and the benchmark goes on.

    python scripts/bench_recipes_seeds.py                   # writes benchmarks/recipes_seeds.md
    python scripts/bench_recipes_seeds.py --recipes digits_int8 --seeds 0 --out /tmp/r.md
    python scripts/bench_recipes_seeds.py --render A.json B.json  # re-render (merged) results
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ["digits", "digits_prune", "digits_int8", "digits_distill", "digits_nas", "diabetes",
           "digits_two_head", "digits_autoencoder", "digits_adapt"]
SEED_LINE = re.compile(r"^seed:\s*\d+\s*(#.*)?$", re.M)


def with_seed(text: str, seed: int) -> str:
    """The recipe text with its top-level `seed:` set to `seed` (added when absent)."""
    if SEED_LINE.search(text):
        return SEED_LINE.sub(f"seed: {seed}", text, count=1)
    return f"seed: {seed}\n{text}"


def gated_metrics(recipe, report: dict) -> list[dict]:
    """[{metric, value, limit, kind: min|max}] for every number a gate of `recipe` checked."""
    out = []
    g = recipe.gates
    files = [a for a in report["artifacts"] if a["format"] == "tflite" and a.get("accuracy") is not None]
    if g.min_accuracy is not None and files:
        out.append({"metric": "lowest .tflite accuracy", "value": min(a["accuracy"] for a in files),
                    "limit": g.min_accuracy, "kind": "min"})
    drops = [a["keras_accuracy"] - a["accuracy"] for a in files if a.get("keras_accuracy") is not None]
    if g.max_accuracy_drop is not None and drops:
        out.append({"metric": "largest drop .tflite vs its Keras model", "value": max(drops),
                    "limit": g.max_accuracy_drop, "kind": "max"})
    quant = [s.config for s in recipe.stages if s.name == "quantize"]
    for cfg in quant:
        if cfg.max_accuracy_drop is None:
            continue
        arts = [a for a in files if a.get("mode") == cfg.mode and a.get("accuracy_drop") is not None]
        if arts:
            out.append({"metric": f"{cfg.mode} drop vs float", "value": arts[-1]["accuracy_drop"],
                        "limit": cfg.max_accuracy_drop, "kind": "max"})
    out += _task_metric_gates(recipe, [a for a in report["artifacts"] if a["format"] == "tflite"])
    nas = [s.config.constraints for s in recipe.stages if s.name == "nas"]
    for a in report["artifacts"]:
        if nas and a.get("nas_latency_ms") is not None:  # the search's own measurement
            out.append({"metric": "nas best: host int8 p50 ms", "value": a["nas_latency_ms"],
                        "limit": nas[-1].max_latency_ms, "kind": "max"})
            out.append({"metric": "nas best: size KB", "value": a["nas_size_kb"],
                        "limit": nas[-1].max_size_kb or g.max_size_kb, "kind": "max"})
    return out


def _task_metric_gates(recipe, report_files: list[dict]) -> list[dict]:
    """min_metric / max_metric_drop (recipe gates) and a quantize stage's max_metric_drop, in the
    direction of the task's primary metric (a regressor's MAE: lower is better)."""
    g, out = recipe.gates, []
    files = [a for a in report_files if a.get("task") and a["task"]["primary"] in a]
    if not files:
        return out
    p, higher = files[0]["task"]["primary"], files[0]["task"]["higher_is_better"]
    vals = [a[p] for a in files]
    if g.min_metric is not None:
        out.append({"metric": f"{'lowest' if higher else 'highest'} .tflite {p}",
                    "value": min(vals) if higher else max(vals), "limit": g.min_metric,
                    "kind": "min" if higher else "max"})
    worse = [a["keras_" + p] - a[p] if higher else a[p] - a["keras_" + p]
             for a in files if a.get("keras_" + p) is not None]
    if g.max_metric_drop is not None and worse:
        out.append({"metric": f"largest {p} loss .tflite vs its Keras model", "value": max(worse),
                    "limit": g.max_metric_drop, "kind": "max"})
    for cfg in (s.config for s in recipe.stages if s.name == "quantize"):
        arts = [a for a in files if a.get("mode") == cfg.mode and a.get("metric_drop") is not None]
        if cfg.max_metric_drop is not None and arts:
            out.append({"metric": f"{cfg.mode} {p} loss vs float", "value": arts[-1]["metric_drop"],
                        "limit": cfg.max_metric_drop, "kind": "max"})
    return out


def info_metrics(report: dict) -> list[dict]:
    """Numbers worth seeing beside the gates: each Keras model's test accuracy (or the task's
    primary metric)."""
    out = []
    for a in report["artifacts"]:
        p = (a.get("task") or {}).get("primary", "accuracy")
        if a["format"] == "keras" and a.get(p) is not None:
            out.append({"metric": f"{a['stage']}/{a['name']} Keras {p}", "value": a[p]})
    return out


def one_run(name: str, seed: int, work: Path) -> dict:
    from pipeline import engine, recipe as recipes
    from pipeline.errors import UserError

    text = with_seed((ROOT / "recipes" / f"{name}.yaml").read_text(), seed)
    r = recipes.parse(text, f"recipes/{name}.yaml (seed {seed})")
    run_dir = work / f"{name}_seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    t0 = time.time()
    row = {"recipe": name, "seed": seed}
    try:
        engine.run(r, run_dir, recipe_text=text)
    except UserError as e:  # a broken gate (GateError) or any other refusal: recorded, go on
        row.update(error=f"{type(e).__name__}: {e}", seconds=time.time() - t0)
        return row
    report = json.loads((run_dir / "report.json").read_text())
    row.update(seconds=time.time() - t0, gated=gated_metrics(r, report), info=info_metrics(report))
    return row


def _passes(m: dict) -> bool:
    if m["limit"] is None:
        return True
    return m["value"] >= m["limit"] if m["kind"] == "min" else m["value"] <= m["limit"]


def _fmt(v: float) -> str:
    return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"


def render(rows: list[dict], command: str, seconds: float) -> str:
    seeds = sorted({r["seed"] for r in rows})
    lines = ["## Ready recipes across seeds (issue 12)", "",
             f"`{command}` — {len(rows)} runs, {seconds / 60:.0f} min. Each recipe in `recipes/` "
             f"ran unchanged but for its `seed:` (seeds {', '.join(map(str, seeds))}: data "
             "splits, initial weights and batch order all change). Every number below is one a "
             "gate of the recipe checked, as min / mean / max over the seeds; a gate passes on "
             "every seed when the worst value is within the limit.", ""]
    failed = [r for r in rows if "error" in r]
    lines += ["| recipe | gated metric | gate | min | mean | max | passes |",
              "|---|---|---|---:|---:|---:|---|"]
    for name in dict.fromkeys(r["recipe"] for r in rows):
        ok = [r for r in rows if r["recipe"] == name and "gated" in r]
        runs = sum(1 for r in rows if r["recipe"] == name)  # a failed run passes no gate
        metrics = dict.fromkeys(m["metric"] for r in ok for m in r["gated"])
        for metric in metrics:
            ms = [m for r in ok for m in r["gated"] if m["metric"] == metric]
            vals = [m["value"] for m in ms]
            lim = ms[0]["limit"]
            gate = "—" if lim is None else f"{'≥' if ms[0]['kind'] == 'min' else '≤'} {lim:g}"
            passes = sum(_passes(m) for m in ms)
            lines.append(f"| {name} | {metric} | {gate} | {_fmt(min(vals))} | "
                         f"{_fmt(statistics.mean(vals))} | {_fmt(max(vals))} | "
                         f"{passes}/{runs} seeds |")
    lines += ["", "Test accuracy (or the task's metric) of every Keras model the recipes made (not "
              "gated; min / mean / max over seeds), and wall time per run:", "",
              "| recipe | model and metric | min | mean | max |", "|---|---|---:|---:|---:|"]
    for name in dict.fromkeys(r["recipe"] for r in rows):
        ok = [r for r in rows if r["recipe"] == name and "info" in r]
        for metric in dict.fromkeys(m["metric"] for r in ok for m in r["info"]):
            vals = [m["value"] for r in ok for m in r["info"] if m["metric"] == metric]
            lines.append(f"| {name} | {metric.replace(' Keras ', ' ')} | "
                         f"{_fmt(min(vals))} | {_fmt(statistics.mean(vals))} | {_fmt(max(vals))} |")
        secs = [r["seconds"] for r in rows if r["recipe"] == name]
        lines.append(f"| {name} | wall time per run (s) | {min(secs):.0f} | "
                     f"{statistics.mean(secs):.0f} | {max(secs):.0f} |")
    if failed:
        lines += ["", "Runs that failed:", ""]
        lines += [f"- {r['recipe']} seed {r['seed']}: {r['error']}" for r in failed]
    else:
        lines += ["", f"All {len(rows)} runs passed every gate of their recipe."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=RECIPES, choices=RECIPES)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--work", default="/tmp/edgepipe_bench_recipes", help="run folders go here")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "recipes_seeds.md"))
    ap.add_argument("--json", help="raw results (default: WORK/results.json)")
    ap.add_argument("--render", metavar="JSON", nargs="+",
                    help="only rewrite --out from saved results (several: merged, e.g. NAS run apart)")
    args = ap.parse_args(argv)
    from pipeline.artifacts import atomic_write_text

    work = Path(args.work)
    raw = Path(args.json or work / "results.json")
    if args.render:
        saved = [json.loads(Path(f).read_text()) for f in args.render]
        text = render([r for s in saved for r in s["rows"]], " and ".join(s["command"] for s in saved),
                      sum(s["seconds"] for s in saved))
    else:
        command = "python scripts/bench_recipes_seeds.py" + (
            " " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
        work.mkdir(parents=True, exist_ok=True)
        t0, rows = time.time(), []
        for seed in args.seeds:  # seeds outside: a stopped benchmark still covers every recipe
            for name in args.recipes:
                rows.append(one_run(name, seed, work))
                print(json.dumps(rows[-1]), flush=True)
                atomic_write_text(raw, json.dumps({"command": command, "rows": rows,
                                                   "seconds": time.time() - t0}, indent=1))
        text = render(rows, command, time.time() - t0)
    atomic_write_text(args.out, text)
    if Path(args.out).resolve() == (ROOT / "benchmarks" / "recipes_seeds.md").resolve():
        sys.path.insert(0, str(ROOT / "scripts"))
        import make_benchmarks_md

        make_benchmarks_md.main()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`adapt`: shrink a trained model until its latency MEASURED on a target meets a budget (NetAdapt).

Each iteration sets a latency target a step below the current model's (the step shrinks as the
budget nears), asks the latency table + predictor for each prunable channel group's fewest
channels to remove to reach it (`compress/netadapt.py`, over the channel-pruning graph), prunes
each proposal, fine-tunes it briefly (`training.fit`), and keeps the one with the best validation
accuracy. The kept model is converted and timed on the target next to the starting model; the loop
stops when that measurement meets the budget (aiming `margin` under it, so a re-measurement does
not cross it). A candidate that already loses more than `max_accuracy_drop` of validation accuracy
is never kept; when every candidate of an iteration does, the loop stops there (the budget unmet).
The candidates run through `search.candidates.Pool` (adapt_candidates.py): in this process, or on
`workers` processes over the nas search's chief/worker machinery, with the same result. Then
the result is fine-tuned properly, converted in each quantization mode, and the fastest mode whose
validation accuracy stays within `max_accuracy_drop` of the starting model's is kept. A budget that cannot be met is an error naming the closest latency reached and
its accuracy; that model stays in the run's `.adapt/` folder, never reported as met.

Every iteration is checkpointed (model + state.json, atomically) under `<run>/.adapt/<key>/`, and
every scored candidate in its `candidates_*/` folder, so a killed run resumes in the iteration it
was in without scoring a candidate twice.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Literal, NamedTuple

from pydantic import Field, PositiveFloat, field_validator, model_validator

from pipeline.errors import UserError
from pipeline.stages import adapt_candidates as AC
from pipeline.stages.base import Artifact, Stage, StageResult
from pipeline.training import FitConfig

log = logging.getLogger("edgepipe")
STATE_DIR = ".adapt"
QUANT = {"fp32": "fp32", "float16": "float16", "int8": "int8", "qat": "int8"}


class AdaptConfig(FitConfig):
    target: str = Field("host", description="where latency is measured: host or one board")
    max_latency_ms: PositiveFloat | None = Field(None, description="budget in ms (p50)")
    latency_ratio: float | None = Field(None, gt=0, lt=1, description="budget as a share of the "
                                        "starting model's latency, measured side by side")
    margin: float = Field(0.05, ge=0, lt=0.5, description="aim this share under the budget")
    max_accuracy_drop: float = Field(0.02, ge=0, le=1, description="validation accuracy the "
                                     "result may lose against the starting model")
    step: float = Field(0.15, gt=0, lt=1, description="first iteration's latency reduction, "
                        "a share of the starting latency")
    decay: float = Field(0.85, gt=0, le=1, description="each iteration's step is this times "
                         "the last")
    max_iterations: int = Field(20, ge=1)
    short_epochs: int = Field(1, ge=0, description="fine-tuning of each proposal")
    epochs: int = Field(10, ge=0, description="final fine-tuning (early stopping)")
    learning_rate: float = Field(5e-4, gt=0)
    patience: int | None = Field(3, ge=1)
    criterion: str = Field("l1", description="channel importance: l1 | l2 | bn_scale | ...")
    round_to: int = Field(8, ge=1)
    min_channels: int = Field(8, ge=1)
    levels: int = Field(8, ge=2, description="channel counts per group on the grid")
    quantization: list[Literal["fp32", "float16", "int8", "qat"]] = Field(
        ["fp32", "float16", "int8"], min_length=1, description="modes to choose from")
    qat_epochs: int = Field(2, ge=1)
    threads: int = Field(1, ge=1)
    min_seconds: float = Field(0.3, ge=0, description="edge-runner: timed seconds per pass")
    rounds: int = Field(3, ge=1, description="interleaved passes; the fastest median counts")
    table: str | None = Field(None, description="latency table file (default: the cache's)")
    accept_new: bool = False
    timeout_s: float = Field(600, gt=0, description="boards: seconds for each remote command")

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        from pipeline.stages.profile.targets import check_target

        return check_target(v)

    @field_validator("criterion")
    @classmethod
    def _criterion(cls, v: str) -> str:
        from pipeline.errors import did_you_mean

        known = ("l1", "l2", "bn_scale", "mean_activation", "apoz")
        if v not in known:
            raise ValueError(f"unknown criterion {v!r}{did_you_mean(v, known)}; expected one "
                             f"of: {', '.join(known)}")
        return v

    @model_validator(mode="after")
    def _one_budget(self) -> "AdaptConfig":
        if (self.max_latency_ms is None) == (self.latency_ratio is None):
            raise ValueError("give exactly one budget: max_latency_ms or latency_ratio")
        return self


class Budget:
    """Met or not, from a latency measured side by side with the starting model's."""

    def __init__(self, cfg: AdaptConfig):
        self.ms, self.ratio, self.margin = cfg.max_latency_ms, cfg.latency_ratio, cfg.margin

    def limit(self, base_ms: float, aim: bool = False) -> float:
        lim = self.ms if self.ms is not None else self.ratio * base_ms
        return lim * (1 - self.margin) if aim else lim

    def text(self, base_ms: float) -> str:
        if self.ms is not None:
            return f"{self.ms:g} ms"
        return f"{self.ratio:g} x the starting {base_ms:.4g} ms = {self.ratio * base_ms:.4g} ms"


def _key(model_file_hash: str, cfg: AdaptConfig, ds_spec: Any, seed: int) -> str:
    from pipeline.artifacts import sha256_json

    keep = cfg.model_dump(mode="json", exclude={"accept_new", "timeout_s", "table", "epochs",
                                                "patience", "quantization", "qat_epochs"})
    return sha256_json({"model": model_file_hash, "cfg": keep, "data": ds_spec, "seed": seed})


class _State:
    """state.json + one model per iteration under the adapt folder; written atomically."""

    def __init__(self, folder: Path):
        self.dir = folder
        self.file = folder / "state.json"
        self.data: dict = json.loads(self.file.read_text()) if self.file.exists() else {}
        self.data.setdefault("iterations", [])
        # a final row of an earlier attempt (that then failed a check) is redone, not resumed
        self.data["iterations"] = [r for r in self.iterations if r["iteration"] != "final"]

    def save(self) -> None:
        from pipeline.artifacts import atomic_write_json

        atomic_write_json(self.file, self.data)

    @property
    def iterations(self) -> list[dict]:
        return self.data["iterations"]


def _iterate(cur, ds, cfg, state: _State, target, predictor, grid, budget, base_path, seed, say,
             pool=None) -> tuple[Any, "Unmet | None"]:
    """NetAdapt iterations from `cur` until the measured latency meets the budget, each
    iteration's candidates scored by `pool` (search.candidates.Pool). Returns the model reached
    and None when it meets the budget, else why not (for `_closest`)."""
    from pipeline import models
    from pipeline.compress import netadapt
    from pipeline.latency.build import convert
    from pipeline.latency.ops import key, model_ops
    from pipeline.search.oracle import metrics_of

    def judged(ms: float, base_ms: float, why: str) -> Unmet | None:
        # the margin is only an aim: a model that can shrink no further is judged by the budget
        return None if ms <= budget.limit(base_ms) else Unmet(why)

    start_acc = state.data["start"]["val_accuracy"]
    while True:
        last = state.iterations[-1] if state.iterations else state.data["start"]
        base_ms, cur_ms = last["base_ms"], last["ms"]
        if cur_ms <= budget.limit(base_ms, aim=True):
            return cur, None
        i = len(state.iterations)
        if i >= cfg.max_iterations:
            return cur, judged(cur_ms, base_ms, "max_iterations reached")
        ops, graph0, _ = model_ops(cur)

        def latency(graph, counts):
            return predictor.predict_keys([key(op.signature(graph0, counts)) for op in ops])

        scale = cur_ms / latency(graph0, {})
        goal = max(budget.limit(base_ms, aim=True), cur_ms - cfg.step * cfg.decay ** i * base_ms)
        props = netadapt.proposals(cur, grid, latency, goal / scale)
        if not props:
            return cur, judged(cur_ms, base_ms, "no channel group can shrink further")
        src = last.get("model", "start.keras")
        trials = pool.run([{"iteration": i + 1, "candidate": j, "group": p.group,
                            "after": p.after, "model": src, "seed": seed + 1000 * i + j}
                           for j, p in enumerate(props)])
        rows = []
        for p, t in zip(props, trials):
            acc = metrics_of(t)["val_accuracy"]
            rows.append({"group": p.group, "before": p.before, "after": p.after,
                         "predicted_ms": p.predicted_ms * scale, "val_accuracy": acc})
            say(f"[adapt] iteration {i + 1}: {p.group} {p.before}->{p.after} channels: predicted "
                f"{rows[-1]['predicted_ms']:.4g} ms, val accuracy {acc:.4f}"
                + ("" if start_acc - acc <= cfg.max_accuracy_drop else
                   f" (loses more than max_accuracy_drop {cfg.max_accuracy_drop:g})"))
        # NetAdapt keeps the most accurate candidate (the fastest by the model among equals,
        # the first among those), and never one that breaks the accuracy allowed
        order = sorted(range(len(rows)), key=lambda j: (-rows[j]["val_accuracy"],
                                                        rows[j]["predicted_ms"], j))
        j = order[0]
        if start_acc - rows[j]["val_accuracy"] > cfg.max_accuracy_drop:
            state.data["rejected"] = {"iteration": i + 1, "candidates": rows}
            state.save()
            r = rows[j]
            return cur, Unmet(
                f"every candidate of iteration {i + 1} loses more than max_accuracy_drop "
                f"{cfg.max_accuracy_drop:g} of validation accuracy; the best, {r['group']} "
                f"{r['before']}->{r['after']} channels, keeps {r['val_accuracy']:.4f} against the "
                f"starting {start_acc:.4f}", "raise the budget or max_accuracy_drop, or give "
                "candidates more short_epochs")
        row = rows[j]
        cur = models.load_model(pool.trial_dir(trials[j]) / "model.keras", unsafe=True)
        path = state.dir / f"iter_{i + 1}.tflite"
        path.write_bytes(convert(cur, "fp32"))
        base_ms, ms = (r["ms"] for r in target.time([base_path, path]))
        models.save_model(cur, state.dir / f"iter_{i + 1}.keras")
        state.iterations.append({**row, "iteration": i + 1, "ms": ms, "base_ms": base_ms,
                                 "candidates": len(props), "model": f"iter_{i + 1}.keras"})
        state.data.pop("rejected", None)
        state.save()  # last: the iteration counts as done only once this lands
        for t in trials:  # the kept one is iter_N.keras now
            (pool.trial_dir(t) / "model.keras").unlink(missing_ok=True)
        say(f"[adapt] iteration {i + 1}: kept {row['group']} {row['before']}->{row['after']}; "
            f"measured {ms:.4g} ms ({ms / base_ms:.2f} x the start), val accuracy "
            f"{row['val_accuracy']:.4f}")


class Unmet(NamedTuple):
    """Why the loop ended over the budget, and what the user can do about it."""

    why: str
    hint: str = "raise the budget or lower min_channels"


def _closest(state: _State, budget: Budget, target: str, why: str,
             hint: str = Unmet._field_defaults["hint"]) -> UserError:
    rows = state.iterations or [state.data["start"]]
    best = min(rows, key=lambda r: r["ms"] / r["base_ms"])
    kept = state.dir / best.get("model", "start.keras")
    return UserError(
        f"adapt: the budget {budget.text(best['base_ms'])} on {target} cannot be met ({why}): "
        f"closest {best['ms']:.4g} ms measured ({best['ms'] / best['base_ms']:.2f} x the start) "
        f"at validation accuracy {best['val_accuracy']:.4f}; that model is kept in {kept}; "
        f"{hint}")


def _choose_mode(cur, ds, cfg, state: _State, target, base_path, start_acc, seed, say):
    """Convert the final model in each mode, time them next to the start, keep the fastest within
    max_accuracy_drop. Returns (mode, model to convert, row per mode, base_ms)."""
    from pipeline import tflite
    from pipeline.compress.quantize import quantize_aware

    sources, rows, paths = {}, {}, []
    calib = ds.calibration()
    for mode in cfg.quantization:
        src = cur
        if mode == "qat":
            src, _ = quantize_aware(cur)
            AC.fine_tune(src, ds, cfg, cfg.qat_epochs, seed, "[adapt] qat")
        p = state.dir / f"final_{mode}.tflite"
        p.write_bytes(tflite.convert(src, QUANT[mode], calib if QUANT[mode] == "int8" else None))
        acc = float((tflite.predict(p, ds.x_val).argmax(-1) == ds.y_val).mean())
        sources[mode], rows[mode] = src, {"val_accuracy": acc}
        paths.append(p)
    base, *times = target.time([base_path, *paths])
    for mode, t in zip(cfg.quantization, times):
        rows[mode]["ms"] = t["ms"]
        say(f"[adapt] {mode}: {t['ms']:.4g} ms ({t['ms'] / base['ms']:.2f} x the start), "
            f"val accuracy {rows[mode]['val_accuracy']:.4f}")
    ok = [m for m in cfg.quantization if start_acc - rows[m]["val_accuracy"] <= cfg.max_accuracy_drop]
    mode = (min(ok, key=lambda m: rows[m]["ms"]) if ok
            else max(cfg.quantization, key=lambda m: rows[m]["val_accuracy"]))
    return mode, sources[mode], rows, base["ms"]


def adapt_model(model, ds, cfg: AdaptConfig, state_dir: Path, *, seed: int = 0,
                devices: str | None = None, say: Callable[[str], None] = log.info,
                workers: int = 0, timeout: float = 60.0,
                data: dict[str, Any] | None = None) -> dict:
    """Adapt `model` to `cfg`'s budget; returns {model, export_model, mode, metrics}. Raises a
    UserError naming the closest result when the budget cannot be met.

    `workers` > 0 scores each iteration's candidates on that many worker processes on this host
    (search.candidates: the nas search's chief/worker machinery; `timeout` as for nas workers),
    which load `data` ({"dataset": the DatasetSpec as JSON, "task": the task spec or None}:
    how `ds` was made) and reach the same choice as without workers."""
    from pipeline import models
    from pipeline.artifacts import sha256_json
    from pipeline.search.candidates import Pool
    from pipeline.compress import netadapt
    from pipeline.latency import Timing, target_session
    from pipeline.latency.build import convert, fill
    from pipeline.latency.ops import all_signatures
    from pipeline.latency.predict import Predictor

    state = _State(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    budget = Budget(cfg)
    timing = Timing(threads=cfg.threads, min_seconds=cfg.min_seconds, rounds=cfg.rounds)
    with target_session(cfg.target, timing, "fp32", table=cfg.table, devices=devices,
                        accept_new=cfg.accept_new, timeout=cfg.timeout_s, say=say) as sessions:
        if len(sessions) != 1:
            raise UserError(f"adapt: target {cfg.target} is {len(sessions)} boards; adapt to one "
                            f"board (name it)")
        target = sessions[0].target
        table = sessions[0].table()
        fill(table, all_signatures(model, cfg.round_to, cfg.min_channels, cfg.levels), target,
             say=say)
        predictor = Predictor.fit(table)
        grid = state.data.setdefault("grid", netadapt.grid(model, cfg.round_to, cfg.min_channels,
                                                            cfg.levels))
        base_path = state_dir / "start.tflite"
        start_acc = AC.val_accuracy(model, ds)
        if "start" not in state.data:
            base_path.write_bytes(convert(model, "fp32"))
            models.save_model(model, state_dir / "start.keras")
            base_ms, ms = (r["ms"] for r in target.time([base_path, base_path]))
            state.data["start"] = {"ms": ms, "base_ms": base_ms, "val_accuracy": start_acc}
            state.save()
        cur = model
        if state.iterations:
            cur = models.load_model(state_dir / state.iterations[-1]["model"])
            say(f"[adapt] resuming after iteration {len(state.iterations)} "
                f"({state_dir / state.iterations[-1]['model']})")
        # what a candidate's result depends on, beyond its own values and the model it starts
        # from (both in the values): a finished candidate is reused only under the same
        pkey = sha256_json({"fit": FitConfig(**cfg.model_dump(include=set(FitConfig.model_fields)))
                            .model_dump(mode="json"), "criterion": cfg.criterion,
                            "short_epochs": cfg.short_epochs, "seed": seed})
        project = state_dir / f"candidates_{pkey[:12]}"
        start = None
        if workers:
            if data is None:
                raise ValueError("adapt_model: workers need `data` (how the dataset was made)")
            AC.write_job(state_dir, key=pkey, project=project.name, cfg=cfg, seed=seed, data=data)
            start = AC.local_workers(state_dir, project, workers, timeout)
        with Pool(project, pkey, AC.work(state_dir, ds, cfg), workers=workers, start=start,
                  timeout=timeout) as pool:
            cur, unmet = _iterate(cur, ds, cfg, state, target, predictor, grid, budget,
                                  base_path, seed, say, pool)
        if unmet is not None:
            raise _closest(state, budget, target.name, *unmet)
        AC.fine_tune(cur, ds, cfg, cfg.epochs, seed, "[adapt] final fine-tuning", cfg.patience)
        models.save_model(cur, state_dir / "final.keras")
        mode, export_model, modes, base_ms = _choose_mode(cur, ds, cfg, state, target, base_path,
                                                          start_acc, seed, say)
    final_ms, acc = modes[mode]["ms"], modes[mode]["val_accuracy"]
    state.iterations.append({"iteration": "final", "ms": final_ms, "base_ms": base_ms,
                             "val_accuracy": acc, "model": "final.keras", "mode": mode})
    state.save()
    if final_ms > budget.limit(base_ms):
        raise _closest(state, budget, target.name, "the final measurement is over it")
    if start_acc - acc > cfg.max_accuracy_drop:
        raise UserError(f"adapt: the budget is met ({final_ms:.4g} ms, {mode}) but validation "
                        f"accuracy fell {start_acc - acc:.4f} (from {start_acc:.4f} to {acc:.4f}),"
                        f" more than max_accuracy_drop {cfg.max_accuracy_drop}; the model is kept "
                        f"in {state_dir / 'final.keras'}; raise the budget or max_accuracy_drop")
    metrics = {"target": target.name, "budget": budget.text(base_ms),
               "budget_ms": budget.limit(base_ms), "budget_met": True,
               "start_ms": base_ms, "final_ms": final_ms, "speedup": base_ms / final_ms,
               "start_val_accuracy": start_acc, "final_val_accuracy": acc, "mode": mode,
               "modes": modes, "iterations": state.iterations[:-1],
               "predictor": predictor.describe(), "table": str(table.path)}
    return {"model": cur, "export_model": export_model, "mode": mode, "metrics": metrics}


def plot_png(metrics: dict) -> bytes:
    """Measured latency and validation accuracy per iteration, with the budget."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [{"iteration": 0, "ms": metrics["start_ms"],
             "val_accuracy": metrics["start_val_accuracy"]}, *metrics["iterations"]]
    x = [r["iteration"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(x, [r["ms"] for r in rows], "o-", color="tab:blue", label="measured latency")
    ax.axhline(metrics["budget_ms"], color="tab:red", ls="--", label="budget")
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"ms on {metrics['target']}")
    ax2 = ax.twinx()
    ax2.plot(x, [r["val_accuracy"] for r in rows], "s-", color="tab:green", label="val accuracy")
    ax2.set_ylabel("validation accuracy")
    fig.legend(loc="lower left", fontsize=8)
    ax.set_title(f"adapt: {metrics['start_ms']:.3g} -> {metrics['final_ms']:.3g} ms "
                 f"({metrics['mode']})", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


class Adapt(Stage):
    name = "adapt"
    Config = AdaptConfig
    help = ("NetAdapt: prune channels until the latency measured on a target meets a budget, "
            "fine-tune, pick the quantization; saves model.keras and the chosen .tflite")
    makes = ("keras", "tflite")
    uses_model = True  # it shrinks a trained model: after the recipe's training

    @classmethod
    def input_paths(cls, cfg: AdaptConfig, recipe) -> list[str]:
        if cfg.target != "host":
            from pipeline.devices.inventory import default_path

            return [str(recipe.devices or default_path())]
        return []

    def run(self, ctx, cfg: AdaptConfig) -> StageResult:
        from pipeline import tflite
        from pipeline.artifacts import atomic_write_bytes, sha256_file
        from pipeline.compress.channels import channel_report

        from pipeline.tasks import require_classification

        ds = ctx.dataset()
        require_classification(ctx.recipe.task, ds, "adapt")
        model = ctx.load_model()
        src = ctx.latest_keras()
        key = _key(sha256_file(ctx.path(src)) if src else "recipe:model", cfg,
                   ctx.recipe.dataset.model_dump(mode="json"), ctx.seed)
        dist = ctx.options  # `edgepipe run --workers N`: a nas.Distribution (not in the key)
        task = ctx.recipe.task
        data = {"dataset": ctx.recipe.dataset.model_dump(mode="json"),
                "task": task.model_dump(mode="json") if hasattr(task, "model_dump") else task}
        res = adapt_model(model, ds, cfg, ctx.run_dir / STATE_DIR / key[:16], seed=ctx.seed,
                          devices=ctx.recipe.devices, say=lambda m: ctx.log("%s", m),
                          workers=dist.workers if dist else 0,
                          timeout=dist.timeout if dist else 60.0, data=data)
        m = res["metrics"]
        atomic_write_bytes(ctx.out_dir / "trajectory.png", plot_png(m))
        art = ctx.save_model(res["model"], "model", metrics={
            "channels": channel_report(model, res["model"]), "adapt_budget": {
                k: m[k] for k in ("target", "budget", "budget_ms", "budget_met", "final_ms")}})
        mode = res["mode"]
        fname = f"model_{mode}.tflite"
        tm = tflite.export(res["export_model"], ctx.out_dir / fname, QUANT[mode], ds)
        tm["source"] = art.path
        tfl = Artifact(name=mode, path=ctx.rel(fname), format="tflite", quantization=QUANT[mode],
                       metrics=tm)
        ctx.log("[adapt] %s: %.4g -> %.4g ms on %s (budget %s), test accuracy %.4f (%s)",
                "budget met", m["start_ms"], m["final_ms"], m["target"], m["budget"],
                tm["accuracy"], mode)
        return StageResult([art, tfl], {**m, "plots": [ctx.rel("trajectory.png")],
                                        "accuracy": art.metrics["accuracy"]})

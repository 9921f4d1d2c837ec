"""`nas`: hardware-aware architecture search (Keras Tuner) over the zoo's `mobilenet` family.

Every candidate is trained, converted (fp32 or int8) and timed on this host with edge-runner;
candidates over the constraints are penalized, never accepted. With `latency: predicted` a
candidate's latency is predicted from this host's latency table instead
(pipeline/search/latency.py), and the finalists (the front and the best few) are timed before one
is chosen: the chosen model's latency is always a measured one. The best feasible one is saved as
the Keras model "best", so distill / prune / quantize / export follow it.

Where things live. The search runs in `<run_dir>/.nas/<key>/` (keras-tuner's project folder:
oracle.json, trial_*/ with each trial's model, .tflite and runs.jsonl), *outside* the stage's
temp folder: the engine deletes that folder when a stage fails or is killed, and commits it only
once the stage returns. So a killed search continues on the next `edgepipe run` without repeating
a finished trial, and a finished one is cheap to re-run (`--force` reloads it). `<key>` hashes
what the trials' results depend on — data, seed, library versions, space, training, constraints —
but not the budget: raising max_trials continues the same search. Delete `.nas/` to start over.
The stage's own folder holds trials.json, pareto.json, pareto.png and best.keras.

Distributed: `edgepipe run RECIPE --workers N` makes this stage a chief (keras-tuner's gRPC
oracle) with N worker processes on this host; `edgepipe nas RECIPE --chief/--worker` spans
machines (see pipeline/cli/nas.py).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.artifacts import json_text
from pipeline.errors import UserError
from pipeline.stages.base import Stage, StageResult
from pipeline.stages.nas_config import NasConfig

SEARCH_DIR = ".nas"


@dataclass(frozen=True)
class Distribution:
    """How the stage searches: in process (default), or as a chief. Not a recipe setting (the
    same search runs either way): the CLI's --workers / --chief hand it to the engine as the
    stage's run options (`engine.run(..., options={"nas": Distribution(...)})`)."""

    workers: int = 0  # worker processes the chief starts on this host
    bind: str | None = None  # chief address for workers on other hosts ("HOST:PORT")
    timeout: float = 60.0  # workers: deadline of each call to the chief; chief: part of the lease
    #: the shared secret every call to the chief must carry (workers on this host get it in
    #: their environment); None: the chief makes one when all its workers are its own
    token: str | None = field(default=None, repr=False)


def resolved_constraints(recipe, cfg: NasConfig) -> dict[str, float | None]:
    c = cfg.constraints
    return {"max_latency_ms": c.max_latency_ms or recipe.gates.max_latency_ms,
            "max_size_kb": c.max_size_kb or recipe.gates.max_size_kb,
            "max_params": c.max_params}


def search_key(recipe, cfg: NasConfig) -> str:
    from pipeline.artifacts import library_versions, sha256_json, sha256_path

    data = recipe.dataset.path
    return sha256_json({
        "dataset": recipe.dataset.model_dump(mode="json"), "seed": recipe.seed,
        "data_hash": sha256_path(data) if data and Path(data).exists() else None,
        "versions": library_versions(), "settings": cfg.search_settings(),
        "constraints": resolved_constraints(recipe, cfg)})


def search_spec(recipe, cfg: NasConfig):
    from pipeline.search import SearchSpec, TrialSettings

    c = resolved_constraints(recipe, cfg)
    settings = TrialSettings(
        num_stages=cfg.space.num_stages, epochs=cfg.epochs, batch_size=cfg.batch_size,
        optimizer=cfg.optimizer, patience=cfg.patience, quantization=cfg.quantization,
        threads=cfg.bench.threads, warmup=cfg.bench.warmup, min_runs=cfg.bench.min_runs,
        min_seconds=cfg.bench.min_seconds, max_latency_ms=c["max_latency_ms"],
        max_size_kb=c["max_size_kb"], max_params=c["max_params"], seed=recipe.seed,
        latency=cfg.latency, table=cfg.table)
    return SearchSpec(space=cfg.space.plain(), key=search_key(recipe, cfg), oracle=cfg.oracle,
                      max_trials=cfg.max_trials,
                      time_limit_s=cfg.time_limit_min * 60 if cfg.time_limit_min else None,
                      initial_points=cfg.initial_points, factor=cfg.factor,
                      max_failures=cfg.max_failures, settings=settings)


def project_dir(run_dir: Path, key: str) -> Path:
    return Path(run_dir) / SEARCH_DIR / key[:16]


def check_data(cfg: NasConfig, input_shape) -> None:
    from pipeline.search.space import check_resolution

    if len(input_shape) != 3:
        raise UserError(f"nas searches image models (NHWC); the dataset's samples have shape "
                        f"{list(input_shape)}")
    try:
        check_resolution(cfg.space.plain(), input_shape)
    except ValueError as e:
        raise UserError(f"nas: space: {e}") from None


def _local_workers(ctx, project: Path, count: int, timeout: float, token: str | None):
    """A function the chief calls with its address to start `count` workers on this host.
    They read the recipe from `<project>/recipe.yaml`, checked here to parse back into the
    chief's own recipe (same settings, same search key) before any worker starts."""
    from pipeline import recipe as recipes
    from pipeline.artifacts import atomic_write_text
    from pipeline.search.distribute import TOKEN_ENV, LocalWorker, worker_env

    recipe_file = project / "recipe.yaml"
    text = ctx.recipe.to_yaml()
    if recipes.parse(text, str(recipe_file)).to_json() != ctx.recipe.to_json():
        raise RuntimeError(f"nas: the recipe written for the workers ({recipe_file}) does not "
                           f"parse back into the chief's; this is a bug in edgepipe")
    atomic_write_text(recipe_file, text)
    threads = max(1, (os.cpu_count() or 1) // max(1, count))

    def start(address: str):
        out = []
        for i in range(count):
            tid = f"tuner{i}"
            cmd = [sys.executable, "-m", "pipeline.cli", "nas", str(recipe_file), "--worker",
                   "--address", address, "--id", tid, "--out", str(ctx.run_dir),
                   "--stage", ctx.stage_dir, "--timeout", f"{timeout:g}",
                   "--threads", str(threads)]
            out.append(LocalWorker(tid, cmd, project / f"worker_{tid}.log",
                                   {**worker_env(address, tid),
                                    **({TOKEN_ENV: token} if token else {})}))
        return out

    return start


def closest(rows: list[dict[str, Any]], limits: dict[str, float | None], n: int = 3) -> str:
    """The `n` completed trials nearest to feasibility, as text for the error message."""
    names = {"latency_ms": ("max_latency_ms", "latency", "ms"),
             "size_kb": ("max_size_kb", "size", "KB"), "params": ("max_params", "params", "")}

    def over(r):
        return sum(max(0.0, r[k] / limits[lim] - 1) for k, (lim, _, _) in names.items()
                   if limits.get(lim))

    def how(r, k):  # a predicted latency says so
        return " predicted" if k == "latency_ms" and r.get("latency_source") == "predicted" else ""

    parts = []
    for r in sorted(rows, key=over)[:n]:
        bits = [f"{label} {r[k]:.4g}{(' ' + unit) if unit else ''}{how(r, k)} "
                f"(limit {limits[lim]:g})"
                for k, (lim, label, unit) in names.items() if limits.get(lim)]
        parts.append(f"trial {r['trial_id']} [{r['architecture']}]: " + ", ".join(bits))
    return "; ".join(parts)


class Nas(Stage):
    name = "nas"
    Config = NasConfig
    trains = True
    help = ("hardware-aware architecture search (keras-tuner) over zoo.mobilenet; every "
            "candidate timed as .tflite on this host (or predicted from its latency table, "
            "finalists timed); saves best.keras")
    makes = ("keras",)
    model = "best"

    def run(self, ctx, cfg: NasConfig) -> StageResult:
        from pipeline.artifacts import atomic_write_json
        from pipeline import search as S

        from pipeline.tasks import require_classification

        ds = ctx.dataset()
        require_classification(ctx.recipe.task, ds, "nas")
        check_data(cfg, ds.input_shape)
        spec = search_spec(ctx.recipe, cfg)
        if cfg.latency == "predicted":  # a table of another target is refused before any trial
            from pipeline.search.latency import describe

            ctx.log("[nas] trials' latency predicted from the host latency table %s",
                    describe(spec.settings))
        project = project_dir(ctx.run_dir, spec.key)
        project.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        dist = ctx.options or Distribution()
        if dist.workers or dist.bind:
            from pipeline.search.distribute import lease_for

            # workers all started here: a fresh token keeps other users of this host out
            token = dist.token or (None if dist.bind else secrets.token_hex(16))
            oracle = S.run_chief(spec, project, dist.bind or "127.0.0.1:0",
                                 _local_workers(ctx, project, dist.workers, dist.timeout,
                                                token),
                                 remote_workers=dist.bind is not None,
                                 lease=lease_for(timeout=dist.timeout), token=token)
        else:
            oracle = S.run_local(spec, ds, project)
        seconds = time.time() - t0
        rows = S.trial_rows(oracle)
        atomic_write_json(project / "trials.json", rows)  # survives a failing stage
        if oracle.failure:
            raise UserError(f"nas: search stopped: {oracle.failure}; trials: "
                            f"{project / 'trials.json'}")
        done = [r for r in rows if r["status"] == "COMPLETED"]
        if not done:
            raise UserError(f"nas: no trial completed (search folder {project})")
        limits = resolved_constraints(ctx.recipe, cfg)
        keep = cfg.final_candidates if cfg.final_epochs else 1
        measured: list[str] = []
        if cfg.latency == "predicted":  # the finalists are measured, and chosen on that
            from pipeline.search.latency import choose

            top, measured = choose(oracle, done, keep, spec.settings, project, ds.input_shape,
                                   ds.num_classes, say=lambda m: ctx.log("%s", m))
            atomic_write_json(project / "trials.json", rows)
        else:
            top = S.top_trials(oracle.trials.values(), keep)
        pareto = S.front(done)
        atomic_write_json(ctx.out_dir / "trials.json", rows)
        if not top:
            self._plot(ctx, cfg, done, pareto, limits, None, measured)
            raise UserError(f"nas: no candidate meets the constraints "
                            f"({', '.join(f'{k}={v:g}' for k, v in limits.items() if v)}) in "
                            f"{len(done)} trial{'s' * (len(done) != 1)}; closest: "
                            f"{closest(done, limits)}; relax the constraints or change the space "
                            f"(all trials: {project / 'trials.json'})")
        best, model, final = self._final(ctx, cfg, spec, oracle, top, project)
        self._plot(ctx, cfg, done, pareto, limits, best.trial_id, measured)
        row = next(r for r in rows if r["trial_id"] == best.trial_id)
        search = {"nas_trial": best.trial_id, "architecture": row["architecture"],
                  "hyperparameters": row["hyperparameters"],
                  "nas_val_accuracy": row["val_accuracy"], "nas_latency_ms": row["latency_ms"],
                  "nas_latency_source": row["latency_source"],  # "measured", always
                  "nas_size_kb": row["size_kb"], "nas_quantization": cfg.quantization,
                  "final_epochs": cfg.final_epochs, "final_candidates": final,
                  "nas_latency": cfg.latency}
        if cfg.latency == "predicted":
            search.update(nas_predicted_latency_ms=row["predicted_latency_ms"],
                          nas_measured_trials=measured)
        art = ctx.save_model(model, self.model, metrics=search)
        completed = [r for r in rows if r["status"] == "COMPLETED"]
        ctx.log("[nas] best: trial %s [%s] val_acc %.4f p50 %.4f ms measured%s %.1f KB; test "
                "accuracy %.4f (%d trials, %d feasible, %.1f min)", best.trial_id,
                row["architecture"], row["val_accuracy"], row["latency_ms"],
                f" (predicted {row['predicted_latency_ms']:.4f} ms)"
                if "predicted_latency_ms" in row else "", row["size_kb"],
                art.metrics["accuracy"], len(completed),
                sum(1 for r in completed if r.get("feasible")), seconds / 60)
        metrics = {"trials": len(rows), "completed": len(completed),
                   "feasible": sum(1 for r in completed if r.get("feasible")),
                   "failed": sum(1 for r in rows if r["status"] in ("FAILED", "INVALID")),
                   "search_seconds": round(seconds, 1), "best_trial": best.trial_id,
                   "pareto": [p["trial_id"] for p in pareto], "oracle": cfg.oracle,
                   "stopped": oracle.stop_reason or "max_trials reached",
                   "search_dir": str(project.relative_to(ctx.run_dir)),
                   "plots": [ctx.rel("pareto.png")], "test_accuracy": art.metrics["accuracy"],
                   "latency": cfg.latency}
        if cfg.latency == "predicted":
            from pipeline.search.latency import describe

            metrics.update(measured_trials=measured, latency_table=describe(spec.settings))
        return StageResult([art], json.loads(json_text(metrics)))

    @staticmethod
    def _plot(ctx, cfg, done, pareto, limits, best_id, measured) -> None:
        from pipeline.artifacts import atomic_write_bytes, atomic_write_json
        from pipeline import search as S

        atomic_write_json(ctx.out_dir / "pareto.json", {
            "x": "latency_ms", "y": "val_accuracy", "constraints": limits,
            "quantization": cfg.quantization, "latency": cfg.latency,
            "measured": measured if cfg.latency == "predicted" else [r["trial_id"] for r in done],
            "front": pareto, "best": best_id})
        how = (f", predicted ({len(measured)} finalists measured)"
               if cfg.latency == "predicted" else "")
        atomic_write_bytes(ctx.out_dir / "pareto.png", S.plot_png(
            done, pareto, limits["max_latency_ms"], best_id,
            title=f"nas: {len(done)} trials, {cfg.quantization} latency on this host{how}"))

    @staticmethod
    def _final(ctx, cfg, spec, oracle, top, project):
        """Train the top candidates on (final_epochs) and keep the best on validation.
        Returns (trial, model, [{trial, val_accuracy, val_loss}] of the candidates)."""
        from pipeline import search as S
        from pipeline.training import FitConfig, fit

        ds = ctx.dataset()
        results = []
        for t in top:
            model, _ = S.best_model(oracle, t, ds, spec.settings, project)
            if cfg.final_epochs:
                lr = t.hyperparameters.values.get("learning_rate", 1e-3)
                fit(model, ds, FitConfig(epochs=cfg.final_epochs, batch_size=cfg.batch_size,
                                         learning_rate=lr, optimizer=cfg.optimizer,
                                         patience=cfg.final_patience),
                    seed=ctx.seed, prefix=f"[nas] final training of trial {t.trial_id}")
            if len(top) == 1:
                return t, model, []
            model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            loss, acc = model.evaluate(ds.x_val, ds.y_val, verbose=0)
            ctx.log("[nas] candidate trial %s after final training: val_acc %.4f val_loss %.4f",
                    t.trial_id, acc, loss)
            results.append(({"trial": t.trial_id, "val_accuracy": float(acc),
                             "val_loss": float(loss)}, t, model))
        chosen = max(results, key=lambda r: (r[0]["val_accuracy"], -r[0]["val_loss"]))
        return chosen[1], chosen[2], [r[0] for r in results]

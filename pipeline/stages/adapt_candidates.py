"""The adapt stage's candidates: one is "prune group G of the iteration's model to K channels,
fine-tune briefly, score on validation". They run through `search.candidates.Pool`: in the
adapt process, or on `--workers N` processes (`edgepipe adapt-worker`, started by the chief)
over the nas search's keras-tuner chief/worker machinery.

The chief writes `workers.json` into the adapt folder (the settings, the seed, the dataset as a
DatasetSpec and the task, the pool's key) before starting workers; each worker loads the same
dataset and binds the same task on start.keras. Workers keep TensorFlow's default threads, as
the adapt process itself does: a candidate fine-tuned on another thread count differs in its
last bits, and the choice must not depend on where a candidate ran.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pipeline.training import FitConfig

JOB = "workers.json"


def fine_tune(model, ds, cfg, epochs: int, seed: int, prefix: str,
              patience: int | None = None) -> None:
    from pipeline.training import fit

    fit(model, ds, FitConfig(epochs=epochs, batch_size=cfg.batch_size,
                             learning_rate=cfg.learning_rate, optimizer=cfg.optimizer,
                             patience=patience), seed=seed, prefix=prefix)


def val_accuracy(model, ds) -> float:
    from pipeline import models

    return models.accuracy(model, ds.x_val, ds.y_val)


def work(state_dir: Path, ds, cfg):
    """`Pool`'s work: values {iteration, candidate, group, after, model, seed} → the candidate
    pruned from `state_dir/model`, fine-tuned with `seed`, saved as model.keras in its trial
    folder; returns its validation accuracy."""
    from pipeline import models
    from pipeline.compress import netadapt

    data = ds.calibration(256) if cfg.criterion in ("mean_activation", "apoz") else None
    cache: dict[str, Any] = {}

    def run(c: dict[str, Any], folder: Path) -> dict[str, float]:
        src = Path(state_dir) / c["model"]
        if cache.get("src") != src:
            cache.clear()
            cache.update(src=src, model=models.load_model(src, unsafe=True))  # our own file
        proposal = netadapt.Proposal(c["group"], 0, c["after"], 0.0, True)
        cand = netadapt.apply(cache["model"], proposal, cfg.criterion, data)
        fine_tune(cand, ds, cfg, cfg.short_epochs, c["seed"],
                  f"[adapt] iteration {c['iteration']} {c['group']} ->{c['after']}")
        acc = val_accuracy(cand, ds)
        models.save_model(cand, folder / "model.keras")
        return {"val_accuracy": acc, "score": acc}

    return run


def write_job(state_dir: Path, *, key: str, project: str, cfg, seed: int,
              data: dict[str, Any]) -> None:
    """What workers need to run this adapt's candidates (`data`: {"dataset": DatasetSpec
    as JSON, "task": the task spec or None})."""
    from pipeline.artifacts import atomic_write_json

    atomic_write_json(Path(state_dir) / JOB, {"key": key, "project": project, "seed": seed,
                                              "cfg": cfg.model_dump(mode="json"), "data": data})


def local_workers(state_dir: Path, project: Path, count: int, timeout: float):
    """For Pool(start=...): `count` `edgepipe adapt-worker` processes on this host."""
    from pipeline.search.distribute import TOKEN_ENV, LocalWorker, worker_env

    def start(address: str, token: str):
        out = []
        for i in range(count):
            tid = f"tuner{i}"
            cmd = [sys.executable, "-m", "pipeline.cli", "adapt-worker", str(state_dir),
                   "--address", address, "--id", tid, "--timeout", f"{timeout:g}"]
            out.append(LocalWorker(tid, cmd, project / f"worker_{tid}.log",
                                   {**worker_env(address, tid), TOKEN_ENV: token}))
        return out

    return start


def serve(state_dir: Path, address: str, tuner_id: str, timeout: float,
          token: str | None) -> list[str]:
    """A worker process: load what `workers.json` says, run candidates until the chief says
    stop. Returns the trial ids run."""
    from types import SimpleNamespace

    from pipeline import models, tasks
    from pipeline.data import DatasetSpec, load_dataset
    from pipeline.search.candidates import serve_worker

    state_dir = Path(state_dir)
    job = json.loads((state_dir / JOB).read_text())
    cfg = SimpleNamespace(**job["cfg"])  # the chief's validated AdaptConfig, as JSON
    model = models.load_model(state_dir / "start.keras", unsafe=True)
    ds = load_dataset(DatasetSpec(**job["data"]["dataset"]), seed=job["seed"])
    tasks.bind(job["data"].get("task"), model, ds)
    return serve_worker(state_dir / job["project"], job["key"], work(state_dir, ds, cfg),
                        address, tuner_id, timeout=timeout, token=token)

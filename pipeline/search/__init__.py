"""Hardware-aware architecture search on Keras Tuner: local, chief or worker; resumable.

The orchestration the `nas` stage drives (it writes a project folder, serves gRPC, starts
processes), beside the stages rather than in `pipeline.compress`; `space` and `pareto` are the
pure pieces (no files, no processes).

    space.py       the space → HyperParameters → zoo.mobilenet options
    oracle.py      random / bayesian / hyperband oracles + time limit, progress, safe resume
    tuner.py       EdgeTuner.run_trial: build, train, convert, time on this host, score
    distribute.py  chief (gRPC oracle server) and workers, with deadlines
    pareto.py      accuracy–latency front and plot

A search lives in a keras-tuner project folder (oracle.json, trial_*/trial.json, model files);
running the same search on the same folder continues it: finished trials are never run again.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from pipeline.search import space as space_lib
from pipeline.search.oracle import (FINISHED, best_trial, last_line, make_oracle,
                                             metrics_of, open_project, top_trials)
from pipeline.search.pareto import front, plot_png
from pipeline.search.tuner import EdgeTuner, TrialSettings, measure, train_candidate

log = logging.getLogger("edgepipe")

__all__ = ["SearchSpec", "TrialSettings", "run_local", "run_chief", "run_worker", "trial_rows",
           "best_trial", "top_trials", "best_model", "front", "plot_png", "measure",
           "train_candidate"]


@dataclass
class SearchSpec:
    """Everything a chief and its workers must agree on (`key` identifies it)."""

    space: dict[str, Any]
    key: str
    oracle: str = "bayesian"
    max_trials: int = 20
    time_limit_s: float | None = None
    initial_points: int | None = None
    factor: int = 3
    max_failures: int = 3
    settings: TrialSettings = field(default_factory=TrialSettings)

    def new_oracle(self):
        hp = space_lib.hyperparameters(self.space, self.key)
        return make_oracle(self.oracle, hp, max_trials=self.max_trials, seed=self.settings.seed,
                           epochs=self.settings.epochs, time_limit_s=self.time_limit_s,
                           initial_points=self.initial_points, factor=self.factor,
                           max_failures=self.max_failures, num_stages=self.settings.num_stages)


def _split(project: Path) -> tuple[str, str]:
    return str(project.parent), project.name


def open_oracle(spec: SearchSpec, project: Path):
    oracle = spec.new_oracle()
    resumed = open_project(oracle, *_split(project))
    if resumed:
        done = sum(1 for t in oracle.trials.values() if t.status in FINISHED)
        log.info("[nas] continuing the search in %s: %d trials finished", project, done)
    return oracle


def run_local(spec: SearchSpec, dataset, project: Path):
    """Search in this process. Returns the oracle (all trials, their metrics)."""
    oracle = open_oracle(spec, project)
    tuner = EdgeTuner(oracle, spec.settings, directory=project.parent, project_name=project.name)
    tuner.search(dataset)
    return oracle


def budget_spent(oracle) -> bool:
    """Every trial of the budget finished (none waiting to run again)."""
    return (not oracle._retry_queue and len(oracle.trials) >= oracle.max_trials
            and all(t.status in FINISHED for t in oracle.trials.values()))


def run_chief(spec: SearchSpec, project: Path, bind: str,
              local_workers: Callable[[str], Sequence[Any]] = lambda address: (),
              remote_workers: bool = False, lease: float | None = None,
              token: str | None = None):
    """Serve the oracle at `bind`; `local_workers(address)` starts LocalWorkers on this host.
    A worker silent for `lease` seconds (default `distribute.lease_for()`) loses its trial to
    the others; with a `token`, a call without it is refused. Returns the oracle once the
    search is over."""
    from pipeline.search.distribute import Chief, lease_for

    oracle = open_oracle(spec, project)
    if budget_spent(oracle):
        log.info("[nas] the search's %d trials are done; no workers needed", oracle.max_trials)
        return oracle
    chief = Chief(oracle, bind, lease=lease if lease is not None else lease_for(), token=token)
    try:
        if remote_workers:
            log.info("[nas] chief serving the search at %s:%d (workers: edgepipe nas RECIPE "
                     "--worker --address HOST:%d)", chief.host, chief.port, chief.port)
        workers = list(local_workers(chief.address))
        chief.wait(workers, remote_workers=remote_workers)
    finally:
        chief.stop()
    return oracle


def run_worker(spec: SearchSpec, dataset, project: Path, address: str, tuner_id: str,
               timeout: float = 60.0, heartbeat: float | None = None,
               token: str | None = None) -> list[str]:
    """Run trials for the chief at `address` until it says stop, telling it every `heartbeat`
    seconds (default `distribute.HEARTBEAT_S`) that this worker lives; every call carries
    `token` when given. Returns the trial ids run."""
    from pipeline.search import distribute as D

    os.environ.update(D.worker_env(address, tuner_id))  # keras-tuner's worker switch
    tuner = EdgeTuner(spec.new_oracle(), spec.settings, directory=project.parent,
                      project_name=project.name,
                      remote=D.remote(address, tuner_id, timeout, token))
    D.check_same_search(tuner.oracle, space_lib.KEY, spec.key)
    log.info("[nas %s] connected to the chief at %s", tuner_id, address)
    with D.Heartbeat(tuner.oracle.stub, tuner_id, heartbeat or D.HEARTBEAT_S):
        tuner.search(dataset)
    return tuner.trials_run


def trial_rows(oracle) -> list[dict[str, Any]]:
    """Every trial: id, status, who ran it (and how often), hyperparameters, metrics."""
    rows = []
    for tid in sorted(oracle.trials):
        t = oracle.trials[tid]
        values = {k: v for k, v in t.hyperparameters.values.items() if k != space_lib.KEY}
        row: dict[str, Any] = {"trial_id": tid, "status": t.status,
                               "ran_by": oracle.ran_by.get(tid, []),
                               "architecture": space_lib.describe(values, oracle.num_stages),
                               "hyperparameters": values, **metrics_of(t)}
        if "feasible" in row:
            row["feasible"] = row["feasible"] == 1.0
        if "latency_ms" in row:  # which figure it is (the finalists' get measured later)
            row["latency_source"] = ("predicted" if row.pop("latency_predicted", 0.0) == 1.0
                                     else "measured")
        if t.status != "COMPLETED":
            row["error"] = last_line(t.message)
        rows.append(row)
    return rows


def best_model(oracle, trial, dataset, settings: TrialSettings, project: Path):
    """The best trial's trained model: from its folder if this host ran it, else retrained
    (same hyperparameters and seed) here. Returns (model, retrained?)."""
    from pipeline import models

    path = project / f"trial_{trial.trial_id}" / "model.keras"
    if path.is_file():
        return models.load_model(path, unsafe=True), False
    log.info("[nas] trial %s ran on another host: training its architecture here", trial.trial_id)
    t0 = time.time()
    model, _, _ = train_candidate(trial.hyperparameters.values, dataset, settings,
                                  prefix=f"[nas] retrain trial {trial.trial_id}")
    log.info("[nas] retrained in %.1fs", time.time() - t0)
    return model, True

"""Keras Tuner's oracles (random, bayesian, hyperband) with what a long, shared search needs.

The mixin adds, whatever the algorithm: a time limit (no new trial after it), a log line per
finished trial with the best feasible trial so far, failures recorded instead of raised (a chief
serving workers over gRPC must not die inside a request), the tuner that ran each trial, and a
reload that repairs what a kill can leave between keras-tuner's two writes (a trial file saying
COMPLETED while oracle.json still lists it as running, and the reverse), so no finished trial
runs again and no started one is lost. State files are written atomically (see `_atomic_json`).
For distributed searches (distribute.py): `requeue` / `expire` hand a dead or silent worker's
trial back; a result reported by a worker that no longer holds its trial is ignored (`holds`);
and a worker asking for a trial when the budget is spent but others still run theirs is told to
wait (IDLE), not to stop, so a trial handed back later still finds a worker.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import keras_tuner as kt
from keras_tuner.src import utils as kt_utils
from keras_tuner.src.engine import metrics_tracking
from keras_tuner.src.engine.trial import TrialStatus

from pipeline.artifacts import atomic_write_text, json_text

log = logging.getLogger("edgepipe")

OBJECTIVE = "score"


def _atomic_json(path, obj) -> str:
    """keras-tuner's utils.save_json, but temp file + rename (a kill never leaves half a
    state) and standard JSON (a NaN is an error, not a bare `NaN` keras-tuner cannot read)."""
    text = json_text(obj, where=os.fspath(path))
    atomic_write_text(os.fspath(path), text)
    return text


# keras-tuner writes oracle.json, trial.json and tuner*.json through this one function.
kt_utils.save_json = _atomic_json


class EdgeOracleMixin:
    """Put before a keras_tuner Oracle class (see `make_oracle`). Its log lines start with
    `prefix`; `describe`, `result` and `progress` word them (another user of the machinery, the
    adapt stage's candidates, overrides them: search/candidates.py)."""

    prefix = "[nas]"

    def _edge_init(self, time_limit_s: float | None, num_stages: int) -> None:
        self.time_limit_s = time_limit_s
        self.num_stages = num_stages
        self.began = time.time()
        self.failure: str | None = None
        self.stop_reason: str | None = None
        self.ran_by: dict[str, list[str]] = {}
        self._started: dict[str, float] = {}
        self.verbose = 0  # our log lines replace keras-tuner's prints

    # ----- stopping ---------------------------------------------------------------------------
    def populate_space(self, trial_id):
        if self.failure:
            return {"status": TrialStatus.STOPPED}
        if self.time_limit_s is not None and time.time() - self.began >= self.time_limit_s:
            self.stop_reason = f"time limit ({self.time_limit_s / 60:g} min) reached"
            return {"status": TrialStatus.STOPPED}
        response = super().populate_space(trial_id)
        if response["status"] == TrialStatus.STOPPED and not self.stop_reason:
            self.stop_reason = "search space exhausted"
        return response

    def _check_consecutive_failures(self):
        try:
            super()._check_consecutive_failures()
        except RuntimeError as e:
            self.failure = str(e).splitlines()[0]
            last = self.trials[self.end_order[-1]]
            self.failure += f"; last error: {last_line(last.message)}"

    # ----- bookkeeping and progress ---------------------------------------------------------
    @kt.synchronized
    def create_trial(self, tuner_id):
        trial = super().create_trial(tuner_id)
        if (trial.status == TrialStatus.STOPPED and not self.failure
                and any(k != tuner_id for k in self.ongoing_trials)):
            # not the end yet: a running trial may come back to the queue (its worker dies)
            self.tuner_ids.add(tuner_id)  # keras-tuner removed it when it said stop
            trial.status = TrialStatus.IDLE
        if trial.status == TrialStatus.RUNNING and trial.trial_id not in self._started:
            self.ran_by.setdefault(trial.trial_id, []).append(tuner_id)
            self._started[trial.trial_id] = time.time()
            self.save()
            log.info("%s trial %s started on %s: %s", self.prefix, trial.trial_id, tuner_id,
                     self.describe(trial.hyperparameters.values))
        return trial

    def describe(self, values: dict) -> str:
        """A trial's candidate in one line (the nas architecture)."""
        from pipeline.search.space import describe

        return describe(values, self.num_stages)

    def progress(self, trial) -> str:
        """What the log line of a finished trial adds: the best feasible trial so far."""
        best = best_trial(self.trials.values())
        return (f"best: trial {best.trial_id} {summary(metrics_of(best), short=True)}"
                if best else "no feasible trial yet")

    def result(self, trial) -> str:
        """A completed trial's metrics in one line."""
        return summary(metrics_of(trial))

    def holds(self, tuner_id: str | None, trial_id: str, call: str) -> bool:
        """Whether a report on `trial_id` from `tuner_id` (None: unknown caller) counts: the
        trial is running and, when the caller is known, on that caller. Otherwise logs why the
        report is ignored (the trial was handed back: see distribute.py)."""
        holder = next((k for k, t in self.ongoing_trials.items() if t.trial_id == trial_id),
                      None)
        if holder is not None and (tuner_id is None or holder == tuner_id):
            return True
        t = self.trials.get(trial_id)
        now = (f"it runs on {holder}" if holder else "it is unknown" if t is None
               else "it waits to run again" if trial_id in self._retry_queue
               else f"it is {t.status}")
        log.warning("%s ignored a late %s for trial %s from %s: it was handed back to the "
                    "queue (worker dead or silent) and %s now", self.prefix, call, trial_id,
                    tuner_id or "a worker", now)
        return False

    @kt.synchronized
    def update_trial(self, trial_id, metrics, step=0, tuner_id=None):
        if not self.holds(tuner_id, trial_id, "update_trial"):
            return self.trials.get(trial_id)
        return super().update_trial(trial_id, metrics, step=step)

    @kt.synchronized
    def end_trial(self, trial, tuner_id=None):
        if not self.holds(tuner_id, trial.trial_id, "end_trial"):
            return
        super().end_trial(trial)
        t = self.trials[trial.trial_id]
        seconds = time.time() - self._started.pop(trial.trial_id, time.time())
        who = (self.ran_by.get(trial.trial_id) or ["?"])[-1]
        if t.status == TrialStatus.COMPLETED:
            what = self.result(t)
        else:
            what = f"{t.status}: {last_line(t.message)}"
        done = sum(1 for x in self.trials.values() if x.status in FINISHED)
        budget = f"/{self.max_trials}" if self.max_trials else ""
        log.info("%s trial %s (%s) %s in %.1fs | %s | %d%s trials, %.1f min", self.prefix,
                 trial.trial_id, who, what, seconds, self.progress(t), done, budget,
                 (time.time() - self.began) / 60)

    @kt.synchronized
    def requeue(self, tuner_id: str) -> str | None:
        """A worker died: its running trial (if any) goes back to the queue. Returns its id."""
        self.tuner_ids.discard(tuner_id)
        trial = self.ongoing_trials.pop(tuner_id, None)
        if trial is None:
            return None
        self._started.pop(trial.trial_id, None)
        trial.metrics = metrics_tracking.MetricsTracker()
        self._retry_queue.append(trial.trial_id)
        self.save()
        return trial.trial_id

    @kt.synchronized
    def expire(self, silence, lease: float) -> list[tuple[str, str | None, float]]:
        """Requeue the trial of every worker whose `silence(tuner_id)` (seconds, None: never
        named itself) exceeds `lease`, and stop waiting for it. Returns (tuner id, trial id or
        None, silence) for each."""
        out = []
        for tuner_id in sorted(self.tuner_ids | set(self.ongoing_trials)):
            seconds = silence(tuner_id)
            if seconds is not None and seconds > lease:
                out.append((tuner_id, self.requeue(tuner_id), seconds))
        return out

    # ----- state ------------------------------------------------------------------------------
    def get_state(self):
        state = {**super().get_state(), "edgepipe_ran_by": self.ran_by}
        if state.get("hyperband_iterations") == float("inf"):  # "until max_trials": JSON has
            state["hyperband_iterations"] = None  # no Infinity (keras-tuner would write one)
        return state

    def set_state(self, state):
        super().set_state(state)
        self.ran_by = dict(state.get("edgepipe_ran_by", {}))
        if "hyperband_iterations" in state and state["hyperband_iterations"] is None:
            self.hyperband_iterations = float("inf")

    def reload(self):
        super().reload()  # ongoing trials → retry queue
        for tid, t in self.trials.items():
            if t.status in FINISHED:
                # the trial file was written, oracle.json not yet: it finished, do not rerun
                while tid in self._retry_queue:
                    self._retry_queue.remove(tid)
                if tid not in self.end_order:
                    self.end_order.append(tid)
            elif tid not in self._retry_queue:
                # created (trial file written) but oracle.json never heard of it: run it again
                self._retry_queue.append(tid)
        for tid in self._retry_queue:
            self.trials[tid].metrics = metrics_tracking.MetricsTracker()  # drop partial reports
        if self._retry_queue:
            log.info("%s resuming: %d trials finished, %d interrupted to run again",
                     self.prefix, len(self.end_order), len(self._retry_queue))


FINISHED = (TrialStatus.COMPLETED, TrialStatus.FAILED)  # INVALID: waiting for a retry


class FewerRestartsBayesian:
    """keras-tuner's BayesianOptimizationOracle.populate_space with `acq_restarts` starts of the
    acquisition optimizer instead of its fixed 50. Measured here: 50 starts took 12-15 s per
    proposal (20 trials, 14 searched dimensions, L-BFGS-B with numeric gradients) — time the
    chief takes from the trials' CPU, and workers queue behind."""

    acq_restarts = 10

    def populate_space(self, trial_id):
        import numpy as np
        import scipy.optimize

        completed = [t for t in self.trials.values() if t.status == TrialStatus.COMPLETED]
        initial = self.num_initial_points or max(3 * len(self.hyperparameters.space), 3)
        if len(completed) < initial:
            return self._random_populate_space()
        x, y = self._vectorize_trials()
        self.gpr.fit(np.nan_to_num(x, posinf=0, neginf=0), np.nan_to_num(y, posinf=0, neginf=0))

        def ucb(v):
            mu, sigma = self.gpr.predict(v.reshape(1, -1), return_std=True)
            return mu - self.beta * sigma

        bounds = self._get_hp_bounds()
        best_val, best_x = float("inf"), None
        for x0 in self._random_state.uniform(bounds[:, 0], bounds[:, 1],
                                             size=(self.acq_restarts, bounds.shape[0])):
            res = scipy.optimize.minimize(ucb, x0=x0, bounds=bounds, method="L-BFGS-B")
            fun = res.fun if np.isscalar(res.fun) else res.fun[0]
            if fun < best_val:
                best_val, best_x = fun, res.x
        return {"status": TrialStatus.RUNNING, "values": self._vector_to_values(best_x)}


def make_oracle(name: str, hyperparameters, *, max_trials: int, seed: int, epochs: int,
                time_limit_s: float | None = None, initial_points: int | None = None,
                factor: int = 3, max_failures: int = 3, num_stages: int = 4):
    """An oracle of `name` (random | bayesian | hyperband) maximizing the trials' "score"."""
    objective = kt.Objective(OBJECTIVE, direction="max")
    bases: tuple = ()
    common = dict(objective=objective, hyperparameters=hyperparameters, seed=seed + 1,
                  allow_new_entries=False, tune_new_entries=True,
                  max_consecutive_failed_trials=max_failures)
    if name == "random":
        base, kw = kt.oracles.RandomSearchOracle, dict(max_trials=max_trials)
    elif name == "bayesian":
        base, kw = kt.oracles.BayesianOptimizationOracle, dict(
            max_trials=max_trials, num_initial_points=initial_points or max(3, max_trials // 4))
        bases = (FewerRestartsBayesian, base)
    elif name == "hyperband":
        base, kw = kt.oracles.HyperbandOracle, dict(max_epochs=epochs, factor=factor,
                                                    hyperband_iterations=None)
    else:
        raise ValueError(f"unknown oracle {name!r}")
    bases = bases or (base,)
    cls = type(f"Edge{base.__name__}", (EdgeOracleMixin, *bases), {})
    oracle = cls(**common, **kw)
    oracle.max_trials = max_trials  # hyperband has no max_trials argument; the base honors it
    oracle._edge_init(time_limit_s, num_stages)
    return oracle


def open_project(oracle, directory, name: str) -> bool:
    """Point the oracle at its project folder and reload it if a search is there. Returns
    whether it resumed."""
    oracle._set_project_dir(str(directory), name)
    if os.path.exists(os.path.join(str(directory), name, "oracle.json")):
        oracle.reload()
        return True
    return False


# ----- reading trials ---------------------------------------------------------------------------
def metrics_of(trial) -> dict[str, float]:
    out = {}
    for name in trial.metrics.metrics:
        v = trial.metrics.get_last_value(name)
        if v is not None:
            out[name] = float(v)
    return out


def is_feasible(trial) -> bool:
    return trial.status == TrialStatus.COMPLETED and metrics_of(trial).get("feasible") == 1.0


def rank(trial) -> tuple:
    """Sort key, best last: score (val accuracy), then lower val loss (accuracy on a small
    validation split moves in steps, so ties are common), then lower latency."""
    m = metrics_of(trial)
    return (m["score"], -m.get("val_loss", 0.0), -m.get("latency_ms", 0.0))


def top_trials(trials, k: int = 1) -> list:
    """The `k` best feasible trials, best first."""
    return sorted((t for t in trials if is_feasible(t)), key=rank, reverse=True)[:k]


def best_trial(trials) -> Any:
    """The best feasible trial (see `rank`), or None."""
    top = top_trials(trials, 1)
    return top[0] if top else None


def summary(m: dict[str, float], short: bool = False) -> str:
    if not m:
        return "(no metrics)"
    text = (f"val_acc {m.get('val_accuracy', math.nan):.4f}  p50 {m.get('latency_ms', math.nan):.4f}"
            f" ms")
    if short:
        return text
    text += f"  {m.get('size_kb', math.nan):.1f} KB  {int(m.get('params', 0)):,} params"
    return text + ("  feasible" if m.get("feasible") == 1.0 else "  INFEASIBLE")


def last_line(message: str | None) -> str:
    lines = [ln.strip() for ln in (message or "").splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"

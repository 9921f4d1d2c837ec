"""Batches of independent candidates on the nas search's machinery: in this process, or on a
chief with worker processes on this host.

The adapt stage scores, in each iteration, a batch of candidates known in advance (one per
channel group). Each batch goes through a keras-tuner oracle (`CandidateOracle`) that hands its
candidates out in order as trials; the tuners that run them are this process's (no workers) or
worker processes talking to a `distribute.Chief` over keras-tuner's gRPC service, with the same
token, heartbeats, leases, deadlines and dead-worker requeue as the nas search. What differs
from a search is only the oracle's algorithm: no space to sample, a list handed out as given;
between batches (the caller measuring the one it kept) workers are told to wait (IDLE), and
closing the pool tells them to stop.

A candidate is a dict of ints and strings (its trial's hyperparameter values, so it travels in
keras-tuner's protos and trial.json); `work(values, folder)` runs one and returns its metrics
(floats, "score" among them). The project folder (oracle.json, trial_*/) keeps every finished
candidate: `run` gives back a finished trial with the same values instead of running it again,
so a killed run resumes mid-batch.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import keras_tuner as kt
from keras_tuner.src.engine import metrics_tracking
from keras_tuner.src.engine.trial import TrialStatus

from pipeline.artifacts import json_text
from pipeline.errors import UserError
from pipeline.search.oracle import (OBJECTIVE, EdgeOracleMixin, last_line, metrics_of,
                                    open_project)
from pipeline.search.space import KEY
from pipeline.search.tuner import EdgeTuner

log = logging.getLogger("edgepipe")

Work = Callable[[dict[str, Any], Path], dict[str, float]]


class CandidateOracle(EdgeOracleMixin, kt.Oracle):
    """Hands out `pending` candidates in order. With none pending: IDLE while `serving` (the
    chief will add the next batch), else STOPPED. A failed candidate stops the pool (there is
    no point scoring the others of a batch that cannot be judged)."""

    def __init__(self, key: str, role: str = "adapt"):
        hp = kt.HyperParameters()
        hp.Fixed(KEY, key)
        super().__init__(objective=kt.Objective(OBJECTIVE, direction="max"), hyperparameters=hp,
                         allow_new_entries=False, tune_new_entries=True, seed=1,
                         max_consecutive_failed_trials=1)
        self._edge_init(None, 0)
        self.prefix = f"[{role}]"
        self.pending: list[dict[str, Any]] = []
        self.serving = False

    def populate_space(self, trial_id):
        if self.failure:
            return {"status": TrialStatus.STOPPED}
        if self.pending:
            return {"status": TrialStatus.RUNNING, "values": {KEY: self.hyperparameters.get(KEY),
                                                              **self.pending.pop(0)}}
        return {"status": TrialStatus.IDLE if self.serving else TrialStatus.STOPPED}

    @kt.synchronized
    def submit(self, batch: list[dict[str, Any]]) -> dict[int, Any]:
        """Queue `batch` (under the oracle's lock: workers may be asking meanwhile). Returns
        {index in batch: its trial} for the candidates this project already has: a completed
        one is not run again, an interrupted or failed one runs again (a failed one once);
        interrupted trials of another batch are dropped."""
        found = {i: t for i, c in enumerate(batch) if (t := self.latest(c)) is not None}
        keep = {t.trial_id for t in found.values()}
        self._retry_queue = [tid for tid in self._retry_queue if tid in keep]
        for t in found.values():
            if t.status == TrialStatus.FAILED:
                t.status, t.metrics = TrialStatus.INVALID, metrics_tracking.MetricsTracker()
                self._run_times[t.trial_id] = 0
                self.end_order = [x for x in self.end_order if x != t.trial_id]
                self._retry_queue.append(t.trial_id)
        self.failure = None
        self.pending = [c for i, c in enumerate(batch) if i not in found]
        self.save()
        return found

    def latest(self, candidate: dict[str, Any]):
        """The trial of `candidate`: a completed one first, then the newest; None if none."""
        mine = [t for t in self.trials.values() if candidate_of(t) == candidate]
        return max(mine, key=lambda t: (t.status == TrialStatus.COMPLETED, int(t.trial_id)),
                   default=None)

    def describe(self, values: dict) -> str:
        return ", ".join(f"{k}={v}" for k, v in values.items() if k != KEY)

    def result(self, trial) -> str:
        return ", ".join(f"{k} {v:.4g}" for k, v in metrics_of(trial).items() if k != OBJECTIVE)

    def progress(self, trial) -> str:
        return f"{len(self.pending)} waiting"


def candidate_of(trial) -> dict[str, Any]:
    return {k: v for k, v in trial.hyperparameters.values.items() if k != KEY}


class CandidateTuner(EdgeTuner):
    """Runs candidates with `work`; each trial folder keeps what `work` writes (the candidate's
    model) and runs.jsonl (one line per time it ran: which tuner, host, pid)."""

    def __init__(self, oracle, work: Work, *, directory, project_name: str, remote=None,
                 idle_sleep: float = 0.5):
        super().__init__(oracle, None, directory=directory, project_name=project_name,
                         remote=remote, idle_sleep=idle_sleep)
        self.work = work

    def run_trial(self, trial, *_) -> dict[str, float]:
        folder = Path(self.get_trial_dir(trial.trial_id))
        with open(folder / "runs.jsonl", "a") as f:
            f.write(json_text({"tuner": self.tuner_id, "host": socket.gethostname(),
                               "pid": os.getpid(), "time": time.time()}) + "\n")
        return self.work(candidate_of(trial), folder)


class Pool:
    """Scores batches of candidates in `project` (a context manager). `workers` > 0: a chief on
    loopback with a fresh token, and `start(address, token)` starting that many LocalWorkers
    (each running `serve_worker` for this project); else this process runs them. `timeout`:
    the workers' deadline for each call, part of the lease (distribute.lease_for)."""

    def __init__(self, project: Path, key: str, work: Work, *, workers: int = 0,
                 start: Callable[[str, str], Sequence[Any]] | None = None,
                 timeout: float = 60.0, role: str = "adapt", poll: float = 0.25):
        self.project, self.key, self.work, self.role = Path(project), key, work, role
        self.count, self.start, self.timeout, self.poll = workers, start, timeout, poll
        self.oracle = CandidateOracle(key, role)
        self.chief = None
        self.workers: list[Any] = []
        self.dead: dict[str, str] = {}
        self.silent: dict[str, str] = {}

    def __enter__(self) -> "Pool":
        from pipeline.search.distribute import Chief, lease_for

        self.project.mkdir(parents=True, exist_ok=True)
        open_project(self.oracle, self.project.parent, self.project.name)
        self.tuner = None
        if not self.count:
            self.tuner = CandidateTuner(self.oracle, self.work, directory=self.project.parent,
                                        project_name=self.project.name)
            return self
        token = secrets.token_hex(16)  # every worker is ours: other users of the host stay out
        self.oracle.serving = True
        self.chief = Chief(self.oracle, "127.0.0.1:0", lease=lease_for(timeout=self.timeout),
                           token=token, role=self.role)
        try:
            self.workers = list(self.start(self.chief.address, token))
        except BaseException:
            self.chief.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.chief is None:
            return
        self.oracle.serving = False  # the next ask of each worker is answered "stop"
        end = time.monotonic() + 10 + self.timeout
        try:
            while (any(w.returncode is None for w in self.workers)
                   and time.monotonic() < end and exc[0] is None):
                time.sleep(self.poll)
        finally:
            for w in self.workers:
                w.stop()
            self.chief.stop()

    def trial_dir(self, trial) -> Path:
        return self.project / f"trial_{trial.trial_id}"

    def run(self, batch: Sequence[dict[str, Any]]) -> list:
        """Each candidate's COMPLETED trial, in batch order. A candidate finished earlier in this
        project is not run again; a failed one is (once)."""
        o = self.oracle
        wanted = [dict(c) for c in batch]
        found = o.submit(wanted)
        again = sum(1 for t in found.values() if t.status != TrialStatus.COMPLETED)
        if found:
            log.info("%s %d of %d candidates already scored (this run resumes), %d to run "
                     "again", o.prefix, len(found) - again, len(wanted), again)
        if self.chief is None:
            self.tuner.search(None)
        else:
            self._wait(lambda: not o.pending and not o._retry_queue and not o.ongoing_trials)
        out = [o.latest(c) for c in wanted]
        bad = [t for t in out if t is None or t.status != TrialStatus.COMPLETED]
        if o.failure or bad:
            t = next((t for t in bad if t is not None), None)
            what = (f"candidate {o.describe(t.hyperparameters.values)} ended {t.status}: "
                    f"{last_line(t.message)}" if t is not None
                    else o.failure or "a candidate was never run")
            raise RuntimeError(f"{self.role}: {what} (trials in {self.project})")
        return out

    def _wait(self, done: Callable[[], bool]) -> None:
        """Until `done()`: dead or silent workers hand their candidate back to the others; when
        no worker is left to run what remains, one clear error (what finished is kept)."""
        while not done() and not self.oracle.failure:
            self.chief.watch(self.workers, self.dead, self.silent)
            if all(w.returncode is not None for w in self.workers) and not done():
                gone = {**self.silent, **self.dead}
                who = "; ".join(f"{k} {v}" for k, v in gone.items()) or "they exited"
                raise UserError(f"{self.role}: every worker died before the iteration's "
                                f"candidates were scored ({who}); run again to resume "
                                f"(scored candidates are kept in {self.project})")
            time.sleep(self.poll)


def serve_worker(project: Path, key: str, work: Work, address: str, tuner_id: str,
                 timeout: float = 60.0, token: str | None = None, role: str = "adapt",
                 heartbeat: float | None = None) -> list[str]:
    """A worker: run candidates for the chief at `address` until it says stop, heartbeating as
    a nas worker does. Returns the trial ids run."""
    from pipeline.search import distribute as D

    os.environ.update(D.worker_env(address, tuner_id))  # keras-tuner's worker switch
    tuner = CandidateTuner(CandidateOracle(key, role), work, directory=Path(project).parent,
                           project_name=Path(project).name,
                           remote=D.remote(address, tuner_id, timeout, token, role))
    D.check_same_search(tuner.oracle, KEY, key)
    log.info("[%s %s] connected to the chief at %s", role, tuner_id, address)
    with D.Heartbeat(tuner.oracle.stub, tuner_id, heartbeat or D.HEARTBEAT_S):
        tuner.search(None)
    return tuner.trials_run

"""adapt's candidates on the nas search's chief/worker machinery (search/candidates.py): in
process and on loopback workers with fake work (no training); a killed pool resumes without
rerunning a scored candidate; a dead worker's candidate goes to another; all workers dead is
one error, not a hang. The end-to-end comparison with real training is in test_adapt.py."""

import json
import logging
import threading
import time

import pytest

from pipeline.errors import UserError
from pipeline.search import candidates as C
from pipeline.search import distribute as D

KEY = "k" * 64


def batch(iteration=1, n=3):
    return [{"iteration": iteration, "candidate": j, "group": f"conv{j}", "after": 8 - j,
             "model": "start.keras", "seed": 1000 * iteration + j} for j in range(n)]


def fake_work(calls):
    """Deterministic scores from the candidate alone; records (pid-free) who ran what."""

    def work(c, folder):
        calls.append(c["candidate"])
        (folder / "model.keras").write_text(f"model of {c['group']}")
        acc = 0.5 + 0.1 * c["after"] / 8 + 0.01 * c["iteration"]
        return {"val_accuracy": acc, "score": acc}

    return work


def ran_by(project) -> dict[str, list[str]]:
    return {p.name: [json.loads(ln)["tuner"] for ln in (p / "runs.jsonl").read_text().splitlines()]
            for p in sorted(project.glob("trial_*"))}


def test_in_process_pool_runs_each_candidate_once_and_resumes(tmp_path):
    calls = []
    with C.Pool(tmp_path / "p", KEY, fake_work(calls)) as pool:
        trials = pool.run(batch())
        assert [C.candidate_of(t) for t in trials] == batch()
        assert [t.metrics.get_last_value("val_accuracy") for t in trials] == pytest.approx(
            [0.61, 0.5975, 0.585])
        assert all((pool.trial_dir(t) / "model.keras").is_file() for t in trials)
        pool.run(batch(2, n=2))
    assert calls == [0, 1, 2, 0, 1]

    # a new pool on the folder (a re-run after a kill): scored candidates are not run again,
    # the one it never scored runs
    calls.clear()
    with C.Pool(tmp_path / "p", KEY, fake_work(calls)) as pool:
        again = pool.run(batch(2, n=3))
    assert calls == [2]
    assert [C.candidate_of(t) for t in again] == batch(2, n=3)
    assert all(len(v) == 1 for v in ran_by(tmp_path / "p").values())


def test_a_failing_candidate_is_one_error_naming_it_and_runs_again_next_time(tmp_path):
    def work(c, folder):
        if c["candidate"] == 1:
            raise ValueError("boom: cannot prune conv1")
        return {"val_accuracy": 0.5, "score": 0.5}

    with C.Pool(tmp_path / "p", KEY, work) as pool:
        with pytest.raises(RuntimeError) as e:
            pool.run(batch())
    assert str(e.value) == (
        f"adapt: candidate iteration=1, candidate=1, group=conv1, after=7, model=start.keras, "
        f"seed=1001 ended FAILED: ValueError: boom: cannot prune conv1 (trials in "
        f"{tmp_path / 'p'})")
    calls = []
    with C.Pool(tmp_path / "p", KEY, fake_work(calls)) as pool:
        trials = pool.run(batch())
    assert calls == [1, 2]  # the failed one again, and the one the failure left unscored
    assert all(t.status == "COMPLETED" for t in trials)


class ThreadWorker:
    """A worker in a thread of this process (serve_worker, as `adapt-worker` runs it)."""

    def __init__(self, address, token, tuner_id, work, project):
        self.tuner_id, self.log_path, self.returncode = tuner_id, "w.log", None
        self.error = None

        def run():
            try:
                C.serve_worker(project, KEY, work, address, tuner_id, timeout=5, token=token,
                               heartbeat=0.2)
                self.returncode = 0
            except Exception as e:  # reported by the test
                self.error, self.returncode = e, 1

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def ending(self):
        return f"failed: {self.error}"

    def stop(self):
        self.thread.join(10)


class DyingWorker:
    """Takes a candidate from the chief as soon as there is one, then dies (like a worker
    process killed by SIGKILL mid-candidate)."""

    def __init__(self, address, token, tuner_id="tuner1"):
        self.tuner_id, self.log_path, self.held = tuner_id, "w1.log", None
        self.remote = D.RemoteOracle(C.CandidateOracle(KEY), address, tuner_id, timeout=5,
                                     token=token)

    @property
    def returncode(self):
        if self.held is None:
            trial = self.remote.create_trial(self.tuner_id)
            if trial.status != "RUNNING":
                return None  # alive, waiting for a candidate
            self.held = trial
        return -9

    def ending(self):
        return "was killed (signal 9)"

    def stop(self):
        pass


@pytest.fixture
def worker_env(monkeypatch):
    for k in (D.ENV_ID, D.ENV_IP, D.ENV_PORT):  # serve_worker sets them; restore afterwards
        monkeypatch.setenv(k, "unset")
        monkeypatch.delenv(k)


def test_workers_on_loopback_reach_the_same_results_and_survive_a_dead_worker(
        tmp_path, worker_env, caplog):
    caplog.set_level(logging.INFO, logger="edgepipe")
    serial = []
    with C.Pool(tmp_path / "serial", KEY, fake_work(serial)) as pool:
        want = [(C.candidate_of(t), t.metrics.get_last_value("val_accuracy"))
                for t in pool.run(batch())]
    calls, dying = [], []
    project = tmp_path / "p"

    def start(address, token):
        dying.append(DyingWorker(address, token))  # holds candidate 0 and dies
        return [dying[0], ThreadWorker(address, token, "tuner0", fake_work(calls), project)]

    t0 = time.monotonic()
    with C.Pool(project, KEY, None, workers=2, start=start, timeout=5, poll=0.05) as pool:
        got = [(C.candidate_of(t), t.metrics.get_last_value("val_accuracy"))
               for t in pool.run(batch())]
        second = pool.run(batch(2, n=2))  # the worker waited (IDLE) between the batches
    assert time.monotonic() - t0 < 30
    assert got == want and len(second) == 2
    held = dying[0].held.trial_id
    assert sorted(calls) == [0, 0, 1, 1, 2]
    assert ran_by(project) == {f"trial_{t}": ["tuner0"] for t in ("0000", "0001", "0002",
                                                                  "0003", "0004")}
    assert [r.getMessage() for r in caplog.records if "was killed" in r.getMessage()] == [
        f"[adapt] worker tuner1 was killed (signal 9); trial {held} goes back to the queue "
        f"(log: w1.log)"]


def test_every_worker_dead_is_one_error_not_a_hang(tmp_path, worker_env):
    project = tmp_path / "p"
    t0 = time.monotonic()
    with pytest.raises(UserError) as e:
        with C.Pool(project, KEY, None, workers=1, timeout=5, poll=0.05,
                    start=lambda address, token: [DyingWorker(address, token)]) as pool:
            pool.run(batch())
    assert time.monotonic() - t0 < 10
    assert str(e.value) == (
        f"adapt: every worker died before the iteration's candidates were scored (tuner1 was "
        f"killed (signal 9)); run again to resume (scored candidates are kept in {project})")
    calls = []
    with C.Pool(project, KEY, fake_work(calls)) as pool:  # the re-run: in process, resumes
        assert len(pool.run(batch())) == 3
    assert sorted(calls) == [0, 1, 2]

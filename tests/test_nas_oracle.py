"""nas search machinery with fake trials (no training): every oracle, the time limit, resume
repairs, failures, the chief/worker deadlines and the workers' leases on loopback; predicted-latency searches
choose among measured trials only."""

import json
import logging
import re
import socket
import threading
import time

import pytest

from pipeline import search as S
from pipeline.search import distribute as D
from pipeline.search.tuner import EdgeTuner, TrialSettings
from pipeline.errors import UserError

SPACE = {"num_stages": 2, "width": [0.25, 0.5, 0.75], "blocks": {"min": 0, "max": 2,
         "step": None, "sampling": "linear"}, "kernel": [3, 5], "expansion": 2,
         "resolution": None, "stem_stride": 1, "head_channels": 16,
         "dropout": {"min": 0.0, "max": 0.3, "step": 0.1, "sampling": "linear"},
         "bn_momentum": 0.9, "learning_rate": 0.01}


def spec(oracle="random", max_trials=4, **kw) -> S.SearchSpec:
    return S.SearchSpec(space=SPACE, key="k" * 64, oracle=oracle, max_trials=max_trials,
                        settings=TrialSettings(num_stages=2, epochs=3, max_latency_ms=1.0), **kw)


def fake_metrics(values) -> dict:
    """Deterministic fake results: wider is more accurate and slower."""
    lat = 0.5 + values["width"] + 0.1 * values["blocks_0"]
    m = {"val_accuracy": 0.5 + values["width"] / 2, "latency_ms": lat, "size_kb": 4.0,
         "params": 100.0}
    m["feasible"] = float(lat <= 1.0)
    m["score"] = m["val_accuracy"] if lat <= 1.0 else m["val_accuracy"] - 1 - (lat - 1)
    return m


@pytest.fixture
def fake_trials(monkeypatch):
    """EdgeTuner.run_trial without training; records each call."""
    calls = []

    def run_trial(self, trial, dataset):
        calls.append((self.tuner_id, trial.trial_id, dict(trial.hyperparameters.values)))
        if getattr(dataset, "fail", False):
            raise ValueError("boom: this candidate cannot be built")
        return fake_metrics(trial.hyperparameters.values)

    monkeypatch.setattr(EdgeTuner, "run_trial", run_trial)
    return calls


@pytest.mark.parametrize("name", ["random", "bayesian", "hyperband"])
def test_every_oracle_runs_its_budget_once(tmp_path, fake_trials, name):
    oracle = S.run_local(spec(name, max_trials=5, initial_points=2), None, tmp_path / "p")
    assert sorted(oracle.trials) == sorted({tid for _, tid, _ in fake_trials})
    assert len(fake_trials) == 5 and all(t.status == "COMPLETED" for t in oracle.trials.values())
    rows = S.trial_rows(oracle)
    assert [r["ran_by"] for r in rows] == [["tuner0"]] * 5
    if name == "hyperband":
        assert all("tuner/epochs" in v for _, _, v in fake_trials)
    best = S.best_trial(oracle.trials.values())
    feasible = [r for r in rows if r["feasible"]]
    top = max(r["score"] for r in feasible)
    ties = [r for r in feasible if r["score"] == top]  # ties: the faster one
    assert best.trial_id == min(ties, key=lambda r: r["latency_ms"])["trial_id"]


def test_time_limit_stops_new_trials(tmp_path, fake_trials):
    oracle = S.run_local(spec(max_trials=50, time_limit_s=1e-9), None, tmp_path / "p")
    assert fake_trials == [] and oracle.stop_reason.startswith("time limit")


def test_consecutive_failures_stop_the_search_with_the_error(tmp_path, fake_trials):
    class Failing:
        fail = True

    oracle = S.run_local(spec(max_trials=10, max_failures=2), Failing(), tmp_path / "p")
    assert len(fake_trials) == 2
    assert oracle.failure == ("Number of consecutive failures exceeded the limit of 2.; last "
                              "error: ValueError: boom: this candidate cannot be built")


def test_resume_repairs_what_a_kill_leaves(tmp_path, fake_trials):
    project = tmp_path / "p"
    S.run_local(spec(max_trials=3), None, project)
    state = json.loads((project / "oracle.json").read_text())
    # killed between keras-tuner's two writes: trial 1's file says COMPLETED but oracle.json
    # still has it running; trial 2 was created (its file written) but oracle.json never knew
    state["ongoing_trials"] = {"tuner0": "1"}
    state["end_order"] = ["0"]
    state["start_order"] = ["0", "1"]
    (project / "oracle.json").write_text(json.dumps(state))
    t2 = json.loads((project / "trial_2" / "trial.json").read_text())
    t2["status"], t2["metrics"] = "RUNNING", {"metrics": {}}
    (project / "trial_2" / "trial.json").write_text(json.dumps(t2))
    fake_trials.clear()
    oracle = S.run_local(spec(max_trials=4), None, project)
    assert sorted(tid for _, tid, _ in fake_trials) == ["2", "3"]  # 1 is not run again
    assert all(t.status == "COMPLETED" for t in oracle.trials.values())
    assert len(oracle.trials) == 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def worker_env(monkeypatch):
    for k in (D.ENV_ID, D.ENV_IP, D.ENV_PORT):  # run_worker sets them; restore afterwards
        monkeypatch.setenv(k, "unset")
        monkeypatch.delenv(k)


def test_worker_stops_with_a_clear_error_when_the_chief_is_gone(tmp_path, monkeypatch,
                                                                 worker_env):
    sp = spec(max_trials=3)
    oracle = sp.new_oracle()
    S.oracle.open_project(oracle, tmp_path, "chief")
    chief = D.Chief(oracle, "127.0.0.1:0")

    def run_trial(self, trial, dataset):
        chief.stop()  # the chief dies while this worker trains
        return fake_metrics(trial.hyperparameters.values)

    monkeypatch.setattr(EdgeTuner, "run_trial", run_trial)
    t0 = time.time()
    with pytest.raises(D.ChiefUnreachable, match=rf"^the nas chief at {chief.address} stopped "
                       r"answering \(unreachable for 1s at \w+\): it finished or died; this "
                       r"worker stops \(a result it held was not recorded and will run "
                       r"again when the chief resumes\)$"):
        S.run_worker(sp, None, tmp_path / "worker", chief.address, "tuner0", timeout=1)
    assert time.time() - t0 < 15


def test_worker_refuses_a_chief_running_another_search(tmp_path, worker_env):
    oracle = spec().new_oracle()
    S.oracle.open_project(oracle, tmp_path, "chief")
    chief = D.Chief(oracle, "127.0.0.1:0")
    try:
        other = spec()
        other.key = "x" * 64
        with pytest.raises(UserError, match=r"^this worker's search \(key xxxxxxxxxxxx\) differs "
                                            r"from the chief's \(key kkkkkkkkkkkk\): start workers "
                                            r"with the same recipe and library versions as "
                                            r"the chief$"):
            S.run_worker(other, None, tmp_path / "w", chief.address, "tuner0", timeout=5)
    finally:
        chief.stop()


def test_chief_cannot_listen_on_a_busy_port(tmp_path):
    oracle = spec().new_oracle()
    S.oracle.open_project(oracle, tmp_path, "chief")
    first = D.Chief(oracle, "127.0.0.1:0")
    try:
        with pytest.raises(UserError, match=rf"^the nas chief cannot listen on 127\.0\.0\.1:"
                                            rf"{first.port} \(port in use or address not on this "
                                            r"machine\); pick another --address$"):
            D.Chief(oracle, f"127.0.0.1:{first.port}")
    finally:
        first.stop()


@pytest.mark.parametrize("text", ["nohost", "host:", ":80", "h:99999", "h:x"])
def test_bad_addresses(text):
    with pytest.raises(UserError, match=r"^Expected a chief address HOST:PORT \(port 0-65535\)\. "
                                        rf"Received: '{text}'$"):
        D.parse_address(text)


def test_cli_worker_with_a_chief_that_does_not_answer(tmp_path, monkeypatch, worker_env):
    from click.testing import CliRunner

    from pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text(
        "name: w\ndataset: {name: digits, input_size: [8, 8], channels: 1}\nmodel: small_cnn\n"
        "stages:\n  - nas: {max_trials: 1, epochs: 1, space: {num_stages: 1}}\n")
    port = _free_port()
    t0 = time.time()
    res = CliRunner().invoke(main, ["nas", "r.yaml", "--worker", "--address",
                                    f"127.0.0.1:{port}", "--timeout", "1", "--id", "w1"])
    assert res.exit_code == 2, res.output
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: the nas chief at 127.0.0.1:{port} did not answer within 1s: start `edgepipe "
        f"nas RECIPE --chief` there first, or check the address and the firewall")
    assert time.time() - t0 < 30
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        res = CliRunner().invoke(main, ["nas", "r.yaml", "--chief", "--address",
                                        f"127.0.0.1:{taken}", "--out", "chief"])
    assert res.exit_code == 2, res.output
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: the nas chief cannot listen on 127.0.0.1:{taken} (port in use or address not "
        f"on this machine); pick another --address")
    res = CliRunner().invoke(main, ["nas", "r.yaml"])
    assert (res.exit_code, res.stderr) == (2, "error: give --chief or --worker (one machine: "
                                           "edgepipe run RECIPE --workers N) (see edgepipe nas "
                                           "--help)\n")
    res = CliRunner().invoke(main, ["nas", "r.yaml", "--worker", "--address", "h:1", "--stage",
                                    "02_nas"])
    assert res.exit_code == 2
    assert res.stderr.strip() == ("error: --stage: no nas stage '02_nas' (did you mean "
                                  "\"01_nas\"?); nas stages: 01_nas")


def test_a_chief_whose_budget_is_spent_does_not_wait_for_workers(tmp_path, fake_trials):
    S.run_local(spec(max_trials=2), None, tmp_path / "p")
    t0 = time.time()
    oracle = S.run_chief(spec(max_trials=2), tmp_path / "p", "127.0.0.1:0", remote_workers=True)
    assert time.time() - t0 < 5 and len(oracle.trials) == 2 and len(fake_trials) == 2


class DeadWorker:
    """Stands for a LocalWorker process killed by SIGKILL."""

    def __init__(self, tuner_id):
        self.tuner_id, self.returncode, self.log_path = tuner_id, -9, "w.log"

    def ending(self):
        return "was killed (signal 9)"

    def stop(self):
        pass


def test_a_dead_workers_trial_goes_back_to_the_queue(tmp_path):
    oracle = spec(max_trials=3).new_oracle()
    S.oracle.open_project(oracle, tmp_path, "chief")
    trial = oracle.create_trial("tuner1")
    chief = D.Chief(oracle, "127.0.0.1:0")
    try:
        with pytest.raises(UserError) as e:
            chief.wait([DeadWorker("tuner1")], poll=0.01)
    finally:
        chief.stop()
    assert str(e.value) == (f"nas workers died before the search ended (tuner1 was killed "
                            f"(signal 9)); trials {trial.trial_id} did not finish: run again to "
                            f"finish the search (finished trials are kept)")
    assert oracle._retry_queue == [trial.trial_id] and not oracle.ongoing_trials
    again = oracle.create_trial("tuner0")  # another worker takes it over
    assert again.trial_id == trial.trial_id and oracle.ran_by[trial.trial_id] == ["tuner1",
                                                                                  "tuner0"]


# ----- leases: remote workers the chief cannot watch as processes ----------------------------
@pytest.fixture
def chief_of(tmp_path):
    """chief_of(spec, lease) → a Chief on loopback with a fresh oracle; stopped afterwards."""
    chiefs = []

    def make(sp, lease):
        oracle = sp.new_oracle()
        S.oracle.open_project(oracle, tmp_path, "chief")
        chiefs.append(D.Chief(oracle, "127.0.0.1:0", lease=lease))
        return chiefs[-1]

    yield make
    for c in chiefs:
        c.stop()


def waiting(chief) -> tuple[threading.Thread, list]:
    """chief.wait() for remote workers in a thread (its exception, if any, in the list)."""
    raised = []

    def run():
        try:
            chief.wait(remote_workers=True, poll=0.05)
        except Exception as e:  # reported by the test
            raised.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, raised


def client(sp, chief, name) -> D.RemoteOracle:
    """A remote worker's connection, driven by hand (no heartbeat unless the test beats)."""
    return D.RemoteOracle(sp.new_oracle(), chief.address, name, timeout=5)


def warnings_of(caplog, text) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_a_silent_remote_workers_trial_goes_back_to_the_queue(chief_of, tmp_path, fake_trials,
                                                              worker_env, caplog):
    caplog.set_level(logging.INFO, logger="edgepipe")
    sp = spec(max_trials=2)
    chief = chief_of(sp, lease=1.0)
    held = client(sp, chief, "ghost").create_trial("ghost")  # ... and never heard from again
    t0 = time.monotonic()
    ran = []  # without a lease the worker waits for trial 0 forever: bound it
    worker = threading.Thread(target=lambda: ran.extend(S.run_worker(
        sp, None, tmp_path / "w", chief.address, "tuner0", timeout=5, heartbeat=0.2)),
        daemon=True)
    worker.start()
    while "tuner0" not in chief.oracle.ran_by.get("1", []) and time.monotonic() - t0 < 10:
        time.sleep(0.02)  # the chief starts expiring only once tuner0 holds trial 1, so the
    thread, raised = waiting(chief)  # order below holds however slow tuner0's start-up was
    worker.join(10)
    thread.join(5)
    assert not worker.is_alive(), "the search hung on the silent worker's trial"
    assert not thread.is_alive() and not raised, raised  # the chief's wait ended
    assert time.monotonic() - t0 < 12
    assert ran == ["1", held.trial_id]  # the other worker waited for it, then ran it
    oracle = chief.oracle
    assert oracle.ran_by == {"0": ["ghost", "tuner0"], "1": ["tuner0"]}
    assert sorted(oracle.end_order) == ["0", "1"]
    assert all(t.status == "COMPLETED" for t in oracle.trials.values())
    (line,) = warnings_of(caplog, "silent")
    m = re.fullmatch(r"\[nas\] worker ghost silent for (\d+\.\d)s \(lease 1s\): trial 0 goes "
                     r"back to the queue", line)
    assert m and float(m.group(1)) >= 1.0, line


def test_a_worker_that_heartbeats_through_a_long_trial_keeps_it(chief_of, tmp_path, monkeypatch,
                                                                worker_env, caplog):
    """... even while the chief's one server thread is busy for twice the lease."""
    caplog.set_level(logging.INFO, logger="edgepipe")
    sp = spec(max_trials=1)
    chief = chief_of(sp, lease=1.0)
    real = chief.oracle.get_best_trials

    def thinking(num_trials=1):  # like a bayesian proposal taking seconds
        time.sleep(2.0)
        return real(num_trials)

    chief.oracle.get_best_trials = thinking
    busy = client(sp, chief, "busy")  # never holds a trial: no lease

    def run_trial(self, trial, dataset):
        if getattr(self, "ran", False):  # handed back and taken again: fail, do not loop
            raise D.ChiefUnreachable("the trial was taken away and ran again")  # ends the test
        self.ran = True
        threading.Thread(target=busy.get_best_trials, daemon=True).start()
        time.sleep(3.0)  # three leases
        return fake_metrics(trial.hyperparameters.values)

    monkeypatch.setattr(EdgeTuner, "run_trial", run_trial)
    thread, raised = waiting(chief)
    ran = S.run_worker(sp, None, tmp_path / "w", chief.address, "tuner0", timeout=5,
                       heartbeat=0.2)
    thread.join(10)
    assert not thread.is_alive() and not raised, raised
    assert ran == ["0"] and chief.oracle.ran_by == {"0": ["tuner0"]}
    assert chief.oracle.trials["0"].status == "COMPLETED" and chief.oracle.end_order == ["0"]
    assert warnings_of(caplog, "silent") == [] and warnings_of(caplog, "ignored") == []


def test_a_late_result_from_a_worker_whose_trial_was_handed_back_is_ignored(chief_of, caplog):
    caplog.set_level(logging.INFO, logger="edgepipe")
    sp = spec(max_trials=1)
    chief = chief_of(sp, lease=0.3)
    oracle = chief.oracle
    slow, other = client(sp, chief, "slow"), client(sp, chief, "other")
    trial = slow.create_trial("slow")
    tid = trial.trial_id
    time.sleep(0.5)
    (what,) = chief.expire_silent().values()
    m = re.fullmatch(r"went silent \((\d+\.\d)s without a heartbeat\)", what)
    assert m and float(m.group(1)) >= 0.3, what
    assert other.create_trial("other").trial_id == tid  # handed to another worker

    # the slow one comes back with its result: ignored, the chief goes on
    trial.status = "COMPLETED"
    slow.update_trial(tid, {"score": 0.1, "val_accuracy": 0.1})
    slow.end_trial(trial)
    assert oracle.end_order == [] and oracle.ongoing_trials["other"].trial_id == tid
    assert not oracle.trials[tid].metrics.exists("score")
    assert warnings_of(caplog, "ignored") == [
        f"[nas] ignored a late {call} for trial {tid} from slow: it was handed back to the "
        f"queue (worker dead or silent) and it runs on other now"
        for call in ("update_trial", "end_trial")]

    metrics = fake_metrics(trial.hyperparameters.values)
    other.update_trial(tid, metrics)
    other.end_trial(trial)
    slow.end_trial(trial)  # later still: ignored too
    assert oracle.end_order == [tid] and oracle.trials[tid].status == "COMPLETED"
    assert oracle.trials[tid].metrics.get_last_value("score") == metrics["score"]
    assert oracle.ran_by == {tid: ["slow", "other"]} and not oracle.ongoing_trials
    assert warnings_of(caplog, "ignored")[-1].endswith("and it is COMPLETED now")
    assert other.create_trial("other").status == "STOPPED"


def test_an_oracle_error_in_a_request_does_not_leave_the_chief_locked(chief_of, monkeypatch):
    """keras-tuner's `synchronized` has no try/finally: without our release, the chief's wait
    loop (expire) and every later request would block for ever after one failed request."""
    sp = spec(max_trials=2)
    chief = chief_of(sp, lease=60.0)
    oracle = chief.oracle
    real = type(oracle).populate_space
    calls = []

    def flaky(self, trial_id):
        calls.append(trial_id)
        if len(calls) == 1:
            raise OSError("No space left on device")
        return real(self, trial_id)

    monkeypatch.setattr(type(oracle), "populate_space", flaky)
    worker = client(sp, chief, "w0")
    with pytest.raises(D.ChiefUnreachable, match=rf"^the nas chief at {chief.address} failed on "
                       r"CreateTrial: UNKNOWN: Exception calling application: No space left on "
                       r"device$"):
        worker.create_trial("w0")
    done = []
    thread = threading.Thread(target=lambda: done.append(oracle.expire(lambda t: None, 1.0)),
                              daemon=True)
    thread.start()
    thread.join(5)
    assert done == [[]], "the oracle's lock was left held by the failed request"
    assert worker.create_trial("w0").status == "RUNNING"  # later requests are served


def test_heartbeats_to_an_unreachable_chief_are_reported_once(caplog):
    caplog.set_level(logging.INFO, logger="edgepipe")
    address = f"127.0.0.1:{_free_port()}"  # nobody listens
    with D.Heartbeat(D._Stub(address, timeout=5, tuner_id="w"), "w", every=0.05):
        t0 = time.monotonic()
        while not warnings_of(caplog, "heartbeat") and time.monotonic() - t0 < 4:
            time.sleep(0.05)
        time.sleep(0.3)  # more failing beats: still one line
    assert warnings_of(caplog, "heartbeat") == [
        f"[nas w] heartbeat to the chief at {address} failed (UNAVAILABLE); the trial goes on, "
        "but the chief hands it to another worker if this lasts"]


# ----- the shared token: who may drive the search -------------------------------------------
TOKEN = "s3cret-token-of-32-characters-ok"


@pytest.mark.parametrize("given", [None, "a-wrong-token-of-32-characters-x"])
def test_a_worker_without_the_right_token_is_refused_and_one_with_it_completes(
        tmp_path, fake_trials, worker_env, given):
    """keras-tuner's service has no authentication: anyone reaching the port drove the search."""
    sp = spec(max_trials=2)
    oracle = sp.new_oracle()
    S.oracle.open_project(oracle, tmp_path, "chief")
    chief = D.Chief(oracle, "127.0.0.1:0", token=TOKEN)
    try:
        with pytest.raises(D.ChiefUnreachable) as e:
            S.run_worker(sp, None, tmp_path / "intruder", chief.address, "intruder", timeout=5,
                         token=given)
        assert str(e.value) == (
            f"the nas chief at {chief.address} refused this worker: a missing or wrong token; "
            f"give workers the chief's token (--token-file FILE or $EDGEPIPE_NAS_TOKEN)")
        assert fake_trials == [] and oracle.trials == {} and chief.heard.last == {}
        ran = S.run_worker(sp, None, tmp_path / "w", chief.address, "tuner0", timeout=5,
                           token=TOKEN)
    finally:
        chief.stop()
    assert ran == ["0", "1"] and [t for _, t, _ in fake_trials] == ["0", "1"]
    assert all(t.status == "COMPLETED" for t in oracle.trials.values())


@pytest.mark.parametrize("bind", ["0.0.0.0:0", "192.0.2.1:8000", "[::]:0"])
def test_a_chief_beyond_loopback_needs_a_token(tmp_path, bind):
    oracle = spec().new_oracle()
    S.oracle.open_project(oracle, tmp_path, "chief")
    host, port = D.parse_address(bind)
    with pytest.raises(UserError) as e:
        D.Chief(oracle, bind)
    assert str(e.value) == (
        f"the nas chief would listen on {host}:{port}, beyond this machine, without a token; "
        f"give it one with --token-file FILE or $EDGEPIPE_NAS_TOKEN (the same for every "
        f"worker), or keep the default loopback address")
    assert D.is_loopback("127.0.0.1") and D.is_loopback("::1") and D.is_loopback("localhost")


def test_the_token_comes_from_a_file_or_the_environment_never_the_command_line(tmp_path,
                                                                                monkeypatch):
    from click.testing import CliRunner

    from pipeline.cli import main

    monkeypatch.delenv(D.TOKEN_ENV, raising=False)
    assert D.read_token(None) is None
    (tmp_path / "t").write_text(TOKEN + "\nignored\n")
    assert D.read_token(tmp_path / "t") == TOKEN
    monkeypatch.setenv(D.TOKEN_ENV, " " + TOKEN[::-1] + "\n")
    assert D.read_token(None) == TOKEN[::-1] and D.read_token(tmp_path / "t") == TOKEN
    monkeypatch.setenv(D.TOKEN_ENV, "short")
    with pytest.raises(UserError) as e:
        D.read_token(None)
    assert str(e.value) == ("$EDGEPIPE_NAS_TOKEN: the nas token has 5 characters; use at least "
                            "16 random ones (e.g. `openssl rand -hex 16 > token`)")
    with pytest.raises(UserError) as e:
        D.read_token(tmp_path / "nope")
    assert str(e.value) == f"--token-file {tmp_path / 'nope'}: cannot read it (No such file or directory)"
    monkeypatch.delenv(D.TOKEN_ENV)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text(
        "name: w\ndataset: {name: digits, input_size: [8, 8], channels: 1}\nmodel: small_cnn\n"
        "stages:\n  - nas: {max_trials: 1, epochs: 1, space: {num_stages: 1}}\n")
    res = CliRunner().invoke(main, ["nas", "r.yaml", "--chief", "--address", "0.0.0.0:0"])
    assert res.exit_code == 2 and res.stderr == (
        "error: --address 0.0.0.0:0 is beyond this machine: give the search a shared token with "
        "--token-file FILE or $EDGEPIPE_NAS_TOKEN (see edgepipe nas --help)\n")
    res = CliRunner().invoke(main, ["nas", "r.yaml", "--chief", "--token", TOKEN])
    assert res.exit_code == 2 and res.stderr == (
        "error: No such option '--token'. (Did you mean one of: '--token-file', '--worker', "
        "'--workers'?) (see edgepipe nas --help)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml", "t"]


def _predicted_rows():
    """Trials scored on predicted latency (limit 1 ms): 0 and 3 make the front, 0 is best."""
    rows = []
    for tid, acc, ms in (("0", 0.9, 0.5), ("1", 0.8, 0.6), ("2", 0.7, 0.9), ("3", 0.95, 2.0)):
        rows.append({"trial_id": tid, "val_accuracy": acc, "val_loss": 1 - acc, "latency_ms": ms,
                     "size_kb": 10.0, "params": 100.0, "latency_source": "predicted",
                     "feasible": ms <= 1.0, "score": acc if ms <= 1.0 else acc - 2})
    return rows


@pytest.mark.parametrize("measured_ms, chosen, measured", [
    # the predictor over-estimated trial 3: measured, it is feasible and the best
    ({"0": 1.2, "3": 0.9}, "3", ["0", "3"]),
    # no finalist stays feasible once measured: the next best by prediction is measured too
    ({"0": 1.2, "3": 2.5, "1": 0.7}, "1", ["0", "3", "1"]),
])
def test_predicted_latency_chooses_among_measured_trials_only(monkeypatch, measured_ms, chosen,
                                                             measured):
    from types import SimpleNamespace

    from pipeline.search import latency as L

    timed = []

    def fake_measure(oracle, ids, *args):
        timed.append(list(ids))
        return {t: measured_ms[t] for t in ids}

    monkeypatch.setattr(L, "measure_trials", fake_measure)
    rows = _predicted_rows()
    oracle = SimpleNamespace(trials={r["trial_id"]: SimpleNamespace(trial_id=r["trial_id"])
                                     for r in rows})
    top, ids = L.choose(oracle, rows, 1, TrialSettings(max_latency_ms=1.0), None, (8, 8, 1), 10)
    assert [t.trial_id for t in top] == [chosen] and ids == measured
    assert timed == [["0", "3"]] + ([["1"]] if len(measured) > 2 else [])
    by_id = {r["trial_id"]: r for r in rows}
    for tid in measured:
        r = by_id[tid]
        assert (r["latency_source"], r["latency_ms"]) == ("measured", measured_ms[tid])
        assert r["feasible"] == (measured_ms[tid] <= 1.0) and "predicted_latency_ms" in r
    assert all(r["latency_source"] == "predicted" for t, r in by_id.items() if t not in measured)

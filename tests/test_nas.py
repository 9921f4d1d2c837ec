"""nas end to end on 8x8 digits: search → best.keras → export follows it; a killed search
resumes without repeating a finished trial; infeasible constraints end with the closest trials;
a chief with 2 worker processes on loopback runs every trial exactly once; `latency: predicted`
times only the finalists and refuses another target's latency table."""

import json
import re
from pathlib import Path

import pytest

from pipeline import engine, recipe
from pipeline import search as S
from pipeline.search import tuner as tuner_lib
from pipeline.errors import UserError

pytestmark = pytest.mark.slow

RECIPE = """\
name: nas_tiny
seed: 0
dataset: {{name: digits, input_size: [8, 8], channels: 1}}
model: small_cnn
stages:
  - nas:
      oracle: {oracle}
      max_trials: {trials}
      quantization: {quantization}
      epochs: 1
      batch_size: 64
      constraints: {constraints}
      space:
        num_stages: 2
        width: [0.25, 0.5]
        blocks: {{min: 0, max: 1}}
        kernel: 3
        expansion: 2
        stem_stride: 1
        head_channels: 16
        learning_rate: 0.02
      bench: {{min_runs: 5, min_seconds: 0.0, warmup: 1}}
{more}"""


def make(oracle="random", trials=3, constraints="{}", more="", quantization="fp32"):
    text = RECIPE.format(oracle=oracle, trials=trials, constraints=constraints, more=more,
                         quantization=quantization)
    return recipe.parse(text), text


def runs(run_dir) -> dict[str, list[str]]:
    """trial id → the tuners that ran it, from each trial folder's runs.jsonl."""
    (project,) = (run_dir / ".nas").iterdir()
    return {p.name.removeprefix("trial_"): [json.loads(ln)["tuner"] for ln in
                                            (p / "runs.jsonl").read_text().splitlines()]
            for p in sorted(project.glob("trial_*"))}


def test_search_resume_and_export_follows_the_best(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    r, text = make(trials=2, more="  - export: {modes: [fp32]}\n  - report\n")
    real = tuner_lib.measure

    def killed_in_trial_1(model, dataset, settings, folder):
        if folder.name == "trial_1":
            raise KeyboardInterrupt  # like Ctrl-C in the second trial, after its training
        return real(model, dataset, settings, folder)

    monkeypatch.setattr(tuner_lib, "measure", killed_in_trial_1)
    with pytest.raises(KeyboardInterrupt):
        engine.run(r, run_dir, recipe_text=text)
    assert not (run_dir / "01_nas").exists()  # nothing looks finished
    monkeypatch.setattr(tuner_lib, "measure", real)

    records = engine.run(r, run_dir, recipe_text=text)
    assert runs(run_dir) == {"0": ["tuner0"], "1": ["tuner0", "tuner0"]}
    nas_dir = run_dir / "01_nas"
    trials = json.loads((nas_dir / "trials.json").read_text())
    assert [t["status"] for t in trials] == ["COMPLETED"] * 2
    for t in trials:
        assert 0 <= t["val_accuracy"] <= 1 and t["latency_ms"] > 0 and t["size_kb"] > 1
        assert t["feasible"] is True and t["score"] == t["val_accuracy"]
    pareto = json.loads((nas_dir / "pareto.json").read_text())
    best = next(t for t in trials if t["trial_id"] == pareto["best"])
    assert best["val_accuracy"] == max(t["val_accuracy"] for t in trials)
    assert (nas_dir / "pareto.png").stat().st_size > 5000
    (art,) = records[0].artifacts
    assert (art.name, art.path, art.format) == ("best", "01_nas/best.keras", "keras")
    assert art.metrics["nas_trial"] == pareto["best"] and art.metrics["params"] == best["params"]
    assert records[0].metrics["plots"] == ["01_nas/pareto.png"]
    (exported,) = records[1].artifacts
    assert exported.metrics["source"] == "01_nas/best.keras"
    assert exported.metrics["size_bytes"] == pytest.approx(best["size_kb"] * 1024, rel=0.05)
    assert json.loads((run_dir / "report.json").read_text())["plots"] == ["01_nas/pareto.png"]
    assert "![01_nas/pareto.png](01_nas/pareto.png)" in (run_dir / "report.md").read_text()
    assert '<img alt="01_nas/pareto.png" src="data:image/png;base64,' in (
        run_dir / "report.html").read_text()

    # a bigger budget continues the same search: only the new trial runs
    # ... and the best few train on before the winner is kept
    r3, text3 = make(trials=3, more="      final_epochs: 1\n      final_candidates: 2\n"
                                    "  - export: {modes: [fp32]}\n")
    records = engine.run(r3, run_dir, recipe_text=text3)
    assert runs(run_dir) == {"0": ["tuner0"], "1": ["tuner0", "tuner0"], "2": ["tuner0"]}
    final = records[0].artifacts[0].metrics["final_candidates"]
    assert len(final) == 2 and len({f["trial"] for f in final}) == 2
    chosen = max(final, key=lambda f: (f["val_accuracy"], -f["val_loss"]))
    assert records[0].artifacts[0].metrics["nas_trial"] == chosen["trial"]


def test_constraints_nothing_meets(tmp_path):
    r, text = make(trials=1, constraints="{max_params: 10}", quantization="int8")
    with pytest.raises(UserError) as e:
        engine.run(r, tmp_path / "run", recipe_text=text)
    msg = str(e.value)
    (project,) = (tmp_path / "run" / ".nas").iterdir()
    assert re.fullmatch(r"nas: no candidate meets the constraints \(max_params=10\) in 1 trial; "
                        r"closest: trial 0 \[[^\]\n]+\]: params \d+ \(limit 10\); relax the "
                        r"constraints or change the space \(all trials: "
                        + re.escape(str(project / "trials.json")) + r"\)", msg), msg
    assert not (tmp_path / "run" / "01_nas").exists()
    rows = json.loads((project / "trials.json").read_text())
    assert [row["feasible"] for row in rows] == [False]
    assert all(row["score"] < 0 for row in rows)


def test_chief_and_two_workers_run_every_trial_once(tmp_path, monkeypatch):
    """... with prune and a ptq_int8 quantize after the search: their settings must reach the
    workers as the recipe gave them (the full dump, every default explicit, was rejected by the
    workers: "skip_unsupported applies to mode qat, not ptq_int8")."""
    from click.testing import CliRunner

    from pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    r, text = make(trials=3, more="  - prune: {method: channels, ratio: 0.25, epochs: 0}\n"
                                  "  - quantize: {mode: ptq_int8, calibration: 32}\n")
    (tmp_path / "r.yaml").write_text(text)
    res = CliRunner().invoke(main, ["run", "r.yaml", "--out", "run", "--workers", "2"])
    assert res.exit_code == 0, res.output
    # the same fingerprints as a plain run of the recipe: nothing of --workers in them
    assert [row["state"] for row in engine.status(tmp_path / "run", r)] == ["done"] * 3
    (project,) = (tmp_path / "run" / ".nas").iterdir()
    assert recipe.load(project / "recipe.yaml").to_json() == r.to_json()  # the workers' view
    ran = runs(tmp_path / "run")
    assert sorted(ran) == ["0", "1", "2"]
    assert all(len(v) == 1 and v[0] in ("tuner0", "tuner1") for v in ran.values()), ran
    trials = json.loads((tmp_path / "run" / "01_nas" / "trials.json").read_text())
    assert {t["trial_id"]: t["ran_by"] for t in trials} == ran
    assert all(t["status"] == "COMPLETED" for t in trials)
    (project,) = (tmp_path / "run" / ".nas").iterdir()
    for tid in ("tuner0", "tuner1"):
        log = (project / f"worker_{tid}.log").read_text()
        assert f"worker {tid}: ran " in log and "the chief said stop" in log


def spy_benchmark(monkeypatch) -> list[tuple]:
    """Every edge-runner timing of this process: (file, p50 ms)."""
    import edge_runner.bench as bench

    calls, real = [], bench.benchmark

    def spy(path, *args, **kwargs):
        out = real(path, *args, **kwargs)
        calls.append((Path(path), out["latency_ms"]["p50"]))
        return out

    monkeypatch.setattr(bench, "benchmark", spy)
    return calls


def test_predicted_latency_times_only_the_finalists(tmp_path, monkeypatch):
    """`latency: predicted`: trials are scored from the host's latency table (kept where
    `edgepipe latency table` keeps it), only the finalists' .tflite files are timed, and the
    chosen model's latency is one of those measurements, not a prediction."""
    from pipeline.latency import Timing
    from pipeline.latency.table import default_path
    from pipeline.search.latency import FINALIST_ROUNDS

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls = spy_benchmark(monkeypatch)
    run_dir = tmp_path / "run"
    r, text = make(trials=4, more="      latency: predicted\n  - report\n")
    records = engine.run(r, run_dir, recipe_text=text)

    trials = json.loads((run_dir / "01_nas" / "trials.json").read_text())
    measured = records[0].metrics["measured_trials"]
    assert {t["trial_id"] for t in trials if t["latency_source"] == "measured"} == set(measured)
    assert all(("predicted_latency_ms" in t) == (t["trial_id"] in measured) for t in trials)
    # the finalists: the front of the predicted figures, and the best trial by prediction
    predicted = [{**t, "latency_ms": t.get("predicted_latency_ms", t["latency_ms"])}
                 for t in trials]
    best = max(predicted, key=lambda t: (t["val_accuracy"], -t["val_loss"], -t["latency_ms"]))
    assert set(measured) == {p["trial_id"] for p in S.front(predicted)} | {best["trial_id"]}

    timed = [(p, ms) for p, ms in calls if p.name == "model_fp32.tflite"]  # whole trial models
    ops = [p for p, _ in calls if p.name.startswith("op")]  # the table's ops, once each
    assert all(ops.count(p) == Timing().rounds for p in ops) and len(timed) + len(ops) == len(calls)
    assert sorted(p.parent.name for p, _ in timed) == sorted(
        f"trial_{t}" for t in measured for _ in range(FINALIST_ROUNDS))

    (art,) = records[0].artifacts
    chosen = art.metrics["nas_trial"]
    assert chosen in measured and art.metrics["nas_latency_source"] == "measured"
    assert art.metrics["nas_latency_ms"] == min(ms for p, ms in timed
                                                if p.parent.name == f"trial_{chosen}")
    pareto = json.loads((run_dir / "01_nas" / "pareto.json").read_text())
    assert (pareto["latency"], pareto["measured"], pareto["best"]) == ("predicted", measured, chosen)

    table = json.loads(default_path("host", 1, "fp32").read_text())
    assert len(table["entries"]) == len(set(ops))
    assert sorted(m["name"].split(" [")[0] for m in table["models"]) == sorted(
        f"nas trial {t}" for t in measured)  # samples for the predictor's correction
    row = next(t for t in trials if t["trial_id"] == chosen)
    line = (f"- 01_nas/best.keras: nas trial {chosen} [{row['architecture']}], fp32 latency "
            f"{art.metrics['nas_latency_ms']:.4g} ms measured on this host (predicted "
            f"{row['predicted_latency_ms']:.4g} ms); the search scored trials by latency "
            f"predicted from the host latency table and measured its {len(measured)} "
            f"finalist(s) (trials {', '.join(measured)}) before choosing")
    assert line in (run_dir / "report.md").read_text().splitlines()


def test_predicted_latency_refuses_another_targets_table(tmp_path, monkeypatch):
    from pipeline.latency import Timing
    from pipeline.latency.measure import HostTarget
    from pipeline.latency.table import Table, default_path

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    here = HostTarget(Timing(), "fp32").identity
    path = default_path("host", 1, "fp32")
    Table(path, {**here, "runtime_version": "0.0-other"}).save()
    before = path.read_bytes()
    calls = spy_benchmark(monkeypatch)
    r, text = make(trials=2, more="      latency: predicted\n")
    with pytest.raises(UserError) as e:
        engine.run(r, tmp_path / "run", recipe_text=text)
    assert str(e.value) == (f"latency table {path} was measured for another target: "
                            f"runtime_version '0.0-other' (here {here['runtime_version']!r}); "
                            f"give this target its own table (--table, or `table:` in a recipe's "
                            f"adapt or nas stage)")
    assert calls == [] and path.read_bytes() == before
    assert not (tmp_path / "run" / ".nas").exists() and not (tmp_path / "run" / "01_nas").exists()

"""`nas` with `latency: predicted`: trials scored by the host's latency table + predictor, and
the finalists measured before one is chosen.

A trial's latency is predicted (`pipeline.latency.predict.Predictor`) from the table
`edgepipe latency table` keeps for this host, threads and mode; ops the table lacks are timed
once and added, so the table grows and is reused across runs. A table measured on another CPU,
runtime, thread count or mode is refused, naming the difference.

Predicted figures only steer the search. The finalists — the accuracy–latency front of the
completed trials and the best few by score — are timed as .tflite files with edge-runner, side by
side, and each is kept in the table as a whole-model sample (what the predictor's correction
learns from). The chosen trial is always one whose latency was measured.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

from pipeline.search import space as S
from pipeline.search.pareto import front

#: interleaved passes over the finalists (each keeps its fastest median)
FINALIST_ROUNDS = 2


def _target(settings, timing=None):
    from pipeline.latency import Session, Timing
    from pipeline.latency.measure import HostTarget

    target = HostTarget(timing or Timing(threads=settings.threads), settings.quantization)
    return Session(target, Path(settings.table) if settings.table else None)


def open_table(settings):
    """The host table for these settings (refused, naming the difference, if another target's)."""
    return _target(settings).table()


def predicted_ms(model, settings) -> float:
    """The model's latency predicted from the host table (its missing ops timed and added)."""
    from pipeline.latency.build import fill
    from pipeline.latency.ops import signatures
    from pipeline.latency.predict import Predictor

    session = _target(settings)
    table = session.table()
    fill(table, signatures(model), session.target)
    return Predictor.fit(table).predict(model)


def describe(settings) -> str:
    """Which table, and what the predictor learned from it."""
    from pipeline.latency.predict import Predictor

    table = open_table(settings)
    return f"{table.path}: {len(table.entries)} ops; {Predictor.fit(table).describe()}"


def rank(row: dict[str, Any]) -> tuple:
    """Best last, as `oracle.rank`: score, then lower val loss, then lower latency."""
    return (row["score"], -row.get("val_loss", 0.0), -row["latency_ms"])


def finalists(rows: list[dict[str, Any]], k: int) -> list[str]:
    """Trial ids of the front (predicted latency, val accuracy) and the `k` best feasible."""
    best = sorted((r for r in rows if r.get("feasible")), key=rank, reverse=True)[:k]
    return list(dict.fromkeys([r["trial_id"] for r in front(rows)] +
                              [r["trial_id"] for r in best]))


def measure_trials(oracle, ids: list[str], settings, project: Path, input_shape,
                   num_classes: int) -> dict[str, float]:
    """Time the trials' .tflite files on this host (interleaved) → {trial id: ms}; each is added
    to the table as a whole-model sample. A trial another host ran is timed as its architecture
    converted here (latency does not depend on the trained weights)."""
    from pipeline.artifacts import sha256_json
    from pipeline.latency import Timing
    from pipeline.latency.build import convert, fill
    from pipeline.latency.ops import key, signatures
    from pipeline.search.objective import host_lock

    mode = settings.quantization
    timing = Timing(threads=settings.threads, warmup=settings.warmup, min_runs=settings.min_runs,
                    min_seconds=settings.min_seconds, rounds=FINALIST_ROUNDS)
    ops_session = _target(settings)
    table = ops_session.table()
    with tempfile.TemporaryDirectory(prefix="edgepipe-nas-") as tmp:
        paths, sigs = [], []
        for tid in ids:
            model, _ = S.build(oracle.trials[tid].hyperparameters.values, settings.num_stages,
                               input_shape, num_classes)
            path = project / f"trial_{tid}" / f"model_{mode}.tflite"
            if not path.is_file():
                path = Path(tmp) / f"trial_{tid}.tflite"
                path.write_bytes(convert(model, mode))
            paths.append(path)
            sigs.append(signatures(model))
        with host_lock(project / "bench.lock"):
            for s in sigs:
                fill(table, s, ops_session.target)
            times = _target(settings, timing).target.time(paths)
    out = {}
    for tid, s, r in zip(ids, sigs, times):
        keys = [key(x) for x in s]
        arch = S.describe(oracle.trials[tid].hyperparameters.values, settings.num_stages)
        table.add_model({"name": f"nas trial {tid} [{arch}]", "sha256": sha256_json(keys),
                         "ops": keys, "ms": r["ms"], "min_ms": r["min_ms"]})
        out[tid] = r["ms"]
    table.save()
    return out


def with_measured(rows: list[dict[str, Any]], measured: dict[str, float], settings) -> None:
    """Rows of measured trials get the measured latency (the prediction kept beside it), and
    feasibility and score from it; every row says which its `latency_ms` is."""
    from pipeline.search.objective import score, violations

    for r in rows:
        if r["trial_id"] not in measured or r.get("latency_ms") is None:
            continue
        r.setdefault("predicted_latency_ms", r["latency_ms"])
        r["latency_ms"] = measured[r["trial_id"]]
        r["latency_source"] = "measured"
        r["feasible"] = not violations(r, settings)
        r["score"] = score(r, settings)


def choose(oracle, rows: list[dict[str, Any]], k: int, settings, project: Path, input_shape,
           num_classes: int, say: Callable[[str], None] = lambda m: None):
    """Measure the finalists (and, while fewer than `k` of them stay feasible once measured, the
    next best by prediction); returns (the `k` best feasible measured trials, measured ids)."""
    measured: dict[str, float] = {}
    todo = finalists(rows, k)
    while todo:
        say(f"[nas] measuring {len(todo)} finalist(s) on this host: trials {', '.join(todo)}")
        measured.update(measure_trials(oracle, todo, settings, project, input_shape, num_classes))
        with_measured(rows, measured, settings)
        top = [r for r in sorted(rows, key=rank, reverse=True)
               if r["trial_id"] in measured and r["feasible"]][:k]
        if len(top) >= k:
            break
        todo = [r["trial_id"] for r in sorted(rows, key=rank, reverse=True)
                if r["trial_id"] not in measured and r.get("feasible")][:k - len(top)]
    top = [r for r in sorted(rows, key=rank, reverse=True)
           if r["trial_id"] in measured and r["feasible"]][:k]
    return [oracle.trials[r["trial_id"]] for r in top], list(measured)

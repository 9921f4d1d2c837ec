"""Whole-model latency from a latency table, corrected by models measured on the same target.

The table sum over-counts what every op timed alone pays once per invoke (input copy, interpreter
overhead) and misses what ops share in a whole model (caches). A linear correction learned with
scikit-learn from the table's whole-model samples fixes both:

    ms = a * table_sum + b * ops + c        (weights 1/ms^2: relative error counts)

b is free in sign: it is mostly minus the per-invoke overhead each op paid alone, which the
whole model pays once (c).

Every figure here is the fastest invoke (edge-runner's `min_ms`), for the ops and the whole
models alike: it is the latency of the target when nothing else runs on it, which is what a
prediction can promise. Load on the target only ever adds time, and it adds it unevenly (a whole
model spans many scheduler slices, a single op few), so medians taken on a shared machine do not
add up; the fastest invokes do. The expected error is the leave-one-out relative error over the samples.

That estimate only holds for models like the samples. A model beyond them (more parameters than
stay in cache, a larger table sum or more ops) is extrapolated, and on a CPU the whole model then
runs slower than its ops timed alone, by more the larger it is; `outside` says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.latency import ops as O
from pipeline.latency.table import Table

#: fewer whole-model samples than this: no correction, the raw table sum
MIN_SAMPLES = 4


#: the statistic of an entry or a whole-model sample the predictor works in
STAT = "min_ms"


def features(table: Table, keys: list[str]) -> list[float]:
    return [table.lookup(keys, STAT), float(len(keys))]


def parameters(keys: list[str]) -> int:
    """Weights (and biases) of the ops with these table keys."""
    import json

    n = 0
    for k in keys:
        s = json.loads(k)
        kh, kw = s.get("k", (1, 1))
        if s["op"] == "conv2d":
            n += kh * kw * s["cin"] * s["cout"] + s["cout"]
        elif s["op"] == "depthwise":
            n += kh * kw * s["cin"] + s["cin"]
        elif s["op"] == "dense":
            n += s["cin"] * s["cout"] + s["cout"]
    return n


def _extent(table: Table, keys: list[str]) -> dict[str, float]:
    """What the correction is fitted over, for one model."""
    return {"parameters": float(parameters(keys)), "table_ms": table.lookup(keys, STAT),
            "ops": float(len(keys))}


def _fit(x: np.ndarray, y: np.ndarray):
    from sklearn.linear_model import LinearRegression

    return LinearRegression().fit(x, y, sample_weight=1.0 / np.square(y))


@dataclass
class Predictor:
    table: Table
    model: object | None      # the fitted correction, None: raw table sum
    errors: np.ndarray        # leave-one-out relative errors of the samples (signed)
    bounds: dict[str, float]  # the largest extent of the samples (see `_extent`)

    @classmethod
    def fit(cls, table: Table) -> "Predictor":
        samples = [s for s in table.models if STAT in s and not table.missing(s["ops"])]
        if len(samples) < MIN_SAMPLES:
            return cls(table, None, np.array([]), {})
        bounds = {k: max(_extent(table, s["ops"])[k] for s in samples)
                  for k in ("parameters", "table_ms", "ops")}
        x = np.array([features(table, s["ops"]) for s in samples])
        y = np.array([s[STAT] for s in samples])
        errs = []
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            pred = float(_fit(x[keep], y[keep]).predict(x[i:i + 1])[0])
            errs.append(pred / y[i] - 1.0)
        return cls(table, _fit(x, y), np.array(errs), bounds)

    def predict_keys(self, keys: list[str]) -> float:
        """Predicted fastest-invoke ms of a model made of these ops."""
        f = features(self.table, keys)
        if self.model is None:
            return f[0]
        return max(float(self.model.predict(np.array([f]))[0]), 1e-6)

    def predict(self, model, counts: dict | None = None) -> float:
        """Predicted ms of a tf_keras model (with channel groups at `counts`)."""
        return self.predict_keys([O.key(s) for s in O.signatures(model, counts)])

    def outside(self, keys: list[str]) -> str | None:
        """Why a model of these ops is beyond the calibration samples, or None if it is not."""
        if self.model is None:
            return None
        e = _extent(self.table, keys)
        units = {"parameters": lambda v: f"{v / 1e6:.2f}M parameters",
                 "table_ms": lambda v: f"{v:.3g} ms of ops", "ops": lambda v: f"{v:.0f} ops"}
        over = [k for k in units if e[k] > self.bounds[k]]
        if not over:
            return None
        return (f"beyond its {len(self.errors)} calibration models: "
                + ", ".join(f"{units[k](e[k])} (at most {units[k](self.bounds[k])})" for k in over)
                + "; the error may be far larger than expected: time models like this one with "
                "`edgepipe latency table MODEL` to calibrate for them")

    @property
    def expected_error(self) -> float | None:
        """90th percentile of |relative error| (leave-one-out); None without a correction."""
        return float(np.percentile(np.abs(self.errors), 90)) if len(self.errors) else None

    def describe(self) -> str:
        if self.model is None:
            return (f"raw table sum: {len(self.table.models)} whole model(s) measured, "
                    f"{MIN_SAMPLES} needed for a correction and an error estimate")
        within = float(np.mean(np.abs(self.errors) <= 0.10))
        return (f"90% of {len(self.errors)} calibration models within "
                f"±{100 * self.expected_error:.1f}% (leave-one-out; {100 * within:.0f}% within "
                f"±10%)")

"""Whole-model latency from a latency table, corrected by models measured on the same target.

The table sum over-counts what every op timed alone pays once per invoke (input copy, interpreter
overhead) and misses what ops share in a whole model (caches). A linear correction learned from
the table's whole-model samples fixes both:

    ms = a * table_sum + b * ops + c  [+ d * max(0, weights - knee)]   (weights 1/ms^2)

b is free in sign: it is mostly minus the per-invoke overhead each op paid alone, which the
whole model pays once (c).

The last term is the cache. Each op timed alone keeps its own weights in cache from one invoke to
the next; a whole model whose weights together outgrow what the cache keeps for it reads them all
again on every invoke. Measured on this project's host (chains of 1x1 convolutions,
`weight_chains`; BENCHMARKS.md, latency): whole / sum of ops alone 0.84-1.03 up to 7.5 MiB of
fp32 weights, 1.4-1.9 at 12-17 MiB. So the term is a hinge: nothing below the knee, time per
weight above it. The knee is the target's (cache sizes, and on a shared host what other
load leaves of them), so it is learned like the rest, from samples: the knee that gives the
smallest leave-one-out error, kept only with samples on both sides of it, a positive cost and an
error at least 10% smaller than without it
(`edgepipe latency calibrate` measures such chains: `pipeline.latency.weight_chains`).

Every figure here is the fastest invoke (edge-runner's `min_ms`), for the ops and the whole
models alike: it is the latency of the target when nothing else runs on it, which is what a
prediction can promise. Load on the target only ever adds time, and it adds it unevenly (a whole
model spans many scheduler slices, a single op few), so medians taken on a shared machine do not
add up; the fastest invokes do. The expected error is the leave-one-out relative error over the
samples (with the knee chosen on those same errors, a little optimistic).

That estimate only holds for models like the samples. A model beyond them (more parameters, a
larger table sum or more ops) is extrapolated; `outside` says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.latency import ops as O
from pipeline.latency.table import Table

#: fewer whole-model samples than this: no correction, the raw table sum
MIN_SAMPLES = 4
#: a knee needs at least this many samples on each side of it
KNEE_SIDE = 3
#: knees tried: this many, evenly from 0 to the largest sample's weights
KNEES = 64
#: a knee is kept only if it cuts the leave-one-out RMS error to this fraction or less
KNEE_GAIN = 0.9


#: the statistic of an entry or a whole-model sample the predictor works in
STAT = "min_ms"


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
    """What the correction is fitted over, for one model (ops missing from the table: the
    table's UserError, before anything reads their keys)."""
    return {"table_ms": table.lookup(keys, STAT), "parameters": float(parameters(keys)),
            "ops": float(len(keys))}


def features(extent: dict[str, float], knee: float | None = None) -> list[float]:
    """The correction's inputs: table sum, op count [, millions of weights beyond the knee]."""
    f = [extent["table_ms"], extent["ops"]]
    return f if knee is None else f + [max(0.0, extent["parameters"] / 1e6 - knee)]


@dataclass
class Linear:
    """A fitted linear correction: ms = x . coef_ + intercept_."""

    coef_: np.ndarray
    intercept_: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, float) @ self.coef_ + self.intercept_


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[Linear, np.ndarray]:
    """Least squares weighted by 1/y^2 (relative error counts) and its exact leave-one-out
    relative errors (residual / (1 - leverage)), both from one SVD; +inf where a sample alone
    sets a coefficient (leverage 1)."""
    sw = 1.0 / y
    b = np.column_stack([x, np.ones(len(y))]) * sw[:, None]
    u, sv, vt = np.linalg.svd(b, full_matrices=False)
    r = int(np.sum(sv > sv[0] * max(b.shape) * np.finfo(float).eps))
    u, sv, vt = u[:, :r], sv[:r], vt[:r]
    beta = vt.T @ ((u.T @ (y * sw)) / sv)
    lev = np.sum(np.square(u), axis=1)
    resid = y - (b @ beta) / sw
    with np.errstate(divide="ignore", invalid="ignore"):
        loo = np.where(lev < 1 - 1e-9, -resid / (1 - lev) / y, np.inf)
    return Linear(beta[:-1], float(beta[-1])), loo


def _rms(errors: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(errors))))


@dataclass
class Predictor:
    table: Table
    model: Linear | None      # the fitted correction, None: raw table sum
    errors: np.ndarray        # leave-one-out relative errors of the samples (signed)
    bounds: dict[str, float]  # the largest extent of the samples (see `_extent`)
    knee: float | None = None  # millions of weights beyond which the cache term counts
    knee_tried: bool = False   # samples lay on both sides of some knee

    @classmethod
    def fit(cls, table: Table, cache: bool = True) -> "Predictor":
        """The correction from the table's whole-model samples; `cache=False`: no cache term."""
        samples = [s for s in table.models if STAT in s and not table.missing(s["ops"])]
        if len(samples) < MIN_SAMPLES:
            return cls(table, None, np.array([]), {})
        extents = [_extent(table, s["ops"]) for s in samples]
        bounds = {k: max(e[k] for e in extents) for k in ("parameters", "table_ms", "ops")}
        y = np.array([s[STAT] for s in samples])
        mw = np.array([e["parameters"] / 1e6 for e in extents])
        model, errors = _fit(np.array([features(e) for e in extents]), y)
        knee, tried, best = None, False, KNEE_GAIN * _rms(errors)
        for k in np.linspace(0.0, mw.max(), KNEES, endpoint=False) if cache else []:
            if min(np.sum(mw > k), np.sum(mw <= k)) < KNEE_SIDE:
                continue
            tried = True
            m, e = _fit(np.array([features(ext, k) for ext in extents]), y)
            if m.coef_[-1] > 0 and _rms(e) < best:  # weights out of cache only ever cost time
                model, errors, knee, best = m, e, float(k), _rms(e)
        return cls(table, model, errors, bounds, knee, tried)

    def predict_keys(self, keys: list[str]) -> float:
        """Predicted fastest-invoke ms of a model made of these ops."""
        if self.model is None:
            return self.table.lookup(keys, STAT)
        f = features(_extent(self.table, keys), self.knee)
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
        if self.knee is not None:
            cache = (f"cache term: +{self.model.coef_[-1]:.3g} ms per million weights beyond "
                     f"{self.knee:.2f}M")
        elif self.knee_tried:
            cache = "no cache term (no knee improved the fit by 10%)"
        else:
            cache = ("no cache term (no samples on both sides of a knee: `edgepipe latency "
                     "calibrate` measures weight chains)")
        return (f"90% of {len(self.errors)} calibration models within "
                f"±{100 * self.expected_error:.1f}% (leave-one-out; {100 * within:.0f}% within "
                f"±10%); {cache}")

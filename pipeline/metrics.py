"""Metrics of model outputs, and which way each is better: classification (accuracy, top-k),
regression (mae, rmse, r2), fidelity to reference outputs (max_abs_diff, rel_error, cosine, snr_db,
argmax_agreement), and the user's own `package.module:function`. Plain numpy; no TensorFlow."""

from __future__ import annotations

import importlib
import math
import re
from typing import Any, Callable

import numpy as np

from pipeline.errors import UserError, did_you_mean

#: metric → True when higher is better. Keys of user metrics are added by TaskSpec.
DIRECTION = {"accuracy": True, "mae": False, "rmse": False, "r2": True, "max_abs_diff": False,
             "rel_error": False, "cosine": True, "snr_db": True, "argmax_agreement": True}
PRIMARY = {"classification": "accuracy", "regression": "mae", "fidelity": "snr_db"}


def direction_of(task_json: dict[str, Any] | None, metric: str) -> bool:
    """True when higher is better for `metric` (a key like 'mae' or 'value/mae')."""
    if task_json and metric == task_json.get("primary"):
        return bool(task_json["higher_is_better"])
    base = metric.rsplit("/", 1)[-1]
    if re.fullmatch(r"top\d+_accuracy", base):
        return True
    if base not in DIRECTION:
        raise UserError(f"unknown metric {metric!r}{did_you_mean(base, DIRECTION)}; expected one "
                        f"of: {', '.join(DIRECTION)}")
    return DIRECTION[base]


def worse_by(value: float, reference: float, higher_is_better: bool) -> float:
    """How much worse `value` is than `reference` in the metric's direction (negative: better)."""
    return reference - value if higher_is_better else value - reference


def classification_metrics(y: np.ndarray, p: np.ndarray, top_k: int | None = None) -> dict:
    m = {"accuracy": float(np.mean(p.argmax(-1) == y))}
    if top_k:
        top = np.argsort(p, axis=-1)[..., -top_k:]
        m[f"top{top_k}_accuracy"] = float(np.mean(np.any(top == y[..., None], axis=-1)))
    return m


def regression_metrics(y: np.ndarray, p: np.ndarray) -> dict:
    y = np.asarray(y, np.float64).reshape(len(y), -1)
    p = np.asarray(p, np.float64).reshape(len(p), -1)
    err = p - y
    ss_tot = float(np.sum((y - y.mean(axis=0)) ** 2))
    r2 = 1 - float(np.sum(err ** 2)) / ss_tot if ss_tot > 0 else float("nan")
    return {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err ** 2))),
            "r2": r2}


def is_distribution(ref: np.ndarray) -> bool:
    """Rows on the last axis are probabilities (non-negative, summing to 1)."""
    return (ref.ndim >= 2 and ref.shape[-1] > 1 and float(ref.min(initial=0)) >= 0
            and bool(np.allclose(ref.sum(-1), 1, atol=1e-3)))


def fidelity_metrics(ref: np.ndarray, p: np.ndarray) -> dict:
    """How close outputs `p` are to the reference outputs `ref` (the Keras model's)."""
    r = np.asarray(ref, np.float64).reshape(len(ref), -1)
    q = np.asarray(p, np.float64).reshape(len(p), -1)
    err = q - r
    noise, signal = float(np.sum(err ** 2)), float(np.sum(r ** 2))
    norms = np.linalg.norm(r, axis=1) * np.linalg.norm(q, axis=1)
    cos = np.where(norms > 0, np.sum(r * q, axis=1) / np.where(norms > 0, norms, 1), 1.0)
    m = {"max_abs_diff": float(np.max(np.abs(err))) if err.size else 0.0,
         "rel_error": math.sqrt(noise / signal) if signal > 0 else float(noise > 0) * math.inf,
         "cosine": float(np.mean(cos)),
         "snr_db": 10 * math.log10(signal / noise) if noise > 0 else math.inf}
    if is_distribution(np.asarray(ref)):
        m["argmax_agreement"] = float(np.mean(np.argmax(ref, -1) == np.argmax(p, -1)))
    return m


def load_metric(ref: str) -> Callable:
    """The user's `package.module:function`, imported (this runs their code)."""
    module, _, fn = ref.partition(":")
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 (the user's module may raise anything on import)
        raise UserError(f"task.metric {ref}: cannot import {module} ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); put the module on "
                        f"PYTHONPATH or fix it") from None
    f = getattr(mod, fn, None)
    if not callable(f):
        raise UserError(f"task.metric {ref}: {module} has no function {fn}"
                        f"{did_you_mean(fn, [n for n in dir(mod) if not n.startswith('_')])}")
    return f


def user_metric(ref: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    f = load_metric(ref)
    try:
        v = f(y_true, y_pred)
    except Exception as e:  # noqa: BLE001 (the user's code may raise anything)
        raise UserError(f"task.metric {ref} raised {type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}; fix the metric") from None
    if isinstance(v, np.ndarray) and v.size == 1:
        v = v.reshape(()).item()
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise UserError(f"task.metric {ref} returned {v!r} ({type(v).__name__}); a metric must "
                        f"return one number")
    return float(v)

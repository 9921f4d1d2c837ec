"""How a search judges a trial: constraint violations, the score that ranks feasible trials above
infeasible ones, and the host lock that keeps latency measurements one at a time. Shared by the
tuner (every trial) and the predicted-latency path (finalists re-scored once measured).
"""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path
from typing import Iterator, Protocol


class Limited(Protocol):
    """Search settings with constraints (`tuner.TrialSettings`)."""

    def limits(self) -> dict[str, float]: ...


def violations(metrics: dict[str, float], settings: Limited) -> dict[str, float]:
    """Constraint → how far over its limit the trial is (value / limit - 1), for those broken."""
    return {k: metrics[k] / lim - 1 for k, lim in settings.limits().items() if metrics[k] > lim}


def score(metrics: dict[str, float], settings: Limited) -> float:
    """Feasible: the validation accuracy (0..1). Infeasible: accuracy - 1 - total overshoot
    (capped at 10), so every infeasible trial ranks below every feasible one, and among them the
    closer ones rank higher (which leads bayesian search back into the feasible region)."""
    over = violations(metrics, settings)
    if not over:
        return metrics["val_accuracy"]
    return metrics["val_accuracy"] - 1.0 - min(10.0, sum(over.values()))


@contextlib.contextmanager
def host_lock(path: Path) -> Iterator[None]:
    """One latency measurement at a time on this host (workers sharing a folder share it)."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)

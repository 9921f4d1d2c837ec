"""The recipe's budgets, checked against measured numbers. Breaches fail the stage (exit 2)."""

from __future__ import annotations

from typing import Any

from pipeline.errors import GateError


def check_accuracy(gates, label: str, metrics: dict[str, Any]) -> list[str]:
    """Breaches of min_accuracy / max_accuracy_drop / max_size_kb for one exported file."""
    out = []
    acc = metrics.get("accuracy")
    if gates.min_accuracy is not None and acc is not None and acc < gates.min_accuracy:
        out.append(f"{label}: accuracy {acc:.4f} < min_accuracy {gates.min_accuracy}")
    ref = metrics.get("keras_accuracy")
    if gates.max_accuracy_drop is not None and acc is not None and ref is not None:
        drop = ref - acc
        if drop > gates.max_accuracy_drop:
            out.append(f"{label}: accuracy {acc:.4f} is {drop:.4f} below the Keras model's "
                       f"{ref:.4f} (max_accuracy_drop {gates.max_accuracy_drop})")
    out += check_metric(gates, label, metrics)
    size = metrics.get("size_bytes")
    if gates.max_size_kb is not None and size is not None and size / 1024 > gates.max_size_kb:
        out.append(f"{label}: size {size / 1024:.1f} KB > max_size_kb {gates.max_size_kb}")
    return out


def check_metric(gates, label: str, metrics: dict[str, Any]) -> list[str]:
    """Breaches of min_metric / max_metric_drop, in the direction of the task's metric (the
    file's `task` says which metric and which way is better)."""
    task = metrics.get("task")
    if task is None or (gates.min_metric is None and gates.max_metric_drop is None):
        return []
    name, higher = task["primary"], task["higher_is_better"]
    value, ref = metrics.get(name), metrics.get(f"keras_{name}")
    out = []
    if gates.min_metric is not None and value is not None:
        if (value < gates.min_metric) if higher else (value > gates.min_metric):
            out.append(f"{label}: {name} {value:.4g} {'<' if higher else '>'} min_metric "
                       f"{gates.min_metric} ({'higher' if higher else 'lower'} is better)")
    if gates.max_metric_drop is not None and value is not None and ref is not None:
        worse = ref - value if higher else value - ref
        if worse > gates.max_metric_drop:
            out.append(f"{label}: {name} {value:.4g} is {worse:.4g} worse than the Keras "
                       f"model's {ref:.4g} (max_metric_drop {gates.max_metric_drop}, "
                       f"{'higher' if higher else 'lower'} is better)")
    return out


def check_latency(limit_ms: float | None, label: str, p50_ms: float,
                  emulated: bool = False) -> list[str]:
    """A p50 over its budget; an emulated CPU's timing neither passes nor fails a budget."""
    if limit_ms is not None and p50_ms > limit_ms and not emulated:
        return [f"{label}: p50 latency {p50_ms:.3f} ms > max_latency_ms {limit_ms}"]
    return []


def raise_breaches(breaches: list[str]) -> None:
    if breaches:
        more = f" (and {len(breaches) - 1} more)" if len(breaches) > 1 else ""
        raise GateError("gate failed: " + breaches[0] + more)

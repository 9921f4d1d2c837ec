"""The accuracy–latency Pareto front of a search, and its plot."""

from __future__ import annotations

import io
from typing import Any, Sequence


def front(points: Sequence[dict[str, Any]], x: str = "latency_ms",
          y: str = "val_accuracy") -> list[dict[str, Any]]:
    """Points no other point beats on both (lower `x`, higher `y`), sorted by `x`.

    A point dominated by an equal one is kept once (the first); points missing `x` or `y` are
    left out.
    """
    pts = [p for p in points if p.get(x) is not None and p.get(y) is not None]
    out: list[dict[str, Any]] = []
    best_y = float("-inf")
    for p in sorted(pts, key=lambda p: (p[x], -p[y])):
        if p[y] > best_y:
            out.append(p)
            best_y = p[y]
    return out


def plot_png(trials: Sequence[dict[str, Any]], pareto: Sequence[dict[str, Any]],
             limit_ms: float | None = None, best_id: str | None = None,
             title: str = "architecture search") -> bytes:
    """Every completed trial (feasible ● / infeasible ×), the front as a step line, the limit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    done = [t for t in trials if t.get("latency_ms") is not None]
    for feasible, marker, label in ((True, "o", "feasible"), (False, "x", "infeasible")):
        sel = [t for t in done if bool(t.get("feasible")) == feasible]
        if sel:
            ax.scatter([t["latency_ms"] for t in sel], [t["val_accuracy"] * 100 for t in sel],
                       marker=marker, label=f"{label} ({len(sel)})", alpha=0.75)
    if pareto:
        ax.step([p["latency_ms"] for p in pareto], [p["val_accuracy"] * 100 for p in pareto],
                where="post", color="black", linewidth=1, label="Pareto front")
    for t in done:
        if t["trial_id"] == best_id:
            ax.scatter([t["latency_ms"]], [t["val_accuracy"] * 100], s=160, facecolors="none",
                       edgecolors="red", label=f"kept (trial {best_id}, after final training)")
    if limit_ms is not None:
        ax.axvline(limit_ms, color="red", linestyle="--", linewidth=1, label="max_latency_ms")
    ax.set_xlabel("host p50 latency of the trial's .tflite (ms)")
    ax.set_ylabel("validation accuracy of the .tflite (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()

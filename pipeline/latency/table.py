"""A latency table: per-op latencies measured on one target, stored as JSON and reused.

Keyed by the op signature (`ops.key`) inside a file that records the target's identity: target
name, CPU, machine, runtime and its version, threads. A table whose identity differs from the
target's is refused, naming the difference — a table from another board or runtime is never used
silently. The file also keeps whole models measured on the same target: the samples the predictor
(`pipeline.latency.predict`) learns its correction from.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.errors import UserError

VERSION = 1
#: the .tflite modes ops and models are timed in
MODES = ("fp32", "float16", "int8")
#: identity fields, in the order a refusal names them
IDENTITY = ("target", "cpu", "machine", "runtime", "runtime_version", "threads", "mode")


def default_path(target: str, threads: int, mode: str) -> Path:
    """<cache>/edgepipe/latency/<target>@<threads>t-<mode>.json ($XDG_CACHE_HOME or ~/.cache)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "edgepipe" / "latency" / f"{target.replace(':', '_')}@{threads}t-{mode}.json"


def describe(identity: dict) -> str:
    return ", ".join(f"{k} {identity.get(k)!r}" for k in IDENTITY)


class Table:
    """Entries {signature key: {"ms", "min_ms", "runs"}} and whole-model samples of one target."""

    def __init__(self, path: str | os.PathLike, identity: dict, entries: dict | None = None,
                 models: list | None = None):
        self.path = Path(path)
        self.identity = dict(identity)
        self.entries: dict[str, dict] = dict(entries or {})
        self.models: list[dict] = list(models or [])

    @classmethod
    def open(cls, path: str | os.PathLike, identity: dict) -> "Table":
        """The table at `path` (empty when absent), refused when measured on another target."""
        p = Path(path)
        if not p.exists():
            return cls(p, identity)
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"latency table {p} is unreadable ({e}); delete it to measure again") from None
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise UserError(f"latency table {p} is not a version {VERSION} edgepipe latency table; "
                            f"delete it or give another --table")
        theirs = data.get("identity") or {}
        diff = [f"{k} {theirs.get(k)!r} (here {identity.get(k)!r})" for k in IDENTITY
                if theirs.get(k) != identity.get(k)]
        if diff:
            raise UserError(f"latency table {p} was measured for another target: "
                            f"{'; '.join(diff)}; give this target its own table (--table, or "
                            f"`table:` in a recipe's adapt or nas stage)")
        return cls(p, identity, data.get("entries"), data.get("models"))

    def save(self) -> None:
        from pipeline.artifacts import atomic_write_json

        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, {"version": VERSION, "identity": self.identity,
                                      "entries": self.entries, "models": self.models})

    def missing(self, keys) -> list[str]:
        return [k for k in dict.fromkeys(keys) if k not in self.entries]

    def lookup(self, keys, stat: str = "ms") -> float:
        """Sum of the entries' `stat` (ms: fastest median, min_ms: fastest invoke); every key must
        be in the table."""
        gone = self.missing(keys)
        if gone:
            raise UserError(f"latency table {self.path} lacks {len(gone)} op(s), e.g. {gone[0]}; "
                            f"run `edgepipe latency table` for this model first")
        return float(sum(self.entries[k][stat] for k in keys))

    def add_model(self, sample: dict) -> None:
        """Record a whole-model measurement (one per model hash: the newest wins)."""
        self.models = [m for m in self.models if m.get("sha256") != sample.get("sha256")]
        self.models.append(sample)

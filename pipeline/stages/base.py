"""The stage contract: a config model, a `run(ctx, cfg)` that writes into `ctx.out_dir`.

A stage knows nothing of fingerprints, resume or atomic commits (the engine does that). It reads
what earlier stages made through the context, calls `pipeline.compress` / `pipeline.tflite`, writes
its files into `ctx.out_dir`, and returns the artifacts it made with their measured metrics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pipeline.config import StageConfig  # noqa: F401  (re-exported: stages import it from here)

if TYPE_CHECKING:  # pragma: no cover
    from pipeline.context import StageContext

log = logging.getLogger("edgepipe")


@dataclass
class Artifact:
    """One file a stage made. `path` is relative to the run folder.

    `metrics` holds what was measured on this very file: accuracy, params, nonzero_params,
    size_bytes, gzip_bytes, sparsity, channels, latency_ms {target: {...}}, ...
    """

    name: str
    path: str
    format: str  # "keras" | "tflite"
    quantization: str | None = None
    stage: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "format": self.format,
                "quantization": self.quantization, "stage": self.stage, "metrics": self.metrics}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Artifact":
        return cls(**d)


@dataclass
class StageResult:
    artifacts: list[Artifact] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageRecord:
    """A finished stage as the engine knows it (from its manifest)."""

    index: int
    name: str
    dir: Path
    artifacts: list[Artifact]
    metrics: dict[str, Any]


class Stage:
    """Subclass, set `name` and `Config`, implement `run`. Register it in `stages/__init__.py`."""

    name: ClassVar[str]
    Config: ClassVar[type[StageConfig]] = StageConfig
    help: ClassVar[str] = ""

    @classmethod
    def input_paths(cls, cfg: StageConfig, recipe: Any) -> list[str]:
        """Files the settings name (a teacher model, devices.yaml): their content hashes join
        the stage's fingerprint, so editing such a file re-runs the stage."""
        return []

    def run(self, ctx: "StageContext", cfg: StageConfig) -> StageResult:  # pragma: no cover
        raise NotImplementedError

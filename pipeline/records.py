"""What the whole pipeline passes around: the files a stage made, its result, a finished stage.

A leaf module (dataclasses only): the engine, the stage context, the report and every stage
import it without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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

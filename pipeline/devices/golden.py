"""Golden outputs for on-device verification, computed on the host from the same .tflite."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def host_golden(model: str | os.PathLike, inputs: np.ndarray, out: str | os.PathLike,
                quantization: str | None = None) -> Path:
    """Run `inputs` through `model` here (edge_runner) and write `out` (.npz) for `edge-runner
    verify` on a board. A board that disagrees computes wrong answers for the same file."""
    from edge_runner.backends import load
    from edge_runner.verify import write_golden

    got = load(model).predict(np.asarray(inputs, dtype=np.float32))
    if isinstance(got, tuple):
        got = got[0]  # goldens hold the first output
    write_golden(out, inputs, got, quantization)
    return Path(out)

"""Shared fixtures. Importing `pipeline` first sets TF_USE_LEGACY_KERAS before TensorFlow loads."""

import os

import pytest

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS=1)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip when an optional component is missing; under CI=true, fail instead of skipping."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required under CI: {reason}")
    pytest.skip(reason)

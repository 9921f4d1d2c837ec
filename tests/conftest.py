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


@pytest.fixture(scope="session")
def board_python() -> str:
    """Python of a "board" venv: tflite-runtime 2.14.0 + numpy<2 + edge_runner, no TensorFlow.

    $EDGEPIPE_BOARD_VENV if set, else ~/.cache/edgepipe/board-venv; made (or refreshed) by
    scripts/make_board_venv.sh.
    """
    import pathlib
    import subprocess

    root = pathlib.Path(__file__).resolve().parent.parent
    cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache")
    venv = pathlib.Path(os.environ.get("EDGEPIPE_BOARD_VENV") or cache / "edgepipe" / "board-venv")
    try:
        proc = subprocess.run(["bash", str(root / "scripts" / "make_board_venv.sh"), str(venv)],
                              capture_output=True, text=True, timeout=600)
        ok, why = proc.returncode == 0, (proc.stderr.strip().splitlines() or ["?"])[-1]
    except (OSError, subprocess.TimeoutExpired) as exc:
        ok, why = False, str(exc)
    require(ok, f"board venv (tflite-runtime 2.14) could not be made at {venv}: {why}")
    return str(venv / "bin" / "python")

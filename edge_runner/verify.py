"""Check a .tflite's outputs on this machine against golden outputs computed on the host.

A golden file is an .npz with ``inputs`` (float, N samples), ``outputs`` (float, what the host got)
and optionally ``quantization`` (the export mode, a string). The default tolerance depends on the
mode; for integer outputs it is a few quantization steps of the output tensor.
"""

from __future__ import annotations

import os
import secrets
import zipfile
from typing import Optional

import numpy as np

from edge_runner.backends import load
from edge_runner.errors import RunnerError, did_you_mean

# mode -> (float atol, relative to max(1, max|golden|); argmax agreement threshold)
TOLERANCES = {
    "fp32": (1e-4, 1.0),
    "float16": (1e-2, 0.99),
    "dynamic": (5e-2, 0.95),
    "int8": (5e-2, 0.95),
    "int16x8": (1e-2, 0.98),
}
# For quantized (integer) outputs: this many output quantization steps.
QUANT_STEPS = {"int8": 3, "int16x8": 3}
_ALIASES = {"float32": "fp32", "none": "fp32", "fp16": "float16", "full_int8": "int8",
            "int16": "int16x8", "16x8": "int16x8"}


def normalize_mode(mode: str) -> str:
    key = str(mode).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in TOLERANCES:
        raise RunnerError(f'Unknown quantization mode "{mode}"{did_you_mean(key, TOLERANCES)}. '
                          f"Expected one of: {', '.join(TOLERANCES)}.")
    return key


def write_golden(path, inputs, outputs, quantization: Optional[str] = None) -> str:
    """Write a golden .npz atomically (temp file + rename); returns the path."""
    path = os.fspath(path)
    arrays = {"inputs": np.asarray(inputs), "outputs": np.asarray(outputs, dtype=np.float32)}
    if quantization is not None:
        arrays["quantization"] = np.array(normalize_mode(quantization))
    directory = os.path.dirname(os.path.abspath(path))
    # not mkstemp (always 0600): mode 0666 less the umask, like any file the user writes
    tmp = os.path.join(directory, f".golden-{os.getpid()}-{secrets.token_hex(4)}.npz")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_golden(path) -> dict:
    """{inputs, outputs, quantization or None} from a golden .npz; RunnerError if unusable."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise RunnerError(f"Golden file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            found = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise RunnerError(f"Not a golden .npz file: {path} ({exc})") from None
    missing = [k for k in ("inputs", "outputs") if k not in found]
    if missing:
        raise RunnerError(f"Golden file {path} has no {' or '.join(missing)} array. "
                          "Expected arrays: inputs, outputs (and optionally quantization).")
    if len(found["inputs"]) != len(found["outputs"]):
        raise RunnerError(f"Golden file {path} has {len(found['inputs'])} inputs but "
                          f"{len(found['outputs'])} outputs.")
    quant = found.get("quantization")
    return {"inputs": found["inputs"], "outputs": found["outputs"].astype(np.float32),
            "quantization": str(quant) if quant is not None else None}


def _default_mode(runner) -> str:
    dtype = np.dtype(runner.output_details[0]["dtype"])
    if dtype == np.int16:
        return "int16x8"
    if dtype in (np.int8, np.uint8):
        return "int8"
    return "fp32"


def tolerance_for(mode: str, golden: np.ndarray, output_detail) -> float:
    """Default atol: a few output quantization steps for integer outputs, else a float atol."""
    scale = float(output_detail.get("quantization", (0.0, 0))[0])
    is_int = np.dtype(output_detail["dtype"]).kind in "iu"
    if mode in QUANT_STEPS and is_int and scale > 0:
        return QUANT_STEPS[mode] * scale
    peak = float(np.max(np.abs(golden))) if golden.size else 0.0
    return TOLERANCES[mode][0] * max(1.0, peak)


def compare(got: np.ndarray, golden: np.ndarray, *, tolerance: float,
            argmax_threshold: float) -> dict:
    """Max/mean abs difference, argmax agreement (for (N, C) outputs) and the verdict."""
    reasons = []
    got = np.asarray(got, dtype=np.float32)
    if not np.all(np.isfinite(got)):
        reasons.append(f"{int(np.sum(~np.isfinite(got)))} output values are NaN or Inf")
        diff = None
    else:
        diff = np.abs(got.astype(np.float64) - golden.astype(np.float64))
    if diff is None:
        max_abs = mean_abs = None
    else:
        max_abs = float(diff.max()) if diff.size else 0.0
        mean_abs = float(diff.mean()) if diff.size else 0.0
    agreement = None
    if golden.ndim == 2 and golden.shape[1] > 1 and len(golden):
        agreement = float(np.mean(np.argmax(got, axis=1) == np.argmax(golden, axis=1)))
    if max_abs is not None and max_abs > tolerance:
        reasons.append(f"max abs difference {max_abs:.6g} > tolerance {tolerance:.6g}")
    if agreement is not None and agreement < argmax_threshold:
        reasons.append(f"argmax agreement {agreement:.4f} < {argmax_threshold}")
    return {"max_abs_diff": max_abs, "mean_abs_diff": mean_abs, "argmax_agreement": agreement,
            "argmax_threshold": argmax_threshold if agreement is not None else None,
            "n": int(len(golden)), "tolerance": float(tolerance), "passed": not reasons,
            "reasons": reasons}


def verify(model_path, golden_npz_path, *, atol: Optional[float] = None,
           mode: Optional[str] = None, threads: int = 1, backend: Optional[str] = None,
           xnnpack: bool = True) -> dict:
    """Run the golden inputs through the model here and compare with the golden outputs."""
    if atol is not None and not (isinstance(atol, (int, float)) and atol >= 0):
        raise RunnerError(f"Expected atol >= 0. Received: atol={atol!r}")
    runner = load(model_path, threads=threads, backend=backend, xnnpack=xnnpack)
    golden = read_golden(golden_npz_path)
    chosen = normalize_mode(mode or golden["quantization"] or _default_mode(runner))
    got = runner.predict(golden["inputs"])
    if isinstance(got, tuple):
        got = got[0]  # goldens hold the first output
    if got.shape != golden["outputs"].shape:
        raise RunnerError(f"Golden outputs have shape {golden['outputs'].shape} but the model "
                          f"gives {got.shape}: the golden file is not for this model.")
    tol = float(atol) if atol is not None else tolerance_for(chosen, golden["outputs"],
                                                             runner.output_details[0])
    result = compare(got, golden["outputs"], tolerance=tol,
                     argmax_threshold=TOLERANCES[chosen][1])
    result.update({"mode": chosen, "model": os.path.abspath(os.fspath(model_path)),
                   "golden": os.path.abspath(os.fspath(golden_npz_path)),
                   "backend": runner.backend, "backend_version": runner.backend_version,
                   "threads": threads})
    return result

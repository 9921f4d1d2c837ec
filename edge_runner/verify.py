"""Check a .tflite's outputs on this machine against golden outputs computed on the host.

The golden file (see `edge_runner.golden`) holds inputs, the outputs the host got, and optionally
the export mode. Every output is checked against its own tolerance: for an integer output a few of
its quantization steps (also for a float output dequantized from an integer tensor: an int8 file
with float I/O), else the mode's float atol relative to the output's peak; the
argmax must agree too where the output is a distribution (softmax rows). The mode comes from the
golden, else from the file's own tensors (int16, int8 or float16 ones).
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from edge_runner.backends import load
from edge_runner.errors import RunnerError, did_you_mean
from edge_runner.golden import inputs_for, read_golden

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


def _default_mode(runner) -> str:
    """The mode a file's own tensors show: int16 activations, int8 tensors, float16 weights."""
    dtypes = {np.dtype(d["dtype"]) for d in runner.interpreter.get_tensor_details()}
    for dtype, mode in ((np.int16, "int16x8"), (np.int8, "int8"), (np.uint8, "int8"),
                        (np.float16, "float16")):
        if np.dtype(dtype) in dtypes:
            return mode
    return "fp32"


def is_distribution(golden: np.ndarray, step: float = 0.0) -> bool:
    """(N, C) rows of non-negative values summing to 1: the outputs whose argmax means something
    (argmax of a regression head flips on near-ties). The sum may be 0.05 off, plus half a
    quantization `step` per value for a quantized softmax (1000 classes at 1/256 each)."""
    if golden.ndim != 2 or golden.shape[1] < 2 or not len(golden):
        return False
    slack = 0.05 + golden.shape[1] * step / 2
    return bool(np.all(golden >= -1e-6) and np.all(np.abs(golden.sum(axis=1) - 1) <= slack))


def _step(*details) -> float:
    """The quantization step of the first integer tensor among `details` (0.0: none)."""
    for detail in details:
        if detail is not None and np.dtype(detail["dtype"]).kind in "iu":
            scale = float(detail.get("quantization", (0.0, 0))[0])
            if scale > 0:
                return scale
    return 0.0


def quantized_source(runner) -> dict:
    """{output index: detail of the integer tensor it is dequantized from}: the float outputs of
    an int8 file with float I/O are only as fine as that tensor's quantization steps."""
    ops = getattr(runner.interpreter, "_get_ops_details", None)  # the only op listing LiteRT has
    if ops is None:
        return {}
    tensors = {int(t["index"]): t for t in runner.interpreter.get_tensor_details()}
    outputs = {int(d["index"]): i for i, d in enumerate(runner.output_details)}
    found = {}
    for op in ops():
        if op["op_name"] == "DEQUANTIZE" and len(op["outputs"]) == 1:
            i = outputs.get(int(op["outputs"][0]))
            if i is not None:
                found[i] = tensors[int(op["inputs"][0])]
    return found


def tolerance_for(mode: str, golden: np.ndarray, output_detail, source=None) -> float:
    """Default atol: a few quantization steps of an integer output (or of the integer tensor
    `source` a float output is dequantized from), else the mode's float atol."""
    step = _step(output_detail, source)
    if mode in QUANT_STEPS and step > 0:
        return QUANT_STEPS[mode] * step
    peak = float(np.max(np.abs(golden))) if golden.size else 0.0
    return TOLERANCES[mode][0] * max(1.0, peak)


def compare(got: np.ndarray, golden: np.ndarray, *, tolerance: float,
            argmax_threshold: Optional[float]) -> dict:
    """Max/mean abs difference, argmax agreement (for (N, C) outputs, unless `argmax_threshold`
    is None) and the verdict."""
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
    if argmax_threshold is not None and golden.ndim == 2 and golden.shape[1] > 1 and len(golden):
        agreement = float(np.mean(np.argmax(got, axis=1) == np.argmax(golden, axis=1)))
    if max_abs is not None and max_abs > tolerance:
        reasons.append(f"max abs difference {max_abs:.6g} > tolerance {tolerance:.6g}")
    if agreement is not None and agreement < argmax_threshold:
        reasons.append(f"argmax agreement {agreement:.4f} < {argmax_threshold}")
    return {"max_abs_diff": max_abs, "mean_abs_diff": mean_abs, "argmax_agreement": agreement,
            "argmax_threshold": argmax_threshold if agreement is not None else None,
            "n": int(len(golden)), "tolerance": float(tolerance), "passed": not reasons,
            "reasons": reasons}


def _outputs(runner, outputs, path: str) -> dict:
    """The golden's outputs as {model output name: array}; a plain array is the first output."""
    if not isinstance(outputs, dict):
        return {runner.output_names[0]: outputs}
    unknown = [k for k in outputs if k not in runner.output_names]
    if unknown:
        raise RunnerError(f"Golden file {path} has output {unknown[0]!r} but the model's outputs "
                          f"are {', '.join(runner.output_names)}"
                          f"{did_you_mean(unknown[0], runner.output_names)}: the golden file is "
                          f"not for this model.")
    return outputs


def _check_atol(name: str, value) -> None:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0):
        raise RunnerError(f"Expected {name} >= 0. Received: {name}={value!r}")


def _worst(per: dict) -> str:
    """The output furthest past (or closest to) its tolerance; failed ones first."""
    def ratio(r: dict) -> float:
        if r["max_abs_diff"] is None:
            return float("inf")
        return r["max_abs_diff"] / r["tolerance"] if r["tolerance"] > 0 else r["max_abs_diff"]

    return max(per, key=lambda k: (not per[k]["passed"], ratio(per[k])))


def verify(model_path, golden_npz_path, *, atol: Optional[float] = None,
           output_atol: Optional[dict] = None, mode: Optional[str] = None, threads: int = 1,
           backend: Optional[str] = None, xnnpack: bool = True) -> dict:
    """Run the golden inputs through the model here and compare with the golden outputs, each
    output against its own tolerance: `output_atol[name]`, else `atol`, else the mode's default
    (`tolerance_for`). The top-level numbers are those of the worst output (`worst_output`);
    `outputs` holds every output's."""
    if atol is not None:
        _check_atol("atol", atol)
    for name, value in (output_atol or {}).items():
        _check_atol(f"atol of output {name!r}", value)
    runner = load(model_path, threads=threads, backend=backend, xnnpack=xnnpack)
    golden = read_golden(golden_npz_path)
    gpath = os.fspath(golden_npz_path)
    chosen = normalize_mode(mode or golden["quantization"] or _default_mode(runner))
    expected = _outputs(runner, golden["outputs"], gpath)
    for name in output_atol or {}:
        if name not in expected:
            raise RunnerError(f"No output {name!r} to set a tolerance for"
                              f"{did_you_mean(name, expected)}; the golden file checks: "
                              f"{', '.join(sorted(expected))}")
    got = runner.predict_named(inputs_for(runner, golden["inputs"], gpath))
    sources = quantized_source(runner)
    per = {}
    for name, want in expected.items():
        out = got[name]
        if out.shape != want.shape:
            which = f" {name!r}" if len(got) > 1 else ""
            raise RunnerError(f"Golden outputs{which} have shape {want.shape} but the model "
                              f"gives {out.shape}: the golden file is not for this model.")
        index = runner.output_names.index(name)
        detail, source = runner.output_details[index], sources.get(index)
        tol = (output_atol or {}).get(name, atol)
        tol = float(tol) if tol is not None else tolerance_for(chosen, want, detail, source)
        threshold = (TOLERANCES[chosen][1] if is_distribution(want, _step(detail, source))
                     else None)
        per[name] = compare(out, want, tolerance=tol, argmax_threshold=threshold)
    worst = _worst(per)
    reasons = [why if len(per) == 1 else f"output {name!r}: {why}"
               for name, r in per.items() for why in r["reasons"]]
    result = {**per[worst], "passed": not reasons, "reasons": reasons, "worst_output": worst,
              "outputs": per}
    result.update({"mode": chosen, "model": os.path.abspath(os.fspath(model_path)),
                   "golden": os.path.abspath(gpath),
                   "backend": runner.backend, "backend_version": runner.backend_version,
                   "threads": threads})
    return result

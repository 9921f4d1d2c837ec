"""The golden .npz: inputs for a model and the outputs the host got for them.

===================  ==========================================================================
array                what it holds
===================  ==========================================================================
``inputs``           one-input models: the batch of N inputs
``inputs__NAME``     several inputs: one batch per input, NAME the model's input name
``outputs``          one-output models: the N outputs (float32, dequantized)
``outputs__NAME``    several outputs: one array per output, by name
``quantization``     optional: the export mode (fp32, float16, dynamic, int8, int16x8)
===================  ==========================================================================

Names are the model's signature names (a converted Keras model: its input and output layer
names), else its tensor names; `edge-runner bench --json` lists them under ``io``. A golden with
plain ``outputs`` checks the first output of a multi-output model (what goldens held before they
were named).
"""

from __future__ import annotations

import os
import secrets
import zipfile
from typing import Optional

import numpy as np

from edge_runner.errors import RunnerError
from edge_runner.tensors import fit

SEP = "__"


def _named(prefix: str, arrays, convert) -> dict:
    """{npz key: array} for one array (the plain key) or {name: array} (one key per name)."""
    if isinstance(arrays, dict):
        if not arrays:
            raise RunnerError(f"Expected at least one array of {prefix}. Received: none")
        return {f"{prefix}{SEP}{name}": convert(a) for name, a in arrays.items()}
    return {prefix: convert(arrays)}


def write_golden(path, inputs, outputs, quantization: Optional[str] = None) -> str:
    """Write a golden .npz atomically (temp file + rename); returns the path. `inputs` and
    `outputs`: an array each, or {name: array} for models with several (see the module doc)."""
    from edge_runner.verify import normalize_mode

    path = os.fspath(path)
    arrays = {**_named("inputs", inputs, np.asarray),
              **_named("outputs", outputs, lambda a: np.asarray(a, dtype=np.float32))}
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


def _split(found: dict, prefix: str, path: str):
    """An array (plain key) or {name: array} (named keys) of `prefix`; None when neither."""
    named = {k[len(prefix) + len(SEP):]: v for k, v in found.items()
             if k.startswith(prefix + SEP)}
    if prefix in found and named:
        raise RunnerError(f"Golden file {path} has both {prefix} and {prefix}{SEP}NAME arrays; "
                          f"keep one layout.")
    return named or found.get(prefix)


def _lengths(prefix: str, arrays, path: str) -> dict:
    """{npz key: number of samples}; RunnerError for a scalar."""
    keyed = ({f"{prefix}{SEP}{k}": v for k, v in arrays.items()} if isinstance(arrays, dict)
             else {prefix: arrays})
    scalars = [k for k, v in keyed.items() if np.ndim(v) == 0]
    if scalars:
        raise RunnerError(f"Golden file {path}: array {scalars[0]} is a scalar; expected one row "
                          "per sample.")
    return {k: len(v) for k, v in keyed.items()}


def read_golden(path) -> dict:
    """{inputs, outputs, quantization or None} from a golden .npz; inputs and outputs are an
    array or {name: array}. RunnerError if unusable."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise RunnerError(f"Golden file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            found = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise RunnerError(f"Not a golden .npz file: {path} ({exc})") from None
    inputs, outputs = _split(found, "inputs", path), _split(found, "outputs", path)
    missing = [k for k, v in (("inputs", inputs), ("outputs", outputs)) if v is None]
    if missing:
        raise RunnerError(f"Golden file {path} has no {' or '.join(missing)} array. "
                          "Expected arrays: inputs, outputs (or inputs__NAME, outputs__NAME per "
                          "input and output), optionally quantization.")
    lengths = {**_lengths("inputs", inputs, path), **_lengths("outputs", outputs, path)}
    if len(set(lengths.values())) > 1:
        if set(lengths) == {"inputs", "outputs"}:
            raise RunnerError(f"Golden file {path} has {lengths['inputs']} inputs but "
                              f"{lengths['outputs']} outputs.")
        raise RunnerError(f"Golden file {path} holds different numbers of samples: "
                          + ", ".join(f"{k} {n}" for k, n in lengths.items()))
    outputs = ({k: v.astype(np.float32) for k, v in outputs.items()}
               if isinstance(outputs, dict) else outputs.astype(np.float32))
    quant = found.get("quantization")
    return {"inputs": inputs, "outputs": outputs,
            "quantization": str(quant) if quant is not None else None}


def inputs_for(runner, inputs, path: str) -> dict:
    """The golden's inputs as {model input name: array fitted to that input}."""
    names = runner.input_names
    if not isinstance(inputs, dict):
        if len(names) != 1:
            raise RunnerError(
                f"Golden file {path} has one inputs array but the model has {len(names)} inputs "
                f"({', '.join(names)}): give one inputs__NAME array per input.")
        inputs = {names[0]: inputs}
    if sorted(inputs) != sorted(names):
        raise RunnerError(f"Golden file {path} has inputs {', '.join(sorted(inputs))} but the "
                          f"model's are {', '.join(sorted(names))}: the golden file is not for "
                          f"this model.")
    return {k: fit(inputs[k], runner.input_details[names.index(k)], k) for k in names}

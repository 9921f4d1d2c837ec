"""Model files in: detect which Keras wrote them, load them safely, bridge Keras 3 to tf_keras.

`load(path, unsafe)` returns a tf_keras model for every `.keras`, `.h5` and Keras SavedModel
file, whichever Keras wrote it (a Keras 3 file is loaded by Keras 3 in safe mode and rebuilt,
see rebuild.py), or a `GraphModel` for a SavedModel without a layer graph. `check(model, x)`
compares a bridged model with its Keras 3 original on real inputs before anything trains.
"""

from __future__ import annotations

import logging
import weakref
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.modelio.detect import ModelFile, check_safe, inspect_file

log = logging.getLogger("edgepipe")

#: exceptions that Keras raises from deep inside deserialization when the *file* is bad
#: (an unknown class, an argument this Keras does not take, a truncated or mangled archive).
#: Caught only around the library's load call itself, never around our own code.
FILE_ERRORS = (TypeError, ValueError, KeyError, AttributeError, OSError, EOFError,
               zipfile.BadZipFile)


@dataclass
class Bridge:
    """A tf_keras model rebuilt from a Keras 3 file: the original, to compare outputs with."""

    path: Path
    keras3_model: Any
    keras_version: str
    max_abs_diff: float | None = None


_BRIDGES: "weakref.WeakKeyDictionary[Any, Bridge]" = weakref.WeakKeyDictionary()


def bridge_of(model) -> Bridge | None:
    """The Keras 3 original of a model `load` rebuilt; None for any other object."""
    return _BRIDGES.get(model) if hasattr(type(model), "__weakref__") else None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _keras3_load(mf: ModelFile, unsafe: bool):
    import keras

    try:
        return keras.saving.load_model(mf.path, compile=False, safe_mode=not unsafe)
    except FILE_ERRORS as e:
        raise UserError(f"cannot load Keras 3 model {mf.path} with Keras {keras.__version__}: "
                        f"{_first_line(e)}") from None


def _tf_keras_load(mf: ModelFile, unsafe: bool):
    import tf_keras

    try:
        if mf.kind == "keras":
            return tf_keras.models.load_model(mf.path, compile=False, safe_mode=not unsafe)
        return tf_keras.models.load_model(mf.path, compile=False)
    except FILE_ERRORS as e:
        raise UserError(f"cannot load model {mf.path} (corrupt, or not a Keras model): "
                        f"{_first_line(e)}") from None


def load(path: str | Path, unsafe: bool = False):
    """A tf_keras model (or GraphModel) from a model file; one UserError for any bad file.

    `unsafe` allows files that carry Python code (Lambda layers) in every format; without it such
    a file is refused before any Keras reads it.
    """
    mf = inspect_file(path)
    check_safe(mf, unsafe)
    if mf.graph_only:
        from pipeline.modelio.graph import GraphModel

        return GraphModel.load(mf.path)
    if mf.keras == 3:
        import keras

        from pipeline.modelio.rebuild import rebuild

        original = _keras3_load(mf, unsafe)
        model = rebuild(original)
        _BRIDGES[model] = Bridge(mf.path, original, keras.__version__)
        return model
    return _tf_keras_load(mf, unsafe)


def tolerance(reference: np.ndarray) -> float:
    """Largest output difference a rebuild may show: float32 round-off at the outputs' scale."""
    return 1e-4 * max(1.0, float(np.max(np.abs(reference))))


def _head(x, n: int = 64):
    """The first `n` samples of a model input: an array, or a list/dict of arrays."""
    if isinstance(x, dict):
        return {k: np.asarray(v[:n], dtype=np.float32) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [np.asarray(v[:n], dtype=np.float32) for v in x]
    return np.asarray(x[:n], dtype=np.float32)


def check(model, x, what: str = "up to 64 test inputs") -> float | None:
    """Compare a bridged model with its Keras 3 original on `x`; log and return the max |diff|
    (None for a model that was not bridged). A difference above `tolerance` is a UserError."""
    from pipeline.modelio.rebuild import max_difference

    b = bridge_of(model)
    if b is None:
        return None
    x = _head(x)
    diff = max_difference(b.keras3_model, model, x)
    ref = b.keras3_model(x, training=False)
    ref = ref if isinstance(ref, (list, tuple)) else [ref]
    tol = min(tolerance(np.asarray(r)) for r in ref)
    b.max_abs_diff = diff
    log.info("[model] %s: Keras %s model rebuilt in tf_keras; max|diff| %.2e on %s",
             b.path, b.keras_version, diff, what)
    if not diff <= tol:
        raise UserError(f"{b.path}: the tf_keras rebuild of this Keras 3 model differs from it by "
                        f"{diff:.3g} on {what} (more than {tol:.1g}); please report the model's "
                        f"layer list")
    return diff

"""TFLite interpreter backends and the Runner that wraps one loaded model.

Backends, in the order tried when none is forced:

=================  ===============================  =========================================
name               module                           notes
=================  ===============================  =========================================
``litert``         ``ai_edge_litert.interpreter``   ai-edge-litert (numpy 2 fine)
``tflite-runtime`` ``tflite_runtime.interpreter``   tflite-runtime 2.14 (needs numpy<2)
``tensorflow``     ``tensorflow.lite``              last resort; heavy, host only
=================  ===============================  =========================================

All three expose the same ``Interpreter(model_path, num_threads, experimental_op_resolver_type)``
signature; ``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`` turns XNNPACK off.
"""

from __future__ import annotations

import importlib
import os
import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from edge_runner.errors import RunnerError, did_you_mean

# name -> (module to import, distribution name for the version / install hint)
_BACKENDS = {
    "litert": ("ai_edge_litert.interpreter", "ai-edge-litert"),
    "tflite-runtime": ("tflite_runtime.interpreter", "tflite-runtime"),
    "tensorflow": ("tensorflow", "tensorflow"),
}
BACKENDS = tuple(_BACKENDS)

TFLITE_IDENTIFIER = b"TFL3"
_QUANTIZED_DTYPES = (np.int8, np.uint8, np.int16)


@dataclass(frozen=True)
class Backend:
    """An importable interpreter: its name, version, Interpreter class and OpResolverType enum."""

    name: str
    version: str
    interpreter_cls: Any
    op_resolver_type: Any


def _import_backend(name: str) -> Backend:
    module_name, dist = _BACKENDS[name]
    try:
        module = importlib.import_module(module_name)
    except (AttributeError, OSError) as exc:  # a broken install (e.g. numpy ABI): not importable
        raise ImportError(str(exc)) from exc
    if name == "tensorflow":
        return Backend(name, str(module.__version__), module.lite.Interpreter,
                       module.lite.experimental.OpResolverType)
    package = importlib.import_module(module_name.split(".")[0])
    version = getattr(package, "__version__", None)
    if version is None:
        from importlib import metadata

        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "unknown"
    return Backend(name, str(version), module.Interpreter, module.OpResolverType)


def resolve(backend: Optional[str] = None) -> Backend:
    """The forced backend, or the first importable one. Raises RunnerError when none can load."""
    if backend is not None:
        if backend not in _BACKENDS:
            raise RunnerError(
                f'Unknown backend "{backend}"{did_you_mean(backend, BACKENDS)}. '
                f"Expected one of: {', '.join(BACKENDS)}."
            )
        try:
            return _import_backend(backend)
        except ImportError as exc:
            module_name, dist = _BACKENDS[backend]
            raise RunnerError(
                f'Backend "{backend}" is not installed (cannot import {module_name}: {exc}). '
                f"Install it with: pip install {dist}"
            ) from None
    for name in BACKENDS:
        try:
            return _import_backend(name)
        except ImportError:
            continue
    raise RunnerError(
        "No TFLite interpreter found. Install one with: pip install ai-edge-litert "
        "(or tflite-runtime==2.14.0 with numpy<2)"
    )


def check_model_file(model_path) -> str:
    """The path as a string if it is a readable TFLite flatbuffer; RunnerError otherwise."""
    path = os.fspath(model_path)
    if not os.path.exists(path):
        raise RunnerError(f"Model file not found: {path}")
    if os.path.isdir(path):
        raise RunnerError(f"Expected a .tflite file. Received a directory: {path}")
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] != TFLITE_IDENTIFIER:
        raise RunnerError(
            f"Not a TFLite model: {path} (no TFL3 identifier at bytes 4..8). "
            "Pass a .tflite file made by the TFLite converter."
        )
    return path


def load(model_path, *, threads: int = 1, backend: Optional[str] = None,
         xnnpack: bool = True) -> "Runner":
    """Load a .tflite with the chosen backend, allocate its tensors and return a Runner."""
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise RunnerError(f"Expected threads >= 1. Received: threads={threads!r}")
    path = check_model_file(model_path)
    impl = resolve(backend)
    resolver = (impl.op_resolver_type.AUTO if xnnpack
                else impl.op_resolver_type.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    t0 = time.perf_counter_ns()
    try:
        interpreter = impl.interpreter_cls(
            model_path=path, num_threads=threads, experimental_op_resolver_type=resolver)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunnerError(f"Cannot load {path} with {impl.name} {impl.version}: {first}") from None
    init_ms = (time.perf_counter_ns() - t0) / 1e6
    return Runner(interpreter, impl, path=path, threads=threads, xnnpack=xnnpack, init_ms=init_ms)


def _scale_zero_point(detail) -> tuple:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return float(scale), int(zero_point)


def quantize(x: np.ndarray, detail) -> np.ndarray:
    """Float array -> the tensor's dtype, with its scale/zero-point when it is int8/uint8/int16."""
    dtype = np.dtype(detail["dtype"])
    x = np.asarray(x)
    if x.dtype == dtype:
        return x
    scale, zero_point = _scale_zero_point(detail)
    if dtype.type in _QUANTIZED_DTYPES and scale > 0 and np.issubdtype(x.dtype, np.floating):
        info = np.iinfo(dtype)
        q = np.round(x.astype(np.float64) / scale) + zero_point
        return np.clip(q, info.min, info.max).astype(dtype)
    return x.astype(dtype)


def dequantize(q: np.ndarray, detail) -> np.ndarray:
    """A tensor's values as float32, undoing its scale/zero-point when it is quantized."""
    scale, zero_point = _scale_zero_point(detail)
    if np.dtype(detail["dtype"]).type in _QUANTIZED_DTYPES and scale > 0:
        return ((q.astype(np.float32) - zero_point) * np.float32(scale)).astype(np.float32)
    if np.issubdtype(q.dtype, np.floating):
        return q.astype(np.float32, copy=False)
    return q


class Runner:
    """One loaded, allocated model. `predict` takes float batches and returns float batches."""

    def __init__(self, interpreter, impl: Backend, *, path: str, threads: int, xnnpack: bool,
                 init_ms: float):
        self.interpreter = interpreter
        self.backend = impl.name
        self.backend_version = impl.version
        self.path = path
        self.threads = threads
        self.xnnpack = xnnpack
        self.init_ms = init_ms
        self._refresh_details()
        self._base_shape = tuple(int(d) for d in self.input_details[0]["shape"])

    def _refresh_details(self) -> None:
        self.input_details = self.interpreter.get_input_details()
        self.output_details = self.interpreter.get_output_details()

    def invoke(self) -> None:
        self.interpreter.invoke()

    def set_input(self, x, index: int = 0) -> None:
        """Set input `index`; floats are quantized when the input tensor is quantized."""
        detail = self.input_details[index]
        x = quantize(np.asarray(x), detail)
        expected = tuple(int(d) for d in detail["shape"])
        if tuple(x.shape) != expected:
            raise RunnerError(
                f"Expected input {index} of shape {expected}. Received: x.shape={tuple(x.shape)}")
        self.interpreter.set_tensor(detail["index"], x)

    def get_output(self, index: int = 0, *, dequantized: bool = True) -> np.ndarray:
        detail = self.output_details[index]
        out = self.interpreter.get_tensor(detail["index"])
        return dequantize(out, detail) if dequantized else out

    def _can_resize_batch(self) -> bool:
        sig = self.input_details[0].get("shape_signature")
        return len(self.input_details) == 1 and sig is not None and len(sig) > 0 and sig[0] == -1

    def _resize(self, batch: int) -> None:
        shape = [batch, *self._base_shape[1:]]
        self.interpreter.resize_tensor_input(self.input_details[0]["index"], shape)
        self.interpreter.allocate_tensors()
        self._refresh_details()

    def _run(self, x: np.ndarray) -> list:
        self.set_input(x)
        self.invoke()
        return [self.get_output(i) for i in range(len(self.output_details))]

    def predict(self, x, *, batch_size: int = 64):
        """Float inputs (N, ...) -> float outputs (N, ...); a tuple of arrays for multi-output models.

        Runs batches of `batch_size` when the model's batch dimension is dynamic, else one sample
        at a time. The interpreter is restored to its original input shape afterwards.
        """
        if len(self.input_details) != 1:
            raise RunnerError(
                f"predict() supports models with one input; this model has "
                f"{len(self.input_details)}. Use set_input()/invoke()/get_output().")
        x = np.asarray(x)
        want = self._base_shape[1:]
        if x.ndim != len(self._base_shape) or tuple(x.shape[1:]) != want:
            raise RunnerError(
                f"Expected inputs of shape (N, {', '.join(map(str, want))}). "
                f"Received: x.shape={tuple(x.shape)}")
        n = int(x.shape[0])
        if self._base_shape[0] != 1 and not self._can_resize_batch():
            raise RunnerError(
                f"predict() needs a model with batch size 1 or a dynamic batch; this model's "
                f"input batch is fixed at {self._base_shape[0]}. Use set_input()/invoke().")
        step = 1
        if n > 1 and self._base_shape[0] == 1 and self._can_resize_batch():
            step = max(1, min(int(batch_size), n))
        chunks: list = []
        try:
            i = 0
            while i < n:
                part = x[i:i + step]
                if int(self.input_details[0]["shape"][0]) != len(part):
                    self._resize(len(part))
                chunks.append(self._run(part))
                i += len(part)
        finally:
            if tuple(int(d) for d in self.input_details[0]["shape"]) != self._base_shape:
                self._resize(self._base_shape[0])
        outs = tuple(np.concatenate([c[j] for c in chunks], axis=0) if chunks else np.empty((0,))
                     for j in range(len(self.output_details)))
        return outs[0] if len(outs) == 1 else outs

    def fill_random_inputs(self, seed: int = 0) -> list:
        """Set every input to seeded random data of its dtype and shape; returns the arrays."""
        rng = np.random.default_rng(seed)
        arrays = []
        for i, detail in enumerate(self.input_details):
            dtype = np.dtype(detail["dtype"])
            shape = tuple(int(d) for d in detail["shape"])
            if np.issubdtype(dtype, np.floating):
                arr = rng.random(shape, dtype=np.float32).astype(dtype)
            elif dtype.type in _QUANTIZED_DTYPES:
                info = np.iinfo(dtype)
                arr = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
            elif dtype == np.bool_:
                arr = rng.random(shape) < 0.5
            else:  # int32/int64 inputs are often indices: keep them small and valid
                arr = rng.integers(0, 2, size=shape).astype(dtype)
            self.interpreter.set_tensor(detail["index"], arr)
            arrays.append(arr)
        return arrays

    def describe(self) -> dict:
        """Input/output dtypes, shapes and quantization, JSON-able."""

        def one(detail):
            scale, zero_point = _scale_zero_point(detail)
            return {"name": str(detail.get("name", "")), "dtype": np.dtype(detail["dtype"]).name,
                    "shape": [int(d) for d in detail["shape"]],
                    "quantization": {"scale": scale, "zero_point": zero_point} if scale else None}

        return {"inputs": [one(d) for d in self.input_details],
                "outputs": [one(d) for d in self.output_details]}


def available() -> dict:
    """{backend name: True/False} — whether each backend's module can be found (nothing imported)."""
    import importlib.util

    out = {}
    for name, (module_name, _) in _BACKENDS.items():
        try:
            out[name] = importlib.util.find_spec(module_name) is not None
        except (ImportError, ValueError):
            out[name] = False
    return out

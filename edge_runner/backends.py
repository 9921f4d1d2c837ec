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
from edge_runner.tensors import QUANTIZED_DTYPES, dequantize, quantize, scale_zero_point

# name -> (module to import, distribution name for the version / install hint)
_BACKENDS = {
    "litert": ("ai_edge_litert.interpreter", "ai-edge-litert"),
    "tflite-runtime": ("tflite_runtime.interpreter", "tflite-runtime"),
    "tensorflow": ("tensorflow", "tensorflow"),
}
BACKENDS = tuple(_BACKENDS)

TFLITE_IDENTIFIER = b"TFL3"


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


def _tensor_names(interpreter, details: list, kind: str) -> list:
    """Names of the tensors in `details`: the model's signature names ("image", "class") when it
    has exactly one signature covering them all (what Keras models get), else tensor names."""
    signatures = interpreter.get_signature_list()
    if len(signatures) == 1:
        runner = interpreter.get_signature_runner(next(iter(signatures)))
        found = runner.get_input_details() if kind == "inputs" else runner.get_output_details()
        by_index = {int(d["index"]): name for name, d in found.items()}
        names = [by_index.get(int(d["index"])) for d in details]
        if None not in names:
            return names
    return [str(d.get("name", "")) or f"{kind[:-1]}_{i}" for i, d in enumerate(details)]


class Runner:
    """One loaded, allocated model. `predict` takes float batches and returns float batches.

    `input_names`/`output_names` follow `input_details`/`output_details` (the interpreter's
    order, which for a converted Keras model need not be the Keras order)."""

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
        self.input_names = _tensor_names(interpreter, self.input_details, "inputs")
        self.output_names = _tensor_names(interpreter, self.output_details, "outputs")
        self._base_shapes = [tuple(int(d) for d in det["shape"]) for det in self.input_details]

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
        sigs = [d.get("shape_signature") for d in self.input_details]
        return all(s is not None and len(s) > 0 and s[0] == -1 for s in sigs)

    def _resize(self, batch: int) -> None:
        for detail, base in zip(self.input_details, self._base_shapes):
            self.interpreter.resize_tensor_input(detail["index"], [batch, *base[1:]])
        self.interpreter.allocate_tensors()
        self._refresh_details()

    def _run(self, xs: list) -> list:
        for i, x in enumerate(xs):
            self.set_input(x, i)
        self.invoke()
        return [self.get_output(i) for i in range(len(self.output_details))]

    def _batches(self, x) -> list:
        """`x` as one array per input, in `input_details` order, each checked against its shape."""
        if isinstance(x, dict):
            unknown = [k for k in x if k not in self.input_names]
            missing = [k for k in self.input_names if k not in x]
            if unknown or missing:
                raise RunnerError(f"Expected inputs named {', '.join(self.input_names)}. "
                                  f"Received: {', '.join(map(str, x)) or 'none'}")
            xs = [np.asarray(x[k]) for k in self.input_names]
        elif len(self.input_details) == 1:
            xs = [np.asarray(x)]
        else:
            raise RunnerError(
                f"This model has {len(self.input_details)} inputs: give predict() a dict "
                f"{{name: array}} with {', '.join(self.input_names)}")
        for x, base, name in zip(xs, self._base_shapes, self.input_names):
            want = base[1:]
            if x.ndim != len(base) or tuple(x.shape[1:]) != want:
                which = "" if len(xs) == 1 else f' "{name}"'
                raise RunnerError(
                    f"Expected inputs{which} of shape (N, {', '.join(map(str, want))}). "
                    f"Received: x.shape={tuple(x.shape)}")
        if len({len(x) for x in xs}) > 1:
            raise RunnerError("Expected the same number of samples for every input. Received: "
                              + ", ".join(f"{n}={len(x)}" for n, x in zip(self.input_names, xs)))
        return xs

    def predict(self, x, *, batch_size: int = 64):
        """Float inputs (N, ...) -> float outputs (N, ...); a tuple of arrays (in `output_names`
        order) for multi-output models. `x`: an array, or {input name: array} (any model).

        Runs batches of `batch_size` when the model's batch dimension is dynamic, else one sample
        at a time. The interpreter is restored to its original input shapes afterwards.
        """
        xs = self._batches(x)
        n = int(xs[0].shape[0])
        batch = self._base_shapes[0][0]
        if any(b[0] != 1 for b in self._base_shapes) and not self._can_resize_batch():
            raise RunnerError(
                f"predict() needs a model with batch size 1 or a dynamic batch; this model's "
                f"input batch is fixed at {batch}. Use set_input()/invoke().")
        step = 1
        if n > 1 and batch == 1 and self._can_resize_batch():
            step = max(1, min(int(batch_size), n))
        chunks: list = []
        try:
            i = 0
            while i < n:
                size = min(step, n - i)
                if int(self.input_details[0]["shape"][0]) != size:
                    self._resize(size)
                chunks.append(self._run([x[i:i + size] for x in xs]))
                i += size
        finally:
            if [tuple(int(d) for d in det["shape"]) for det in self.input_details] != \
                    self._base_shapes:
                self._resize(batch)
        outs = tuple(np.concatenate([c[j] for c in chunks], axis=0) if chunks else np.empty((0,))
                     for j in range(len(self.output_details)))
        return outs[0] if len(outs) == 1 else outs

    def predict_named(self, x, *, batch_size: int = 64) -> dict:
        """Like `predict`, as {output name: array}."""
        got = self.predict(x, batch_size=batch_size)
        got = got if isinstance(got, tuple) else (got,)
        return dict(zip(self.output_names, got))

    def set_inputs(self, x) -> None:
        """Set every input from one batch of the model's batch size: an array (one input) or
        {input name: array}."""
        xs = self._batches(x)
        for i, arr in enumerate(xs):
            self.set_input(arr, i)

    def fill_random_inputs(self, seed: int = 0) -> list:
        """Set every input to seeded random data of its dtype and shape; returns the arrays."""
        rng = np.random.default_rng(seed)
        arrays = []
        for i, detail in enumerate(self.input_details):
            dtype = np.dtype(detail["dtype"])
            shape = tuple(int(d) for d in detail["shape"])
            if np.issubdtype(dtype, np.floating):
                arr = rng.random(shape, dtype=np.float32).astype(dtype)
            elif dtype.type in QUANTIZED_DTYPES:
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

        def one(detail, name):
            scale, zero_point = scale_zero_point(detail)
            return {"name": name, "tensor": str(detail.get("name", "")),
                    "dtype": np.dtype(detail["dtype"]).name,
                    "shape": [int(d) for d in detail["shape"]],
                    "quantization": {"scale": scale, "zero_point": zero_point} if scale else None}

        return {"inputs": [one(d, n) for d, n in zip(self.input_details, self.input_names)],
                "outputs": [one(d, n) for d, n in zip(self.output_details, self.output_names)]}


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

"""TFLite conversion in every mode, and validation of each file against its Keras model."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.errors import ExportError, UserError, did_you_mean

TFLITE_MAGIC = b"TFL3"


def _fp32(conv, calib):
    return conv


def _dynamic(conv, calib):
    import tensorflow as tf

    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    return conv


def _float16(conv, calib):
    import tensorflow as tf

    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    return conv


def _representative(calib):
    """Calibration samples one at a time: `calib` is an array (one-input models) or {input name:
    array} (several inputs; the names are the Keras model's input names)."""
    if calib is None or len(calib) == 0:
        raise UserError("int8 export needs calibration data: give the recipe a dataset, or "
                        "--data on the command line")
    if isinstance(calib, dict):
        n = min(len(a) for a in calib.values())

        def gen():
            for i in range(n):
                yield {k: np.asarray(a[i: i + 1], dtype=np.float32) for k, a in calib.items()}
    else:
        def gen():
            for i in range(len(calib)):
                yield [calib[i: i + 1].astype(np.float32)]

    return gen


def _int8(conv, calib):
    import tensorflow as tf

    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = _representative(calib)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv


def _int16x8(conv, calib):
    import tensorflow as tf

    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = _representative(calib)
    conv.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    return conv


#: quantization mode → converter set-up. The registry every exporter (export, quantize) uses.
MODES: dict[str, Callable] = {"fp32": _fp32, "dynamic": _dynamic, "float16": _float16,
                              "int8": _int8, "int16x8": _int16x8}


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise UserError(f"unknown TFLite mode {mode!r}{did_you_mean(mode, MODES)}; "
                        f"expected one of: {', '.join(MODES)}")
    return mode


def convert(model, mode: str = "fp32", calibration: np.ndarray | dict | None = None,
            sparse: bool = False) -> bytes:
    """Convert a tf_keras model (or a graph-only SavedModel) to a TFLite flatbuffer in `mode`.

    `calibration`: int8/int16x8 representative inputs, an array or {input name: array}.
    `sparse` adds EXPERIMENTAL_SPARSITY so pruned weights are stored in a sparse format.
    A model that went through quantization-aware training converts to int8 with `mode="int8"`.
    """
    import tensorflow as tf

    check_mode(mode)
    graph = getattr(model, "tflite_converter", None)  # a SavedModel without layers (GraphModel)
    source = graph() if graph else tf.lite.TFLiteConverter.from_keras_model(model)
    conv = MODES[mode](source, calibration)
    if sparse:
        conv.optimizations = [*conv.optimizations, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    from tensorflow.lite.python.convert_phase import ConverterError

    try:
        return conv.convert()
    except (ConverterError, RuntimeError, ValueError) as e:
        first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise ExportError(f"TFLite conversion to {mode} failed: {first}") from e


def check_file(path: str | Path) -> Path:
    """A readable TFLite flatbuffer, or one clear UserError."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"TFLite file not found: {p}")
    with open(p, "rb") as f:
        head = f.read(8)
    if head[4:8] != TFLITE_MAGIC:
        raise UserError(f"{p} is not a TFLite file (no TFL3 identifier); give a .tflite made by "
                        f"`edgepipe export`")
    return p


def op_counts(path: str | Path) -> dict[str, int]:
    """Operator name → count, read from the interpreter (XNNPACK off: a delegate would replace
    the ops it takes with one DELEGATE node)."""
    from edge_runner.backends import load

    runner = load(path, xnnpack=False)
    ops = runner.interpreter._get_ops_details()  # noqa: SLF001 (the only op listing in LiteRT)
    return dict(sorted(Counter(op["op_name"] for op in ops).items()))


def predict(path: str | Path, x: np.ndarray | dict, threads: int = 2):
    """The .tflite's outputs for `x` (an array, or {input name: array}): an array, or a tuple
    in the file's output order for several outputs (`edge_runner` Runner.predict)."""
    from edge_runner.backends import load

    return load(path, threads=threads).predict(x)


def validate(path: str | Path, reference: np.ndarray | None, x: np.ndarray,
             y: np.ndarray) -> dict[str, Any]:
    """Accuracy of the .tflite on (x, y), and its agreement with the Keras outputs `reference`."""
    out = predict(path, x)
    m: dict[str, Any] = {"accuracy": float(np.mean(out.argmax(-1) == y))}
    if reference is not None:
        m["max_abs_diff"] = float(np.max(np.abs(out - reference)))
        m["argmax_agreement"] = float(np.mean(out.argmax(-1) == reference.argmax(-1)))
    m["ops"] = op_counts(path)
    return m


def export(model, path: str | Path, mode: str, dataset, *, sparse: bool = False,
           reference: np.ndarray | None = None, calibration: np.ndarray | None = None,
           check: Callable[[Path, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Convert, write atomically, and validate on the test split. Returns the file's metrics.

    `reference` is the Keras model's test-split output (computed here when not given);
    `calibration` the int8 representative inputs (default: the dataset's calibration subset).
    `check(temp_path, metrics)` may add metrics and raise (a gate): the file then never lands.
    """
    from edge_runner.errors import RunnerError
    from pipeline.artifacts import atomic_output
    from pipeline.models import predict as keras_predict

    if calibration is None and mode in ("int8", "int16x8"):
        calibration = dataset.calibration()
    data = convert(model, mode, calibration, sparse=sparse)
    if reference is None:
        reference = keras_predict(model, dataset.x_test)
    with atomic_output(path) as tmp:  # the file lands only once it has been measured
        tmp.write_bytes(data)
        try:
            m = measure(tmp, model, dataset, reference)
        except (RunnerError, RuntimeError, ValueError) as e:  # the interpreter refused the file
            first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
            hint = ("; sparse encoding of int8 weights is known to fail here: export this mode "
                    "without sparse" if sparse and mode != "fp32" else "")
            raise ExportError(f"the {mode}{' sparse' if sparse else ''} .tflite does not run in "
                              f"the host interpreter: {first}{hint}") from e
        if check is not None:
            check(tmp, m)
    return m


def measure(path: str | Path, model, dataset, reference: np.ndarray) -> dict[str, Any]:
    """Metrics of one .tflite: params, sizes, accuracy on the test split next to the Keras
    model's (`reference` = its test outputs), output difference, op list."""
    from pipeline.artifacts import sizes
    from pipeline.models import count_params

    params, nonzero = count_params(model)
    m = {"params": params, "nonzero_params": nonzero, **sizes(path),
         "input_shape": [int(d) for d in model.input_shape[1:]],
         "keras_accuracy": float(np.mean(reference.argmax(-1) == dataset.y_test)),
         **validate(path, reference, dataset.x_test, dataset.y_test)}
    m["accuracy_drop"] = m["keras_accuracy"] - m["accuracy"]
    return m

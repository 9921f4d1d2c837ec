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


#: int8 files: integer inputs and outputs, or float ones (quantize/dequantize ops inside the
#: file: the board feeds floats and a regressor's outputs keep their resolution)
IO_TYPES = ("int8", "float32")

#: quantization mode → converter set-up. The registry every exporter (export, quantize) uses.
MODES: dict[str, Callable] = {"fp32": _fp32, "dynamic": _dynamic, "float16": _float16,
                              "int8": _int8, "int16x8": _int16x8}


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise UserError(f"unknown TFLite mode {mode!r}{did_you_mean(mode, MODES)}; "
                        f"expected one of: {', '.join(MODES)}")
    return mode


def convert(model, mode: str = "fp32", calibration: np.ndarray | dict | None = None,
            sparse: bool = False, io: str = "int8") -> bytes:
    """Convert a tf_keras model (or a graph-only SavedModel) to a TFLite flatbuffer in `mode`.

    `calibration`: int8/int16x8 representative inputs, an array or {input name: array}.
    `sparse` adds EXPERIMENTAL_SPARSITY so pruned weights are stored in a sparse format.
    A model that went through quantization-aware training converts to int8 with `mode="int8"`.
    `io="float32"` keeps an int8 file's inputs and outputs float (see IO_TYPES).
    """
    import tensorflow as tf

    check_mode(mode)
    if io not in IO_TYPES:
        raise UserError(f"unknown io {io!r}{did_you_mean(io, IO_TYPES)}; expected one of: "
                        f"{', '.join(IO_TYPES)}")
    graph = getattr(model, "tflite_converter", None)  # a SavedModel without layers (GraphModel)
    source = graph() if graph else tf.lite.TFLiteConverter.from_keras_model(model)
    conv = MODES[mode](source, calibration)
    if mode == "int8" and io == "float32":
        conv.inference_input_type = tf.float32
        conv.inference_output_type = tf.float32
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


def kernel_sparsity(path: str | Path) -> tuple[dict[str, float], float]:
    """({tensor: fraction of zeros} of the constant weight tensors of rank >= 2, the zero
    fraction over all of them weighted by size), read from the flatbuffer's own buffers: what
    the file actually stores."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(Path(path).read_bytes()))
    dtypes = {schema.TensorType.INT8: np.int8, schema.TensorType.FLOAT32: np.float32,
              schema.TensorType.FLOAT16: np.float16}
    tensors = [t for sg in model.subgraphs for t in sg.tensors]

    def name(t) -> str:
        return t.name.decode() if isinstance(t.name, bytes) else str(t.name)

    out = {}
    for t in tensors:
        buf = model.buffers[t.buffer].data if 0 < t.buffer < len(model.buffers) else None
        if buf is None or t.type not in dtypes or t.shape is None or len(t.shape) < 2:
            continue
        out[name(t)] = round(float(np.mean(np.frombuffer(bytes(buf), dtype=dtypes[t.type]) == 0)), 6)
    sizes = {name(t): int(np.prod(t.shape)) for t in tensors if name(t) in out}
    total = sum(sizes.values())
    overall = round(sum(out[n] * s for n, s in sizes.items()) / total, 6) if total else 0.0
    return out, overall


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


def predict_outputs(path: str | Path, x, output_names: list[str], threads: int = 2
                    ) -> list[np.ndarray]:
    """Float outputs of a .tflite on inputs `x` (one array, or {input name: array}), a list in
    the Keras model's output order: the file's signature names (edge_runner's Runner
    input_names/output_names) are the Keras input and output names."""
    from edge_runner.backends import load

    runner = load(path, threads=threads)
    if not isinstance(x, dict) and len(output_names) == 1:
        return [np.asarray(runner.predict(x))]
    xs = x if isinstance(x, dict) else {runner.input_names[0]: x}
    ins, outs = runner.input_names, runner.output_names
    if sorted(xs) != sorted(ins) or sorted(output_names) != sorted(outs):
        raise ExportError(f"{Path(path).name}: its signature has inputs {sorted(ins)} and outputs "
                          f"{sorted(outs)}; the Keras model has {sorted(xs)} and "
                          f"{sorted(output_names)}")
    got = runner.predict_named(xs)
    return [got[k] for k in output_names]


def validate(path: str | Path, reference: np.ndarray | None, x: np.ndarray,
             y: np.ndarray) -> dict[str, Any]:
    """Accuracy of a one-output classifier .tflite on (x, y), and its agreement with the Keras
    outputs `reference`."""
    out = predict(path, x)
    m: dict[str, Any] = {"accuracy": float(np.mean(out.argmax(-1) == y))}
    if reference is not None:
        m["max_abs_diff"] = float(np.max(np.abs(out - reference)))
        m["argmax_agreement"] = float(np.mean(out.argmax(-1) == reference.argmax(-1)))
    m["ops"] = op_counts(path)
    return m


def export(model, path: str | Path, mode: str, dataset, *, sparse: bool = False,
           reference=None, calibration=None, io: str | None = None,
           check: Callable[[Path, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Convert, write atomically, and validate on the test split. Returns the file's metrics.

    `reference` is the Keras model's test-split output (a list for several outputs; computed
    here when not given); `calibration` the int8 representative inputs (default: the dataset's
    calibration subset); `io` an int8 file's input/output type (default: the task's, see
    `default_io`). `check(temp_path, metrics)` may add metrics and raise (a gate): the file then
    never lands.
    """
    from edge_runner.errors import RunnerError
    from pipeline import tasks
    from pipeline.artifacts import atomic_output

    task = tasks.of(model, dataset)
    if calibration is None and mode in ("int8", "int16x8"):
        calibration = dataset.calibration()
    chosen = io or default_io(task)
    data = convert(model, mode, calibration, sparse=sparse, io=chosen)
    reference = (tasks.predict(model, dataset.x_test) if reference is None
                 else tasks.as_list(reference))
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
        if mode == "int8":
            m["io"] = chosen
            m["io_reason"] = ("given" if io else
                              f"default for {task.name}: " + IO_REASONS[chosen])
        if check is not None:
            check(tmp, m)
    return m


#: Both I/O types give the same outputs (float I/O adds the quantize/dequantize ops the caller
#: would otherwise apply, with the same scale and zero point): the choice is where values are in
#: the data's units. Measured: scripts/bench_tasks.py (diabetes MAE equal to 4 decimals).
IO_REASONS = {"int8": "a classifier's argmax needs no dequantized scores, and integer I/O suits "
                      "integer-only boards",
              "float32": "the board feeds and reads values in the data's units; int8 I/O gives "
                         "the same metric but leaves scale and zero point to the caller"}


def default_io(task) -> str:
    """int8 I/O for classifiers (argmax of the int8 scores), float I/O for every other task (its
    values are read as numbers: the file dequantizes them with the same scale itself)."""
    return "int8" if all(h.kind == "classification" for h in task.heads) else "float32"


def measure(path: str | Path, model, dataset, reference) -> dict[str, Any]:
    """Metrics of one .tflite: params, sizes, the task's metrics on the test split next to the
    Keras model's (`reference` = its test outputs), agreement with them, op list."""
    from pipeline import tasks
    from pipeline.artifacts import sizes
    from pipeline.metrics import fidelity_metrics
    from pipeline.models import count_params

    task = tasks.of(model, dataset)
    reference = tasks.as_list(reference)
    names = tasks.output_names(model)
    params, nonzero = count_params(model)
    shapes = model.input_shape if isinstance(model.input_shape, list) else [model.input_shape]
    m: dict[str, Any] = {"params": params, "nonzero_params": nonzero, **sizes(path),
                         "input_shape": [int(d) for d in shapes[0][1:]]}
    if len(shapes) > 1:
        m["input_shapes"] = {n: [int(d) for d in s[1:]] for n, s in zip(model.input_names, shapes)}
    outs = predict_outputs(path, dataset.x_test, names)
    keras = tasks.evaluate(task, reference, dataset.y_test)
    mine = tasks.evaluate(task, outs, dataset.y_test, reference)
    m.update(mine)
    m.update({f"keras_{k}": v for k, v in keras.items()})
    m.update(tasks.compare(task, mine, keras))
    if "accuracy" in mine and "keras_accuracy" in m:
        m["accuracy_drop"] = m["keras_accuracy"] - m["accuracy"]
    if task.name != "fidelity":  # a fidelity task reports these per output already
        agree = [fidelity_metrics(r, o) for r, o in zip(reference, outs)]
        m["max_abs_diff"] = max(a["max_abs_diff"] for a in agree)
        dist = [a["argmax_agreement"] for a in agree if "argmax_agreement" in a]
        if dist:
            m["argmax_agreement"] = min(dist)
    m["task"] = task.to_json()
    m["ops"] = op_counts(path)
    return m

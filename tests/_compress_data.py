"""Tiny digits (8x8) data and models shared by the compress tests (magnitude, quantize, clustering,
lowrank). Kept small: a few K params, one or two epochs on ~1000 samples."""

import numpy as np

import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tf_keras as keras


def digits(n_train: int = 1000, n_test: int = 400):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype("float32")[..., None]
    y = d.target.astype("int64")
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(x))
    tr, te = idx[:n_train], idx[n_train:n_train + n_test]
    return x[tr], y[tr], x[te], y[te]


def as_dataset(data, n: int | None = None):
    """`digits()` as a pipeline Dataset (the first `n` training samples; the test split also
    validates), for the stages' own fine-tuning path (`pipeline.training.fit`)."""
    from pipeline.data import Dataset

    x, y, xt, yt = data
    return Dataset("digits8", x[:n], y[:n], xt, yt, xt, yt, num_classes=10)


# The stages' own fine-tuning paths (wrap → pipeline.training.fit → strip), at batch 32 on digits().
def prune(base, data, n=None, **settings):
    """The prune stage's path; returns (stripped model, metrics)."""
    from pipeline.stages.prune import PruneConfig, prune_model

    cfg = PruneConfig(batch_size=32, learning_rate=1e-3, **settings)
    return prune_model(base, as_dataset(data, n), cfg)


def cluster(base, data, n=None, **settings):
    """The cluster stage's path; returns (stripped model, whether zeros were preserved)."""
    from pipeline.stages.cluster import ClusterConfig, cluster_model

    new, m = cluster_model(base, as_dataset(data, n), ClusterConfig(batch_size=32, **settings))
    return new, m["preserve_sparsity"]


def qat(base, data, **settings):
    """The quantize stage's qat path; returns (QAT model, metrics: preserve, scheme, ...)."""
    from pipeline.stages.quantize import QuantizeConfig, qat_model

    return qat_model(base, as_dataset(data), QuantizeConfig(mode="qat", batch_size=32, **settings))


def small_cnn(seed: int = 0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, activation="relu", name="stem"),
        keras.layers.Conv2D(16, 3, activation="relu", name="conv"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(32, activation="relu", name="fc"),
        keras.layers.Dense(10, name="classifier"),
    ], name="tiny")


def trained_cnn(data, epochs: int = 3):
    x, y, _, _ = data
    m = small_cnn()
    m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
    m.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return m


def accuracy(model, x, y) -> float:
    return float((np.argmax(model.predict(x, verbose=0), -1) == y).mean())


def to_tflite_int8(model, x_cal) -> bytes:
    """Full-integer int8 conversion (int8 in/out) with a representative dataset."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x_cal[i:i + 1]] for i in range(min(100, len(x_cal))))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def tflite_accuracy(buf: bytes, x, y) -> float:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=buf)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    hits = 0
    for xi, yi in zip(x, y):
        v = xi[None]
        if inp["dtype"] == np.int8:
            s, z = inp["quantization"]
            v = np.clip(np.round(v / s + z), -128, 127).astype(np.int8)
        it.set_tensor(inp["index"], v)
        it.invoke()
        hits += int(np.argmax(it.get_tensor(out["index"])[0]) == yi)
    return hits / len(y)


def int8_weight_zeros(buf: bytes) -> dict[str, float]:
    """{tensor name: fraction of zeros} for the int8 constant tensors of rank >= 2 (the kernels),
    read from the flatbuffer's own buffers."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(buf))
    out = {}
    for sg in model.subgraphs:
        for t in sg.tensors:
            data = model.buffers[t.buffer].data if t.buffer < len(model.buffers) else None
            if t.type == schema.TensorType.INT8 and data is not None and len(t.shape) >= 2:
                a = np.frombuffer(bytes(data), dtype=np.int8)
                name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
                out[name] = float((a == 0).mean())
    return out

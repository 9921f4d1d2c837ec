"""QAT with TF-MOT (pipeline.compress.quantize): coverage check, skip_unsupported, PQAT keeps zeros."""

import numpy as np
import pytest

import pipeline  # noqa: F401
import tf_keras as keras
from _compress_data import (digits, int8_weight_zeros, prune, qat, tflite_accuracy, to_tflite_int8,
                            trained_cnn)

from pipeline.compress import magnitude as M
from pipeline.compress import quantize as Q
from pipeline.errors import UserError


@pytest.fixture(scope="module")
def data():
    return digits()


@pytest.fixture(scope="module")
def base(data):
    return trained_cnn(data)


def _odd_model():
    """Conv+BN (foldable) plus layers QAT cannot quantize: Rescaling, Multiply, a lone BN, Conv1D."""
    i = keras.Input((8, 8, 1))
    r = keras.layers.Rescaling(2.0, -1.0, name="rescale")(i)
    a = keras.layers.Conv2D(8, 3, use_bias=False, name="conv")(r)
    a = keras.layers.BatchNormalization(name="conv_bn")(a)
    a = keras.layers.ReLU(name="relu")(a)
    g = keras.layers.GlobalAveragePooling2D(name="gap")(a)
    g = keras.layers.Dense(8, activation="sigmoid", name="gate")(g)
    a = keras.layers.Multiply(name="se_mul")([a, keras.layers.Reshape((1, 1, 8), name="rs")(g)])
    a = keras.layers.BatchNormalization(name="lone_bn")(a)
    s = keras.layers.Reshape((36, 8), name="seq")(a)
    s = keras.layers.Conv1D(4, 3, name="conv1d")(s)
    o = keras.layers.Dense(10, name="classifier")(keras.layers.Flatten(name="flat")(s))
    return keras.Model(i, o)


def test_coverage_lists_unsupported_layers():
    m = _odd_model()
    assert Q.unsupported_layers(m) == [("rescale", "Rescaling"), ("se_mul", "Multiply"),
                                       ("lone_bn", "BatchNormalization"), ("conv1d", "Conv1D")]
    with pytest.raises(UserError) as e:
        Q.quantize_aware(m)
    assert str(e.value) == (
        "QAT cannot quantize layer(s): rescale (Rescaling), se_mul (Multiply), "
        "lone_bn (BatchNormalization), conv1d (Conv1D); set skip_unsupported: true to leave them "
        "in float, or remove them")


def test_skip_unsupported_annotates_the_rest():
    m = _odd_model()
    qat, info = Q.quantize_aware(m, skip_unsupported=True)
    assert info.float_layers == ["conv1d", "lone_bn", "rescale", "se_mul"]
    assert info.scheme == "Default8BitQuantizeScheme"
    names = {l.name for l in qat.layers}
    assert {"quant_conv", "quant_gate", "quant_classifier"} <= names
    assert {"rescale", "se_mul", "lone_bn", "conv1d"} <= names  # left as they were
    x = np.random.default_rng(0).random((2, 8, 8, 1), dtype=np.float32)
    np.testing.assert_allclose(qat.predict(x, verbose=0), m.predict(x, verbose=0), atol=0.2)


def test_qat_int8_tflite_close_to_float(base, data):
    x, y, xt, yt = data
    model, info = qat(base, data, epochs=1)
    assert info["preserve"] == "none"
    float_acc = tflite_accuracy(_float_tflite(base), xt, yt)
    int8_acc = tflite_accuracy(to_tflite_int8(model, x), xt, yt)
    assert float_acc > 0.8
    assert int8_acc >= float_acc - 0.03, (float_acc, int8_acc)


def test_pruned_input_gets_pqat_and_tflite_keeps_the_zeros(base, data):
    x, _, _, _ = data
    pruned, _ = prune(base, data, sparsity=0.8, epochs=1)
    assert Q.detect_preserve(pruned) == "sparsity"
    model, info = qat(pruned, data, epochs=1)
    assert info["scheme"] == "Default8BitPrunePreserveQuantizeScheme"
    zeros = int8_weight_zeros(to_tflite_int8(model, x))
    assert len(zeros) == 4  # stem, conv, fc, classifier kernels
    assert min(zeros.values()) >= 0.79, zeros


def test_detect_and_bad_preserve(base):
    assert Q.detect_preserve(base) == "none"
    with pytest.raises(UserError) as e:
        Q.quantize_aware(base, preserve="sparse")
    assert str(e.value) == ('Unknown preserve "sparse" (did you mean "sparsity"?); '
                            "expected one of: auto, none, sparsity, clusters, clusters+sparsity")


def test_detect_tells_pruned_from_clustered_on_small_kernels():
    import tf_keras as keras

    model = keras.Sequential([keras.Input((40,)), keras.layers.Dense(32), keras.layers.Dense(10)])
    rng = np.random.default_rng(0)
    kernel = np.zeros(40 * 32, np.float32)  # 80% pruned: 256 distinct nonzeros are left
    kernel[rng.choice(kernel.size, 256, replace=False)] = rng.normal(size=256)
    model.layers[0].kernel.assign(kernel.reshape(40, 32))
    assert Q.detect_preserve(model) == "sparsity"
    centroids = rng.normal(size=8).astype(np.float32)  # clustered: 8 values shared by all
    model.layers[0].kernel.assign(rng.choice(centroids, (40, 32)))
    assert Q.detect_preserve(model) == "clusters"
    clustered_and_pruned = np.where(rng.random((40, 32)) < 0.8, 0, rng.choice(centroids, (40, 32)))
    model.layers[0].kernel.assign(clustered_and_pruned.astype(np.float32))
    assert Q.detect_preserve(model) == "clusters+sparsity"


def _float_tflite(model) -> bytes:
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def test_coverage_after_pruning_wrappers_were_stripped():
    """Regression: strip_pruning reuses layer objects, so BatchNormalization had several inbound
    nodes and was reported unsupported (its Conv2D fold was not seen)."""
    from pipeline.zoo import small_cnn

    m = small_cnn((8, 8, 1), 10, filters=(4, 8), dense=16)
    stripped = M.strip_pruning(M.apply_pruning(m, M.plan_schedule(10, 0.5)))
    assert Q.unsupported_layers(m) == [] and Q.unsupported_layers(stripped) == []
    assert len(stripped.get_layer("bn0")._inbound_nodes) > 1  # the situation being covered


def test_qat_model_keeps_its_softmax_for_the_loss():
    """Regression: QAT wraps the classifier's softmax in a QuantizeAwareActivation; the loss
    must still see probabilities, not logits (a wrong from_logits cost a point of accuracy)."""
    from pipeline.training import FitConfig, compile_classifier
    from pipeline.zoo import small_cnn

    model, _ = Q.quantize_aware(small_cnn((8, 8, 1), 10, filters=(4,), dense=16))
    compile_classifier(model, FitConfig())  # what pipeline.training.fit compiles with
    assert model.loss.get_config()["from_logits"] is False


def test_qat_starts_where_the_float_model_is():
    """Regression: TF-MOT starts the input's range at [0, 0], the weights' at [-6, 6] and a
    softmax's logits' at [-6, 6], and only a training step sets them. Before fine-tuning the QAT
    model saw all-zero inputs (chance accuracy), so the best-validation-epoch protocol had no
    starting point to keep: digits_int8's QAT ended 0.6 to 1.1 points under float on 3 seeds of 3."""
    from pipeline.zoo import small_cnn

    keras.utils.set_random_seed(0)
    m = small_cnn((8, 8, 1), 10, filters=(4,), dense=16, dropout=0.0)
    w, b = m.get_layer("classifier").get_weights()
    m.get_layer("classifier").set_weights([w * 40, b])  # logits beyond TF-MOT's [-6, 6]
    x = np.random.default_rng(0).random((64, 8, 8, 1)).astype(np.float32)
    logits = keras.Model(m.inputs, m.get_layer("fc").output).predict(x, verbose=0) @ (w * 40) + b
    assert np.abs(logits).max() > 12
    qat, _ = Q.quantize_aware(m, calibration=x)
    ranges = {v.name.split("/")[-1]: v.numpy() for v in qat.get_layer("quant_classifier").weights}
    assert ranges["pre_activation_min:0"] == pytest.approx(min(0, logits.min()), rel=1e-5)
    assert ranges["pre_activation_max:0"] == pytest.approx(max(0, logits.max()), rel=1e-5)
    assert ranges["kernel_max:0"] == pytest.approx(np.abs(w * 40).max(), rel=1e-5)
    f, q = m.predict(x, verbose=0), qat.predict(x, verbose=0)
    assert np.mean(f.argmax(-1) == q.argmax(-1)) >= 0.95 and np.abs(f - q).max() < 0.1


def test_layers_tfmot_adds_do_not_take_names_the_model_already_has():
    """Regression: TF-MOT splits a SeparableConv2D into a DepthwiseConv2D and a Conv2D that
    tf_keras names from its own per-process counters ('depthwise_conv2d', 'conv2d'). A model
    loaded from a file (a Keras 3 model rebuilt in tf_keras, a run's model.keras in a new
    process) may already hold those names: TF-MOT wires its graph by name, so the split's
    pointwise read the model's own DepthwiseConv2D instead (the Keras 3 `residual` test model's
    QAT model was at 0.16 accuracy before any training, from 0.93)."""
    keras.backend.clear_session()  # a new process: tf_keras's name counters start from zero
    i = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(i)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise_conv2d")(x)
    y = keras.layers.Conv2D(8, 1, name="conv2d")(y)  # the same shapes as the split's: no error
    z = keras.layers.SeparableConv2D(8, 3, padding="same", name="sep")(x)
    c = keras.layers.Concatenate(name="cat")([y, z])
    o = keras.layers.Dense(10, name="classifier")(keras.layers.GlobalAveragePooling2D(name="gap")(c))
    m = keras.Model(i, o)
    qat, _ = Q.quantize_aware(m)
    names = [layer.name for layer in qat.layers]
    assert len(names) == len(set(names)) == len(m.layers) + 2, names  # the split, quantize_layer
    # each branch into the Concatenate: Conv2D <- DepthwiseConv2D <- stem, with its own weights
    inbound = {e["name"]: [n[0] for n in e["inbound_nodes"][0]]
               for e in qat.get_config()["layers"] if e["inbound_nodes"]}
    inner = {layer.name: getattr(layer, "layer", layer) for layer in qat.layers}
    sep = m.get_layer("sep")
    kernels = []

    def weight(layer, short):
        return next(v.numpy() for v in layer.weights if v.name.endswith(f"/{short}:0"))

    for pw in inbound["quant_cat"]:
        dw = inbound[pw][0]
        assert (type(inner[pw]).__name__, type(inner[dw]).__name__, inbound[dw]) == (
            "Conv2D", "DepthwiseConv2D", ["quant_stem"])
        kernels.append((weight(qat.get_layer(dw), "depthwise_kernel"),
                        weight(qat.get_layer(pw), "kernel")))
    np.testing.assert_array_equal(kernels[0][0], m.get_layer("depthwise_conv2d").depthwise_kernel)
    np.testing.assert_array_equal(kernels[0][1], m.get_layer("conv2d").kernel)
    np.testing.assert_array_equal(kernels[1][0], sep.depthwise_kernel)
    np.testing.assert_array_equal(kernels[1][1], sep.pointwise_kernel)


def _nested_models():
    """The transfer-learning shapes: a functional base inside a Sequential, and a Sequential
    block (called twice: shared) inside a functional model with two inputs."""
    keras.utils.set_random_seed(0)
    i = keras.Input((8, 8, 1), name="base_in")
    b = keras.layers.Conv2D(8, 3, use_bias=False, name="base_conv")(i)
    b = keras.layers.BatchNormalization(name="base_bn")(b)
    b = keras.layers.ReLU(name="base_relu")(b)
    b = keras.layers.SeparableConv2D(8, 3, padding="same", name="base_sep")(b)
    base = keras.Model(i, keras.layers.Add(name="base_add")([b, b]), name="base")
    seq = keras.Sequential([keras.Input((8, 8, 1)), base, keras.layers.GlobalAveragePooling2D(),
                            keras.layers.Dense(10, activation="softmax", name="head")],
                           name="transfer")
    block = keras.Sequential([keras.Input((16,)), keras.layers.Dense(16, activation="relu",
                                                                      name="block_fc")],
                             name="block")
    a, c = keras.Input((16,), name="a"), keras.Input((16,), name="c")
    s = keras.layers.Concatenate(name="cat")([block(a), block(c)])
    two = keras.Model([a, c], keras.layers.Dense(3, name="out")(s), name="two_inputs")
    return seq, two


def test_flatten_nested_keeps_layers_weights_and_outputs():
    from pipeline.compress._keras import flatten_nested

    seq, two = _nested_models()
    rng = np.random.default_rng(0)
    x = rng.random((16, 8, 8, 1), dtype=np.float32)
    flat = flatten_nested(seq)
    assert not any(isinstance(layer, keras.Model) for layer in flat.layers)
    names = [layer.name for layer in flat.layers]  # [input, ..., global pooling, head]
    assert len(names) == 8 and names[1:6] + names[7:] == [
        "base_conv", "base_bn", "base_relu", "base_sep", "base_add", "head"]
    assert flat.layers[1] is seq.get_layer("base").get_layer("base_conv")  # the same objects
    np.testing.assert_array_equal(flat.predict(x, verbose=0), seq.predict(x, verbose=0))
    ab = [rng.random((4, 16), dtype=np.float32) for _ in range(2)]
    flat2 = flatten_nested(two)
    assert flat2.input_names == ["a", "c"] and flat2.output_names == ["out"]
    np.testing.assert_array_equal(flat2.predict(ab, verbose=0), two.predict(ab, verbose=0))
    assert flatten_nested(flat) is flat  # nothing nested: the model itself


def test_qat_runs_on_a_nested_model():
    """TF-MOT refuses a model nested in another; QAT flattens it first."""
    seq, _ = _nested_models()
    x = np.random.default_rng(0).random((64, 8, 8, 1), dtype=np.float32)
    assert Q.unsupported_layers(seq) == []  # the nested model's layers, each supported
    qat, info = Q.quantize_aware(seq, calibration=x)
    assert info.float_layers == []
    assert not any(isinstance(layer, keras.Model) for layer in qat.layers)
    assert {"quant_base_conv", "quant_base_add", "quant_head"} <= {l.name for l in qat.layers}
    f, q = seq.predict(x, verbose=0), qat.predict(x, verbose=0)
    assert np.mean(f.argmax(-1) == q.argmax(-1)) >= 0.9, (f.argmax(-1), q.argmax(-1))


def test_qat_refuses_an_output_straight_out_of_a_nested_model():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="inner_fc")],
                             name="inner")
    i = keras.Input((4,))
    model = keras.Model(i, inner(keras.layers.Dense(4, name="pre")(i)), name="outer")
    with pytest.raises(UserError) as e:
        Q.quantize_aware(model)
    assert str(e.value) == (
        "output 'inner' of 'outer' is a nested model's own output; flattening the nested model "
        "would rename it: add a layer after it (e.g. the classifier) inside 'outer'")

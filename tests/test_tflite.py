import numpy as np
import pytest

from pipeline import tflite
from pipeline.data import load_dataset
from pipeline.errors import ExportError, UserError
from tests.helpers import tiny_model


@pytest.fixture(scope="module")
def model_and_data():
    ds = load_dataset({"name": "digits", "input_size": [8, 8], "calibration_size": 32})
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    m = tiny_model()
    m.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    m.fit(ds.x_train, ds.y_train, epochs=4, batch_size=64, verbose=0)
    return m, ds


@pytest.mark.parametrize("mode", ["fp32", "dynamic", "float16", "int8", "int16x8"])
def test_each_mode_converts_and_validates(model_and_data, tmp_path, mode):
    m, ds = model_and_data
    metrics = tflite.export(m, tmp_path / f"{mode}.tflite", mode, ds)
    # a barely trained tiny model has near ties, which float16 rounding may flip
    assert metrics["argmax_agreement"] >= {"fp32": 0.999, "float16": 0.98}.get(mode, 0.9)
    assert metrics["max_abs_diff"] < {"fp32": 1e-5, "float16": 1e-2}.get(mode, 0.2)
    assert metrics["size_bytes"] == (tmp_path / f"{mode}.tflite").stat().st_size
    assert "CONV_2D" in metrics["ops"] and "FULLY_CONNECTED" in metrics["ops"]
    if mode == "int8":
        from edge_runner.backends import load

        r = load(tmp_path / "int8.tflite")
        assert r.input_details[0]["dtype"] == np.int8 and r.output_details[0]["dtype"] == np.int8
        assert "QUANTIZE" not in metrics["ops"] and "DEQUANTIZE" not in metrics["ops"]


def test_int8_without_calibration_data(model_and_data):
    m, _ = model_and_data
    with pytest.raises(UserError, match=r"^int8 export needs calibration data: give the recipe a "
                                        r"dataset, or --data on the command line$"):
        tflite.convert(m, "int8", None)


def test_unknown_mode_suggests():
    with pytest.raises(UserError, match=r"^unknown TFLite mode 'flaot16' \(did you mean "
                                        r"\"float16\"\?\); expected one of: fp32, dynamic, "
                                        r"float16, int8, int16x8$"):
        tflite.check_mode("flaot16")


def test_not_a_tflite_file(tmp_path):
    p = tmp_path / "x.tflite"
    p.write_bytes(b"\0" * 64)
    with pytest.raises(UserError, match=r"^\S+/x\.tflite is not a TFLite file \(no TFL3 "
                                        r"identifier\); give a \.tflite made by `edgepipe export`$"):
        tflite.check_file(p)
    with pytest.raises(UserError, match=r"^TFLite file not found: \S+/none\.tflite$"):
        tflite.check_file(tmp_path / "none.tflite")


def test_converter_failure_is_a_typed_error():
    import tensorflow as tf
    import tf_keras as keras

    inp = keras.Input((4,))
    out = keras.layers.Lambda(lambda t: tf.numpy_function(np.sin, [t], tf.float32))(inp)
    with pytest.raises(ExportError, match=r"^TFLite conversion to fp32 failed: Could not translate "
                       r"MLIR to FlatBuffer\.[^\n]*'tf\.PyFunc' op is neither a custom op nor a "
                       r"flex op[^\n]*$"):
        tflite.convert(keras.Model(inp, out), "fp32")


def test_a_file_the_interpreter_refuses_is_a_typed_error_and_not_left_on_disk(model_and_data, tmp_path):
    """int8 + sparse encoding converts, but LiteRT's XNNPACK refuses to load it (measured)."""
    m, ds = model_and_data
    pruned = __import__("tf_keras").models.clone_model(m)
    pruned.set_weights([np.where(np.abs(w) < np.quantile(np.abs(w), 0.8), 0, w) if w.ndim > 1 else w
                        for w in m.get_weights()])
    with pytest.raises(ExportError, match=r"^the int8 sparse .tflite does not run in the host "
                                          r"interpreter: .*export this mode without sparse$"):
        tflite.export(pruned, tmp_path / "s.tflite", "int8", ds, sparse=True)
    assert list(tmp_path.iterdir()) == []

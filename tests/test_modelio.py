"""Model files in: Keras 3 files rebuilt in tf_keras, safe loading in every format, one-line errors.

The Keras 3 models are built and saved in a process of their own (tests/keras3_models.py, without
TF_USE_LEGACY_KERAS), exactly as a user's Keras 3 would.
"""

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipeline import modelio, models
from pipeline.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
FACTORY = ROOT / "tests" / "keras3_models.py"


def keras3_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["PYTHONPATH"] = ""  # the factory must not import pipeline (it would set the variable)
    return env


def make_keras3(folder: Path, names: str, fit: int = 0, **env) -> None:
    """Run the Keras 3 factory in a separate process; digits splits as edgepipe makes them."""
    from pipeline.data import DatasetSpec, load_dataset

    for size, ch in ((8, 1), (32, 3)):
        if not (folder / f"digits{size}.npz").exists():
            ds = load_dataset(DatasetSpec(name="digits", input_size=(size, size), channels=ch))
            np.savez(folder / f"digits{size}.npz", x_train=ds.x_train, y_train=ds.y_train,
                     x_test=ds.x_test, y_test=ds.y_test)
    cmd = [sys.executable, str(FACTORY), str(folder), names] + (["--fit", str(fit)] if fit else [])
    proc = subprocess.run(cmd, env={**keras3_env(), **env}, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def k3(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("keras3")
    marker = folder / "MARKER"
    make_keras3(folder, "seq_cnn,residual,logits,multi_io,lambda,mixed", MARKER=str(marker))
    marker.unlink(missing_ok=True)  # building the Lambda model ran it once, in Keras 3's process
    return folder


def reference(folder: Path, name: str):
    info = json.loads((folder / f"{name}.json").read_text())
    return np.asarray(info["x"], dtype=np.float32), np.asarray(info["y"], dtype=np.float32)


@pytest.mark.parametrize("name", ["seq_cnn", "residual", "logits"])
@pytest.mark.parametrize("ext", [".keras", ".h5"])
def test_keras3_file_is_rebuilt_in_tf_keras_with_the_same_outputs(k3, name, ext):
    import tf_keras

    model = models.load_model(k3 / f"{name}{ext}")
    assert isinstance(model, tf_keras.Model)
    x, y = reference(k3, name)
    assert np.max(np.abs(model.predict(x, verbose=0) - y)) <= 1e-5
    diff = modelio.check(model, x)
    assert diff is not None and diff <= 1e-5
    assert modelio.bridge_of(model).max_abs_diff == diff


def test_several_inputs_outputs_and_a_shared_layer(k3):
    from pipeline.modelio.rebuild import max_difference

    model = models.load_model(k3 / "multi_io.keras")
    assert [tuple(s) for s in model.output_shape] == [(None, 10), (None, 1)]
    assert [i.name for i in model.inputs] == ["a", "b"]
    shared = model.get_layer("shared")
    assert len(shared.inbound_nodes) == 2  # one tf_keras layer, called by both branches
    rng = np.random.default_rng(0)
    x = [rng.random((4, 8, 8, 1), dtype=np.float32), rng.random((4, 256), dtype=np.float32)]
    assert max_difference(modelio.bridge_of(model).keras3_model, model, x) <= 1e-5


def test_mixed_precision_is_refused_by_layer(k3):
    with pytest.raises(UserError) as e:
        models.load_model(k3 / "mixed.keras")
    assert str(e.value) == (
        "layer 'flat': dtype policy 'mixed_float16' (mixed precision) has no faithful tf_keras "
        "equivalent here; set keras.config.set_dtype_policy('float32'), rebuild and save the "
        "model in float32, then retry")


def _refusal(layer_name: str, why: str) -> str:
    return (f"layer {layer_name!r}: {why}; edgepipe cannot convert this Keras 3 model faithfully "
            f"to tf_keras (replace the layer with a built-in one, or give edgepipe a tf_keras "
            f"model or a SavedModel for export only)")


def test_what_has_no_tf_keras_equivalent_is_named():
    """Keras 3 objects built in this process (`import keras` is Keras 3 next to tf_keras)."""
    import keras

    from pipeline.modelio.rebuild import rebuild

    class Scale(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    inp = keras.Input((4,))
    cases = [
        (keras.Model(inp, Scale(name="scale")(inp)), _refusal("scale", "Scale is a custom class")),
        (keras.Model(inp, keras.layers.Dense(2, activation="log_softmax", name="d")(inp)),
         _refusal("d", "activation 'log_softmax' has no tf_keras equivalent")),
        (keras.Model(inp, keras.layers.Dense(2, lora_rank=2, name="lora")(inp)),
         _refusal("lora", "Dense argument lora_rank=2 has no tf_keras equivalent")),
        (keras.Model(inp, keras.layers.UnitNormalization(name="un")(inp)),
         _refusal("un", "UnitNormalization is a Keras 3 layer with no faithful tf_keras "
                        "equivalent")),
        (keras.Model(inp, keras.ops.sqrt(inp)),
         _refusal("sqrt", "the operation keras.src.ops.numpy.Sqrt has no tf_keras layer "
                          "equivalent")),
    ]
    for k3_model, message in cases:
        with pytest.raises(UserError) as e:
            rebuild(k3_model)
        assert str(e.value) == message


def test_keras3_activations_are_computed_as_keras3_defines_them():
    """tf_keras lacks relu6/hard_silu and its hard_sigmoid is 0.2x+0.5: each is rebuilt from
    layers computing the Keras 3 formula."""
    import keras

    from pipeline.modelio.rebuild import max_difference, rebuild

    x = np.linspace(-8, 8, 64, dtype=np.float32).reshape(4, 16)
    for act in ("relu6", "hard_sigmoid", "hard_silu", "hard_swish", "swish", "silu", "gelu",
                "leaky_relu", "relu", "elu", "selu", "softplus", "mish"):
        inp = keras.Input((16,))
        k3_model = keras.Model(inp, keras.layers.Activation(act)(keras.layers.Dense(16)(inp)))
        assert max_difference(k3_model, rebuild(k3_model), x) <= 1e-6, act


# ----- safety: a model that writes a marker file when its Python code runs ----------------------
def _marker_lambda(marker: Path):
    return eval(f"lambda x: (open({str(marker)!r}, 'w').close(), x)[1]")  # noqa: S307 (test)


def _tf_keras_lambda_files(folder: Path, marker: Path) -> dict:
    import tf_keras as keras

    inp = keras.Input((8, 8, 1))
    out = keras.layers.Dense(10)(keras.layers.Flatten()(
        keras.layers.Lambda(_marker_lambda(marker), name="writes_marker")(inp)))
    m = keras.Model(inp, out)
    files = {"h5": folder / "tfk.h5", "keras": folder / "tfk.keras", "savedmodel": folder / "tfk_sm",
             "export": folder / "tfk_export"}
    m.save(files["h5"])
    m.save(files["keras"])
    m.save(files["savedmodel"], save_format="tf")
    m.export(str(files["export"]))
    return files


def test_python_code_never_runs_without_unsafe_in_any_format(k3, tmp_path):
    marker = tmp_path / "MARKER"
    files = _tf_keras_lambda_files(tmp_path, marker)
    marker.unlink(missing_ok=True)  # building and tracing ran the lambda here; loading must not
    for path in (k3 / "lambda.keras", k3 / "lambda.h5", files["h5"], files["keras"],
                 files["savedmodel"]):
        with pytest.raises(UserError) as e:
            models.load_model(path)
        assert str(e.value) == (
            f"{path} carries Python code (Lambda layer 'writes_marker') that would run when it is "
            f"loaded, and is refused; load it only if you trust it: pass --unsafe (recipe: "
            f"unsafe: true)")
        assert not marker.exists() and not (k3 / "MARKER").exists(), path
    graph = models.load_model(files["export"])  # graph only: no Python from the file runs
    assert graph.predict(np.zeros((2, 8, 8, 1), np.float32)).shape == (2, 10)
    assert not marker.exists()
    models.load_model(files["h5"], unsafe=True).predict(np.zeros((1, 8, 8, 1)), verbose=0)
    assert marker.exists()  # the control: this model does run its code when trusted


# ----- one line for every bad file ---------------------------------------------------------------
def test_every_loader_failure_is_one_line(k3, tmp_path):
    cases = []
    trunc = tmp_path / "trunc.keras"
    trunc.write_bytes((k3 / "seq_cnn.keras").read_bytes()[:300])
    cases.append((trunc, f"cannot load model {trunc}: not a valid .keras archive (truncated or "
                         f"not a zip file: File is not a zip file)"))
    trunc_h5 = tmp_path / "trunc.h5"
    trunc_h5.write_bytes((k3 / "seq_cnn.h5").read_bytes()[:2000])
    cases.append((trunc_h5, None))
    text_h5 = tmp_path / "text.h5"
    text_h5.write_text("hello")
    cases.append((text_h5, None))
    folder = tmp_path / "folder"
    folder.mkdir()
    cases.append((folder, f"{folder} is a folder but not a SavedModel (no saved_model.pb)"))
    txt = tmp_path / "m.txt"
    txt.write_text("x")
    cases.append((txt, f"cannot load {txt}: expected a .keras or .h5 file or a SavedModel folder"))
    unknown = tmp_path / "unknown.keras"  # a Keras 3 file naming a class nobody has
    with zipfile.ZipFile(k3 / "seq_cnn.keras") as src, zipfile.ZipFile(unknown, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            if item == "config.json":
                data = data.replace(b'"Flatten"', b'"Flattenish"')
            dst.writestr(item, data)
    cases.append((unknown, None))
    for path, message in cases:
        with pytest.raises(UserError) as e:
            models.load_model(path)
        text = str(e.value)
        assert "\n" not in text and str(path) in text
        if message is not None:
            assert text == message
    with pytest.raises(UserError) as e:
        models.load_model(text_h5)
    assert re.fullmatch(rf"cannot load model {re.escape(str(text_h5))}: not a readable HDF5 file "
                        r"\([^\n]+\)", str(e.value)), str(e.value)
    with pytest.raises(UserError) as e:
        models.load_model(unknown)
    assert re.fullmatch(rf"cannot load Keras 3 model {re.escape(str(unknown))} with Keras "
                        r"3\.\d+\.\d+: ValueError: Could not deserialize "
                        r"'keras\.layers\.Flattenish' because it is not a KerasSaveable subclass",
                        str(e.value)), str(e.value)


def test_cli_loader_failure_is_exit_2_and_one_line(k3, tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import main

    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    r = CliRunner().invoke(main, ["export", str(bad)])
    assert r.exit_code == 2
    assert r.output.strip() == (f"error: cannot load model {bad}: not a valid .keras archive "
                                f"(truncated or not a zip file: File is not a zip file)")


# ----- SavedModel without a layer graph ----------------------------------------------------------
def test_graph_only_savedmodel_exports_and_layer_stages_refuse(k3, tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import main

    sm = k3 / "seq_cnn_export"
    graph = models.load_model(sm)
    x, y = reference(k3, "seq_cnn")
    assert np.max(np.abs(graph.predict(x) - y)) <= 1e-5
    run = CliRunner().invoke
    out = tmp_path / "m_int8.tflite"
    r = run(main, ["export", str(sm), "--mode", "int8", "--data", "digits", "--out", str(out),
                   "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["quantization"] == "int8" and out.is_file()
    r = run(main, ["prune", str(sm), "--method", "channels", "--ratio", "0.5",
                   "--out", str(tmp_path / "p.keras")])
    assert r.exit_code == 2
    assert r.output.strip() == (
        f"error: prune needs a Keras model with layers (.keras, .h5, or a SavedModel "
        f"saved by tf_keras); {sm} is a SavedModel without a layer graph (model.export / "
        f"tf.saved_model.save), which supports only export, post-training quantization, golden, "
        f"verify and profile")
    assert not (tmp_path / "p.keras").exists()


def test_graph_only_savedmodel_in_a_recipe(k3, tmp_path):
    """export and PTQ work from the graph; a stage that changes layers refuses, before it runs."""
    from pipeline import engine, recipe

    head = (f"name: g\ndataset: {{name: digits, input_size: [8, 8], channels: 1}}\n"
            f"model: {{path: {k3 / 'seq_cnn_export'}}}\nstages:\n")
    r = recipe.parse(head + "  - export: {modes: [fp32]}\n  - quantize: {mode: ptq_dynamic}\n")
    records = engine.run(r, tmp_path / "run")
    assert [a.format for rec in records for a in rec.artifacts] == ["tflite", "tflite"]
    r = recipe.parse(head + "  - train: {epochs: 1}\n")
    with pytest.raises(UserError) as e:
        engine.run(r, tmp_path / "run2")
    assert str(e.value) == (
        f"the train stage needs a Keras model with layers (.keras, .h5, or a SavedModel saved by "
        f"tf_keras); {k3 / 'seq_cnn_export'} is a SavedModel without a layer graph (model.export "
        f"/ tf.saved_model.save), which supports only export, post-training quantization, golden, "
        f"verify and profile")
    assert not list((tmp_path / "run2").glob("0*"))

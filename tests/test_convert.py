"""Keras 3 files out (`edgepipe convert`, the Keras 3 copy of every Keras model written), ad-hoc
outputs that never overwrite silently, recipe paths relative to the recipe file."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline import models
from pipeline.cli import main
from pipeline.errors import UserError
from tests.helpers import tiny_model
from tests.test_modelio import FACTORY, keras3_env, make_keras3


@pytest.fixture(scope="module")
def k3(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("keras3_convert")
    make_keras3(folder, "seq_cnn")
    return folder


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def keras3_outputs(path: Path, ref: Path) -> float:
    proc = subprocess.run([sys.executable, str(FACTORY), "--check", str(path), str(ref)],
                          env=keras3_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])["max_abs_diff"]


def test_convert_both_ways_and_back_into_keras3(k3, tmp_path):
    import tf_keras

    tfk = tmp_path / "m_tf_keras.keras"
    r = run("convert", k3 / "seq_cnn.keras", "--to", "tf_keras", "--out", tfk)
    assert r.exit_code == 0, r.output
    assert r.output.strip().endswith("on 16 random inputs in [0, 1)")
    ref = json.loads((k3 / "seq_cnn.json").read_text())
    x = np.asarray(ref["x"], np.float32)
    plain = tf_keras.models.load_model(tfk, compile=False)  # a tf_keras file, no bridge needed
    assert np.max(np.abs(plain.predict(x, verbose=0) - np.asarray(ref["y"]))) <= 1e-5
    back = tmp_path / "m_keras3.keras"
    r = run("convert", tfk, "--to", "keras3", "--out", back, "--data", "digits")
    assert r.exit_code == 0, r.output
    assert keras3_outputs(back, k3 / "seq_cnn.json") <= 1e-5
    r = run("convert", tfk, "--to", "keras3", "--out", back)
    assert r.exit_code == 2
    assert r.output.strip() == (f"error: {back} exists; give --out for another file, or --force "
                                f"to overwrite it")
    r = run("convert", tfk, "--to", "keras3", "--out", back, "--force")
    assert r.exit_code == 0, r.output


def test_keras3_copy_of_a_tf_keras_model_with_tf_ops(tmp_path):
    """tf_keras' own MobileNetV3 computes hard-swish with `x + 3.0` and `x * (1/6)` (TFOpLambda):
    they become Keras 3 Rescaling layers, and "/" in its layer names becomes "_"."""
    import tf_keras

    from pipeline.modelio.save import save_keras3

    model = tf_keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None,
                                                   classes=10, alpha=0.75, minimalistic=False)
    x = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32) * 255
    out = tmp_path / "mnv3_keras3.keras"
    assert save_keras3(model, out, x) <= 1e-5
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"x": x.tolist(), "y": model.predict(x, verbose=0).tolist()}))
    assert keras3_outputs(out, ref) <= 1e-5


def test_what_has_no_keras3_twin_is_named_and_not_written(tmp_path):
    import tf_keras

    from pipeline.modelio.save import write_keras3_copy

    inp = tf_keras.Input((4,))
    model = tf_keras.Model(inp, tf_keras.layers.Dense(2, activation="hard_sigmoid",
                                                      name="gate")(inp))
    m = write_keras3_copy(model, tmp_path / "m.keras", np.zeros((2, 4), np.float32))
    assert m == {"keras3_file": None, "keras3_error": (
        "layer 'gate': activation 'hard_sigmoid': tf_keras' hard_sigmoid is 0.2x+0.5, Keras 3's "
        "relu6(x+3)/6; the model cannot be written as a Keras 3 file (its tf_keras .keras and "
        ".tflite files are unaffected)")}
    assert list(tmp_path.iterdir()) == []


def test_ad_hoc_outputs_are_never_overwritten_silently(tmp_path, monkeypatch):
    """m.keras and m.h5 in one folder both default to m_int8.tflite: the second is refused."""
    monkeypatch.chdir(tmp_path)
    model = tiny_model()
    models.save_model(model, tmp_path / "m.keras")
    model.save(tmp_path / "m.h5")
    r = run("export", "m.keras", "--mode", "fp32", "--data", "digits")
    assert r.exit_code == 0, r.output
    before = (tmp_path / "m_fp32.tflite").read_bytes()
    r = run("export", "m.h5", "--mode", "fp32", "--data", "digits")
    assert r.exit_code == 2
    assert r.output.strip() == ("error: m_fp32.tflite exists; give --out for another file, or "
                                "--force to overwrite it")
    assert (tmp_path / "m_fp32.tflite").read_bytes() == before
    for cmd in ("quantize", "prune", "golden", "convert", "distill"):
        assert "--force" in run(cmd, "--help").output, cmd


def test_recipe_paths_are_relative_to_the_recipe_file(tmp_path, monkeypatch):
    from pipeline import recipe

    project = tmp_path / "project"
    project.mkdir()
    (project / "recipe.yaml").write_text(
        "name: x\ndataset: {name: npz, path: data/d.npz}\nmodel: {path: models/m.keras}\n"
        "devices: devices.yaml\n"
        "stages:\n  - distill: {student: small_cnn, teacher: models/t.keras}\n  - export\n")
    monkeypatch.chdir(tmp_path)
    r = recipe.load("project/recipe.yaml")
    assert r.model.path == "project/models/m.keras"
    assert r.dataset.path == "project/data/d.npz"
    assert r.devices == "project/devices.yaml"
    assert r.stages[0].config.teacher == "project/models/t.keras"
    assert r.stages[0].config.student.path is None
    assert "path: null" not in r.to_yaml()
    with pytest.raises(UserError) as e:
        models.load_model(r.model.path)
    assert str(e.value) == "model file not found: project/models/m.keras"


def test_keras3_copy_of_a_functional_model_nesting_another(tmp_path):
    """tf_keras numbers a nested functional model's nodes from 1 in its parent's config (node 0 is
    its own construction): the nested model's output was never found (regression)."""
    import tf_keras

    from pipeline.modelio.save import save_keras3

    i = tf_keras.Input((8, 8, 1))
    inner = tf_keras.Model(i, tf_keras.layers.Conv2D(4, 3)(i), name="inner")
    inp = tf_keras.Input((8, 8, 1))
    out = tf_keras.layers.Dense(3)(tf_keras.layers.GlobalAveragePooling2D()(inner(inp)))
    x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
    assert save_keras3(tf_keras.Model(inp, out), tmp_path / "n.keras", x) <= 1e-5

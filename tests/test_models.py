import numpy as np
import pytest

from pipeline import models
from pipeline.errors import UserError
from tests.helpers import tiny_model


def test_spec_shorthands():
    assert models.ModelSpec.model_validate("small_cnn").zoo == "small_cnn"
    assert models.ModelSpec.model_validate("keras.applications.MobileNetV2").application == "MobileNetV2"
    assert models.ModelSpec.model_validate("m/model.keras").path == "m/model.keras"
    with pytest.raises(ValueError) as e:
        models.ModelSpec(zoo="small_cnn", path="x.keras")
    assert [x["msg"] for x in e.value.errors()] == [
        "Value error, give exactly one of zoo, application, path; got ['zoo', 'path']"]


def test_zoo_mobilenet_family_scales_with_width_and_depth():
    small = models.from_spec({"zoo": "mobilenet", "options": {"width": 0.5, "blocks": [1, 1, 1]}},
                             (32, 32, 1), 10)
    big = models.from_spec({"zoo": "mobilenet", "options": {"width": 1.0, "blocks": [1, 2, 2],
                                                            "kernel": 5}}, (32, 32, 1), 10)
    assert small.count_params() < big.count_params()
    assert small.output_shape == (None, 10)
    with pytest.raises(UserError, match=r"^zoo model mobilenet: Expected width in \(0, 4\]\. "
                                        r"Received: width=0$"):
        models.from_spec({"zoo": "mobilenet", "options": {"width": 0}}, (32, 32, 1), 10)


def test_keras_applications_without_weights():
    m = models.from_spec("keras.applications.MobileNetV2", (32, 32, 3), 7)
    assert m.output_shape == (None, 7)
    with pytest.raises(UserError, match=r"^unknown keras\.applications model 'MobileNetV3' "
                                        r"\(did you mean \"MobileNetV2\"\?\)$"):
        models.from_spec({"application": "MobileNetV3"}, (32, 32, 3), 7)


def test_save_load_roundtrip_and_describe(tmp_path):
    m = tiny_model()
    m.compile("adam", "sparse_categorical_crossentropy")
    p = tmp_path / "m.keras"
    models.save_model(m, p)
    back = models.load_model(p)
    x = np.random.default_rng(0).random((4, 8, 8, 1), np.float32)
    np.testing.assert_allclose(back.predict(x, verbose=0), m.predict(x, verbose=0), atol=1e-6)
    d = models.describe(back, p)
    assert d["params"] == m.count_params() and d["size_bytes"] == p.stat().st_size
    assert [x.name for x in tmp_path.iterdir()] == ["m.keras"]


def test_load_errors(tmp_path):
    with pytest.raises(UserError, match="^model file not found: .*nope.keras$"):
        models.load_model(tmp_path / "nope.keras")
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(UserError, match=r"^cannot load model .*bad.keras: not a valid .keras "
                                        r"archive \(truncated or not a zip file: File is not a "
                                        r"zip file\)$"):
        models.load_model(bad)
    txt = tmp_path / "m.txt"
    txt.write_text("x")
    with pytest.raises(UserError, match=r"^cannot load \S+/m\.txt: expected a \.keras or \.h5 "
                                        r"file or a SavedModel folder$"):
        models.load_model(txt)


def test_lambda_model_is_refused_in_safe_mode(tmp_path):
    import tf_keras as keras

    inp = keras.Input((4,))
    out = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inp)
    p = tmp_path / "lam.keras"
    keras.Model(inp, out).save(p)
    with pytest.raises(UserError) as e:
        models.load_model(p)
    assert str(e.value) == (f"{p} carries Python code (Lambda layer 'double') that would run when "
                            f"it is loaded, and is refused; load it only if you trust it: pass "
                            f"--unsafe (recipe: unsafe: true)")
    assert models.load_model(p, unsafe=True).predict(np.ones((1, 4)), verbose=0)[0, 0] == 2.0


def test_input_shape_mismatch_is_one_line():
    with pytest.raises(UserError, match=r"^dataset samples have shape \[16, 16, 1\] but the model "
                                        r"expects \[8, 8, 1\]; set dataset\.input_size/channels to "
                                        r"match, or use a model built for this data$"):
        models.check_input(tiny_model(), (16, 16, 1))


def test_output_narrower_than_the_classes_is_one_line():
    from types import SimpleNamespace

    from pipeline import tasks

    def ds(n):
        return SimpleNamespace(x_train=np.zeros((n, 8, 8, 1), np.float32), y_train=np.arange(n),
                               num_classes=n, multi_input=False, multi_output=False,
                               input_shape=(8, 8, 1), task=None)

    with pytest.raises(UserError, match=r"^the model output 'classifier' has 5 units but the "
                                        r"dataset has 10 classes; classification needs one softmax "
                                        r"unit per class \(also for 2 classes\): use a model "
                                        r"built for this data, or task: regression$"):
        tasks.bind(None, tiny_model(num_classes=5), ds(10))
    # a 1-unit sigmoid binary model: argmax over one output is always class 0
    with pytest.raises(UserError, match=r"^the model output 'classifier' has 1 unit but the "
                                        r"dataset has 2 classes; classification needs one softmax "
                                        r"unit per class \(also for 2 classes\): use a model "
                                        r"built for this data, or task: regression$"):
        tasks.bind(None, tiny_model(num_classes=1), ds(2))
    # more outputs than the labels seen (a subset of the model's classes) is fine
    assert tasks.bind(None, tiny_model(num_classes=12), ds(10)).name == "classification"
    assert tasks.bind(None, tiny_model(num_classes=10), ds(10)).name == "classification"


def test_recipe_and_cli_refuse_a_model_with_too_few_outputs(tmp_path):
    """Before training (was TensorFlow's InvalidArgumentError traceback mid-`train`)."""
    from click.testing import CliRunner

    from pipeline import engine, recipe
    from pipeline.cli import main
    from tests.helpers import TINY_RECIPE

    models.save_model(tiny_model(num_classes=5), tmp_path / "m5.keras")
    text = TINY_RECIPE.replace("zoo: small_cnn\n  options: {filters: [4], dense: 16, dropout: 0.0}",
                               f"path: {tmp_path / 'm5.keras'}")
    five = ("the model output 'classifier' has 5 units but the dataset has 10 classes; "
            "classification needs one softmax unit per class (also for 2 classes): use a model "
            "built for this data, or task: regression")
    with pytest.raises(UserError) as e:
        engine.run(recipe.parse(text), tmp_path / "run")
    assert str(e.value) == five
    assert not (tmp_path / "run").exists()  # checked before anything was written
    res = CliRunner().invoke(main, ["export", str(tmp_path / "m5.keras")])
    assert res.exit_code == 2, res.output
    assert res.stderr == f"error: {five}\n"
    assert "Traceback" not in res.stderr

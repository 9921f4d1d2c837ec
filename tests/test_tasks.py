"""Tasks (pipeline/tasks.py): inference, checks, metrics, their direction in the gates, bad input."""

import math
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline import gates, metrics, tasks
from pipeline.data import load_dataset
from pipeline.errors import UserError
from pipeline.recipe import Gates


# ----- metrics and their direction in the gates ---------------------------------------------------
def _task_json(primary, higher):
    return {"primary": primary, "higher_is_better": higher}


@pytest.mark.parametrize("metric", sorted(metrics.DIRECTION) + ["top5_accuracy", "user:fn"])
def test_every_metric_gates_in_its_own_direction(metric):
    higher = metrics.DIRECTION.get(metric, True) if metric != "user:fn" else False
    name = metric.split(":")[-1]
    good, bad = (0.9, 0.5) if higher else (0.5, 0.9)
    g = Gates(min_metric=0.7, max_metric_drop=0.1)
    task = _task_json(name, higher)
    # good value, equal to its Keras model's: no breach
    assert gates.check_metric(g, "f", {name: good, f"keras_{name}": good, "task": task}) == []
    # past min_metric in the metric's direction: a breach naming the direction
    out = gates.check_metric(g, "f", {name: bad, f"keras_{name}": bad, "task": task})
    sign, word = ("<", "higher") if higher else (">", "lower")
    assert out == [f"f: {name} {bad:.4g} {sign} min_metric 0.7 ({word} is better)"]
    # worse than its Keras model by more than max_metric_drop: a breach; better: none
    step = -0.15 if higher else 0.15
    out = gates.check_metric(g, "f", {name: good + step, f"keras_{name}": good, "task": task})
    assert out == [f"f: {name} {good + step:.4g} is 0.15 worse than the Keras model's {good:.4g} "
                   f"(max_metric_drop 0.1, {word} is better)"]
    assert gates.check_metric(g, "f", {name: good - step, f"keras_{name}": good, "task": task}) == []
    if metric != "user:fn":
        assert metrics.direction_of(None, metric) is higher


def test_regression_and_fidelity_metrics():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    m = metrics.regression_metrics(y, y + np.array([0.5, -0.5, 0.5, -0.5]))
    assert m["mae"] == pytest.approx(0.5) and m["rmse"] == pytest.approx(0.5)
    assert m["r2"] == pytest.approx(1 - 1.0 / 5.0)
    ref = np.array([[3.0, 4.0], [1.0, 0.0]])
    f = metrics.fidelity_metrics(ref, ref + 0.1)
    assert f["snr_db"] == pytest.approx(10 * math.log10(26 / 0.04))
    assert f["max_abs_diff"] == pytest.approx(0.1) and "argmax_agreement" not in f
    probs = np.array([[0.2, 0.8], [0.6, 0.4]])
    assert metrics.fidelity_metrics(probs, probs[:, ::-1])["argmax_agreement"] == 0.0
    assert metrics.fidelity_metrics(ref, ref)["snr_db"] == math.inf
    c = metrics.classification_metrics(np.array([1, 1]), np.array([[0.1, 0.5, 0.4], [0.2, 0.3, 0.5]]), 2)
    assert c == {"accuracy": 0.5, "top2_accuracy": 1.0}


# ----- data: x-only npz, several targets ----------------------------------------------------------
def _model(outputs=(("out", 1, None),), inputs=(("input", (4,)),)):
    import tf_keras as keras

    ins = [keras.Input(s, name=n) for n, s in inputs]
    x = keras.layers.Concatenate()(ins) if len(ins) > 1 else ins[0]
    h = keras.layers.Dense(8, activation="relu", name="h")(x)
    outs = [keras.layers.Dense(u, activation=a, name=n)(h) for n, u, a in outputs]
    return keras.Model(ins, outs)


def test_x_only_npz_is_a_fidelity_task(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, x=np.random.default_rng(0).random((40, 4)).astype(np.float32))
    ds = load_dataset({"name": "npz", "path": str(p)})
    assert ds.y_train is None and ds.num_classes is None and ds.input_shape == (4,)
    task = tasks.bind(None, _model(), ds)
    assert task.name == "fidelity" and task.primary == "snr_db" and not task.declared
    with pytest.raises(UserError) as e:
        tasks.bind("regression", _model(), ds)
    assert str(e.value) == ("task regression needs labels but the dataset has none (an x-only "
                            "npz); give y_train (or y_train__<output>), or use task: fidelity")


def test_named_targets_make_a_mixed_task(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "two.npz"
    np.savez(p, x=rng.random((30, 4)), y__cls=rng.integers(0, 3, 30),
             y__val=rng.random(30).astype(np.float32))
    ds = load_dataset({"name": "npz", "path": str(p)})
    model = _model((("cls", 3, "softmax"), ("val", 1, None)))
    task = tasks.bind(None, model, ds)
    assert [(h.output, h.kind) for h in task.heads] == [("cls", "classification"), ("val", "regression")]
    assert task.name == "mixed" and task.primary == "cls/accuracy"
    assert task.columns() == ["cls/accuracy", "val/mae", "val/rmse", "val/r2"]


# ----- bad input: one line each -------------------------------------------------------------------
def _ds(y, x=None):
    x = np.zeros((10, 4), np.float32) if x is None else x
    return SimpleNamespace(x_train=x, y_train=y, num_classes=None, multi_input=isinstance(x, dict),
                           multi_output=isinstance(y, dict), input_shape=(4,), task=None,
                           input_shapes={k: v.shape[1:] for k, v in x.items()}
                           if isinstance(x, dict) else {"": (4,)})


def _error(spec, model, ds) -> str:
    with pytest.raises(UserError) as e:
        tasks.bind(spec, model, ds)
    return str(e.value)


def test_class_labels_for_a_regression_head():
    model = _model((("scores", 10, "softmax"),))
    assert _error("regression", model, _ds(np.arange(10) % 10)) == (
        "y_train has shape [] but the model output 'scores' has shape [10]; a regression target "
        "must have its output's shape; these look like class labels: use task: classification")


def test_float_targets_for_classification():
    model = _model((("scores", 10, "softmax"),))
    assert _error("classification", model, _ds(np.linspace(0, 1, 10, dtype=np.float32))) == (
        "task classification needs integer class labels but y_train holds float32 values; use "
        "task: regression for float targets")


def test_a_target_shape_that_matches_no_output():
    model = _model((("out", 3, None),))
    assert _error(None, model, _ds(np.zeros((10, 2), np.float32))) == (
        "y_train has shape [2] but the model output 'out' has shape [3]; a regression target "
        "must have its output's shape")


def test_missing_named_target():
    model = _model((("cls", 3, "softmax"), ("val", 1, None)))
    assert _error(None, model, _ds({"cls": np.arange(10) % 3})) == (
        "the dataset has no y_train__val for the model output 'val'; give one target per output "
        "(outputs: cls, val), named y_train__<output> in the npz")


def test_one_target_for_two_outputs():
    model = _model((("cls", 3, "softmax"), ("val", 1, None)))
    assert _error(None, model, _ds(np.arange(10) % 3)) == (
        "the model has 2 outputs (cls, val) but the dataset has one target; give one per output "
        "as y_train__<output> in the npz")


def test_missing_named_input():
    model = _model(inputs=(("a", (4,)), ("b", (2,))))
    assert _error(None, model, _ds(np.zeros(10, np.float32), x={"a": np.zeros((10, 4))})) == (
        "the dataset has no x_train__b for the model input 'b'; give one array per input "
        "(inputs: a, b)")


@pytest.fixture
def user_metrics(tmp_path, monkeypatch):
    (tmp_path / "my_metrics.py").write_text(textwrap.dedent("""\
        import numpy as np
        def mape(y_true, y_pred):
            return float(np.mean(np.abs(y_pred.ravel() - y_true) / np.abs(y_true)))
        def boom(y_true, y_pred):
            raise ValueError("shapes differ")
        def words(y_true, y_pred):
            return "good"
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("my_metrics", None)


def test_user_metric_runs_and_bad_ones_are_one_line(user_metrics):
    y, p = np.array([1.0, 2.0]), np.array([[1.5], [2.0]])
    assert metrics.user_metric("my_metrics:mape", y, p) == pytest.approx(0.25)
    with pytest.raises(UserError) as e:
        metrics.user_metric("my_metrics:boom", y, p)
    assert str(e.value) == "task.metric my_metrics:boom raised ValueError: shapes differ; fix the metric"
    with pytest.raises(UserError) as e:
        metrics.user_metric("my_metrics:words", y, p)
    assert str(e.value) == ("task.metric my_metrics:words returned 'good' (str); a metric must "
                            "return one number")
    with pytest.raises(UserError) as e:
        metrics.load_metric("no_such_pkg.mod:fn")
    assert str(e.value) == ("task.metric no_such_pkg.mod:fn: cannot import no_such_pkg.mod "
                            "(ModuleNotFoundError: No module named 'no_such_pkg'); put the module "
                            "on PYTHONPATH or fix it")
    with pytest.raises(UserError) as e:
        metrics.load_metric("my_metrics:mpe")
    assert str(e.value) == 'task.metric my_metrics:mpe: my_metrics has no function mpe (did you mean "mape"?)'


def test_user_metric_becomes_the_primary(user_metrics):
    spec = tasks.TaskSpec(name="regression", metric="my_metrics:mape", higher_is_better=False)
    task = tasks.bind(spec, _model(), _ds(np.arange(1, 11, dtype=np.float32)))
    assert task.primary == "mape" and task.higher_is_better is False
    m = tasks.evaluate(task, [np.arange(1, 11, dtype=np.float32)[:, None] * 1.1],
                       np.arange(1, 11, dtype=np.float32))
    assert m["mape"] == pytest.approx(0.1) and m["mae"] == pytest.approx(0.55)


def test_task_spec_errors():
    with pytest.raises(ValueError) as e:
        tasks.TaskSpec(metric="m:f")
    assert [x["msg"] for x in e.value.errors()] == [
        "Value error, metric m:f needs higher_is_better: true or false"]
    with pytest.raises(ValueError) as e:
        tasks.TaskSpec(metric="m.f", higher_is_better=True)
    assert [x["msg"] for x in e.value.errors()] == [
        "Value error, expected metric as package.module:function. Received: metric='m.f'"]


# ----- stages on several inputs and outputs -------------------------------------------------------
def _two_in_two_out_npz(path, n=120):
    rng = np.random.default_rng(0)
    a = rng.random((n, 4)).astype(np.float32)
    b = rng.random((n, 3)).astype(np.float32)
    cls = (a[:, 0] + b[:, 0] > 1).astype(np.int64)
    val = (a.sum(1) * 10 - b.sum(1)).astype(np.float32)
    np.savez(path, x__a=a, x__b=b, y__cls=cls, y__val=val)


def test_multi_input_multi_output_export_in_every_mode(tmp_path):
    from pipeline import tflite
    from pipeline.training import FitConfig, fit

    _two_in_two_out_npz(tmp_path / "d.npz")
    ds = load_dataset({"name": "npz", "path": str(tmp_path / "d.npz")})
    model = _model((("cls", 2, "softmax"), ("val", 1, None)), inputs=(("a", (4,)), ("b", (3,))))
    task = tasks.bind(None, model, ds)
    assert task.name == "mixed"
    fit(model, ds, FitConfig(epochs=3, batch_size=32, patience=None))
    keras_m = tasks.keras_metrics(model, ds)
    int8 = {}
    for mode, io in (("fp32", None), ("int8", None), ("int8", "int8")):
        m = tflite.export(model, tmp_path / f"m_{mode}_{io}.tflite", mode, ds, io=io)
        assert set(m) >= {"cls/accuracy", "val/mae", "val/rmse", "val/r2", "keras_cls/accuracy",
                          "metric_drop", "max_abs_diff"}
        assert m["keras_val/mae"] == pytest.approx(keras_m["val/mae"])
        if mode == "fp32":
            assert m["max_abs_diff"] < 1e-3 and m["metric_drop"] == 0
        else:  # int8 calibrated on real inputs of both tensors: close to the float model
            assert m["io"] == (io or "float32") and m["val/mae"] < 2 * keras_m["val/mae"] + 0.5
            assert m["io_reason"] == ("given" if io else "default for mixed: the board feeds and "
                                      "reads values in the data's units; int8 I/O gives the same "
                                      "metric but leaves scale and zero point to the caller")
            int8[m["io"]] = m
    # float I/O only moves the (de)quantization into the file: the same outputs
    assert int8["float32"]["val/mae"] == pytest.approx(int8["int8"]["val/mae"], abs=1e-6)
    assert int8["float32"]["cls/accuracy"] == int8["int8"]["cls/accuracy"]


def test_channel_pruning_keeps_every_output_width():
    from pipeline.compress.channels import prune_channels_detailed

    model = _model((("cls", 3, "softmax"), ("val", 2, None)))
    new, _ = prune_channels_detailed(model, 0.5, "l1", 1, None, (), {}, 1)
    assert [tuple(s) for s in tasks.output_shapes(new)] == [(3,), (2,)]
    assert new.get_layer("h").units == 4  # the shared trunk was pruned, the heads were not


# ----- recipes: a regression run end to end; bad input writes nothing ------------------------------
REGRESSION = """\
name: reg
seed: 0
dataset: {name: diabetes}
model: {zoo: mlp, options: {hidden: [16]}}
task: regression
stages:
  - train: {epochs: 30, batch_size: 32, learning_rate: 0.01, patience: null}
  - export: {modes: [fp32, int8]}
  - report
gates: {min_metric: 120.0, max_metric_drop: 10.0}
"""


def test_regression_recipe_reports_mae_and_keeps_float_io(tmp_path):
    import json

    from click.testing import CliRunner

    from pipeline.cli import main
    from tests.helpers import write_recipe

    r = CliRunner().invoke(main, ["run", str(write_recipe(tmp_path, REGRESSION)), "--out",
                                  str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["task"]["describe"] == "regression (declared); judged by mae, lower is better"
    int8 = next(a for a in report["artifacts"] if a["quantization"] == "int8")
    assert int8["io"] == "float32" and int8["mae"] < 120
    md = (tmp_path / "run" / "report.md").read_text()
    assert "| mae | rmse | r2 |" in md and "| accuracy |" not in md
    assert (f"- {int8['path']}: float32 inputs and outputs (default for regression: the board "
            f"feeds and reads values in the data's units; int8 I/O gives the same metric but "
            f"leaves scale and zero point to the caller)") in md


@pytest.mark.parametrize("recipe, message", [
    (REGRESSION.replace("dataset: {name: diabetes}", "dataset: {name: digits, input_size: [8, 8]}")
     .replace("{zoo: mlp, options: {hidden: [16]}}", "{zoo: small_cnn, options: {filters: [4]}}"),
     "error: y_train has shape [] but the model output 'classifier' has shape [10]; a regression "
     "target must have its output's shape; these look like class labels: use task: "
     "classification"),
    (REGRESSION.replace("task: regression", "task: {name: regression, metric: 'nope_mod:f', "
                        "higher_is_better: false}"),
     "error: task.metric nope_mod:f: cannot import nope_mod (ModuleNotFoundError: No module "
     "named 'nope_mod'); put the module on PYTHONPATH or fix it"),
])
def test_bad_task_is_one_line_exit_2_and_nothing_written(tmp_path, recipe, message):
    from click.testing import CliRunner

    from pipeline.cli import main
    from tests.helpers import write_recipe

    r = CliRunner().invoke(main, ["run", str(write_recipe(tmp_path, recipe)), "--out",
                                  str(tmp_path / "run")])
    assert r.exit_code == 2 and r.output.strip().splitlines()[-1] == message
    assert not (tmp_path / "run").exists()  # checked before anything is written


def test_nas_is_classification_only(tmp_path):
    from pipeline import recipe
    from pipeline.errors import RecipeError

    text = REGRESSION.replace("  - export: {modes: [fp32, int8]}", "  - nas: {max_trials: 2}")
    with pytest.raises(RecipeError) as e:
        recipe.parse(text, "r.yaml")
    assert str(e.value) == ("r.yaml:8: stages.1.nas: nas searches classifiers only; this "
                            "recipe's task is regression: drop the nas stage")


def test_gates_the_task_cannot_judge_are_recipe_errors():
    from pipeline import recipe
    from pipeline.errors import RecipeError

    with pytest.raises(RecipeError) as e:
        recipe.parse(REGRESSION.replace("gates: {", "gates: {min_accuracy: 0.9, "), "r.yaml")
    assert str(e.value) == ("r.yaml:10: gates.min_accuracy: min_accuracy judges classifiers; this "
                            "recipe's task is regression: use min_metric / max_metric_drop (its "
                            "metric, in its own direction)")
    with pytest.raises(RecipeError) as e:
        recipe.parse(REGRESSION.replace("task: regression", "task: fidelity"), "r.yaml")
    assert str(e.value) == ("r.yaml:10: gates.max_metric_drop: a fidelity task measures each "
                            ".tflite against the Keras model itself, which has no metric to drop "
                            "from: use min_metric (the worst acceptable snr_db)")


def test_distill_a_regressor_fits_the_blend_of_labels_and_teacher(tmp_path):
    from pipeline import models
    from pipeline.stages.distill import DistillConfig, distill
    from pipeline.training import FitConfig, fit

    ds = load_dataset({"name": "diabetes"})
    teacher = models.from_spec({"zoo": "mlp", "options": {"hidden": [32]}}, ds.input_shape, 1)
    tasks.bind("regression", teacher, ds)
    fit(teacher, ds, FitConfig(epochs=40, batch_size=32, learning_rate=0.01, patience=None))
    student = models.from_spec({"zoo": "mlp", "options": {"hidden": [8]}}, ds.input_shape, 1)
    cfg = DistillConfig(student={"zoo": "mlp"}, alpha=0.5, epochs=40, batch_size=32,
                        learning_rate=0.05, patience=None)
    untrained = tasks.keras_metrics(student, ds)["mae"]
    summary = distill(teacher, student, ds, cfg)
    assert summary["epochs_run"] == 40
    assert tasks.keras_metrics(student, ds)["mae"] < 0.6 * untrained
    with pytest.raises(UserError) as e:
        distill(teacher, student, ds, cfg.model_copy(update={"feature_pairs": [("fc0", "fc0")]}))
    assert str(e.value) == ("distill: feature_pairs apply to classification; this task is "
                            "regression: drop feature_pairs")


def test_qat_ranges_start_from_the_float_model_also_for_a_stripped_model_in_memory():
    """QAT's activation ranges start at what the float model computes (TF-MOT's [-6, 6] clipped
    a regressor's outputs: diabetes QAT MAE 131 against 43 float); a pruned-and-stripped model
    still in memory has layers with nodes in two graphs (was: 'Graph disconnected')."""
    from pipeline.compress import magnitude as M
    from pipeline.compress.quantize import quantize_aware

    model = _model((("out", 1, None),))
    model.get_layer("out").set_weights([np.full((8, 1), 30.0, np.float32), np.array([100.0])])
    stripped = M.strip_pruning(M.apply_pruning(model, M.plan_schedule(10, 0.5)))
    x = np.random.default_rng(0).random((32, 4)).astype(np.float32)
    qat, _ = quantize_aware(stripped, calibration=x)
    top = float(np.max(stripped.predict(x, verbose=0)))
    hi = next(v for v in qat.get_layer("quant_out").non_trainable_weights
              if v.name.endswith("post_activation_max:0"))
    assert top > 100 and float(hi.numpy()) == pytest.approx(top, rel=1e-5)


def test_adhoc_distill_of_a_fidelity_task_judges_the_student_against_the_teacher(tmp_path):
    """An x-only npz (no labels): the summary line crashed formatting a missing teacher score."""
    import re

    from click.testing import CliRunner

    from pipeline import models
    from pipeline.cli import main

    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).random((200, 4)).astype(np.float32))
    teacher = models.from_spec({"zoo": "mlp", "options": {"hidden": [16]}}, (4,), 3)
    teacher.save(tmp_path / "t.keras")
    r = CliRunner().invoke(main, ["distill", "--teacher", str(tmp_path / "t.keras"), "--student",
                                  "{zoo: mlp, options: {hidden: [4]}}", "--data",
                                  str(tmp_path / "x.npz"), "--epochs", "2"])
    assert r.exit_code == 0, r.output
    line = r.output.strip().splitlines()[-1]
    assert re.fullmatch(r".*t_student\.keras: student snr_db -?[0-9.]+ \(against the teacher's "
                        r"outputs\), [0-9]+ params \([0-9.]+x fewer than the teacher's [0-9]+\).*",
                        line), line

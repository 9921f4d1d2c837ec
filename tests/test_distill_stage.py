"""The `distill` stage, its recipe settings, teacher/student resolution and `edgepipe distill`."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tf_keras as keras

from pipeline import engine, models, recipe
from pipeline.context import StageContext
from pipeline.errors import RecipeError, UserError
from pipeline.records import Artifact, StageRecord
from pipeline.stages.distill import resolve_student, resolve_teacher

TEACHER = "{zoo: small_cnn, options: {filters: [8, 16], dense: 32}}"
STUDENT = "{zoo: small_cnn, options: {filters: [4, 8], dense: 8, dropout: 0.0}}"
HEAD = """name: kd
seed: 0
dataset: {name: digits, input_size: [8, 8], train_fraction: 0.3}
model: %s
stages:
""" % TEACHER


def _recipe(*stages: str) -> recipe.Recipe:
    return recipe.parse(HEAD + "".join(f"  - {s}\n" for s in stages), "r.yaml")


@pytest.mark.slow
def test_recipe_train_distill_int8(tmp_path):
    r = _recipe("train: {epochs: 2, batch_size: 32, learning_rate: 0.01, patience: null}",
                f"distill: {{student: {STUDENT}, epochs: 2, batch_size: 32, learning_rate: 0.01,"
                f" temperature: 2.0, alpha: 0.5}}",
                "export: {modes: [int8]}")
    records = engine.run(r, tmp_path / "run")
    train, distill, export = records
    art = distill.artifacts[0]
    assert art.path == "02_distill/model.keras"
    m = art.metrics
    assert m["teacher"] == "01_train/model.keras" and m["student_from"] == "zoo:small_cnn"
    assert m["teacher_params"] == train.artifacts[0].metrics["params"]
    assert m["params"] < m["teacher_params"] / 4
    assert m["compression"] == pytest.approx(m["teacher_params"] / m["params"], rel=1e-3)
    assert m["epochs_run"] == 2 and 0 <= m["accuracy"] <= 1
    # the student alone, loadable without any custom object; export converted it, not the teacher
    student = keras.models.load_model(tmp_path / "run" / art.path)
    assert student.count_params() == m["params"]
    assert export.artifacts[0].metrics["params"] == m["params"]
    assert export.artifacts[0].metrics["source"] == art.path


@pytest.mark.parametrize("settings, msg", [
    ("{student: small_cnn, temperature: 0}",
     "r.yaml:7: stages.1.distill.temperature: Input should be greater than 0"),
    ("{student: small_cnn, alpha: 1.5}",
     "r.yaml:7: stages.1.distill.alpha: Input should be less than or equal to 1"),
    ("{student: smal_cnn}", "r.yaml:7: stages.1.distill.student: unknown zoo model 'smal_cnn' "
     "(did you mean \"small_cnn\"?); expected one of: small_cnn, mobilenet, mlp, two_head_cnn, "
     "autoencoder"),
    ("{temperature: 2}", "r.yaml:7: stages.1.distill.student: required key is missing"),
    ("{student: nas, feature_pairs: [[a]]}", "r.yaml:7: stages.1.distill.feature_pairs: expected "
     "a list of [teacher_layer, student_layer] name pairs, got [['a']]"),
    ("{student: nas, tempreature: 2}",
     "r.yaml:7: stages.1.distill.tempreature: unknown key (did you mean \"temperature\"?)"),
])
def test_recipe_settings_are_validated(settings, msg):
    with pytest.raises(RecipeError) as e:
        _recipe("train", f"distill: {settings}")
    assert str(e.value) == msg


def _ctx(tmp_path, records, **distill):
    r = _recipe("train", "distill: {student: nas}")
    cfg = r.stages[1].config.model_copy(update=distill)
    return StageContext(run_dir=tmp_path, out_dir=tmp_path / "out", stage_dir="03_distill",
                        recipe=r, previous=records), cfg


def _record(tmp_path, index, name, model_name, params_seed=0):
    keras.utils.set_random_seed(params_seed)
    model = models.from_spec("small_cnn", (8, 8, 1), 10)
    folder = f"0{index + 1}_{name}"
    models.save_model(model, tmp_path / folder / f"{model_name}.keras")
    art = Artifact(name=model_name, path=f"{folder}/{model_name}.keras", format="keras")
    return StageRecord(index, name, tmp_path / folder, [art], {}), model


def test_student_from_nas_and_teacher_from_before_it(tmp_path):
    train, teacher = _record(tmp_path, 0, "train", "model", 1)
    nas, best = _record(tmp_path, 1, "nas", "best", 2)
    ctx, cfg = _ctx(tmp_path, [train, nas])
    student, where, rec = resolve_student(ctx, cfg)
    assert where == "02_nas/best.keras" and rec is nas
    np.testing.assert_array_equal(student.get_weights()[0], best.get_weights()[0])
    t, t_where = resolve_teacher(ctx, cfg, skip=rec)  # not the nas model it distills into
    assert t_where == "01_train/model.keras"
    np.testing.assert_array_equal(t.get_weights()[0], teacher.get_weights()[0])
    assert resolve_teacher(ctx, cfg.model_copy(update={"teacher": "nas"}))[1] == \
        "02_nas/best.keras"
    assert resolve_teacher(ctx, cfg.model_copy(update={"teacher": "01_train"}))[1] == \
        "01_train/model.keras"


def test_resolution_errors(tmp_path):
    train, _ = _record(tmp_path, 0, "train", "model")
    ctx, cfg = _ctx(tmp_path, [train])
    with pytest.raises(UserError) as e:
        resolve_student(ctx, cfg)
    assert str(e.value) == ("distill: student: nas needs an earlier nas stage in the recipe; add "
                            "one before distill, or give a zoo spec or a model path")
    nas, _ = _record(tmp_path, 1, "nas", "trial_3")
    ctx, cfg = _ctx(tmp_path, [train, nas])
    with pytest.raises(UserError) as e:
        resolve_student(ctx, cfg)
    assert str(e.value) == 'distill: stage 02_nas has no Keras model named "best" (it made: trial_3)'
    with pytest.raises(UserError) as e:
        resolve_teacher(ctx, cfg.model_copy(update={"teacher": "trian"}))
    assert str(e.value) == ("distill: teacher 'trian' is neither an earlier stage nor a model "
                            "file (did you mean \"train\"?); earlier stages: 01_train, 02_nas")
    ctx, cfg = _ctx(tmp_path, [])
    with pytest.raises(UserError) as e:
        resolve_teacher(ctx, cfg)
    assert str(e.value) == ("distill: no trained teacher: put a train stage before distill, or "
                            "set teacher: PATH (or the recipe's model: to a trained model file)")


@pytest.fixture
def teacher_file(tmp_path):
    keras.utils.set_random_seed(0)
    path = tmp_path / "teacher.keras"
    spec = {"zoo": "small_cnn", "options": {"filters": [8, 16], "dense": 32}}
    models.save_model(models.from_spec(spec, (8, 8, 1), 10), path)
    return path


def test_cli_distill(teacher_file, tmp_path):
    from sklearn.datasets import load_digits

    from pipeline.cli import main

    x, y = load_digits(return_X_y=True)
    np.savez(tmp_path / "few.npz", x=x[:300].reshape(-1, 8, 8) / 16.0, y=y[:300])
    out = tmp_path / "s.keras"
    res = CliRunner().invoke(main, ["distill", "--teacher", str(teacher_file), "--student",
                                    STUDENT, "--data", str(tmp_path / "few.npz"), "--epochs", "1",
                                    "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout[res.stdout.index("{"):])
    assert m["path"] == str(out) and m["epochs_run"] == 1
    student = keras.models.load_model(out)
    assert student.input_shape == (None, 8, 8, 1) and student.count_params() == m["params"]
    assert m["teacher_params"] > 4 * m["params"]


@pytest.mark.parametrize("args, msg", [
    (["--temperature", "0"], "error: --temperature: Input should be greater than 0"),
    (["--alpha", "2"], "error: --alpha: Input should be less than or equal to 1"),
    (["--student", "nas"], "error: --student nas works only inside a recipe (after a nas stage); "
                           "here give a zoo spec or the path of the nas stage's best.keras"),
    (["--student", "{zoo: small_cnn, options: {classes: 5}}"],
     "error: --student: unknown option 'classes' for zoo model small_cnn; expected: filters, "
     "dense, dropout"),
    (["--feature-pair", "conv0"], "error: Invalid value for '--feature-pair': expected "
                                  "TEACHER_LAYER:STUDENT_LAYER, got 'conv0' (see edgepipe "
                                  "distill --help)"),
    (["--feature-pair", "conv0:cnv0"], "error: Expected a layer of the student ('small_cnn') for "
                                       "feature distillation. Received: layer='cnv0' (did you mean "
                                       "\"conv0\"?)"),
])
def test_cli_errors(teacher_file, args, msg):
    from pipeline.cli import main

    base = ["distill", "--teacher", str(teacher_file), "--student", "small_cnn"]
    res = CliRunner().invoke(main, base + args)
    assert res.exit_code == 2, res.output
    assert res.stderr.strip().splitlines()[-1] == msg


def test_teacher_and_student_with_too_few_classes_are_refused(tmp_path):
    """Both with 5 outputs agree with each other, but not with the 10 classes of digits."""
    spec = {"zoo": "small_cnn", "options": {"filters": [4], "dense": 8}}
    for name in ("t5", "s5"):
        models.save_model(models.from_spec(spec, (8, 8, 1), 5), tmp_path / f"{name}.keras")
    r = _recipe(f"distill: {{teacher: {tmp_path / 't5.keras'}, student: {{path: "
                f"{tmp_path / 's5.keras'}}}, epochs: 1}}")
    with pytest.raises(UserError) as e:
        engine.run(r, tmp_path / "run")
    assert str(e.value) == (
        "the model output 'classifier' has 5 units but the dataset has 10 classes; "
        "classification needs one softmax unit per class (also for 2 classes): use a model "
        "built for this data, or task: regression")
    assert not list((tmp_path / "run").glob("0*"))

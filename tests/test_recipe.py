import json
import re
from pathlib import Path

import pytest

from pipeline import recipe
from pipeline.errors import RecipeError
from tests.helpers import TINY_RECIPE


def test_default_recipes_validate():
    from pathlib import Path

    names = {}
    for p in sorted(Path("recipes").glob("*.yaml")):
        names[p.stem] = recipe.load(p).name  # each writes its own runs/<name>/
    assert len(names) >= 5 and all(names[stem] == stem for stem in names), names


def test_tiny_recipe_parses_with_defaults():
    r = recipe.parse(TINY_RECIPE)
    assert [s.name for s in r.stages] == ["train", "export", "profile", "report"]
    assert r.stages[1].config.modes == ["fp32", "int8"]
    assert r.dataset.input_size == (8, 8)
    assert r.model.options["filters"] == [4]


def _error(text: str) -> str:
    with pytest.raises(RecipeError) as e:
        recipe.parse(text, "r.yaml")
    return str(e.value)


def test_unknown_stage_names_line_and_suggests():
    text = TINY_RECIPE.replace("  - report", "  - reprot")
    assert _error(text) == ('r.yaml:11: stages.3: unknown stage \'reprot\' (did you mean "report"?);'
                            ' expected one of: ' + ", ".join(__import__("pipeline.registry").registry.STAGES))


def test_unknown_key_in_stage_names_line_and_suggests():
    text = TINY_RECIPE.replace("{epochs: 3,", "{epoch: 3,")
    assert _error(text) == 'r.yaml:8: stages.0.train.epoch: unknown key (did you mean "epochs"?)'


def test_unknown_top_level_key():
    assert _error(TINY_RECIPE + "gate: {}\n") == 'r.yaml:12: gate: unknown key (did you mean "gates"?)'


def test_top_level_typo_reports_the_unknown_key_not_the_missing_one():
    text = TINY_RECIPE.replace("dataset:", "datset:")
    assert _error(text) == ('r.yaml:3: datset: unknown key (did you mean "dataset"?) (and 1 more)')


def test_wrong_type_names_key_and_line():
    text = TINY_RECIPE.replace("epochs: 3", "epochs: two")
    msg = _error(text)
    assert msg == ("r.yaml:8: stages.0.train.epochs: Input should be a valid integer, unable to "
                   "parse string as an integer")


def test_out_of_range_value():
    msg = _error(TINY_RECIPE + "gates: {min_accuracy: 1.5}\n")
    assert msg == "r.yaml:12: gates.min_accuracy: Input should be less than or equal to 1"


def test_unknown_export_mode_suggests():
    msg = _error(TINY_RECIPE.replace("[fp32, int8]", "[fp32, int9]"))
    assert msg == ("r.yaml:9: stages.1.export.modes: unknown mode 'int9' (did you mean \"int8\"?); "
                   "expected one of: fp32, dynamic, float16, int8, int16x8")


def test_unknown_dataset_suggests():
    msg = _error(TINY_RECIPE.replace("name: digits", "name: digit"))
    assert msg == ("r.yaml:3: dataset.name: unknown dataset 'digit' (did you mean \"digits\"?); "
                   "expected one of: diabetes, digits, image_dir, npz, tfds")


def test_unknown_zoo_model_and_option():
    assert _error(TINY_RECIPE.replace("zoo: small_cnn", "zoo: small_cn")) == (
        "r.yaml:5: model: unknown zoo model 'small_cn' (did you mean \"small_cnn\"?); expected "
        "one of: small_cnn, mobilenet, mlp, two_head_cnn, autoencoder")
    assert _error(TINY_RECIPE.replace("{filters:", "{filter:")) == (
        "r.yaml:5: model: unknown option 'filter' for zoo model small_cnn (did you mean "
        "\"filters\"?); expected: filters, dense, dropout")


def test_yaml_syntax_error_has_line():
    msg = _error(TINY_RECIPE.replace("seed: 0", "seed: [0"))
    assert msg == "r.yaml:3: YAML syntax error: expected ',' or ']', but got ':'"


def test_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="^recipe file not found: .*nope.yaml$"):
        recipe.load(tmp_path / "nope.yaml")


def test_missing_required_key():
    text = "\n".join(ln for ln in TINY_RECIPE.splitlines() if not ln.startswith("name:"))
    assert _error(text) == "r.yaml:1: name: required key is missing"


def test_schema_lists_every_stage():
    from pipeline.registry import STAGES

    schema = recipe.json_schema()
    json.dumps(schema)
    items = schema["properties"]["stages"]["items"]["oneOf"]
    named = {k for v in items for k in v.get("properties", {})}
    assert named == set(STAGES)


EVERY_STAGE = """\
name: roundtrip
seed: 3
dataset: {name: digits, input_size: [8, 8]}
model: {zoo: small_cnn, options: {filters: [4]}}
gates: {min_accuracy: 0.5}
stages:
  - train: {epochs: 1}
  - prune: {method: channels, ratio: 0.25, epochs: 0}
  - quantize: {mode: ptq_int8}
  - quantize: {mode: qat, epochs: 1}
  - prune: {method: m_by_n}
  - cluster: {clusters: 8}
  - lowrank: {ratio: 0.5}
  - distill: {student: {zoo: small_cnn}, feature_pairs: [[a, b]]}
  - export: {modes: [fp32]}
  - nas: {space: {kernel: 3, width: [0.25, 0.5]}, constraints: {max_params: 1000}}
  - adapt: {latency_ratio: 0.5, quantization: [fp32, qat], table: t.json}
  - profile
  - report
"""


SHIPPED = sorted(str(p) for p in (Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("source", SHIPPED + ["every_stage"],
                         ids=[Path(p).stem for p in SHIPPED] + ["every_stage"])
def test_to_yaml_parses_back_to_an_equal_recipe(source):
    """What the nas chief hands its workers: to_yaml (to_json(exclude_unset)) → parse gives the
    same recipe (same settings, hence same fingerprints). The full to_json (every default written
    out) does not parse back: quantize/prune reject defaults of another mode given explicitly."""
    import yaml

    from pipeline.engine import plan

    r = recipe.parse(EVERY_STAGE) if source == "every_stage" else recipe.load(source)
    back = recipe.parse(r.to_yaml(), "dump")
    assert back.to_json() == r.to_json()
    assert back.to_json(exclude_unset=True) == r.to_json(exclude_unset=True)
    assert [p.fingerprint for p in plan(back)] == [p.fingerprint for p in plan(r)]
    assert yaml.safe_load(r.to_yaml()) == r.to_json(exclude_unset=True)


def test_round_trip_covers_every_shipped_recipe_and_stage():
    from pipeline.registry import STAGES

    assert len(SHIPPED) >= 5  # the parametrization above really found the recipes/ folder
    assert {s.name for s in recipe.parse(EVERY_STAGE).stages} == set(STAGES)


def test_full_to_json_does_not_parse_back():
    """Why to_yaml leaves defaults out (the bug that killed `run --workers` with these stages)."""
    import yaml

    full = yaml.safe_dump(recipe.parse(EVERY_STAGE).to_json(), sort_keys=False)
    assert re.fullmatch(r"r\.yaml:\d+: stages\.1\.prune: begin_step applies to method magnitude, "
                        r"not channels \(and 2 more\)", _error(full)), _error(full)


@pytest.mark.parametrize("stages, line", [
    ("[quantize, train]", "r.yaml:7: stages.0.quantize: works on the model before the recipe "
     "trains one (the train stage at stages.1); move quantize after it, or set model: to a "
     "trained model file"),
    ("[{prune: {method: channels}}, {export: {modes: [fp32]}}, nas]", "r.yaml:7: stages.0.prune: "
     "works on the model before the recipe trains one (the nas stage at stages.2); move prune "
     "after it, or set model: to a trained model file"),
    ("[{adapt: {latency_ratio: 0.5}}, train]", "r.yaml:7: stages.0.adapt: works on the model before the recipe trains "
     "one (the train stage at stages.1); move adapt after it, or set model: to a trained model "
     "file"),
    ("[report, report]", "r.yaml:7: stages.0.report: no stage before it writes a model or file "
     "to report on; put report after the stages it is about"),
    ("[profile, export]", "r.yaml:7: stages.0.profile: no stage before it writes a .tflite to "
     "time; add an export, quantize or adapt stage before profile"),
])
def test_stage_orders_that_make_no_sense_are_refused(stages, line):
    """`[quantize, train]` quantized the untrained model (accuracy 0.0975, exit 0)."""
    assert _error(TINY_RECIPE.split("stages:")[0] + f"stages: {stages}\n") == line


@pytest.mark.parametrize("stages", [
    "[export, quantize, profile, report]",  # never trains: an architecture's size and latency
    "[train, report, report]", "[train, quantize, train, export]",
    "[{distill: {teacher: t.keras, student: small_cnn}}, train]",
])
def test_stage_orders_that_make_sense_pass(stages):
    assert recipe.parse(TINY_RECIPE.split("stages:")[0] + f"stages: {stages}\n")


def test_a_trained_model_file_may_be_compressed_before_any_train():
    head = TINY_RECIPE.split("model:")[0] + "model: m.keras\n"
    assert recipe.parse(head + "stages: [quantize, train]\n").model.path == "m.keras"

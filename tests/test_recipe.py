import json

import pytest

from pipeline import recipe
from pipeline.errors import RecipeError
from tests.helpers import TINY_RECIPE


def test_default_recipes_validate():
    from pathlib import Path

    for p in sorted(Path("recipes").glob("*.yaml")):
        r = recipe.load(p)
        assert r.stages, p


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
                            ' expected one of: ' + ", ".join(__import__("pipeline.stages").stages.STAGES))


def test_unknown_key_in_stage_names_line_and_suggests():
    text = TINY_RECIPE.replace("{epochs: 3,", "{epoch: 3,")
    assert _error(text) == 'r.yaml:8: stages.0.train.epoch: unknown key (did you mean "epochs"?)'


def test_unknown_top_level_key():
    assert _error(TINY_RECIPE + "gate: {}\n") == 'r.yaml:12: gate: unknown key (did you mean "gates"?)'


def test_wrong_type_names_key_and_line():
    text = TINY_RECIPE.replace("epochs: 3", "epochs: two")
    msg = _error(text)
    assert msg.startswith("r.yaml:8: stages.0.train.epochs: Input should be a valid integer")


def test_out_of_range_value():
    msg = _error(TINY_RECIPE + "gates: {min_accuracy: 1.5}\n")
    assert msg == "r.yaml:12: gates.min_accuracy: Input should be less than or equal to 1"


def test_unknown_export_mode_suggests():
    msg = _error(TINY_RECIPE.replace("[fp32, int8]", "[fp32, int9]"))
    assert msg.startswith("r.yaml:9: stages.1.export.modes: unknown mode 'int9' (did you mean \"int8\"?)")


def test_unknown_dataset_suggests():
    msg = _error(TINY_RECIPE.replace("name: digits", "name: digit"))
    assert msg.startswith("r.yaml:3: dataset.name: unknown dataset 'digit' (did you mean \"digits\"?)")


def test_unknown_zoo_model_and_option():
    assert "unknown zoo model 'small_cn' (did you mean \"small_cnn\"?)" in _error(
        TINY_RECIPE.replace("zoo: small_cnn", "zoo: small_cn"))
    assert "unknown option 'filter' for zoo model small_cnn (did you mean \"filters\"?)" in _error(
        TINY_RECIPE.replace("{filters:", "{filter:"))


def test_yaml_syntax_error_has_line():
    msg = _error(TINY_RECIPE.replace("seed: 0", "seed: [0"))
    assert msg.startswith("r.yaml:") and "YAML syntax error" in msg


def test_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="^recipe file not found: .*nope.yaml$"):
        recipe.load(tmp_path / "nope.yaml")


def test_missing_required_key():
    text = "\n".join(ln for ln in TINY_RECIPE.splitlines() if not ln.startswith("name:"))
    assert _error(text) == "r.yaml:1: name: required key is missing"


def test_schema_lists_every_stage():
    from pipeline.stages import STAGES

    schema = recipe.json_schema()
    json.dumps(schema)
    items = schema["properties"]["stages"]["items"]["oneOf"]
    named = {k for v in items for k in v.get("properties", {})}
    assert named == set(STAGES)

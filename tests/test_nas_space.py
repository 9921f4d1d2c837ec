"""nas: the recipe's search space and settings are validated with exact messages; the space
becomes Keras Tuner hyperparameters and zoo options; the objective and the Pareto front."""

import textwrap

import pytest

from pipeline import recipe
from pipeline.errors import RecipeError

HEAD = """\
name: n
dataset: {name: digits, input_size: [8, 8], channels: 1}
model: small_cnn
stages:
  - nas:
"""


def _parse(body: str):
    return recipe.parse(HEAD + textwrap.indent(textwrap.dedent(body), "      "), "r.yaml")


@pytest.mark.parametrize("body, message", [
    ("space: {width: {min: 1.0, max: 0.5}}",
     "r.yaml:6: stages.0.nas.space.width: Expected min <= max (the range is inverted). "
     "Received: width: min=1.0, max=0.5"),
    ("space: {blocks: {min: 2, max: 2}}",
     "r.yaml:6: stages.0.nas.space.blocks: Expected min < max (the range is empty; write "
     "`blocks: 2` to fix it). Received: blocks: min=2, max=2"),
    ("space: {kernel: []}",
     "r.yaml:6: stages.0.nas.space.kernel: Expected at least one choice for kernel. "
     "Received: kernel=[]"),
    ("space: {kernel: [3, 4]}",
     "r.yaml:6: stages.0.nas.space.kernel: Expected kernel odd and >= 1. Received: kernel=[3, 4]"),
    ("space: {widht: [0.5]}",
     "r.yaml:6: stages.0.nas.space.widht: unknown key (did you mean \"width\"?)"),
    ("space: {learning_rate: {min: 0, max: 0.1, sampling: log}}",
     "r.yaml:6: stages.0.nas.space.learning_rate: Expected learning_rate in (0, 1]. "
     "Received: learning_rate={'min': 0, 'max': 0.1, 'sampling': 'log'}"),
    ("space: {dropout: {min: 0.1, maxx: 0.2}}",
     "r.yaml:6: stages.0.nas.space.dropout: unknown range key 'maxx' (did you mean \"max\"?); "
     "a range is {min, max, step, sampling}"),
    ("space: {width: {min: 0.25, max: 0.5, step: 0.5}}",
     "r.yaml:6: stages.0.nas.space.width: Expected step <= max - min (0.25). Received: width: "
     "step=0.5"),
    ("space: {expansion: 2.5}",
     "r.yaml:6: stages.0.nas.space.expansion: Expected expansion value to be an integer. "
     "Received: expansion=2.5"),
    ("oracle: bayesain",
     "r.yaml:6: stages.0.nas.oracle: unknown oracle 'bayesain' (did you mean \"bayesian\"?); "
     "expected one of: random, bayesian, hyperband"),
    ("max_trials: 0",
     "r.yaml:6: stages.0.nas.max_trials: Input should be greater than or equal to 1"),
    ("constraints: {max_latency_ms: -1}",
     "r.yaml:6: stages.0.nas.constraints.max_latency_ms: Input should be greater than 0"),
    ("latency: predicetd",
     "r.yaml:6: stages.0.nas.latency: Input should be 'measured' or 'predicted'"),
])
def test_bad_settings_are_one_clear_line(body, message):
    with pytest.raises(RecipeError) as e:
        _parse(body)
    assert str(e.value) == message


def test_defaults_and_canonical_space():
    cfg = _parse("space: {width: [1, 0.5, 0.5], kernel: 3, blocks: {min: 0, max: 2}}"
                 ).stages[0].config
    plain = cfg.space.plain()
    assert plain["width"] == [0.5, 1.0] and plain["kernel"] == 3
    assert plain["blocks"] == {"min": 0, "max": 2, "step": None, "sampling": "linear"}
    assert plain["learning_rate"] == {"min": 1e-3, "max": 1e-2, "step": None, "sampling": "log"}
    assert (cfg.oracle, cfg.max_trials, cfg.quantization) == ("bayesian", 20, "int8")
    # the budget is not part of what the trials' results depend on (raising it continues)
    assert "max_trials" not in cfg.search_settings() and "space" in cfg.search_settings()


def test_predicted_latency_is_part_of_the_search_key_measured_keeps_the_old_one():
    """Trials scored by predicted latency are another search; a search from before `latency:`
    (measured, the default) keeps its key, so it continues; the table file is not part of it."""
    measured = _parse("max_trials: 2").stages[0].config
    predicted = _parse("latency: predicted\ntable: /tmp/t.json").stages[0].config
    assert (measured.latency, measured.table) == ("measured", None)
    assert "latency" not in measured.search_settings() and "table" not in measured.search_settings()
    assert predicted.search_settings() == {**measured.search_settings(), "latency": "predicted"}


def test_space_to_hyperparameters_and_zoo_options():
    from pipeline.search import space as S

    cfg = _parse("space: {num_stages: 2, width: [0.25, 0.5], resolution: [4, 8], "
                 "learning_rate: 0.01}").stages[0].config
    hp = S.hyperparameters(cfg.space.plain(), key="abc")
    names = {p.name: type(p).__name__ for p in hp.space}
    assert names == {"edgepipe/key": "Fixed", "width": "Choice", "blocks_0": "Int",
                     "blocks_1": "Int", "kernel_0": "Choice", "kernel_1": "Choice",
                     "expansion": "Choice", "resolution": "Choice", "stem_stride": "Fixed",
                     "head_channels": "Choice", "dropout": "Float", "bn_momentum": "Fixed",
                     "learning_rate": "Fixed"}
    values = {"edgepipe/key": "abc", "width": 0.5, "blocks_0": 1, "blocks_1": 0, "kernel_0": 5,
              "kernel_1": 3, "expansion": 2, "resolution": 4, "stem_stride": 2,
              "head_channels": 64, "dropout": 0.1, "bn_momentum": 0.9, "learning_rate": 0.01,
              "tuner/epochs": 2}
    opts, lr = S.architecture(values, 2)
    assert opts == {"width": 0.5, "blocks": [1, 0], "kernel": [5, 3], "expansion": 2,
                    "resolution": 4, "stem_stride": 2, "head_channels": 64, "dropout": 0.1,
                    "bn_momentum": 0.9} and lr == 0.01
    model, _ = S.build(values, 2, (8, 8, 1), 10)
    assert model.input_shape == (None, 8, 8, 1) and model.get_layer("resize").output_shape == (
        None, 4, 4, 1)
    assert S.describe(values, 2) == ("width=0.5 blocks=1/0 kernel=5/3 expansion=2 resolution=4 "
                                     "stem_stride=2 head_channels=64 dropout=0.1 "
                                     "bn_momentum=0.9 lr=0.01")


def test_resolution_must_fit_the_data():
    from pipeline.search.space import check_resolution

    check_resolution({"resolution": [4, 8]}, (8, 8, 1))
    with pytest.raises(ValueError, match=r"^Expected resolution <= the dataset's input size 8x8\. "
                                         r"Received: resolution=\[8, 16\]; raise dataset\.input_size "
                                         r"or lower the resolutions$"):
        check_resolution({"resolution": [8, 16]}, (8, 8, 1))


def test_score_ranks_every_infeasible_trial_below_every_feasible_one():
    from pipeline.search.objective import score, violations
    from pipeline.search.tuner import TrialSettings

    s = TrialSettings(max_latency_ms=1.0, max_size_kb=10.0)
    ok = {"val_accuracy": 0.1, "latency_ms": 0.9, "size_kb": 9.0, "params": 5.0}
    near = {"val_accuracy": 0.99, "latency_ms": 1.1, "size_kb": 9.0, "params": 5.0}
    far = {"val_accuracy": 0.99, "latency_ms": 3.0, "size_kb": 20.0, "params": 5.0}
    assert score(ok, s) == 0.1
    assert violations(near, s) == pytest.approx({"latency_ms": 0.1})
    assert score(near, s) == pytest.approx(0.99 - 1 - 0.1)
    assert score(far, s) == pytest.approx(0.99 - 1 - 3.0)
    assert score(ok, s) > score(near, s) > score(far, s)
    assert score({**far, "latency_ms": 1e6}, s) == pytest.approx(0.99 - 11)  # capped


def test_pareto_front():
    from pipeline.search.pareto import front, plot_png

    pts = [{"trial_id": str(i), "latency_ms": lat, "val_accuracy": acc, "feasible": lat < 3}
           for i, (lat, acc) in enumerate([(1, 0.5), (2, 0.9), (2, 0.7), (3, 0.9), (4, 0.95),
                                           (0.5, 0.4), (1, 0.5)])]
    assert [p["trial_id"] for p in front(pts)] == ["5", "0", "1", "4"]
    assert front([]) == []
    png = plot_png(pts, front(pts), limit_ms=3, best_id="1")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_closest_trials_text():
    from pipeline.stages.nas import closest

    rows = [{"trial_id": "0", "architecture": "a", "latency_ms": 0.5, "size_kb": 30.0,
             "params": 1.0},
            {"trial_id": "1", "architecture": "b", "latency_ms": 0.2, "size_kb": 12.0,
             "params": 1.0}]
    text = closest(rows, {"max_latency_ms": 0.1, "max_size_kb": 10.0, "max_params": None}, n=1)
    assert text == "trial 1 [b]: latency 0.2 ms (limit 0.1), size 12 KB (limit 10)"

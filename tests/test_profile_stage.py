"""The `profile` stage's settings: bad ones fail at recipe load, before any stage runs."""

import pytest

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

from pipeline import recipe
from pipeline.errors import RecipeError, UserError

HEAD = """name: pf
dataset: {name: digits, input_size: [8, 8]}
model: {zoo: small_cnn, options: {filters: [4], dense: 16, dropout: 0.0}}
stages:
  - train: {epochs: 1}
  - export: {modes: [fp32]}
"""


def _recipe(profile: str) -> recipe.Recipe:
    return recipe.parse(HEAD + f"  - profile: {profile}\n", "r.yaml")


def test_threads_below_one_fail_at_recipe_load():
    with pytest.raises(RecipeError) as e:
        _recipe("{threads: [1, 0]}")
    assert str(e.value) == ("r.yaml:7: stages.2.profile.threads.1: Input should be greater than "
                            "or equal to 1")
    assert _recipe("{threads: [1, 4]}").stages[2].config.threads == [1, 4]


def test_board_threads_zero_is_refused_not_replaced_by_the_board_default():
    from pipeline.devices.fleet import Options

    with pytest.raises(UserError, match=r"^Expected threads >= 1 \(or None: each device's own\). "
                                        r"Received: threads=0$"):
        Options(threads=0)
    assert Options().threads is None and Options(threads=2).threads == 2


@pytest.mark.parametrize("profile, msg", [
    # a typo with only the host as target used to drop the gate silently
    ("{max_latency_ms: {hots: 5}}",
     "r.yaml:7: stages.2.profile.max_latency_ms: 'hots' is not one of the targets "
     "(did you mean \"host\"?); targets: host"),
    ("{targets: [host, pi4], max_latency_ms: {host: 5, pi5: 5}}",
     "r.yaml:7: stages.2.profile.max_latency_ms: 'pi5' is not one of the targets "
     "(did you mean \"pi4\"?); targets: host, pi4"),
    ("{targets: [pi4, tag:lab], max_latency_ms: {host: 5}}",
     "r.yaml:7: stages.2.profile.max_latency_ms: 'host' is not one of the targets; "
     "targets: pi4, tag:lab"),
    ("{targets: [host, tag:lab], max_latency_ms: {tag:lb: 5}}",
     "r.yaml:7: stages.2.profile.max_latency_ms: 'tag:lb' is not one of the targets "
     "(did you mean \"tag:lab\"?); targets: host, tag:lab"),
])
def test_max_latency_keys_are_checked_at_recipe_load(profile, msg):
    with pytest.raises(RecipeError) as e:
        _recipe(profile)
    assert str(e.value) == msg


def test_device_keys_under_a_tag_are_checked_before_any_timing(tmp_path, monkeypatch):
    """A key that may name a board of a tag needs the inventory: checked when the stage starts,
    before the host is benchmarked (was: after it)."""
    from types import SimpleNamespace

    import edge_runner.bench

    from pipeline.records import Artifact
    from pipeline.stages.profile import Profile

    (tmp_path / "devices.yaml").write_text("devices:\n  pi4: {host: 10.0.0.2, tags: [lab]}\n")
    r = _recipe("{targets: [host, tag:lab], max_latency_ms: {host: 5, pi4: 9, pi44: 9}}")
    ctx = SimpleNamespace(recipe=r.model_copy(update={"devices": str(tmp_path / "devices.yaml")}),
                          tflite_artifacts=lambda: [Artifact("m", "01_export/m.tflite", "tflite")],
                          path=lambda a: tmp_path / a.path, log=lambda *a: None)

    def benchmark(*a, **k):
        raise AssertionError("the host was benchmarked before the key check")

    monkeypatch.setattr(edge_runner.bench, "benchmark", benchmark)
    with pytest.raises(UserError) as e:
        Profile().run(ctx, r.stages[2].config)
    assert str(e.value) == ("profile.max_latency_ms: 'pi44' is not one of the targets "
                            "(did you mean \"pi4\"?); targets: host, tag:lab, pi4")


def test_profile_without_a_tflite_in_the_run_fails_naming_the_fix(tmp_path):
    """Was: an empty latency table committed, and latency gates that never fired. Now the
    recipe is refused before anything runs, and the stage itself still refuses."""
    from pipeline import engine

    text = HEAD.replace("  - train: {epochs: 1}\n  - export: {modes: [fp32]}\n", "")
    text += "  - train: {epochs: 1}\n  - profile: {max_latency_ms: 0.001}\n  - report\n"
    with pytest.raises(RecipeError) as e:
        recipe.parse(text, "r.yaml")
    line = text.splitlines().index("  - profile: {max_latency_ms: 0.001}") + 1
    assert str(e.value) == (f"r.yaml:{line}: stages.1.profile: no stage before it writes a "
                            ".tflite to time; add an export, quantize or adapt stage before "
                            "profile")
    r = recipe.parse(HEAD + "  - profile\n")
    r.stages[:] = [st for st in r.stages if st.name == "profile"]  # past the recipe check
    with pytest.raises(UserError) as e:
        engine.run(r, tmp_path / "run")
    assert str(e.value) == ("profile: the run has no .tflite to time; add an export, quantize "
                            "or adapt stage before profile")
    assert not list((tmp_path / "run").glob("0*"))

"""The `profile` stage's settings: bad ones fail at recipe load, before any stage runs."""

import pytest

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import pipeline.stages  # noqa: F401

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

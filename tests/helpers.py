"""Small builders shared by tests: tiny recipes and models that train in a second or two."""

from __future__ import annotations

import textwrap
from pathlib import Path

TINY_RECIPE = """\
name: tiny
seed: 0
dataset: {name: digits, input_size: [8, 8], channels: 1}
model:
  zoo: small_cnn
  options: {filters: [4], dense: 16, dropout: 0.0}
stages:
  - train: {epochs: 3, batch_size: 64, learning_rate: 0.01, patience: null}
  - export: {modes: [fp32, int8]}
  - profile: {min_runs: 5, min_seconds: 0.0, warmup: 1}
  - report
"""


def write_recipe(folder: Path, text: str = TINY_RECIPE, name: str = "recipe.yaml") -> Path:
    p = folder / name
    p.write_text(textwrap.dedent(text))
    return p


def tiny_model(input_shape=(8, 8, 1), num_classes=10):
    from pipeline.zoo import small_cnn

    return small_cnn(input_shape, num_classes, filters=(4,), dense=16, dropout=0.0)

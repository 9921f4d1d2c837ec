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


def multi_io_model(seed: int = 0):
    """Two named inputs (image [6], meta [3]) and two named heads: klass (softmax over 4) and value
    (2 linear units). Its .tflite lists inputs and outputs in another order than Keras does."""
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    image, meta = keras.Input((6,), name="image"), keras.Input((3,), name="meta")
    h = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([image, meta]))
    klass = keras.layers.Dense(4, activation="softmax", name="klass")(h)
    value = keras.layers.Dense(2, name="value")(h)
    return keras.Model([image, meta], [klass, value])


def multi_io_data(n: int = 16, seed: int = 0) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    return {"image": rng.random((n, 6), dtype=np.float32),
            "meta": rng.random((n, 3), dtype=np.float32)}

"""pipeline.training.fit: the protocol every stage trains with (best validation epoch kept)."""

import dataclasses

import numpy as np
import pytest

import pipeline.stages  # noqa: F401  (the registry first: pipeline.training imports it)
from pipeline.data import Dataset
from pipeline.training import FitConfig, fit


def _data(seed=0, n=200):
    """Two well-separated blobs of 4 features: easy to fit, easy to ruin."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = (rng.normal(size=(n, 4)) + (y[:, None] * 2 - 1) * 2).astype(np.float32)
    return Dataset("blobs", x[:120], y[:120], x[120:160], y[120:160], x[160:], y[160:], 2, seed)


def _model():
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    return keras.Model(inp, keras.layers.Dense(2)(keras.layers.Dense(8, activation="relu")(inp)))


def _val_acc(model, ds):
    return float(np.mean(model.predict(ds.x_val, verbose=0).argmax(-1) == ds.y_val))


def _ruin_last_epoch(epochs):
    """The last epoch starts from negated logits and does not learn: the worst weights of the run."""
    import tf_keras as keras

    class Ruin(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == epochs - 1:
                self.model.optimizer.learning_rate.assign(0.0)
                out = self.model.layers[-1]
                out.set_weights([-w for w in out.get_weights()])

    return Ruin()


def test_start_kept_when_no_epoch_beats_it():
    """Fine-tuning (QAT, pruning, clustering) never leaves a model worse than it was given:
    the starting point is epoch 0 of the choice. (Was: the ruined weights were returned.)"""
    ds, model = _data(), _model()
    fit(model, ds, FitConfig(epochs=5, learning_rate=0.01, patience=None))
    start, before = [w.copy() for w in model.get_weights()], _val_acc(model, ds)
    assert before >= 0.9
    flipped = dataclasses.replace(ds, y_train=1 - ds.y_train)  # fine-tuning that only does harm
    m = fit(model, flipped, FitConfig(epochs=2, learning_rate=0.05, patience=None))
    assert m["best_epoch"] == 0 and m["epochs_run"] == 2 and m["best_val_accuracy"] == pytest.approx(before)
    assert all(np.array_equal(a, b) for a, b in zip(start, model.get_weights()))


def test_best_epoch_kept_without_early_stopping():
    """patience: null (the distill recipe's teacher) still ends on the best validation epoch,
    not the last one. (Was: last-epoch weights.)"""
    ds, model = _data(), _model()
    m = fit(model, ds, FitConfig(epochs=6, learning_rate=0.01, patience=None),
            callbacks=[_ruin_last_epoch(6)])
    assert m["epochs_run"] == 6 and 1 <= m["best_epoch"] <= 5
    assert _val_acc(model, ds) == pytest.approx(m["best_val_accuracy"]) and _val_acc(model, ds) >= 0.9


def test_keep_last_for_schedules():
    """keep="last": a pruning schedule's last epoch is the only one at its target sparsity."""
    ds, model = _data(), _model()
    m = fit(model, ds, FitConfig(epochs=6, learning_rate=0.01, patience=None),
            callbacks=[_ruin_last_epoch(6)], keep="last")
    assert "best_epoch" not in m and m["last_val_accuracy"] == pytest.approx(_val_acc(model, ds))
    assert _val_acc(model, ds) < 0.5


def test_batchnorm_statistics_follow_the_last_epoch():
    """On a small dataset (few steps an epoch) Keras' momentum 0.99 left the moving statistics
    far behind the weights: digits seed 1 validated at 0.13-0.35 while training at 0.95, and
    early stopping ended the run at 0.57 test accuracy. During fit they now average over about
    one epoch; the model keeps its own momentum afterwards."""
    import tf_keras as keras

    ds = _data()
    ds = dataclasses.replace(ds, x_train=ds.x_train + 5.0, x_val=ds.x_val + 5.0)
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    bn = keras.layers.BatchNormalization()
    model = keras.Model(inp, keras.layers.Dense(2)(bn(inp)))
    fit(model, ds, FitConfig(epochs=3, batch_size=64, patience=None), keep="last")  # 2 steps an epoch
    assert bn.momentum == 0.99 and model.get_config()["layers"][1]["config"]["momentum"] == 0.99
    np.testing.assert_allclose(bn.moving_mean.numpy(), ds.x_train.mean(0), atol=0.5)

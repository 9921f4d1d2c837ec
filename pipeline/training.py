"""The one way to compile and fit a classifier: train, every fine-tuning stage (prune, cluster,
lowrank, qat, distill), the nas trials, the scripts and the tests call `fit`. `pipeline.compress`
wraps and strips models; it never fits them."""

from __future__ import annotations

import logging
import time
from typing import Any, Literal, Sequence

from pydantic import Field

from pipeline.config import StageConfig

log = logging.getLogger("edgepipe")


class FitConfig(StageConfig):
    """Training settings; stages that fine-tune inherit these fields."""

    epochs: int = Field(10, ge=0, description="maximum epochs (early stopping may end sooner)")
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    optimizer: Literal["adam", "sgd", "rmsprop"] = "adam"
    patience: int | None = Field(5, ge=1, description="early stopping on val accuracy; null: off")


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps of one epoch over `n` samples (what pruning schedules count)."""
    return max(1, -(-n // batch_size))


def optimizer(name: str, learning_rate: float):
    import tf_keras as keras

    return {"adam": keras.optimizers.Adam, "sgd": lambda learning_rate: keras.optimizers.SGD(
        learning_rate, momentum=0.9), "rmsprop": keras.optimizers.RMSprop}[name](
        learning_rate=learning_rate)


def compile_classifier(model, cfg: FitConfig, loss=None, reference=None) -> None:
    """Compile for sparse-label classification; the loss takes logits when the model (or
    `reference`, for wrapped models) does not end in a softmax."""
    import tf_keras as keras

    from pipeline.compress._keras import outputs_softmax

    probs = outputs_softmax(reference if reference is not None else model)
    model.compile(optimizer=optimizer(cfg.optimizer, cfg.learning_rate),
                  loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=not probs),
                  metrics=["accuracy"])


class _Progress:
    """A log line per epoch (tf_keras' own progress bar is noise in logs and CI)."""

    def __new__(cls, prefix: str):
        import tf_keras as keras

        class Progress(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.t0 = time.time()

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                log.info("%s epoch %d/%d  loss %.4f  acc %.4f  val_acc %.4f  (%.1fs)", prefix,
                         epoch + 1, self.params.get("epochs", 0), logs.get("loss", float("nan")),
                         logs.get("accuracy", float("nan")), logs.get("val_accuracy", float("nan")),
                         time.time() - self.t0)

        return Progress()


def fit(model, dataset, cfg: FitConfig, *, seed: int = 0, callbacks: Sequence[Any] = (),
        compile: bool = True, prefix: str = "train", monitor: str = "val_accuracy") -> dict[str, Any]:
    """Fit on dataset.train with validation on dataset.val; returns a small history summary."""
    import tf_keras as keras

    if cfg.epochs == 0:
        return {"epochs_run": 0}
    keras.utils.set_random_seed(seed)
    if compile:
        compile_classifier(model, cfg)
    cbs = [_Progress(prefix), *callbacks]
    if cfg.patience:
        cbs.append(keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=cfg.patience,
                                                 restore_best_weights=True))
    hist = model.fit(dataset.x_train, dataset.y_train, validation_data=(dataset.x_val, dataset.y_val),
                     epochs=cfg.epochs, batch_size=cfg.batch_size, callbacks=cbs, verbose=0,
                     shuffle=True)
    h = hist.history
    out = {"epochs_run": len(h.get("loss", []))}
    if h.get(monitor):
        out["best_val_accuracy"] = float(max(h[monitor]))
    return out

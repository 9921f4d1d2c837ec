"""The one way to compile and fit a model: train, every fine-tuning stage (prune, cluster,
lowrank, qat, distill), the nas trials, the scripts and the tests call `fit`. `pipeline.compress`
wraps and strips models; it never fits them. The loss, metrics and early-stopping monitor come
from the dataset's task (pipeline/tasks.py)."""

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
    patience: int | None = Field(5, ge=1, description="stop after this many epochs without a "
                                 "better val accuracy; null: run all epochs (either way the best "
                                 "validation epoch is kept)")


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


def compile_for_task(model, cfg: FitConfig, task, reference=None) -> None:
    """Compile with a loss per output: sparse cross-entropy for classification heads (on logits
    unless the head ends in a softmax), MSE or MAE (task.loss) for regression and fidelity;
    task.loss_weights weigh the outputs."""
    import tf_keras as keras

    if task is None or (task.name == "classification" and not task.multi):
        return compile_classifier(model, cfg, reference=reference)
    spec = task.spec
    losses, metrics, weights = [], [], []
    for h in task.heads:
        if h.kind == "classification":
            losses.append(keras.losses.SparseCategoricalCrossentropy(from_logits=not h.probs))
            metrics.append(["accuracy"])
        else:
            name = spec.loss.get(h.output, "mse") if isinstance(spec.loss, dict) else spec.loss
            losses.append({"mse": keras.losses.MeanSquaredError,
                           "mae": keras.losses.MeanAbsoluteError}[name]())
            metrics.append(["mae"])
        weights.append((spec.loss_weights or {}).get(h.output, 1.0))
    one = len(losses) == 1
    model.compile(optimizer=optimizer(cfg.optimizer, cfg.learning_rate),
                  loss=losses[0] if one else losses, metrics=metrics[0] if one else metrics,
                  loss_weights=None if one else weights)


def monitor_of(task) -> str:
    """val_accuracy for a one-output classifier (as always); val_loss for every other task."""
    return "val_accuracy" if task is None or (task.name == "classification"
                                              and not task.multi) else "val_loss"


def _in_output_order(y, task):
    """{output name: targets} as a list in output order: TF-MOT's wrappers rename the output
    layers (prune_low_magnitude_<name>, quant_<name>), so names no longer match."""
    return [y[h.output] for h in task.heads] if isinstance(y, dict) else y


class _Progress:
    """A log line per epoch (tf_keras' own progress bar is noise in logs and CI)."""

    def __new__(cls, prefix: str):
        import tf_keras as keras

        class Progress(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.t0 = time.time()

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                if "accuracy" in logs or "val_accuracy" in logs:
                    log.info("%s epoch %d/%d  loss %.4f  acc %.4f  val_acc %.4f  (%.1fs)", prefix,
                             epoch + 1, self.params.get("epochs", 0),
                             logs.get("loss", float("nan")), logs.get("accuracy", float("nan")),
                             logs.get("val_accuracy", float("nan")), time.time() - self.t0)
                else:
                    log.info("%s epoch %d/%d  loss %.4f  val_loss %.4f  (%.1fs)", prefix,
                             epoch + 1, self.params.get("epochs", 0),
                             logs.get("loss", float("nan")), logs.get("val_loss", float("nan")),
                             time.time() - self.t0)

        return Progress()


class _KeepBest:
    """Remembers the weights (BatchNorm statistics and quantizer ranges included) of the best
    validation epoch, the starting point counting as epoch 0, and puts them back at the end.

    Best means the best `monitor` (highest, or lowest for a loss); a tie goes to the lower
    validation loss, so that on a small validation split a lucky epoch with a worse fit does not
    win on one image.
    """

    def __new__(cls, monitor: str, sign: float, start: dict[str, float], weights: list):
        import tf_keras as keras

        def score(logs):
            return (sign * logs.get(monitor, -sign * float("inf")),
                    -logs.get("val_loss", float("inf")))

        class KeepBest(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.best, self.best_epoch, self.best_weights = score(start), 0, weights

            def on_epoch_end(self, epoch, logs=None):
                if score(logs or {}) > self.best:
                    self.best, self.best_epoch = score(logs), epoch + 1
                    self.best_weights = self.model.get_weights()

            def on_train_end(self, logs=None):
                self.model.set_weights(self.best_weights)

        return KeepBest()


def _track_epoch(model, steps_per_epoch: int) -> list[tuple[Any, float]]:
    """Make every BatchNormalization layer's moving statistics average over about one epoch
    (momentum 1 - 1/steps) when its own momentum averages over more; returns what to restore.

    With Keras' default 0.99 the statistics span ~100 steps: on a small dataset (digits: 36
    steps an epoch) they lag the weights by epochs, and validation accuracy collapses (0.13
    while training accuracy is 0.95) until they catch up, so early stopping and the best-epoch
    choice see a model that is not the one being trained."""
    import tf_keras as keras

    target = 1.0 - 1.0 / max(2, steps_per_epoch)
    changed = []
    for layer in model.submodules:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.momentum > target:
            changed.append((layer, layer.momentum))
            layer.momentum = target
    return changed


def fit(model, dataset, cfg: FitConfig, *, seed: int = 0, callbacks: Sequence[Any] = (),
        compile: bool = True, prefix: str = "train", monitor: str | None = None,
        targets: tuple[Any, Any] | None = None, reference=None,
        keep: Literal["best", "last"] = "best") -> dict[str, Any]:
    """Fit on dataset.train with validation on dataset.val; returns a small history summary.

    The loss and the monitor follow `dataset.task` (none: a one-output classifier). `targets`
    (train, val) replace the labels (a fidelity task's float outputs, a regression
    distillation's blend); `reference`: the unwrapped model, for softmax detection.

    `keep="best"` (the protocol of every stage): the model ends with the weights of its best
    validation epoch, where the starting point is epoch 0, so fine-tuning (QAT, pruning,
    clustering, low-rank) never leaves a model worse on validation than it was given, and a
    long fixed-epoch run (a distillation teacher) does not end on a worse last epoch.
    `keep="last"` is for callers whose last epoch is the only valid one (a pruning schedule
    that reaches its target sparsity at the end). Early stopping (`patience`) only ends
    training sooner; it never decides which weights are kept.
    """
    import tf_keras as keras

    from pipeline import tasks

    if cfg.epochs == 0:
        return {"epochs_run": 0}
    task = getattr(dataset, "task", None)
    monitor = monitor or monitor_of(task)
    if targets is None:
        targets = (tasks.fit_targets(task, dataset) if task is not None
                   else (dataset.y_train, dataset.y_val))
    keras.utils.set_random_seed(seed)
    if compile:
        compile_for_task(model, cfg, task, reference=reference)
    cbs = [_Progress(prefix), *callbacks]
    mode = "min" if monitor.endswith("loss") else "max"
    ytr, yva = (_in_output_order(y, task) for y in targets)
    keeper = None
    if keep == "best":
        start = model.evaluate(dataset.x_val, yva, batch_size=cfg.batch_size, verbose=0,
                               return_dict=True)
        start = {f"val_{k}": float(v) for k, v in start.items()}
        keeper = _KeepBest(monitor, 1.0 if mode == "max" else -1.0, start, model.get_weights())
        cbs.append(keeper)
    if cfg.patience:
        cbs.append(keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=cfg.patience))
    restore = _track_epoch(model, steps_per_epoch(len(ytr if not isinstance(ytr, list) else ytr[0]),
                                                  cfg.batch_size))
    try:
        hist = model.fit(dataset.x_train, ytr, validation_data=(dataset.x_val, yva),
                         epochs=cfg.epochs, batch_size=cfg.batch_size, callbacks=cbs, verbose=0,
                         shuffle=True)
    finally:  # the saved model keeps the momentum it was built with
        for layer, momentum in restore:
            layer.momentum = momentum
    h = hist.history
    out: dict[str, Any] = {"epochs_run": len(h.get("loss", []))}
    if keeper is not None:
        out["best_epoch"] = keeper.best_epoch
        out["best_" + monitor] = float(keeper.best[0]) * (1.0 if mode == "max" else -1.0)
        if keeper.best_epoch == 0:
            log.info("%s: no epoch beat the starting point on validation (%s %.4f); kept it",
                     prefix, monitor, out["best_" + monitor])
    elif h.get(monitor):
        out["last_" + monitor] = float(h[monitor][-1])
    return out

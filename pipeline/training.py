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


def fit(model, dataset, cfg: FitConfig, *, seed: int = 0, callbacks: Sequence[Any] = (),
        compile: bool = True, prefix: str = "train", monitor: str | None = None,
        targets: tuple[Any, Any] | None = None, reference=None) -> dict[str, Any]:
    """Fit on dataset.train with validation on dataset.val; returns a small history summary.

    The loss and the early-stopping monitor follow `dataset.task` (none: a one-output
    classifier). `targets` (train, val) replace the labels (a fidelity task's float outputs,
    a regression distillation's blend); `reference`: the unwrapped model, for softmax detection.
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
    if cfg.patience:
        cbs.append(keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=cfg.patience,
                                                 restore_best_weights=True))
    ytr, yva = (_in_output_order(y, task) for y in targets)
    hist = model.fit(dataset.x_train, ytr, validation_data=(dataset.x_val, yva),
                     epochs=cfg.epochs, batch_size=cfg.batch_size, callbacks=cbs, verbose=0,
                     shuffle=True)
    h = hist.history
    out = {"epochs_run": len(h.get("loss", []))}
    if h.get(monitor):
        best = max(h[monitor]) if mode == "max" else min(h[monitor])
        out["best_" + monitor] = float(best)
    return out

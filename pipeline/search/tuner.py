"""EdgeTuner: a `keras_tuner.Tuner` whose trial is build → train → convert → time.

keras-tuner 1.4's own `run_trial` wants Keras 3 models and TensorBoard; ours builds the tf_keras
model from the trial's hyperparameters (`space.build`), trains it with `pipeline.training.fit`,
converts it to TFLite (fp32 or int8), times the file on this host with edge-runner (or, with
`latency: predicted`, predicts its latency from the host's latency table), measures the
file's validation accuracy, and returns plain floats. Constraints (latency, size, params) enter
the objective: an infeasible trial scores below every feasible one (see `score`).
Each trial folder keeps model.keras, the .tflite and runs.jsonl (one line per time it ran).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras_tuner as kt
import numpy as np
from keras_tuner.src.engine.trial import TrialStatus

from pipeline.artifacts import json_text
from pipeline.search import space as S
from pipeline.search.objective import host_lock, score, violations

log = logging.getLogger("edgepipe")


@dataclass
class TrialSettings:
    """How every trial is trained, converted, timed and judged."""

    num_stages: int = 4
    epochs: int = 8
    batch_size: int = 32
    optimizer: str = "adam"
    patience: int | None = None
    quantization: str = "int8"
    threads: int = 1
    warmup: int = 5
    min_runs: int = 50
    min_seconds: float = 0.3
    max_latency_ms: float | None = None
    max_size_kb: float | None = None
    max_params: float | None = None
    seed: int = 0
    #: "measured": every trial's .tflite timed; "predicted": the host latency table + predictor
    latency: str = "measured"
    table: str | None = None  # predicted: the table file (None: where `edgepipe latency` keeps it)

    def limits(self) -> dict[str, float]:
        return {k: v for k, v in (("latency_ms", self.max_latency_ms),
                                  ("size_kb", self.max_size_kb),
                                  ("params", self.max_params)) if v is not None}


def measure(model, dataset, settings: TrialSettings, folder: Path) -> dict[str, float]:
    """Convert, time and score `model`; writes model_<mode>.tflite into `folder`."""
    from edge_runner.backends import load
    from edge_runner.bench import benchmark

    from pipeline import models, tflite
    from pipeline.artifacts import atomic_write_bytes

    mode = settings.quantization
    t0 = time.time()
    data = tflite.convert(model, mode, dataset.calibration() if mode == "int8" else None)
    path = folder / f"model_{mode}.tflite"
    atomic_write_bytes(path, data)
    t1 = time.time()
    with host_lock(folder.parent / "bench.lock"):
        t2 = time.time()
        if settings.latency == "predicted":
            from pipeline.search.latency import predicted_ms

            latency = {"latency_ms": predicted_ms(model, settings), "latency_predicted": 1.0}
        else:
            b = benchmark(path, threads=settings.threads, warmup=settings.warmup,
                          min_runs=settings.min_runs, min_seconds=settings.min_seconds)
            latency = {"latency_ms": float(b["latency_ms"]["p50"]),
                       "latency_p90_ms": float(b["latency_ms"]["p90"])}
    t3 = time.time()
    out = load(path, threads=settings.threads).predict(dataset.x_val)
    params, _ = models.count_params(model)
    p_true = np.clip(out[np.arange(len(out)), dataset.y_val], 1e-4, 1.0)
    m = {"val_accuracy": float(np.mean(out.argmax(-1) == dataset.y_val)),
         "val_loss": float(-np.mean(np.log(p_true))),  # smooth: ranks equal accuracies
         "keras_val_accuracy": models.accuracy(model, dataset.x_val, dataset.y_val),
         **latency, "size_kb": len(data) / 1024, "params": float(params),
         "convert_seconds": t1 - t0, "bench_seconds": t3 - t2, "bench_wait_seconds": t2 - t1}
    m["feasible"] = 0.0 if violations(m, settings) else 1.0
    m["score"] = score(m, settings)
    return m


def train_candidate(values: dict[str, Any], dataset, settings: TrialSettings, *,
                    warm_start: Path | None = None, prefix: str = "[nas]"):
    """Build (or continue, for hyperband) and train one candidate. Returns (model, seconds, epochs)."""
    import tf_keras as keras

    from pipeline import models
    from pipeline.training import FitConfig, fit

    keras.backend.clear_session()
    keras.utils.set_random_seed(settings.seed)
    model, lr = S.build(values, settings.num_stages, dataset.input_shape, dataset.num_classes)
    epochs = int(values.get("tuner/epochs", settings.epochs))
    if warm_start is not None and warm_start.is_file():
        model.set_weights(models.load_model(warm_start, unsafe=True).get_weights())
        epochs -= int(values.get("tuner/initial_epoch", 0))
    t0 = time.time()
    cfg = FitConfig(epochs=max(epochs, 1), batch_size=settings.batch_size, learning_rate=lr,
                    optimizer=settings.optimizer, patience=settings.patience)
    fit(model, dataset, cfg, seed=settings.seed, prefix=prefix)
    return model, time.time() - t0, cfg.epochs


class EdgeTuner(kt.Tuner):
    """Runs trials on a local oracle, or, as a worker, on a chief's (see distribute.py)."""

    def __init__(self, oracle, settings: TrialSettings, *, directory, project_name: str,
                 remote=None, idle_sleep: float = 0.5):
        self.settings = settings
        self.idle_sleep = idle_sleep
        self.trials_run: list[str] = []
        with contextlib.redirect_stdout(io.StringIO()):  # keras-tuner prints "Reloading..."
            super().__init__(oracle=oracle, directory=str(directory), project_name=project_name)
        if remote is not None:  # a worker: every oracle call goes to the chief
            self.oracle = remote(self.oracle)

    def reload(self):
        """The oracle is reloaded by `oracle.open_project` (once); the tuner has no state."""

    def search(self, *fit_args, **fit_kwargs):
        """keras-tuner's loop, without its chief branch and its busy wait on IDLE."""
        self.on_search_begin()
        while True:
            self.pre_create_trial()
            trial = self.oracle.create_trial(self.tuner_id)
            if trial.status == TrialStatus.STOPPED:
                break
            if trial.status == TrialStatus.IDLE:
                time.sleep(self.idle_sleep)
                continue
            self.on_trial_begin(trial)
            self._try_run_and_update_trial(trial, *fit_args, **fit_kwargs)
            self.on_trial_end(trial)
            self.trials_run.append(trial.trial_id)
        self.on_search_end()

    def model_path(self, trial_id: str) -> Path:
        return Path(self.get_trial_dir(trial_id)) / "model.keras"

    def run_trial(self, trial, dataset) -> dict[str, float]:
        from pipeline import models

        values = trial.hyperparameters.values
        folder = Path(self.get_trial_dir(trial.trial_id))
        with open(folder / "runs.jsonl", "a") as f:  # proof of how often each trial ran
            f.write(json_text({"tuner": self.tuner_id, "host": socket.gethostname(),
                                "pid": os.getpid(), "time": time.time()}) + "\n")
        prev = values.get("tuner/trial_id")
        model, seconds, epochs = train_candidate(
            values, dataset, self.settings, prefix=f"[nas {self.tuner_id}] trial {trial.trial_id}",
            warm_start=self.model_path(prev) if prev else None)
        models.save_model(model, self.model_path(trial.trial_id))
        m = measure(model, dataset, self.settings, folder)
        m.update(train_seconds=seconds, epochs=float(epochs))
        return m

"""`quantize`: post-training quantization in four modes, or quantization-aware training.

mode: ptq_dynamic | ptq_float16 | ptq_int8 | ptq_int16x8   convert the newest Keras model
      qat   TF-MOT quantize_model (only supported layers with skip_unsupported), fine-tune, then
            full-integer int8. A sparse input (pruned) uses the prune-preserving scheme, a
            clustered one the cluster-preserving scheme, so the .tflite keeps zeros/clusters.
Accuracy gate: the .tflite's test accuracy against the float input model's; a drop beyond
`max_accuracy_drop` (or the recipe's gates) fails the stage with both numbers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.errors import did_you_mean
from pipeline.stages.base import Artifact, Stage, StageResult
from pipeline.training import FitConfig

log = logging.getLogger("edgepipe")

#: stage mode -> pipeline.tflite mode of the converted file
MODES = {"ptq_dynamic": "dynamic", "ptq_float16": "float16", "ptq_int8": "int8",
         "ptq_int16x8": "int16x8", "qat": "int8"}
PRESERVE = ("auto", "none", "sparsity", "clusters", "clusters+sparsity")


class QuantizeConfig(FitConfig):
    """`quantize:` settings: the mode (ptq_* or qat), calibration, the accuracy budget; the
    fine-tuning fields apply to qat only."""

    mode: str = Field("ptq_int8", description=" | ".join(MODES))
    calibration: int | None = Field(
        None, description="samples for int8/int16x8 calibration (null: the dataset's "
                          "calibration_size)")
    max_accuracy_drop: float | None = Field(
        None, ge=0, le=1, description="fail when the .tflite is this much below the float model")
    max_metric_drop: float | None = Field(
        None, ge=0, description="fail when the .tflite's task metric is this much worse than the "
                                "float model's (in the metric's direction)")
    io: Literal["int8", "float32"] | None = Field(
        None, description="ptq_int8/qat: the file's input/output type; null: what keeps the "
                          "task's metric (int8 for classifiers, float32 otherwise)")
    # qat
    skip_unsupported: bool = Field(False, description="qat: leave unsupported layers in float")
    preserve: str = Field("auto", description="qat: auto | none | sparsity | clusters | "
                                              "clusters+sparsity")
    epochs: int = Field(2, ge=0, description="qat fine-tuning epochs")
    learning_rate: float = Field(1e-4, gt=0)
    patience: int | None = Field(None, ge=1)

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str) -> str:
        if v not in MODES:
            raise ValueError(f"unknown mode {v!r}{did_you_mean(v, MODES)}; "
                             f"expected one of: {', '.join(MODES)}")
        return v

    @field_validator("preserve")
    @classmethod
    def _preserve(cls, v: str) -> str:
        if v not in PRESERVE:
            raise ValueError(f"unknown preserve {v!r}{did_you_mean(v, PRESERVE)}; "
                             f"expected one of: {', '.join(PRESERVE)}")
        return v

    @field_validator("calibration")
    @classmethod
    def _calibration(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"int8 needs calibration data: expected calibration >= 1. "
                             f"Received: calibration={v}")
        return v

    @model_validator(mode="after")
    def _qat_only(self) -> "QuantizeConfig":
        if self.mode != "qat":
            for key in ("skip_unsupported", "preserve", "epochs", "learning_rate", "patience",
                        "batch_size", "optimizer"):
                if key in self.model_fields_set:
                    raise ValueError(f"{key} applies to mode qat, not {self.mode}")
        if self.io is not None and MODES[self.mode] != "int8":
            raise ValueError(f"io applies to modes ptq_int8 and qat, not {self.mode}")
        return self


def qat_model(model, ds, cfg: QuantizeConfig, seed: int = 0, calibration=None
              ) -> tuple[Any, dict[str, Any]]:
    """TF-MOT quantization-aware training of `model` on `ds`: wrap (activation ranges started
    from the float model's on `calibration` inputs), then fine-tune with
    `pipeline.training.fit` on the task's targets. Returns (QAT model, metrics: preserve, scheme,
    float_layers, fit summary, qat_keras_<metric>)."""
    from pipeline import tasks
    from pipeline.compress._keras import require_graph_model
    from pipeline.compress.quantize import quantize_aware
    from pipeline.training import fit

    require_graph_model(model, "quantization-aware training")
    task = tasks.of(model, ds)
    qat, info = quantize_aware(model, skip_unsupported=cfg.skip_unsupported, preserve=cfg.preserve,
                               calibration=calibration)
    m = info.to_json()
    m.update(fit(qat, ds, cfg, seed=seed, prefix="qat", reference=model,
                 targets=tasks.fit_targets(task, ds, model)))
    m.update({f"qat_keras_{k}": v for k, v in tasks.keras_metrics(qat, ds, task).items()})
    return qat, m


def quantize_model(model, ds, cfg: QuantizeConfig, dest: str | Path, seed: int = 0,
                   gates=None) -> dict[str, Any]:
    """Quantize `model` per `cfg` into the .tflite `dest`; returns the file's metrics.

    The file is validated and gated in a temp folder and moved to `dest` only when it passes,
    so a failed gate leaves nothing behind.
    """
    from pipeline import gates as gate_checks
    from pipeline import models, tasks, tflite

    task = tasks.of(model, ds)
    float_pred = tasks.predict(model, ds.x_test)
    float_m = tasks.evaluate(task, float_pred, ds.y_test)
    mode = MODES[cfg.mode]
    calib = ds.calibration(cfg.calibration) if mode in ("int8", "int16x8") else None
    m: dict[str, Any] = {"mode": cfg.mode, **{f"float_{k}": v for k, v in float_m.items()}}
    converted = model
    if cfg.mode == "qat":
        converted, qm = qat_model(model, ds, cfg, seed=seed, calibration=calib)
        m.update(qm)
    params, nonzero = models.count_params(model)  # the float model's, not QAT's quantizers

    def check(path: Path, fm: dict[str, Any]) -> None:
        fm.update(params=params, nonzero_params=nonzero)
        if mode in ("int8", "int16x8"):
            fm["tflite_sparsity"], fm["tflite_overall_sparsity"] = tflite.kernel_sparsity(path)
        label = Path(dest).name
        breaches = []
        drop = fm.get("accuracy_drop")
        if cfg.max_accuracy_drop is not None and drop is not None and drop > cfg.max_accuracy_drop:
            breaches.append(f"{label}: {cfg.mode} accuracy {fm['accuracy']:.4f} is "
                            f"{drop:.4f} below the float model's {fm['keras_accuracy']:.4f} "
                            f"(max_accuracy_drop {cfg.max_accuracy_drop})")
        worse, p = fm.get("metric_drop"), task.primary
        if cfg.max_metric_drop is not None and worse is not None and worse > cfg.max_metric_drop:
            breaches.append(f"{label}: {cfg.mode} {p} {fm[p]:.4g} is {worse:.4g} worse than the "
                            f"float model's {fm['keras_' + p]:.4g} (max_metric_drop "
                            f"{cfg.max_metric_drop}, {'higher' if task.higher_is_better else 'lower'}"
                            f" is better)")
        if gates is not None:
            breaches += gate_checks.check_accuracy(gates, label, fm)
        gate_checks.raise_breaches(breaches)

    m.update(tflite.export(converted, dest, mode, ds, reference=float_pred, calibration=calib,
                           io=cfg.io, check=check))
    return m


class Quantize(Stage):
    name = "quantize"
    Config = QuantizeConfig
    uses_model = True
    help = "PTQ (dynamic/float16/int8/int16x8) or QAT int8 of the newest Keras model, gated"
    makes = ("tflite",)

    def run(self, ctx, cfg: QuantizeConfig) -> StageResult:
        ds = ctx.dataset()
        model = ctx.load_model(layers=cfg.mode == "qat")
        fname = f"model_{cfg.mode}.tflite"
        m = quantize_model(model, ds, cfg, ctx.out_dir / fname, seed=ctx.seed,
                           gates=ctx.recipe.gates)
        m.update(ctx.carried_metrics())
        from pipeline.stages.export import log_metric

        ctx.log("[quantize] %s: %s, %d bytes (gzip %d)%s", cfg.mode, log_metric(m),
                m["size_bytes"], m["gzip_bytes"], f", io {m['io']}" if "io" in m else "")
        art = Artifact(name=cfg.mode, path=ctx.rel(fname), format="tflite",
                       quantization=MODES[cfg.mode], metrics=m)
        p = m["task"]["primary"]
        summary = {k: m[k] for k in ("mode", "accuracy", "float_accuracy", "accuracy_drop", p,
                                     f"keras_{p}", "metric_drop", "io", "size_bytes",
                                     "gzip_bytes") if k in m}
        return StageResult([art], summary)

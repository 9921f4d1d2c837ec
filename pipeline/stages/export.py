"""`export`: the newest Keras model → validated .tflite files, one per mode."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from pipeline import gates, tasks, tflite
from pipeline.stages.base import Artifact, Stage, StageConfig, StageResult


class ExportConfig(StageConfig):
    modes: list[str] = Field(["fp32", "int8"], min_length=1,
                             description="fp32 | dynamic | float16 | int8 | int16x8")
    sparse: bool = Field(False, description="store pruned weights sparsely (EXPERIMENTAL_SPARSITY)")
    io: Literal["int8", "float32"] | None = Field(
        None, description="int8 files' input/output type; null: what keeps the task's metric "
                          "(int8 for classifiers, float32 otherwise)")

    @field_validator("modes")
    @classmethod
    def _modes(cls, v: list[str]) -> list[str]:
        for m in v:
            if m not in tflite.MODES:
                from pipeline.errors import did_you_mean

                raise ValueError(f"unknown mode {m!r}{did_you_mean(m, tflite.MODES)}; "
                                 f"expected one of: {', '.join(tflite.MODES)}")
        return list(dict.fromkeys(v))


def log_metric(m: dict) -> str:
    """'mae 43.1 (keras 42.9)' for the file's task metric, with its max |diff| when known."""
    p = m["task"]["primary"]
    ref = m.get(f"keras_{p}")
    out = f"{p} {m.get(p, float('nan')):.4g}" + (f" (keras {ref:.4g})" if ref is not None else "")
    return out + (f"  max|diff| {m['max_abs_diff']:.2e}" if "max_abs_diff" in m else "")


class Export(Stage):
    name = "export"
    Config = ExportConfig
    uses_model = True
    help = "convert the newest Keras model to .tflite per mode; validate each on the test split"
    makes = ("tflite",)

    def run(self, ctx, cfg: ExportConfig) -> StageResult:
        ds = ctx.dataset()
        model = ctx.load_model(layers=False)
        reference = tasks.predict(model, ds.x_test)
        carried = ctx.carried_metrics()
        arts, breaches = [], []
        for mode in cfg.modes:
            suffix = "_sparse" if cfg.sparse else ""
            fname = f"model_{mode}{suffix}.tflite"
            m = tflite.export(model, ctx.out_dir / fname, mode, ds, sparse=cfg.sparse,
                              reference=reference, io=cfg.io)
            m.update(carried)
            ctx.log("[export] %-8s %s  %d bytes (gzip %d)", mode, log_metric(m),
                    m["size_bytes"], m["gzip_bytes"])
            breaches += gates.check_accuracy(ctx.recipe.gates, fname, m)
            arts.append(Artifact(name=f"{mode}{suffix}", path=ctx.rel(fname), format="tflite",
                                 quantization=mode, metrics=m))
        gates.raise_breaches(breaches)
        return StageResult(arts)

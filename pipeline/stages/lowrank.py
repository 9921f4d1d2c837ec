"""`lowrank`: truncated-SVD factorization of Dense kernels and 1x1 convolutions, fine-tuned.

Give exactly one of `rank` (fixed), `ratio` (of each layer's full rank) or `energy` (fraction of
the squared singular values kept). A layer is factorized only when that saves parameters. The
saved model holds plain Dense/Conv2D layers; metrics carry params and MACs before and after.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from pipeline.stages.base import Stage, StageResult
from pipeline.training import FitConfig


class LowRankConfig(FitConfig):
    """`lowrank:` settings: rank, ratio or energy (one of them), which layers, and the
    fine-tuning."""

    rank: int | None = Field(None, description="fixed rank (> 0)")
    ratio: float | None = Field(None, description="rank as a fraction of the full rank, (0, 1]")
    energy: float | None = Field(None, description="keep this fraction of the energy, (0, 1]")
    layers: list[str] | None = Field(None, description="factorize only these layers")
    skip: list[str] = Field(default_factory=list)
    epochs: int = Field(3, ge=0)
    learning_rate: float = Field(5e-4, gt=0)
    patience: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one(self) -> "LowRankConfig":
        given = [k for k in ("rank", "ratio", "energy") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of rank, ratio, energy; got {', '.join(given) or 'none'}")
        if self.rank is not None and self.rank <= 0:
            raise ValueError(f"Expected rank > 0. Received: rank={self.rank}")
        for k in ("ratio", "energy"):
            v = getattr(self, k)
            if v is not None and not 0 < v <= 1:
                raise ValueError(f"Expected {k} in (0, 1]. Received: {k}={v}")
        return self


def lowrank_model(model, ds, cfg: LowRankConfig, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """Factorize and fine-tune `model` on `ds`; returns (new model, metrics)."""
    from pipeline import tasks
    from pipeline.compress.lowrank import factorize
    from pipeline.training import fit

    task = tasks.of(model, ds)
    before = tasks.before(model, ds, task)
    targets = tasks.fit_targets(task, ds, model)
    new, rep = factorize(model, rank=cfg.rank, ratio=cfg.ratio, energy=cfg.energy,
                         layers=cfg.layers, skip=cfg.skip)
    after_svd = {f"{k}_after_svd": v for k, v in tasks.keras_metrics(new, ds, task).items()}
    summary = fit(new, ds, cfg, seed=seed, prefix="lowrank", targets=targets, reference=model)
    return new, {**before, **after_svd,
                 "lowrank": rep["layers"], "params_before": rep["params_before"],
                 "params_after": rep["params_after"], "macs_before": rep["macs_before"],
                 "macs_after": rep["macs_after"], **summary}


class LowRank(Stage):
    name = "lowrank"
    Config = LowRankConfig
    uses_model = True
    help = "SVD factorization of Dense and 1x1 conv layers, fine-tuned; saves model.keras"
    makes = ("keras",)

    def run(self, ctx, cfg: LowRankConfig) -> StageResult:
        new, m = lowrank_model(ctx.load_model(), ctx.dataset(), cfg, seed=ctx.seed)
        art = ctx.save_model(new, "model", metrics=m)
        from pipeline.tasks import headline

        ctx.log("[lowrank] params %d -> %d, MACs %d -> %d, %s", m["params_before"],
                m["params_after"], m["macs_before"], m["macs_after"], headline(art.metrics))
        p = art.metrics["task"]["primary"]
        return StageResult([art], {k: art.metrics[k] for k in (
            "params_before", "params_after", "macs_before", "macs_after", f"{p}_before", p)
            if k in art.metrics})

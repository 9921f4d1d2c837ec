"""`train`: fit the recipe's model (or the newest one) on the dataset, with early stopping."""

from __future__ import annotations

from pipeline.stages.base import Stage, StageResult
from pipeline.tasks import headline
from pipeline.training import FitConfig, fit


class Train(Stage):
    name = "train"
    Config = FitConfig
    trains = True
    help = "fit the model with early stopping on validation accuracy; saves model.keras"
    makes = ("keras",)

    def run(self, ctx, cfg: FitConfig) -> StageResult:
        ds = ctx.dataset()
        model = ctx.load_model()
        summary = fit(model, ds, cfg, seed=ctx.seed)
        art = ctx.save_model(model, "model", metrics=summary)
        ctx.log("[train] task %s", art.metrics["task"]["describe"])
        ctx.log("[train] %s, %d params", headline(art.metrics), art.metrics["params"])
        return StageResult([art], summary)

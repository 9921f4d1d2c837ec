"""`cluster`: weight sharing with TF-MOT (`cluster_weights`), fine-tuning, `strip_clustering`.

Each clustered kernel keeps at most `clusters` distinct values; zeros are kept when the input was
pruned (`preserve_sparsity: auto`). The artifact's metrics carry `unique_values` per layer; the
gzip size of the .tflite is measured by the export/quantize stage that follows.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import Field, field_validator

from pipeline.errors import did_you_mean
from pipeline.stages.base import Stage, StageResult
from pipeline.training import FitConfig

INITS = ("kmeans_plus_plus", "linear", "density_based", "random")


class ClusterConfig(FitConfig):
    """`cluster:` settings: clusters per kernel, init, which layers, and the fine-tuning."""

    clusters: int = Field(16, description="number of shared values per kernel (>= 2)")
    init: str = Field("kmeans_plus_plus", description=" | ".join(INITS))
    preserve_sparsity: Union[Literal["auto"], bool] = Field(
        "auto", description="keep zeros; auto: when the input model is sparse")
    layers: list[str] | None = Field(None, description="cluster only these layers")
    skip: list[str] = Field(default_factory=list)
    skip_first: bool = False
    skip_classifier: bool = False
    epochs: int = Field(2, ge=0)
    learning_rate: float = Field(1e-4, gt=0)
    patience: int | None = Field(None, ge=1)

    @field_validator("clusters")
    @classmethod
    def _clusters(cls, v: int) -> int:
        if v < 2:
            raise ValueError(f"Expected clusters >= 2. Received: clusters={v}")
        return v

    @field_validator("init")
    @classmethod
    def _init(cls, v: str) -> str:
        if v not in INITS:
            raise ValueError(f"unknown init {v!r}{did_you_mean(v, INITS)}; "
                             f"expected one of: {', '.join(INITS)}")
        return v


def cluster_model(model, ds, cfg: ClusterConfig, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """Cluster and fine-tune `model` on `ds`; returns (stripped model, metrics)."""
    import tf_keras as keras

    from pipeline import tasks
    from pipeline.compress import clustering as C
    from pipeline.compress.magnitude import overall_sparsity, sparsity_report
    from pipeline.training import fit

    task = tasks.of(model, ds)
    before = tasks.before(model, ds, task)
    targets = tasks.fit_targets(task, ds, model)
    keras.utils.set_random_seed(seed)
    wrapped, keep_zeros = C.apply_clustering(
        model, cfg.clusters, cfg.init, preserve_sparsity=cfg.preserve_sparsity, layers=cfg.layers,
        skip=cfg.skip, skip_first=cfg.skip_first, skip_classifier=cfg.skip_classifier)
    summary = fit(wrapped, ds, cfg, seed=seed, prefix="cluster", targets=targets, reference=model)
    new = C.strip_clustering(wrapped)
    m = {"clusters": cfg.clusters, "init": cfg.init, "preserve_sparsity": keep_zeros,
         **before, "unique_values": C.unique_values_report(new), **summary}
    if keep_zeros:
        m["sparsity"] = sparsity_report(new)
        m["overall_sparsity"] = round(overall_sparsity(new), 6)
    return new, m


class Cluster(Stage):
    name = "cluster"
    Config = ClusterConfig
    uses_model = True
    help = "weight clustering (TF-MOT) with fine-tuning; saves model.keras"
    makes = ("keras",)

    def run(self, ctx, cfg: ClusterConfig) -> StageResult:
        new, m = cluster_model(ctx.load_model(), ctx.dataset(), cfg, seed=ctx.seed)
        art = ctx.save_model(new, "model", metrics=m)
        from pipeline.tasks import headline

        ctx.log("[cluster] %d clusters: %s", cfg.clusters, headline(art.metrics))
        p = art.metrics["task"]["primary"]
        return StageResult([art], {"clusters": cfg.clusters,
                                   **{k: art.metrics[k] for k in (p, f"{p}_before")
                                      if k in art.metrics}})

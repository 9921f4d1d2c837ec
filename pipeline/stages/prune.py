"""`prune`: unstructured (TF-MOT magnitude, M:N) or structured (channels) pruning + fine-tuning.

method: magnitude   prune_low_magnitude to `sparsity` with a constant/polynomial schedule whose
                    frequency fits the real number of training steps; stripped before saving
        m_by_n      TF-MOT M:N (default 2:4) sparsity on Conv2D/Dense, checked after stripping
        channels    pipeline.compress.prune_channels: whole filters removed (a narrower model)
`steps` > 1 prunes iteratively (prune -> fine-tune, `steps` times) towards the final amount.
The artifact's metrics carry `sparsity` (per layer) or `channels` (per layer, before/after).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.errors import did_you_mean
from pipeline.stages.base import Stage, StageResult
from pipeline.training import FitConfig

log = logging.getLogger("edgepipe")

METHODS = ("magnitude", "m_by_n", "channels")
#: settings that only one method reads; giving them to another method is an error
_ONLY = {
    "sparsity": "magnitude", "schedule": "magnitude", "initial_sparsity": "magnitude",
    "begin_step": "magnitude", "end_step": "magnitude", "frequency": "magnitude",
    "m_by_n": "m_by_n",
    "ratio": "channels", "criterion": "channels", "round_to": "channels",
    "min_channels": "channels", "protect": "channels", "per_layer": "channels",
    "calibration": "channels",
}
_TFMOT = {"layers": ("magnitude", "m_by_n"), "skip": ("magnitude", "m_by_n"),
          "skip_first": ("magnitude", "m_by_n"), "skip_classifier": ("magnitude", "m_by_n")}


class PruneConfig(FitConfig):
    """`prune:` settings: the method (magnitude | m_by_n | channels), its own settings (giving
    another method's is an error), and the fine-tuning (FitConfig's fields)."""

    method: str = Field("magnitude", description="magnitude | m_by_n | channels")
    # magnitude
    sparsity: float = Field(0.5, description="target fraction of zero weights, in [0, 1)")
    schedule: Literal["constant", "polynomial"] = "polynomial"
    initial_sparsity: float = Field(0.0, ge=0, lt=1)
    begin_step: int = Field(0, ge=0)
    end_step: int | None = Field(None, description="null: 3/4 of the fine-tuning steps")
    frequency: int | None = Field(None, ge=1, description="null: fitted to the training steps")
    # m_by_n
    m_by_n: tuple[int, int] = Field((2, 4), description="m zeros in every n weights")
    # magnitude and m_by_n
    layers: list[str] | None = Field(None, description="prune only these layers (default: all)")
    skip: list[str] = Field(default_factory=list, description="layers left dense")
    skip_first: bool = Field(False, description="leave the first prunable layer (stem) dense")
    skip_classifier: bool = Field(False, description="leave the last prunable layer dense")
    # channels
    ratio: float = Field(0.5, description="fraction of channels removed per group, in [0, 1)")
    criterion: str = Field("l1", description="l1 | l2 | bn_scale | mean_activation | apoz")
    round_to: int = Field(8, ge=1, description="kept channel counts rounded to a multiple")
    min_channels: int = Field(8, ge=1)
    protect: list[str] = Field(default_factory=list, description="layers whose channels stay")
    per_layer: dict[str, float] = Field(default_factory=dict, description="{layer: ratio}")
    calibration: int = Field(256, ge=1, description="samples for activation criteria")
    # fine-tuning
    steps: int = Field(1, ge=1, description="iterative prune -> fine-tune rounds")
    epochs: int = Field(2, ge=0)
    learning_rate: float = Field(5e-4, gt=0)
    patience: int | None = Field(None, ge=1, description="channels only: early stopping")

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        if v not in METHODS:
            raise ValueError(f"unknown method {v!r}{did_you_mean(v, METHODS)}; "
                             f"expected one of: {', '.join(METHODS)}")
        return v

    @field_validator("sparsity", "ratio")
    @classmethod
    def _fraction(cls, v: float, info) -> float:
        if not 0 <= v < 1:
            raise ValueError(f"Expected {info.field_name} in [0, 1). Received: {info.field_name}={v}")
        return v

    @field_validator("per_layer")
    @classmethod
    def _per_layer(cls, v: dict[str, float]) -> dict[str, float]:
        for k, r in v.items():
            if not 0 <= r < 1:
                raise ValueError(f"Expected per_layer ratios in [0, 1). Received: per_layer[{k!r}]={r}")
        return v

    @field_validator("m_by_n")
    @classmethod
    def _mn(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 0 < v[0] < v[1]:
            raise ValueError(f"Expected 0 < m < n. Received: m_by_n={list(v)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "PruneConfig":
        for key in sorted(self.model_fields_set):
            owner = _ONLY.get(key)
            if owner and owner != self.method:
                raise ValueError(f"{key} applies to method {owner}, not {self.method}")
            if key in _TFMOT and self.method not in _TFMOT[key]:
                raise ValueError(f"{key} applies to methods magnitude and m_by_n; for channels "
                                 f"use protect")
        if self.end_step is not None and self.end_step <= self.begin_step:
            raise ValueError(f"Expected end_step > begin_step (the schedule ends before it "
                             f"begins). Received: begin_step={self.begin_step}, "
                             f"end_step={self.end_step}")
        if self.steps > 1 and self.method == "m_by_n":
            raise ValueError("steps applies to methods magnitude and channels; m_by_n sets its "
                             "masks once")
        if self.patience is not None and self.method != "channels":
            raise ValueError(f"patience must be null for method {self.method}: early stopping "
                             f"would restore weights from before the target sparsity")
        if self.method != "channels" and self.epochs < 1:
            raise ValueError(f"method {self.method} needs epochs >= 1 (TF-MOT prunes during "
                             f"training steps)")
        return self


def _tfmot_kwargs(cfg: PruneConfig) -> dict[str, Any]:
    return {"layers": cfg.layers, "skip": cfg.skip, "skip_first": cfg.skip_first,
            "skip_classifier": cfg.skip_classifier}


def _fit(model, ds, cfg: PruneConfig, seed: int, targets, callbacks=(), prefix="prune") -> dict:
    """Fine-tune on `targets`: the labels, or (task fidelity) the outputs of the model pruning
    started from. TF-MOT's masks reach their target sparsity only at the end of the schedule,
    so magnitude and m_by_n keep the last epoch, channels (already pruned) its best one."""
    from pipeline.training import fit

    keep = "best" if cfg.method == "channels" else "last"
    return fit(model, ds, cfg, seed=seed, callbacks=callbacks, prefix=prefix, targets=targets,
               keep=keep)


def _magnitude(model, ds, cfg: PruneConfig, seed: int, targets) -> tuple[Any, dict]:
    from pipeline.compress import magnitude as M
    from pipeline.training import steps_per_epoch

    plans = []
    steps = steps_per_epoch(len(ds.x_train), cfg.batch_size)
    for i in range(1, cfg.steps + 1):
        target = cfg.sparsity * i / cfg.steps
        start = cfg.initial_sparsity if i == 1 else cfg.sparsity * (i - 1) / cfg.steps
        plan = M.plan_schedule(cfg.epochs * steps, target, cfg.schedule,
                               initial_sparsity=min(start, target), begin_step=cfg.begin_step,
                               end_step=cfg.end_step, frequency=cfg.frequency)
        wrapped = M.apply_pruning(model, plan, **_tfmot_kwargs(cfg))
        _fit(wrapped, ds, cfg, seed + i, targets, callbacks=M.pruning_callbacks(),
             prefix=f"prune {i}/{cfg.steps}")
        model = M.strip_pruning(wrapped)
        plans.append(plan.to_json())
        log.info("[prune] step %d/%d: sparsity %.3f (target %.3f)", i, cfg.steps,
                 M.overall_sparsity(model), target)
    return model, {"sparsity": M.sparsity_report(model),
                   "overall_sparsity": round(M.overall_sparsity(model), 6), "schedules": plans}


def _m_by_n(model, ds, cfg: PruneConfig, seed: int, targets) -> tuple[Any, dict]:
    from pipeline.compress import magnitude as M

    wrapped = M.apply_pruning(model, m_by_n=cfg.m_by_n, **_tfmot_kwargs(cfg))
    pruned_names = [lay.layer.name for lay in wrapped.layers if hasattr(lay, "pruning_vars")]
    _fit(wrapped, ds, cfg, seed, targets, callbacks=M.pruning_callbacks())
    model = M.strip_pruning(wrapped)
    M.require_m_by_n(model, cfg.m_by_n, pruned_names)
    return model, {"sparsity": M.sparsity_report(model),
                   "overall_sparsity": round(M.overall_sparsity(model), 6),
                   "m_by_n": list(cfg.m_by_n), "m_by_n_layers": pruned_names}


def _channels(model, ds, cfg: PruneConfig, seed: int, targets) -> tuple[Any, dict]:
    from pipeline.compress.channels import channel_report, prune_channels_detailed

    original = model
    # Iterative: each round removes the share that leaves (1 - ratio) overall after `steps`.
    step_ratio = 1 - (1 - cfg.ratio) ** (1 / cfg.steps)
    per_layer = {k: 1 - (1 - v) ** (1 / cfg.steps) for k, v in cfg.per_layer.items()}
    data = ds.calibration(cfg.calibration) if cfg.criterion in ("mean_activation", "apoz") else None
    rounds = []
    for i in range(1, cfg.steps + 1):
        model, rep = prune_channels_detailed(
            model, step_ratio, cfg.criterion, cfg.round_to, data, cfg.protect, per_layer,
            cfg.min_channels)
        rounds.append({"params_before": rep["params_before"], "params_after": rep["params_after"],
                       "skipped": rep["skipped"]})
        summary = _fit(model, ds, cfg, seed + i, targets, prefix=f"prune {i}/{cfg.steps}")
        rounds[-1].update(summary)
        log.info("[prune] step %d/%d: %d -> %d params", i, cfg.steps, rep["params_before"],
                 rep["params_after"])
    return model, {"channels": channel_report(original, model), "rounds": rounds,
                   "params_before": int(original.count_params()),
                   "params_after": int(model.count_params())}


_RUN = {"magnitude": _magnitude, "m_by_n": _m_by_n, "channels": _channels}


def prune_model(model, ds, cfg: PruneConfig, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """Prune and fine-tune `model` on `ds` per `cfg`; returns (new model, metrics)."""
    from pipeline import tasks
    from pipeline.compress._keras import require_graph_model

    require_graph_model(model, "pruning")
    task = tasks.of(model, ds)
    before = tasks.before(model, ds, task)
    new, metrics = _RUN[cfg.method](model, ds, cfg, seed, tasks.fit_targets(task, ds, model))
    metrics = {"method": cfg.method, **before, **metrics}
    return new, metrics


class Prune(Stage):
    name = "prune"
    Config = PruneConfig
    uses_model = True
    help = "magnitude / m_by_n (TF-MOT) or channel pruning, with fine-tuning; saves model.keras"
    makes = ("keras",)

    def run(self, ctx, cfg: PruneConfig) -> StageResult:
        model = ctx.load_model()
        new, metrics = prune_model(model, ctx.dataset(), cfg, seed=ctx.seed)
        art = ctx.save_model(new, "model", metrics=metrics)
        from pipeline.tasks import headline

        ctx.log("[prune] %s: %s, %d params, %d nonzero", cfg.method, headline(art.metrics),
                art.metrics["params"], art.metrics["nonzero_params"])
        summary = {k: v for k, v in metrics.items() if k not in ("sparsity", "channels", "rounds")}
        p = art.metrics["task"]["primary"]
        return StageResult([art], {**summary, **({p: art.metrics[p]} if p in art.metrics
                                                 else {})})

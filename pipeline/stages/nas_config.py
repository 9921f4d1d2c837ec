"""The `nas` stage's recipe settings, validated: search space, oracle, budget, constraints.

Kept apart from pipeline/search (whose import pulls keras-tuner and TensorFlow) so a recipe
is checked in a blink. Each hyperparameter of `space:` is a value (fixed), a list (choices) or
a range `{min, max, step, sampling}`; `blocks` and `kernel` are searched per stage.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.errors import did_you_mean
from pipeline.stages.base import StageConfig

ORACLES = ("random", "bayesian", "hyperband")

#: hyperparameter → (integer?, domain check, domain text)
DOMAINS: dict[str, tuple[bool, Callable[[float], bool], str]] = {
    "width": (False, lambda v: 0 < v <= 4, "in (0, 4]"),
    "blocks": (True, lambda v: 0 <= v <= 8, "in [0, 8]"),
    "kernel": (True, lambda v: v >= 1 and v % 2 == 1, "odd and >= 1"),
    "expansion": (True, lambda v: 1 <= v <= 12, "in [1, 12]"),
    "resolution": (True, lambda v: v >= 4, ">= 4"),
    "stem_stride": (True, lambda v: v in (1, 2), "1 or 2"),
    "head_channels": (True, lambda v: v >= 8, ">= 8"),
    "dropout": (False, lambda v: 0 <= v < 1, "in [0, 1)"),
    "bn_momentum": (False, lambda v: 0 < v < 1, "in (0, 1)"),
    "learning_rate": (False, lambda v: 0 < v <= 1, "in (0, 1]"),
}


class Range(BaseModel):
    """A searched range. `step` (optional) is additive for linear, a factor (> 1) for log."""

    model_config = ConfigDict(extra="forbid")

    min: float
    max: float
    step: float | None = None
    sampling: Literal["linear", "log"] = "linear"


Spec = Union[float, list[float], Range]
IntSpec = Union[int, list[int], Range]


def check_spec(name: str, spec: Any) -> Any:
    """A spec in canonical form (sorted unique choices, ranges as dicts), or ValueError."""
    integer, ok, domain = DOMAINS[name]

    def value(v: Any, what: str) -> float | int:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"Expected {name} {what} to be a number. Received: {name}={spec!r}")
        if integer and v != int(v):
            raise ValueError(f"Expected {name} {what} to be an integer. Received: {name}={spec!r}")
        if not ok(v):
            raise ValueError(f"Expected {name} {domain}. Received: {name}={spec!r}")
        return int(v) if integer else float(v)

    if isinstance(spec, Range):
        spec = spec.model_dump()
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise ValueError(f"Expected at least one choice for {name}. Received: {name}=[]")
        return sorted({value(v, "choices") for v in spec})
    if isinstance(spec, dict):
        return _check_range(name, spec, value, integer)
    return value(spec, "value")


def _check_range(name: str, spec: dict, value, integer: bool) -> dict[str, Any]:
    unknown = sorted(set(spec) - {"min", "max", "step", "sampling"})
    if unknown:
        raise ValueError(f"unknown range key {unknown[0]!r}"
                         f"{did_you_mean(unknown[0], ['min', 'max', 'step', 'sampling'])}; a range "
                         f"is {{min, max, step, sampling}}")
    if not {"min", "max"} <= set(spec):
        raise ValueError(f"Expected a range with min and max. Received: {name}={spec!r}")
    lo, hi = value(spec["min"], "min"), value(spec["max"], "max")
    if lo > hi:
        raise ValueError(f"Expected min <= max (the range is inverted). Received: {name}: "
                         f"min={lo}, max={hi}")
    if lo == hi:
        raise ValueError(f"Expected min < max (the range is empty; write `{name}: {lo}` to fix "
                         f"it). Received: {name}: min={lo}, max={hi}")
    sampling = spec.get("sampling") or "linear"
    if sampling not in ("linear", "log"):
        raise ValueError(f"Expected sampling linear or log. Received: {name}: sampling={sampling!r}")
    if sampling == "log" and lo <= 0:
        raise ValueError(f"Expected min > 0 for log sampling. Received: {name}: min={lo}")
    step = spec.get("step")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not step > 0 or (
                integer and step != int(step)):
            raise ValueError(f"Expected a positive {'integer ' if integer else ''}step. "
                             f"Received: {name}: step={step!r}")
        if sampling == "log" and step <= 1:
            raise ValueError(f"Expected step > 1 for log sampling (it is a factor). Received: "
                             f"{name}: step={step}")
        if sampling == "linear" and step > hi - lo:
            raise ValueError(f"Expected step <= max - min ({hi - lo:g}). Received: {name}: "
                             f"step={step}")
        step = int(step) if integer else float(step)
    return {"min": lo, "max": hi, "step": step, "sampling": sampling}


class SearchSpace(BaseModel):
    """Hyperparameters of the zoo's `mobilenet` family (and the learning rate)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    num_stages: int = Field(4, ge=1, le=5, description="inverted-residual stages; blocks and "
                            "kernel are searched for each")
    width: Spec = Field(default_factory=lambda: {"min": 0.25, "max": 1.0, "step": 0.25},
                        description="channel multiplier")
    blocks: IntSpec = Field(default_factory=lambda: {"min": 0, "max": 2},
                         description="blocks in each stage (0 drops the stage)")
    kernel: IntSpec = Field([3, 5], description="depthwise kernel size of each stage")
    expansion: IntSpec = Field([2, 4, 6], description="inverted-residual expansion ratio")
    resolution: IntSpec | None = Field(None, description="input side the network computes at "
                                    "(<= the dataset's); null: the dataset's own")
    stem_stride: IntSpec = Field(2, description="stride of the stem convolution: 1 or 2")
    head_channels: IntSpec = Field([64, 128], description="channels of the 1x1 head")
    dropout: Spec = Field(default_factory=lambda: {"min": 0.0, "max": 0.3, "step": 0.1})
    bn_momentum: Spec = Field(0.9, description="batch-norm momentum (0.9 suits short trainings)")
    learning_rate: Spec = Field(default_factory=lambda: {"min": 1e-3, "max": 1e-2,
                                                         "sampling": "log"})

    @field_validator(*DOMAINS, mode="before")
    @classmethod
    def _spec(cls, v: Any, info) -> Any:
        return None if v is None else check_spec(info.field_name, v)

    def plain(self) -> dict[str, Any]:
        """The canonical dict form pipeline.search works on."""
        out: dict[str, Any] = {"num_stages": self.num_stages}
        for name in DOMAINS:
            v = getattr(self, name)
            out[name] = None if v is None else check_spec(name, v)
        return out


class Constraints(BaseModel):
    """Limits a candidate must meet; infeasible trials are penalized in the objective."""

    model_config = ConfigDict(extra="forbid")

    max_latency_ms: float | None = Field(None, gt=0, description="host p50 of the trial's .tflite;"
                                         " null: the recipe's gates.max_latency_ms")
    max_size_kb: float | None = Field(None, gt=0, description="raw .tflite size; null: "
                                      "gates.max_size_kb")
    max_params: int | None = Field(None, ge=1)


class Bench(BaseModel):
    """How each candidate is timed on the host (edge-runner)."""

    model_config = ConfigDict(extra="forbid")

    threads: int = Field(1, ge=1)
    warmup: int = Field(5, ge=0)
    min_runs: int = Field(50, ge=1)
    min_seconds: float = Field(0.3, ge=0)


class NasConfig(StageConfig):
    oracle: str = Field("bayesian", description="random | bayesian | hyperband")
    max_trials: int = Field(20, ge=1, description="trials in all (a resumed search counts the "
                            "finished ones)")
    time_limit_min: float | None = Field(None, gt=0, description="no new trial starts after this"
                                         " many minutes (per invocation)")
    epochs: int = Field(8, ge=1, description="training epochs per trial (hyperband: the most)")
    batch_size: int = Field(32, ge=1)
    optimizer: Literal["adam", "sgd", "rmsprop"] = "adam"
    patience: int | None = Field(None, ge=1, description="early stopping inside a trial; null: off")
    quantization: Literal["fp32", "int8"] = Field(
        "int8", description="the .tflite each candidate is converted to, timed and scored on")
    latency: Literal["measured", "predicted"] = Field(
        "measured", description="measured: every trial's .tflite timed with edge-runner; "
        "predicted: trials scored by the host latency table + predictor, the finalists measured")
    table: str | None = Field(None, description="latency: predicted: the latency table file; "
                              "null: where `edgepipe latency table` keeps this host's")
    constraints: Constraints = Field(default_factory=Constraints)
    space: SearchSpace = Field(default_factory=SearchSpace)
    bench: Bench = Field(default_factory=Bench)
    initial_points: int | None = Field(None, ge=1, description="bayesian: random trials first; "
                                       "null: max(3, max_trials // 4)")
    factor: int = Field(3, ge=2, description="hyperband: reduction factor")
    max_failures: int = Field(3, ge=1, description="stop after this many failed trials in a row")
    final_epochs: int = Field(0, ge=0, description="train the best architecture this many more "
                              "epochs (early stopping on val accuracy) before saving it")
    final_patience: int | None = Field(6, ge=1)
    final_candidates: int = Field(1, ge=1, description="with final_epochs: train this many of "
                                  "the best feasible trials on; keep the best on validation")

    @field_validator("oracle")
    @classmethod
    def _oracle(cls, v: str) -> str:
        if v not in ORACLES:
            raise ValueError(f"unknown oracle {v!r}{did_you_mean(v, ORACLES)}; expected one of: "
                             f"{', '.join(ORACLES)}")
        return v

    def search_settings(self) -> dict[str, Any]:
        """What the trials' results depend on (budget and stopping rules excluded): the key of
        the search folder, so raising max_trials continues a search instead of restarting it."""
        out = self.model_dump(mode="json", exclude={"max_trials", "time_limit_min",
                                                    "max_failures", "final_epochs",
                                                    "final_patience", "final_candidates",
                                                    "table"})
        if out["latency"] == "measured":  # searches from before `latency:` keep their key
            del out["latency"]
        return out

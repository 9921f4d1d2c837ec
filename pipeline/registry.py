"""The stage registry: a recipe's stage name → the class that runs it, imported on first use.

Importing this module (and so the recipe and the engine) imports no stage: a stage module, and
what it pulls in (TF-MOT, keras-tuner), loads only when a recipe names that stage.
A new stage is one module in `pipeline/stages/` and one line here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from pipeline.errors import did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    from pipeline.stages.base import Stage

#: name → "module:Class", in the order `--help`, errors and the schema list them
STAGES: dict[str, str] = {
    "train": "pipeline.stages.train:Train",
    "export": "pipeline.stages.export:Export",
    "profile": "pipeline.stages.profile:Profile",
    "report": "pipeline.stages.report:Report",
    "distill": "pipeline.stages.distill:Distill",
    "prune": "pipeline.stages.prune:Prune",
    "quantize": "pipeline.stages.quantize:Quantize",
    "cluster": "pipeline.stages.cluster:Cluster",
    "lowrank": "pipeline.stages.lowrank:LowRank",
    "nas": "pipeline.stages.nas:Nas",
    "adapt": "pipeline.stages.adapt:Adapt",
}


def unknown_stage(name: str) -> str:
    """The error text for a name that is not registered (with a did-you-mean)."""
    return f"unknown stage {name!r}{did_you_mean(name, STAGES)}; expected one of: {', '.join(STAGES)}"


def stage_class(name: str) -> type[Stage]:
    """The class registered as `name`, its module imported now. KeyError names the fix."""
    if name not in STAGES:
        raise KeyError(unknown_stage(name))
    module, cls = STAGES[name].split(":")
    return getattr(importlib.import_module(module), cls)


#: a `Stage.needs` key: an artifact of any format will do (what a report reports on)
ANY_ARTIFACT = "*"


def has_needed(fmt: str, made: set[str]) -> bool:
    """Whether formats `made` by earlier stages hold what a `Stage.needs` key `fmt` asks for."""
    return bool(made) if fmt == ANY_ARTIFACT else fmt in made


def how_to_make(fmt: str, before: str) -> str:
    """'add an export, quantize or adapt stage before profile': the stages that make `fmt`."""
    if fmt == ANY_ARTIFACT:
        return f"put {before} after the stages it is about"
    makers = [n for n in STAGES if fmt in stage_class(n).makes]
    article = "an" if makers and makers[0][0] in "aeiou" else "a"
    names = " or ".join([", ".join(makers[:-1]), makers[-1]] if len(makers) > 1 else makers)
    return f"add {article} {names} stage before {before}"

"""The stage contract: a config model, a `run(ctx, cfg)` that writes into `ctx.out_dir`, and
what the stage declares about itself (what it makes, what it needs, what it publishes).

A stage knows nothing of fingerprints, resume or atomic commits (the engine does that). It reads
what earlier stages made through the context, calls `pipeline.compress` / `pipeline.tflite`, writes
its files into `ctx.out_dir`, and returns the artifacts it made with their measured metrics.
A new stage is one module in `pipeline/stages/` and one line in `pipeline/registry.py`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pipeline.config import StageConfig  # noqa: F401  (re-exported: stages import it from here)
from pipeline.records import Artifact, StageRecord, StageResult  # noqa: F401  (likewise)

if TYPE_CHECKING:  # pragma: no cover
    from pipeline.context import StageContext


class Stage:
    """Subclass, set `name` and `Config`, implement `run`. Register it in `pipeline/registry.py`."""

    name: ClassVar[str]
    Config: ClassVar[type[StageConfig]] = StageConfig
    help: ClassVar[str] = ""
    #: formats of the artifacts it writes ("keras", "tflite"): what later stages may need
    makes: ClassVar[tuple[str, ...]] = ()
    #: the name of the Keras model it saves for later stages (`<model>.keras`)
    model: ClassVar[str] = "model"
    #: formats an earlier stage must have made, each with what for ({"tflite": ".tflite to
    #: time"}; registry.ANY_ARTIFACT: any); the recipe is refused, and the stage is not
    #: started, without one
    needs: ClassVar[dict[str, str]] = {}
    #: the files its metrics list under "files" are the run's front page: the engine copies
    #: the newest such stage's files to the run folder's top once the run is done
    publishes: ClassVar[bool] = False
    #: it works on the run's newest Keras model (or the recipe's), so in a recipe that trains,
    #: the training comes before it
    uses_model: ClassVar[bool] = False
    #: it makes a trained Keras model of its own (not from the run's model)
    trains: ClassVar[bool] = False

    @classmethod
    def input_paths(cls, cfg: StageConfig, recipe: Any) -> list[str]:
        """Files the settings name (a teacher model, devices.yaml): their content hashes join
        the stage's fingerprint, so editing such a file re-runs the stage."""
        return []

    def run(self, ctx: "StageContext", cfg: StageConfig) -> StageResult:  # pragma: no cover
        raise NotImplementedError

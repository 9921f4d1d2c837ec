"""The base of every settings model: a leaf that the recipe, `pipeline.training` (FitConfig)
and every stage's Config import."""

from pydantic import BaseModel, ConfigDict


class StageConfig(BaseModel):
    """Base of every stage's settings: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

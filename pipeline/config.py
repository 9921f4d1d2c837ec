"""The base of every settings model. Outside `pipeline.stages` so that modules the stages use
(`pipeline.training`) can import it without importing the stage registry."""

from pydantic import BaseModel, ConfigDict


class StageConfig(BaseModel):
    """Base of every stage's settings: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

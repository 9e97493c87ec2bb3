"""The base of every study-file model: immutable, and unknown keys are errors (never dropped)."""

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    """Immutable pydantic model that refuses unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

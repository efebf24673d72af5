"""Frozen pydantic base model shared by every spec."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Spec(BaseModel):
    """Immutable, strict about unknown keys, so a typo in a YAML file is an error, not a no-op."""

    # NaN and infinity are never a budget, a size or a rate: refused where they are read
    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, allow_inf_nan=False
    )

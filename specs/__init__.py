"""scaleplan's vocabulary: frozen pydantic models for hardware, models, layouts, budgets, plans.

Names load lazily (PEP 562) so that `scaleplan --help` does not pay for pydantic model building.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "BudgetSpec": "budget",
    "DataSource": "budget",
    "NotImplementedFeature": "errors",
    "SpecError": "errors",
    "ClusterSpec": "hardware",
    "GPUSpec": "hardware",
    "get_gpu": "hardware",
    "gpu_catalog": "hardware",
    "make_cluster": "hardware",
    "LayoutSpec": "layout",
    "layout_violations": "layout",
    "validate_layout": "layout",
    "load_spec": "loader",
    "read_document": "loader",
    "validate": "loader",
    "ModelSpec": "model",
    "MoESpec": "model",
    "get_model": "model",
    "model_presets": "model",
    "SCHEMA_VERSION": "plan",
    "PhaseSpec": "plan",
    "Plan": "plan",
    "ScheduleSpec": "plan",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

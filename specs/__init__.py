"""scaleplan's vocabulary: frozen pydantic models for hardware, models, layouts, budgets, plans."""

from .budget import BudgetSpec, DataSource
from .errors import NotImplementedFeature, SpecError
from .hardware import ClusterSpec, GPUSpec, get_gpu, gpu_catalog, make_cluster
from .layout import LayoutSpec, layout_violations, validate_layout
from .loader import load_spec, read_document, validate
from .model import ModelSpec, MoESpec, get_model, model_presets
from .plan import SCHEMA_VERSION, PhaseSpec, Plan, ScheduleSpec

__all__ = [
    "BudgetSpec",
    "ClusterSpec",
    "DataSource",
    "GPUSpec",
    "LayoutSpec",
    "ModelSpec",
    "MoESpec",
    "NotImplementedFeature",
    "PhaseSpec",
    "Plan",
    "SCHEMA_VERSION",
    "ScheduleSpec",
    "SpecError",
    "get_gpu",
    "get_model",
    "gpu_catalog",
    "layout_violations",
    "load_spec",
    "make_cluster",
    "model_presets",
    "read_document",
    "validate",
    "validate_layout",
]

"""Scaling laws: forms, presets, fitting, compute-optimal allocation, LR/batch laws and loss
through LR schedules. Pure functions; the CLI lives in planner/cli/fit_cmd.py."""

from __future__ import annotations

from scaleplan.specs.errors import SpecError

from .forms import ChinchillaLaw, DataConstrainedLaw, FrontierLaw, KaplanLaw, Law, law_from_dict
from .frontier import constrained_optimal, inference_aware_optimal, numerical_optimal
from .presets import get_preset, preset_names

__all__ = [
    "ChinchillaLaw",
    "DataConstrainedLaw",
    "FrontierLaw",
    "KaplanLaw",
    "Law",
    "constrained_optimal",
    "get_preset",
    "inference_aware_optimal",
    "law_from_dict",
    "load_law",
    "numerical_optimal",
    "preset_names",
]


def load_law(preset: str | None = None, fit_path: str | None = None) -> Law:
    """A published preset by name, or the law stored in a FIT.json (not both). Unknown presets
    raise SpecError(field='law.preset'); unreadable fits SpecError(field='law.fit')."""
    if preset is not None and fit_path is not None:
        raise SpecError("give either a preset or a fit file, not both", field="law.preset")
    if fit_path is not None:
        from .io import law_from_fit

        return law_from_fit(fit_path)
    return get_preset(preset or "chinchilla")

"""The inputs of a report, gathered once and shared by the plots.

Expensive pieces (the law, the re-run layout search, the step estimate) are computed on first
use and cached, so two plots that need the same piece pay for it once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from scaleplan.specs.plan import PhaseSpec, Plan

from .figures import Unavailable


@dataclass
class ReportContext:
    plan: Plan
    fit_path: str | None = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @functools.cached_property
    def main_phase(self) -> PhaseSpec:
        """The phase the layout plots describe: pretraining if present, else the first phase."""
        for phase in self.plan.phases:
            if phase.name == "pretrain":
                return phase
        return self.plan.phases[0]

    @functools.cached_property
    def pipeline_phase(self) -> PhaseSpec:
        """The phase the memory-per-stage and Gantt plots describe: the main phase, or, when
        its layout has no pipeline parallelism, the costliest language-model or SFT phase
        whose layout has one (so the per-stage plots show stages)."""
        if self.main_phase.layout.pp > 1:
            return self.main_phase
        piped = [
            p for p in self.plan.phases if p.layout.pp > 1 and p.objective.kind in ("lm", "sft")
        ]
        return max(piped, key=lambda p: p.cost_usd) if piped else self.main_phase

    def pipeline_note(self) -> str:
        """A sentence for captions when `pipeline_phase` is not the main phase."""
        phase = self.pipeline_phase
        if phase is self.main_phase:
            return ""
        return (
            f" The {self.main_phase.name} layout has no pipeline parallelism, so this shows the {phase.name} "
            f"phase, the costliest with one (PP={phase.layout.pp})."
        )

    def resolved_fit_path(self) -> str | None:
        """The FIT.json to plot: the one given, else the one the plan's law names."""
        candidates: list[Any] = [
            self.fit_path,
            self.plan.law.get("fit"),
            self.plan.law.get("fit_path"),
        ]
        if self.plan.budget is not None:
            candidates.append(self.plan.budget.law.fit)
        for candidate in candidates:
            if isinstance(candidate, str) and candidate:
                return candidate
        return None

    def cached(self, key: str, compute: Any) -> Any:
        """`compute()` once per key; an `Unavailable` raised by it is cached and raised again."""
        if key not in self._cache:
            try:
                self._cache[key] = compute()
            except Unavailable as exc:
                self._cache[key] = exc
        value = self._cache[key]
        if isinstance(value, Unavailable):
            raise value
        return value

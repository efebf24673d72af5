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

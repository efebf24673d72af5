"""What plot 1 draws, gathered from the plan and its FIT.json: the law, how it was obtained, the
fitted runs, the bootstrap laws and (Approaches 1/2) the recorded per-budget optima."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scaleplan.specs.errors import SpecError

from .context import ReportContext
from .figures import Unavailable

FLOPS_PER_PARAM_TOKEN = 6.0  # C = 6ND (Kaplan et al. 2020 eq. 2.1), as the law engine uses
MAX_BAND_SAMPLES = 400  # bootstrap laws evaluated for a band: stable percentiles, cheap


@dataclass
class LawView:
    """The law to draw and what is known about how it was obtained."""

    law: Any  # scaleplan.planner.laws.Law
    origin: str  # "fit FILE (method)" or "preset NAME"
    method: str | None = None
    points: dict[str, np.ndarray] = field(default_factory=dict)  # N, D, loss, flops
    samples: list[Any] = field(default_factory=list)  # bootstrap laws
    optima: dict[str, np.ndarray] = field(default_factory=dict)  # C, N_opt, D_opt, loss_opt
    parabolas: list[dict[str, float]] = field(default_factory=list)  # approach2, per budget

    @property
    def has_points(self) -> bool:
        return "loss" in self.points and "flops" in self.points and self.points["loss"].size > 0

    @property
    def isoflop(self) -> bool:
        """The fit came from IsoFLOP slices (Hoffmann et al. 2022 Approach 2)."""
        return (self.method or "").lower() == "approach2" and self.has_points and "N" in self.points


def load_fit_law(path: str) -> Any:
    """The law of a FIT.json (raises SpecError naming the file when it is unreadable)."""
    from scaleplan.planner.laws import load_law

    return load_law(None, path)


def bootstrap_laws(doc: dict[str, Any], law: Any) -> list[Any]:
    """Laws rebuilt from the bootstrap samples of a FIT.json (`names` + one row per sample, as
    `scaleplan fit --bootstrap` writes them; a list of parameter mappings is read too)."""
    from scaleplan.planner.laws import law_from_dict

    boot = doc.get("bootstrap")
    if not isinstance(boot, dict) or not isinstance(boot.get("samples"), list):
        return []
    names = boot.get("names")
    base = law.to_dict()
    laws = []
    for row in boot["samples"][:MAX_BAND_SAMPLES]:
        if isinstance(row, dict):
            params = row
        elif isinstance(names, list) and isinstance(row, list) and len(row) == len(names):
            params = dict(zip(names, row, strict=True))
        else:
            continue
        if any(v is None for v in params.values()):
            continue
        try:
            laws.append(law_from_dict({**base, "params": {**base["params"], **params}}))
        except SpecError:
            continue
    return laws


def _arrays(mapping: Any, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    if not isinstance(mapping, dict):
        return {}
    return {k: np.asarray(mapping[k], dtype=float) for k in keys if mapping.get(k) is not None}


def law_view(ctx: ReportContext) -> LawView:
    """The fitted law (with its data) when a FIT.json is known, else the plan's recorded law."""
    from scaleplan.planner.laws import get_preset, law_from_dict
    from scaleplan.planner.laws.io import read_fit

    fit_path = ctx.resolved_fit_path()
    if fit_path is not None:
        try:
            doc = read_fit(fit_path)
            law = load_fit_law(fit_path)
        except SpecError as exc:
            raise Unavailable(f"the fit file could not be read ({exc.message})") from None
        points = _arrays(doc.get("points"), ("N", "D", "loss", "flops"))
        if "flops" not in points and "N" in points and "D" in points:
            points["flops"] = FLOPS_PER_PARAM_TOKEN * points["N"] * points["D"]
        iso = doc.get("isoflop") if isinstance(doc.get("isoflop"), dict) else {}
        method = doc.get("method")
        return LawView(
            law,
            f"fit {fit_path}" + (f", {method}" if method else ""),
            method,
            points,
            bootstrap_laws(doc, law),
            _arrays(iso.get("optima"), ("C", "N_opt", "D_opt", "loss_opt")),
            [p for p in iso.get("parabolas") or [] if isinstance(p, dict)],
        )
    info = ctx.plan.law
    budget_law = ctx.plan.budget.law if ctx.plan.budget is not None else None
    preset = info.get("preset") or (
        budget_law.preset if budget_law and not budget_law.fit else None
    )
    if isinstance(info.get("form"), str) and isinstance(info.get("params"), dict):
        try:
            law = law_from_dict(info)
        except SpecError as exc:
            raise Unavailable(f"the plan's law could not be rebuilt ({exc.message})") from None
        origin = (
            f"preset {preset}" if isinstance(preset, str) else str(info.get("source") or law.name)
        )
        return LawView(law, origin)
    if isinstance(preset, str):
        try:
            return LawView(get_preset(preset), f"preset {preset}")
        except SpecError as exc:
            raise Unavailable(exc.message) from None
    raise Unavailable(
        "the plan records no scaling law (its `law` field is empty) and no fit file was given"
    )


def chosen_nd(ctx: ReportContext) -> tuple[float, float]:
    """The plan's (N, D): the parameters the law was applied to, and the pretraining tokens."""
    model = ctx.plan.model
    law = ctx.plan.law
    n = law.get("n_params") or (model.params_active if model.is_moe else model.params_total)
    d = law.get("tokens") or ctx.plan.tokens
    if not d:
        raise Unavailable(
            "the plan has no pretraining tokens, so there is no (N, D) to place on the law"
        )
    return float(n), float(d)


def has_loss(law: Any) -> bool:
    """Whether the law has a loss surface L(N, D) (an Approach 1/2 frontier has none)."""
    try:
        law.loss(1e9, 2e10)
        return True
    except SpecError:
        return False


def frontier_loss(law: Any, compute: np.ndarray) -> np.ndarray | None:
    """Loss of the compute-optimal model at each compute, where the law can say."""
    if has_loss(law):
        n, d = law.optimal(compute)
        return np.asarray(law.loss(n, d), dtype=float)
    on_frontier = getattr(law, "frontier_loss", None)
    if on_frontier is not None:
        try:
            return np.asarray(on_frontier(compute), dtype=float)
        except SpecError:
            return None
    return None


def band(
    samples: list[Any], compute: np.ndarray, fn: Any, percentiles: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Percentile band of fn(law, compute) over the bootstrap laws (None: too few samples)."""
    rows = []
    for law in samples:
        try:
            values = fn(law, compute)
        except (SpecError, FloatingPointError, ValueError):
            continue
        if values is not None and np.all(np.isfinite(values)):
            rows.append(values)
    if len(rows) < 10:
        return None
    stack = np.vstack(rows)
    return np.percentile(stack, percentiles[0], axis=0), np.percentile(
        stack, percentiles[1], axis=0
    )


def budget_labels(flops: np.ndarray) -> np.ndarray:
    """IsoFLOP budget label per point, as the fit grouped them."""
    from scaleplan.planner.laws.isoflop import group_budgets

    return np.asarray(group_budgets(flops))

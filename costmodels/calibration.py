"""Fit an efficiency profile's parameters to measured step times (scipy.optimize).

A pure function over specs and arrays: give it measured runs (model, cluster, layout, sequence
length, measured step time), get back an `EfficiencyProfile` whose predictions match them best.
The residual is the log ratio predicted/measured (a relative error), under a soft-L1 loss so one
odd measurement cannot drag the fit, plus a weak pull towards the starting profile so that
parameters the runs say nothing about stay where they were (ridge prior in normalized units).

The objective is not convex: parameters that act through a max() (host-bound layers, exposed
communication after overlap) have zero gradient wherever their term is inactive, and several
parameters trade off against each other (attention efficiency against score-matrix passes). One
local fit from the prior stops in the first valley it meets, so `starts` > 1 adds local fits
from deterministic space-filling points (a scrambled Latin hypercube with a fixed seed; McKay et
al. 1979) and keeps the lowest objective (multi-start local search). The default is one start:
on the published runs 4 and 8 starts found no profile with a lower error (bench/RESULTS.md) at
4-8 times the fit time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from scaleplan.specs.efficiency import FIT_PRIORITY, FITTABLE_BOUNDS, EfficiencyProfile
from scaleplan.specs.hardware import ClusterSpec
from scaleplan.specs.layout import LayoutSpec
from scaleplan.specs.model import ModelSpec

from .batch import LayoutBatch
from .step import estimate_step_batch

PRIOR_WEIGHT = 0.1  # pull towards the starting profile, per unit of a parameter's range
F_SCALE = 0.01  # soft-L1: residuals beyond ~1 % count linearly, so fits minimise the MAPE
STARTS = 1  # local fits per calibration: the prior, then STARTS - 1 Latin-hypercube points
START_SEED = 0  # fixed: the same runs always give the same profile


def default_fit(
    num_runs: int, has_moe: bool = False, fused_attention: bool = True, overlaps: bool = True
) -> tuple[str, ...]:
    """The parameters a fit on `num_runs` runs can support: the first num_runs // 3 (at least 2)
    of `FIT_PRIORITY` that such runs inform, plus the MoE host time when there are MoE runs."""
    relevant = [
        p
        for p in FIT_PRIORITY
        if (p != "moe_layer_host_s" or has_moe)
        and (p != "attention_score_passes" or not fused_attention)
        and (overlaps or p not in ("tp_overlap", "dp_overlap"))
    ]
    budget = max(2, num_runs // 3) + (1 if has_moe else 0)
    return tuple(relevant[: min(len(relevant), budget)])


@dataclass(frozen=True)
class MeasuredRun:
    model: ModelSpec
    cluster: ClusterSpec
    layout: LayoutSpec
    seq_length: int
    measured_step_time_s: float
    weight: float = 1.0


ProfileChoice = EfficiencyProfile | Callable[[ClusterSpec], EfficiencyProfile] | None


def _groups(
    runs: Sequence[MeasuredRun],
) -> list[tuple[ModelSpec, ClusterSpec, int, LayoutBatch, np.ndarray]]:
    buckets: dict[tuple, list[int]] = {}
    for i, run in enumerate(runs):
        buckets.setdefault((run.model, run.cluster, run.seq_length), []).append(i)
    out = []
    for (model, cluster, seq), idx in buckets.items():
        batch = LayoutBatch.from_specs(runs[i].layout for i in idx)
        out.append((model, cluster, seq, batch, np.asarray(idx)))
    return out


def _predict(groups, n: int, profile_for: Callable[[ClusterSpec], EfficiencyProfile]) -> np.ndarray:
    pred = np.empty(n)
    for model, cluster, seq, batch, idx in groups:
        got = estimate_step_batch(
            model, cluster, batch, seq, profile_for(cluster), with_memory=False
        )
        pred[idx] = got.step_time_s
    return pred


def predict_step_times(runs: Sequence[MeasuredRun], profile: ProfileChoice = None) -> np.ndarray:
    """Predicted step time of every run (batched per model and cluster)."""
    if profile is None:
        choose: Callable[[ClusterSpec], EfficiencyProfile] = lambda c: c.profile  # noqa: E731
    elif isinstance(profile, EfficiencyProfile):
        choose = lambda c: profile  # noqa: E731
    else:
        choose = profile
    return _predict(_groups(runs), len(runs), choose)


def start_points(x0: np.ndarray, starts: int, seed: int = START_SEED) -> list[np.ndarray]:
    """Starting points of the local fits, in normalized units ([0, 1] per parameter): the prior
    `x0` first, then `starts - 1` points of a scrambled Latin hypercube (fixed seed)."""
    if starts < 1:
        raise ValueError(f"starts must be at least 1, got {starts}")
    points = [np.asarray(x0, dtype=np.float64)]
    if starts > 1:
        from scipy.stats import qmc  # only fits need it (scipy.stats is slow to import)

        lhs = qmc.LatinHypercube(d=len(points[0]), seed=seed).random(starts - 1)
        points.extend(lhs)
    return points


@dataclass(frozen=True)
class FitReport:
    profile: EfficiencyProfile
    mape_pct: float  # on the fitted runs
    max_pct: float
    n_runs: int
    success: bool
    message: str


def calibrate_report(
    runs: Sequence[MeasuredRun],
    base: EfficiencyProfile | None = None,
    fit: Sequence[str] | None = None,
    name: str | None = None,
    prior_weight: float = PRIOR_WEIGHT,
    max_nfev: int = 400,
    f_scale: float = F_SCALE,
    starts: int = STARTS,
) -> FitReport:
    """`calibrate`, plus the fit's own error figures."""
    if not runs:
        raise ValueError("calibrate needs at least one measured run")
    base = base or runs[0].cluster.profile
    if fit is None:
        fit = default_fit(
            len(runs),
            has_moe=any(r.model.moe is not None for r in runs),
            fused_attention=base.attention_score_passes == 0,
        )
    unknown = [p for p in fit if p not in FITTABLE_BOUNDS]
    if unknown:
        raise ValueError(f"not fittable: {unknown}; fittable: {sorted(FITTABLE_BOUNDS)}")
    lo = np.array([FITTABLE_BOUNDS[p][0] for p in fit])
    hi = np.array([FITTABLE_BOUNDS[p][1] for p in fit])
    x0 = np.clip((np.array([getattr(base, p) for p in fit]) - lo) / (hi - lo), 0.0, 1.0)
    measured = np.array([r.measured_step_time_s for r in runs], dtype=np.float64)
    weights = np.sqrt(np.array([r.weight for r in runs], dtype=np.float64))
    groups = _groups(runs)

    def profile_at(x: np.ndarray) -> EfficiencyProfile:
        values = dict(zip(fit, (lo + np.clip(x, 0, 1) * (hi - lo)).tolist(), strict=True))
        return base.model_copy(update={**values, "name": name or base.name})

    def residuals(x: np.ndarray) -> np.ndarray:
        prof = profile_at(x)
        pred = _predict(groups, len(runs), lambda _c: prof)
        return np.concatenate([weights * np.log(pred / measured), prior_weight * (x - x0)])

    fits = [
        least_squares(
            residuals,
            x_start,
            bounds=(0.0, 1.0),
            loss="soft_l1",
            f_scale=f_scale,
            max_nfev=max_nfev,
            diff_step=1e-3,
        )  # fmt: skip
        for x_start in start_points(x0, starts)
    ]
    result = min(fits, key=lambda r: r.cost)  # ties keep the earliest start (the prior)
    prof = EfficiencyProfile.model_validate(profile_at(result.x).model_dump())
    pred = _predict(groups, len(runs), lambda _c: prof)
    ape = np.abs(pred / measured - 1.0) * 100.0
    return FitReport(
        prof, float(ape.mean()), float(ape.max()), len(runs), bool(result.success), result.message
    )


def calibrate(
    runs: Sequence[MeasuredRun],
    base: EfficiencyProfile | None = None,
    fit: Sequence[str] | None = None,
    name: str | None = None,
    prior_weight: float = PRIOR_WEIGHT,
    max_nfev: int = 400,
    starts: int = STARTS,
) -> EfficiencyProfile:
    """The profile (starting from `base`, default the first run's cluster profile) whose
    predicted step times best match the measured ones, fitting the parameters named in `fit`
    (default: `default_fit` for the number of runs), from `starts` starting points (the
    lowest objective wins; `start_points`)."""
    return calibrate_report(runs, base, fit, name, prior_weight, max_nfev, starts=starts).profile

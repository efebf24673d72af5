"""Fitting the data-constrained law (Muennighoff et al. 2023 Sec. 5): the Chinchilla base law
on the single-epoch runs, then R_D* and R_N* on all runs with the base fixed (their two-stage
procedure), then every parameter jointly from there. Huber loss of the log residual, L-BFGS-B,
as `fitting`'s Approach 3."""

from __future__ import annotations

import time

import numpy as np

from scaleplan.specs.errors import SpecError

from ._blas import single_thread_blas
from .fitting import _POS, MIN_POINTS, FitResult, _check_points, fit_chinchilla, huber, minimize
from .forms import DataConstrainedLaw


def fit_data_constrained(
    N, D, L, unique_tokens, *, delta: float = 1e-3, polish: int = 4
) -> FitResult:
    t0 = time.perf_counter()
    N, D, L, U = (np.asarray(x, dtype=float) for x in (N, D, L, unique_tokens))
    _check_points(N, D, L, "data-constrained")
    if U.shape != N.shape or np.any(~np.isfinite(U)) or np.any(U <= 0):
        raise SpecError(
            "unique_tokens must be a positive column (for --law data-constrained)",
            field="runs.unique_tokens",
        )
    single = D <= U * (1 + 1e-9)
    if single.sum() < MIN_POINTS["chinchilla"] or (~single).sum() < 2:
        raise SpecError(
            f"data-constrained needs >= {MIN_POINTS['chinchilla']} single-epoch runs and >= 2 runs with "
            f"tokens > unique_tokens (got {int(single.sum())} and {int((~single).sum())})",
            field="runs",
        )
    base = fit_chinchilla(N[single], D[single], L[single], delta=delta, polish=polish).law
    logL = np.log(L)

    def objective(log_r: np.ndarray) -> float:
        law = DataConstrainedLaw(
            **base.params, R_D_star=float(np.exp(log_r[0])), R_N_star=float(np.exp(log_r[1]))
        )
        return float(huber(np.log(law.loss(N, D, unique_tokens=U)) - logL, delta).sum())

    grid = [
        np.array([x, y])
        for x in np.log([1.0, 5, 15, 50, 200])
        for y in np.log([1.0, 5, 15, 50, 200])
    ]
    x0 = min(grid, key=objective)
    with single_thread_blas():
        res = minimize(objective, x0, method="L-BFGS-B", bounds=[(np.log(1e-2), np.log(1e4))] * 2)

    def joint(theta: np.ndarray) -> float:
        law = _dc_from_theta(theta)
        return float(huber(np.log(law.loss(N, D, unique_tokens=U)) - logL, delta).sum())

    theta0 = np.r_[np.log([base.A, base.B, base.E]), base.alpha, base.beta, res.x]
    bounds = [(None, None)] * 3 + [_POS, _POS] + [(np.log(1e-2), np.log(1e4))] * 2
    with single_thread_blas():
        res = minimize(
            joint,
            theta0,
            method="L-BFGS-B",
            bounds=bounds,
            options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000},
        )
    law = _dc_from_theta(res.x)
    return FitResult(
        law, float(res.fun), len(N), time.perf_counter() - t0, "epoch", delta, len(grid), res.x
    )


def _dc_from_theta(theta: np.ndarray) -> DataConstrainedLaw:
    la, lb, le, alpha, beta, lrd, lrn = (float(x) for x in theta)
    return DataConstrainedLaw(
        E=float(np.exp(le)),
        A=float(np.exp(la)),
        B=float(np.exp(lb)),
        alpha=alpha,
        beta=beta,
        R_D_star=float(np.exp(lrd)),
        R_N_star=float(np.exp(lrn)),
        source="fit (Muennighoff: base on single-epoch runs, then joint, Huber)",
    )

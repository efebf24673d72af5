"""Approach 3 fitting (Hoffmann et al. 2022 Sec. 3.3; Besiroglu et al. 2024): minimise the summed
Huber(δ) loss of the log residual of a log-sum-exp parameterisation with L-BFGS-B, from a grid
of starts. The grid is evaluated in one vectorized pass and only the best starts are polished.
Pure functions: progress is reported through an optional callback.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scaleplan.specs.errors import SpecError

from ._blas import single_thread_blas
from .forms import ChinchillaLaw, KaplanLaw, Law


def minimize(*args: Any, **kwargs: Any) -> Any:
    """scipy.optimize.minimize, imported on first use so that `scaleplan plan` starts fast."""
    from scipy.optimize import minimize as _minimize

    return _minimize(*args, **kwargs)


# Epoch AI's grid (epoch-research/analyzing-chinchilla data_analysis.ipynb, cell 18):
# alpha, beta in arange(0, 2.5, 0.5); e in arange(-1, 1.5, 0.5); a, b in arange(0, 30, 5).
EPOCH_GRID = {
    "a": np.arange(0, 30, 5.0),
    "b": np.arange(0, 30, 5.0),
    "e": np.arange(-1, 1.5, 0.5),
    "alpha": np.arange(0, 2.5, 0.5),
    "beta": np.arange(0, 2.5, 0.5),
}
MIN_POINTS = {"chinchilla": 6, "kaplan": 5, "kaplan-irreducible": 6, "data-constrained": 8}


@dataclass
class FitResult:
    law: Law
    objective: float  # summed Huber loss at the optimum
    n_points: int
    seconds: float
    method: str = "epoch"
    delta: float = 1e-3
    n_starts: int = 0
    theta: np.ndarray = field(default_factory=lambda: np.zeros(0))  # raw optimiser parameters


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """Huber loss: r²/2 for |r| <= δ, δ(|r| − δ/2) beyond (Huber 1964; scipy.special.huber)."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def huber_grad(r: np.ndarray, delta: float) -> np.ndarray:
    return np.clip(r, -delta, delta)


def _check_points(N: np.ndarray, D: np.ndarray, L: np.ndarray, form: str) -> None:
    if not (N.shape == D.shape == L.shape) or N.ndim != 1:
        raise SpecError("params, tokens and loss must be 1-D columns of equal length", field="runs")
    for name, arr in (("params", N), ("tokens", D), ("loss", L)):
        if np.any(~np.isfinite(arr)) or np.any(arr <= 0):
            raise SpecError("values must be positive and finite", field=f"runs.{name}")
    need = MIN_POINTS.get(form, 6)
    if len(N) < need:
        raise SpecError(
            f"{len(N)} points are too few to fit the {form} form (need >= {need})", field="runs"
        )


def _polish(
    fun: Callable,
    starts: np.ndarray,
    args: tuple,
    bounds=None,
    screen_iter: int = 300,
    finalists: int = 2,
):
    """L-BFGS-B from each start for `screen_iter` iterations, then the `finalists` best to full
    convergence (a few starts from Epoch's grid wander for thousands of iterations)."""
    with single_thread_blas():
        return _polish_starts(fun, starts, args, bounds, screen_iter, finalists)


def _polish_starts(
    fun: Callable, starts: np.ndarray, args: tuple, bounds, screen_iter: int, finalists: int
):
    opts = {"ftol": 1e-15, "gtol": 1e-12}
    screened = []
    for x0 in starts:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = minimize(
                fun,
                x0,
                args=args,
                jac=True,
                method="L-BFGS-B",
                bounds=bounds,
                options={**opts, "maxiter": screen_iter},
            )
        if np.isfinite(res.fun):
            screened.append(res)
    if not screened:
        raise SpecError("the fit diverged from every start", field="runs")
    screened.sort(key=lambda r: r.fun)
    best = None
    for res0 in screened[:finalists]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = minimize(
                fun,
                res0.x,
                args=args,
                jac=True,
                method="L-BFGS-B",
                bounds=bounds,
                options={**opts, "maxiter": 20_000},
            )
        if best is None or res.fun < best.fun:
            best = res
    return best


# --- Chinchilla: log L = LSE(a − α log N, b − β log D, e), theta = (a, b, e, alpha, beta) --------


def _chinchilla_terms(theta: np.ndarray, logN: np.ndarray, logD: np.ndarray) -> np.ndarray:
    """Stacked exponents, shape (3, ..., M) for theta of shape (5, ...)."""
    a, b, e, alpha, beta = (t[..., None] for t in theta)
    x1 = a - alpha * logN
    x2 = b - beta * logD
    return np.stack([x1, x2, np.broadcast_to(e, x1.shape)])


def chinchilla_grid_objective(
    theta: np.ndarray, logN: np.ndarray, logD: np.ndarray, logL: np.ndarray, delta: float
) -> np.ndarray:
    """Summed Huber loss for a batch of starts theta (5, K) -> (K,)."""
    x1, x2, x3 = _chinchilla_terms(theta, logN, logD)
    pred = np.logaddexp(np.logaddexp(x1, x2), x3)
    return huber(pred - logL, delta).sum(axis=-1)


def _chinchilla_obj_grad(
    theta: np.ndarray, logN, logD, logL, delta: float
) -> tuple[float, np.ndarray]:
    x = _chinchilla_terms(theta, logN, logD)
    m = x.max(axis=0)
    ex = np.exp(x - m)
    s = ex.sum(axis=0)
    pred = m + np.log(s)
    w = ex / s  # softmax: d pred / d x_i
    r = pred - logL
    h = huber(r, delta)
    g = huber_grad(r, delta)
    grad = np.array(
        [
            np.sum(g * w[0]),
            np.sum(g * w[1]),
            np.sum(g * w[2]),
            -np.sum(g * w[0] * logN),
            -np.sum(g * w[1] * logD),
        ]
    )
    return float(h.sum()), grad


def fit_chinchilla(
    N: np.ndarray,
    D: np.ndarray,
    L: np.ndarray,
    *,
    delta: float = 1e-3,
    grid: dict[str, np.ndarray] | None = None,
    polish: int = 4,
    start: np.ndarray | None = None,
) -> FitResult:
    """Approach 3 as in Epoch's replication: summed Huber(δ) of log-residuals, L-BFGS-B from the
    grid (default Epoch's 4,500 starts). All starts are scored at once; the `polish` best are
    run to convergence and the lowest objective wins. `start` skips the grid (warm start)."""
    t0 = time.perf_counter()
    N, D, L = (np.asarray(x, dtype=float) for x in (N, D, L))
    _check_points(N, D, L, "chinchilla")
    logN, logD, logL = np.log(N), np.log(D), np.log(L)
    if start is not None:
        starts = np.asarray(start, dtype=float)[None, :]
        n_starts = 1
    else:
        g = grid or EPOCH_GRID
        mesh = np.meshgrid(g["a"], g["b"], g["e"], g["alpha"], g["beta"], indexing="ij")
        theta = np.stack([m.ravel() for m in mesh])  # (5, K)
        n_starts = theta.shape[1]
        scores = np.concatenate(
            [
                chinchilla_grid_objective(theta[:, i : i + 1500], logN, logD, logL, delta)
                for i in range(0, n_starts, 1500)
            ]
        )
        order = np.argsort(scores, kind="stable")[:polish]
        starts = theta[:, order].T
    best = _polish(_chinchilla_obj_grad, starts, (logN, logD, logL, delta))
    a, b, e, alpha, beta = best.x
    law = ChinchillaLaw(
        E=float(np.exp(e)),
        A=float(np.exp(a)),
        B=float(np.exp(b)),
        alpha=float(alpha),
        beta=float(beta),
        source="fit (Approach 3, Huber)",
    )
    return FitResult(
        law, float(best.fun), len(N), time.perf_counter() - t0, "epoch", delta, n_starts, best.x
    )


# --- Kaplan: log L = α_D·LSE(p(log N_c − log N), log D_c − log D), p = α_N/α_D ------------------

KAPLAN_GRID = {
    "log_Nc": np.array([20.0, 25, 30, 35]),
    "log_Dc": np.array([20.0, 25, 30, 35]),
    "alpha_N": np.array([0.05, 0.1, 0.2, 0.4]),
    "alpha_D": np.array([0.05, 0.1, 0.2, 0.4]),
}
_POS = (1e-3, 5.0)


def _kaplan_log_reducible(theta: np.ndarray, logN, logD) -> tuple[np.ndarray, np.ndarray]:
    """log of Kaplan's eq. 1.5, α_D·LSE(p(log N_c − log N), log D_c − log D) with p = α_N/α_D,
    for theta = (log N_c, log D_c, α_N, α_D, ...), and its (4, n) gradient in those four."""
    lnc, ldc, an, ad = theta[:4]
    p = an / ad
    dn = lnc - logN
    u1, u2 = p * dn, ldc - logD
    s = np.logaddexp(u1, u2)
    w1 = np.exp(u1 - s)
    jac = np.stack([w1 * an, (1.0 - w1) * ad, w1 * dn, s - w1 * p * dn])
    return ad * s, jac


def _kaplan_obj_grad(theta: np.ndarray, logN, logD, logL, delta: float) -> tuple[float, np.ndarray]:
    log_pred, jac = _kaplan_log_reducible(theta, logN, logD)
    r = log_pred - logL
    return float(huber(r, delta).sum()), jac @ huber_grad(r, delta)


def _kaplan_e_obj_grad(
    theta: np.ndarray, logN, logD, logL, delta: float
) -> tuple[float, np.ndarray]:
    """log L = log(exp(e) + reducible): Kaplan's form plus an irreducible loss E = e^e."""
    log_red, jac = _kaplan_log_reducible(theta, logN, logD)
    log_pred = np.logaddexp(theta[4], log_red)
    share = np.exp(log_red - log_pred)  # reducible / total
    r = log_pred - logL
    g = huber_grad(r, delta)
    grad = np.concatenate([jac @ (g * share), [np.sum(g * (1.0 - share))]])
    return float(huber(r, delta).sum()), grad


KAPLAN_E_STARTS = np.log(np.array([0.25, 0.5, 1.0, 1.5, 2.0]))  # grid of log E starts (nats)


def fit_kaplan(
    N,
    D,
    L,
    *,
    delta: float = 1e-3,
    polish: int = 4,
    start: np.ndarray | None = None,
    irreducible: bool = False,
) -> FitResult:
    """Kaplan et al. 2020 eq. 1.5 fitted with the same Huber log-residual objective; with
    `irreducible`, plus a fitted irreducible loss E (Henighan et al. 2020 eq. 1.1)."""
    t0 = time.perf_counter()
    N, D, L = (np.asarray(x, dtype=float) for x in (N, D, L))
    form = "kaplan-irreducible" if irreducible else "kaplan"
    _check_points(N, D, L, form)
    args = (np.log(N), np.log(D), np.log(L), delta)
    if start is not None:
        starts = np.asarray(start, dtype=float)[None, :]
    else:
        g = KAPLAN_GRID
        axes = [g["log_Nc"], g["log_Dc"], g["alpha_N"], g["alpha_D"]]
        if irreducible:
            axes.append(KAPLAN_E_STARTS)
        mesh = np.meshgrid(*axes, indexing="ij")
        theta = np.stack([m.ravel() for m in mesh]).T
        lnc, ldc, an, ad = (t[:, None] for t in theta.T[:4])
        pred = ad * np.logaddexp(an / ad * (lnc - args[0]), ldc - args[1])
        if irreducible:
            pred = np.logaddexp(theta[:, 4:5], pred)
        scores = huber(pred - args[2], delta).sum(axis=1)
        starts = theta[np.argsort(scores, kind="stable")[: polish * (2 if irreducible else 1)]]
    bounds = [(None, None), (None, None), _POS, _POS]
    if irreducible:
        # E below the smallest measured loss (a loss cannot sit under its irreducible part).
        bounds.append((np.log(1e-3), float(np.log(L.min()))))
        best = _polish(_kaplan_e_obj_grad, starts, args, bounds=bounds)
    else:
        best = _polish(_kaplan_obj_grad, starts, args, bounds=bounds)
    lnc, ldc, an, ad = best.x[:4]
    law = KaplanLaw(
        N_c=float(np.exp(lnc)),
        D_c=float(np.exp(ldc)),
        alpha_N=float(an),
        alpha_D=float(ad),
        E=float(np.exp(best.x[4])) if irreducible else 0.0,
        source=f"fit (Kaplan form{' + irreducible E' if irreducible else ''}, Huber)",
    )
    return FitResult(
        law, float(best.fun), len(N), time.perf_counter() - t0, "epoch", delta, len(starts), best.x
    )


def fit_law(
    form: str, N, D, L, *, unique_tokens=None, delta: float = 1e-3, start: np.ndarray | None = None
) -> FitResult:
    """Approach 3 fit of `form` (chinchilla, kaplan, kaplan-irreducible, data-constrained)."""
    if not (np.isfinite(delta) and delta > 0):
        raise SpecError(f"must be positive (got {delta!r})", field="delta")
    if form == "chinchilla":
        return fit_chinchilla(N, D, L, delta=delta, start=start)
    if form == "kaplan":
        return fit_kaplan(N, D, L, delta=delta, start=start)
    if form == "kaplan-irreducible":
        return fit_kaplan(N, D, L, delta=delta, start=start, irreducible=True)
    if form == "data-constrained":
        if unique_tokens is None:
            raise SpecError(
                "--law data-constrained needs a unique_tokens column", field="runs.unique_tokens"
            )
        from .fitting_constrained import fit_data_constrained  # it builds on fit_chinchilla

        return fit_data_constrained(N, D, L, unique_tokens, delta=delta)
    raise SpecError(
        f"unknown law {form!r}; expected chinchilla, kaplan, kaplan-irreducible or data-constrained",
        field="law",
    )

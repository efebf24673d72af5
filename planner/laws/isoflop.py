"""Approaches 1 and 2 of Hoffmann et al. 2022 (Sec. 3.1-3.2): the compute-optimal frontier from
the lower envelope of training curves, or from parabolas fitted to IsoFLOP slices, followed by
power laws N_opt = G·C^a, D_opt = H·C^b. Pure functions."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from scaleplan.specs.errors import SpecError

from .forms import FLOPS_PER_PARAM_TOKEN, FrontierLaw


@dataclass
class FrontierFit:
    law: FrontierLaw
    method: str  # "approach1" or "approach2"
    optima: dict[str, list[float]]  # C, N_opt, D_opt, loss_opt per budget
    n_points: int
    seconds: float
    objective: float  # residual sum of squares of the log-log N fit
    parabolas: list[dict[str, float]] = field(default_factory=list)  # approach2: per budget


def power_law_fit(
    x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None
) -> tuple[float, float, float]:
    """(coef, exponent, rss) of y = coef·x^exponent by (weighted) least squares in log-log space.
    With weights 1/σ² on log y this is the fit of Porian et al. 2024 (bs_median_weighted)."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    w = np.ones_like(lx) if weights is None else np.asarray(weights, float)
    X = np.c_[np.ones_like(lx), lx] * np.sqrt(w)[:, None]
    coef, *_ = np.linalg.lstsq(X, ly * np.sqrt(w), rcond=None)
    rss = float(np.sum(w * (ly - coef[0] - coef[1] * lx) ** 2))
    return float(np.exp(coef[0])), float(coef[1]), rss


def power_law_fit_minimax(
    x: np.ndarray, y: np.ndarray, half_width: np.ndarray
) -> tuple[float, float, float]:
    """(coef, exponent, worst) of y = coef·x^exponent that minimises the largest |log residual|
    in units of each point's half-width (a Chebyshev fit, as a linear program): the law most
    consistent with a table printed to a known rounding. `worst` <= 1 means every point lies
    within its half-width. `half_width` is relative (log) per point."""
    from scipy.optimize import linprog  # scipy is a core dependency; imported where used

    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    hw = np.asarray(half_width, float)
    if lx.size < 2 or np.any(hw <= 0) or not np.all(np.isfinite(np.r_[lx, ly, hw])):
        raise SpecError("needs >= 2 positive points with positive half-widths", field="points")
    # variables (log coef, exponent, t): minimise t s.t. |ly - log coef - exponent·lx| <= t·hw
    ones = np.ones_like(lx)
    a_ub = np.r_[np.c_[-ones, -lx, -hw], np.c_[ones, lx, -hw]]
    b_ub = np.r_[-ly, ly]
    res = linprog([0.0, 0.0, 1.0], A_ub=a_ub, b_ub=b_ub, bounds=[(None, None)] * 2 + [(0, None)])
    if not res.success:
        raise SpecError(f"minimax power-law fit failed: {res.message}", field="points")
    log_coef, exponent, worst = res.x
    return float(np.exp(log_coef)), float(exponent), float(worst)


def _loss_frontier(C: np.ndarray, L: np.ndarray) -> dict[str, float]:
    """L_opt(C) = E + k·C^-γ on the frontier (least squares in log-loss over a grid of E)."""
    best: tuple[float, dict[str, float]] | None = None
    for E in np.linspace(0.0, 0.999 * L.min(), 400):
        k, g, rss = power_law_fit(C, L - E)
        if np.isfinite(rss) and (best is None or rss < best[0]):
            best = (rss, {"E": float(E), "k": k, "gamma": -g})
    return best[1] if best is not None else {}


def _frontier(method: str, C, N, D, L, n_points: int, t0: float, parabolas=None) -> FrontierFit:
    C, N, D, L = (np.asarray(v, float) for v in (C, N, D, L))
    if not np.all(np.isfinite(np.c_[C, N, D, L])) or np.any(np.c_[C, N, D, L] <= 0):
        raise SpecError(
            f"{method} found non-finite optima; is the file one experiment?", field="runs"
        )
    if len(C) < 3:
        raise SpecError(
            f"{method} needs optima at >= 3 compute budgets (got {len(C)})", field="runs.flops"
        )
    n_coef, a, rss = power_law_fit(C, N)
    d_coef, b, _ = power_law_fit(C, D)
    law = FrontierLaw(
        n_coef, a, d_coef, b, loss_params=_loss_frontier(C, L), source=f"fit ({method})"
    )
    optima = {"C": C.tolist(), "N_opt": N.tolist(), "D_opt": D.tolist(), "loss_opt": L.tolist()}
    return FrontierFit(
        law, method, optima, n_points, time.perf_counter() - t0, rss, parabolas or []
    )


def group_budgets(flops: np.ndarray, rel_tol: float = 0.05) -> np.ndarray:
    """Label points whose FLOPs agree within rel_tol as one IsoFLOP budget."""
    order = np.argsort(flops)
    labels = np.empty(len(flops), dtype=int)
    label, anchor = -1, -np.inf
    for i in order:
        if flops[i] > anchor * (1 + rel_tol):
            label, anchor = label + 1, flops[i]
        labels[i] = label
    return labels


def approach2(
    N: np.ndarray, D: np.ndarray, L: np.ndarray, flops: np.ndarray | None = None, window: int = 2
) -> FrontierFit:
    """IsoFLOP profiles (Hoffmann et al. 2022 Sec. 3.2): per budget, a parabola of loss in log N
    through the lowest point and up to `window` sizes on each side; its vertex is N_opt(C).
    Budgets whose lowest loss sits at the smallest or largest size are skipped (not bracketed)."""
    t0 = time.perf_counter()
    N, D, L = (np.asarray(v, float) for v in (N, D, L))
    C = FLOPS_PER_PARAM_TOKEN * N * D if flops is None else np.asarray(flops, float)
    labels = group_budgets(C)
    pairs = {(int(lab), float(n)) for lab, n in zip(labels, N, strict=True)}
    if len(pairs) < len(N):
        raise SpecError(
            "several points share a FLOP budget and a model size; give one experiment per file",
            field="runs",
        )
    rows, parabolas = [], []
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        idx = idx[np.argsort(N[idx])]
        k = int(np.argmin(L[idx]))
        if len(np.unique(N[idx])) < 3 or k == 0 or k == len(idx) - 1:
            continue  # fewer than 3 sizes, or the minimum is not bracketed by this slice
        m = idx[max(k - window, 0) : k + window + 1]
        xs = np.log(N[m])
        if len(np.unique(xs)) < 3:
            continue
        mid = float(xs.mean())  # centre log N: a well-conditioned quadratic fit
        u2, u1, u0 = np.polyfit(xs - mid, L[m], 2)
        if u2 <= 0:
            continue  # no minimum inside this slice
        x = mid - u1 / (2 * u2)
        if not xs.min() <= x <= xs.max():
            continue  # vertex outside the fitted window: not an interpolated optimum
        c2, c1, c0 = u2, u1 - 2 * u2 * mid, u2 * mid * mid - u1 * mid + u0  # in raw log N
        budget = float(np.exp(np.mean(np.log(C[m]))))
        n_opt = float(np.exp(x))
        rows.append(
            (budget, n_opt, budget / (FLOPS_PER_PARAM_TOKEN * n_opt), c0 - c1 * c1 / (4 * c2))
        )
        parabolas.append(
            {
                "C": budget,
                "c2": float(c2),
                "c1": float(c1),
                "c0": float(c0),
                "log_n_min": float(np.log(N[m]).min()),
                "log_n_max": float(np.log(N[m]).max()),
            }
        )
    if not rows:
        raise SpecError(
            "no IsoFLOP budget has >= 3 model sizes with a minimum (approach2)", field="runs.flops"
        )
    C_opt, N_opt, D_opt, L_opt = zip(*rows, strict=True)
    return _frontier("approach2", C_opt, N_opt, D_opt, L_opt, len(N), t0, parabolas)


def approach1(
    N: np.ndarray, D: np.ndarray, L: np.ndarray, run: np.ndarray, n_budgets: int = 200
) -> FrontierFit:
    """Lower envelope of training curves (Hoffmann et al. 2022 Sec. 3.1): at each of `n_budgets`
    log-spaced FLOP values, the run with the lowest (log-log interpolated) loss gives N_opt(C),
    D_opt(C) = C/(6N_opt). Hoffmann used several schedule lengths per size because a checkpoint
    in the middle of a long cosine run sits above the loss of a run that ends there; curves from
    one schedule per size bias N_opt towards small models (bench/RESULTS.md, OLMo ladder)."""
    t0 = time.perf_counter()
    N, D, L = (np.asarray(v, float) for v in (N, D, L))
    run = np.asarray(run)
    C = FLOPS_PER_PARAM_TOKEN * N * D
    curves = []
    for r in np.unique(run):
        m = run == r
        if m.sum() >= 2:
            o = np.argsort(C[m])
            curves.append((float(N[m][0]), np.log(C[m][o]), np.log(L[m][o])))
    if len(curves) < 3:
        raise SpecError(
            "approach1 needs training curves (>= 2 rows per run) for >= 3 runs", field="runs.run"
        )
    lo = min(c[1][0] for c in curves)
    hi = max(c[1][-1] for c in curves)
    rows = []
    for lc in np.linspace(lo, hi, n_budgets):
        best = None
        for n, lcs, lls in curves:
            if lcs[0] <= lc <= lcs[-1]:
                val = float(np.interp(lc, lcs, lls))
                if best is None or val < best[1]:
                    best = (n, val)
        if best is not None:
            rows.append(
                (
                    np.exp(lc),
                    best[0],
                    np.exp(lc) / (FLOPS_PER_PARAM_TOKEN * best[0]),
                    np.exp(best[1]),
                )
            )
    C_opt, N_opt, D_opt, L_opt = (np.array(v) for v in zip(*rows, strict=True))
    # Budgets where the smallest or largest run wins are the envelope's edges, not optima.
    inner = (N_opt > min(c[0] for c in curves)) & (N_opt < max(c[0] for c in curves))
    if inner.sum() >= 3:
        C_opt, N_opt, D_opt, L_opt = C_opt[inner], N_opt[inner], D_opt[inner], L_opt[inner]
    return _frontier("approach1", C_opt, N_opt, D_opt, L_opt, len(N), t0)

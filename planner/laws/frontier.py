"""Compute-optimal allocation: numerical frontier, constrained frontier (unique-token and size
caps, repetition per Muennighoff et al. 2023), and the inference-aware optimum (Sardana et al.
2024). Pure functions of a `Law`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scaleplan.specs.errors import SpecError

from .forms import FLOPS_PER_PARAM_TOKEN, ArrayLike, DataConstrainedLaw, Law, effective_repeats


def minimize_scalar(*args: Any, **kwargs: Any) -> Any:
    """scipy.optimize.minimize_scalar, imported on first use so that `scaleplan plan` starts fast."""
    from scipy.optimize import minimize_scalar as _minimize_scalar

    return _minimize_scalar(*args, **kwargs)


# Muennighoff et al. 2023 fitted decay constant for repeated data (huggingface/datablations
# README, parametric fit): used when a law without its own R_D* meets a unique-token cap.
MUENNIGHOFF_R_D_STAR = 15.387756

_GRID = 2001  # log-N grid points per compute budget before the zoomed refinement


def _line_loss(law: Law, C: float, unique_tokens: float | None):
    """Loss along the iso-FLOP line as a function of log N."""

    def f(log_n: ArrayLike) -> np.ndarray:
        N = np.exp(log_n)
        D = C / (FLOPS_PER_PARAM_TOKEN * N)
        if unique_tokens is None:
            return law.loss(N, D)
        if isinstance(law, DataConstrainedLaw):
            return law.loss(N, D, unique_tokens=unique_tokens)
        # Repetition for a law without its own R*: effective data only (Muennighoff eq. 5).
        return law.loss(N, effective_repeats(unique_tokens, D, MUENNIGHOFF_R_D_STAR))

    return f


def _argmin_line(f, lo: float, hi: float, zooms: int = 4) -> float:
    """Minimise f over log N in [lo, hi]: a dense vectorized grid, then `zooms` finer grids over
    the bracket around the best point (each shrinks the spacing 100x). Golden-section precision
    without importing scipy.optimize on the planning path (it costs ~0.7 s of start-up)."""
    a, b, n = lo, hi, _GRID
    best = lo
    for _ in range(zooms + 1):
        grid = np.linspace(a, b, n)
        values = f(grid)
        i = int(np.nanargmin(values))
        best = float(grid[i])
        a, b, n = grid[max(i - 1, 0)], grid[min(i + 1, n - 1)], 201
        if b - a <= 0:
            break
    return best


def _n_bounds(C: float, max_params: float | None) -> tuple[float, float]:
    # Search N from 1e3 parameters up to the size that would train on a single token (D = 1):
    # wide bounds, and the grid is dense in log N.
    lo = np.log(1e3)
    hi = np.log(max(C / FLOPS_PER_PARAM_TOKEN / 1.0, 1e3 * 1.0001))
    if max_params is not None:
        hi = min(hi, np.log(max_params))
    if hi <= lo:
        raise SpecError("max_params is below the smallest model searched (1e3)", field="max_params")
    return lo, hi


def numerical_optimal(law: Law, C: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """argmin_N loss(N, C/(6N)) for each C (no constraints)."""
    Cs = np.atleast_1d(np.asarray(C, dtype=float))
    Ns = np.array([np.exp(_argmin_line(_line_loss(law, c, None), *_n_bounds(c, None))) for c in Cs])
    Ds = Cs / (FLOPS_PER_PARAM_TOKEN * Ns)
    if np.ndim(C) == 0:
        return Ns[0], Ds[0]
    return Ns.reshape(np.shape(C)), Ds.reshape(np.shape(C))


def constrained_optimal(
    law: Law,
    C: float,
    max_unique_tokens: float | None = None,
    max_params: float | None = None,
) -> tuple[float, float, float]:
    """Compute-optimal (N, D, epochs) for C FLOPs under a unique-token cap and a size cap.

    Above the cap, data repeat and count through Muennighoff et al. 2023 eq. 5 (the law's own
    R_D*, R_N* for a data-constrained law; R_D* = 15.39 otherwise). epochs = D / unique tokens
    (1.0 when uncapped or D fits in one pass)."""
    C = float(C)
    if not np.isfinite(C) or C <= 0:
        raise SpecError(f"compute must be positive (got {C!r})", field="compute")
    for name, value in (("max_unique_tokens", max_unique_tokens), ("max_params", max_params)):
        if value is not None and (not np.isfinite(value) or value <= 0):
            raise SpecError(f"must be positive (got {value!r})", field=name)
    if max_unique_tokens is None and max_params is None:
        N, D = law.optimal(C)
        return float(N), float(D), 1.0
    if max_unique_tokens is None and max_params is not None:
        N_free, _ = law.optimal(C)
        if float(N_free) <= max_params:
            N = float(N_free)
            return N, C / (FLOPS_PER_PARAM_TOKEN * N), 1.0
    lo, hi = _n_bounds(C, max_params)
    N = float(np.exp(_argmin_line(_line_loss(law, C, max_unique_tokens), lo, hi)))
    D = C / (FLOPS_PER_PARAM_TOKEN * N)
    epochs = max(D / max_unique_tokens, 1.0) if max_unique_tokens is not None else 1.0
    return N, D, epochs


def total_flops(N: ArrayLike, D_train: ArrayLike, inference_tokens: float) -> np.ndarray:
    """Training plus inference FLOPs: 6·N·D_train + 2·N·D_inference (Sardana et al. 2024 eq. 1-2)."""
    return (
        FLOPS_PER_PARAM_TOKEN * np.asarray(N) * np.asarray(D_train)
        + 2.0 * np.asarray(N) * inference_tokens
    )


def inference_aware_optimal(
    law: Law,
    C_or_target_loss: float,
    inference_tokens: float,
    *,
    kind: str = "auto",
) -> tuple[float, float]:
    """(N, D_train) minimising training + inference FLOPs for a target loss (Sardana et al.
    2024, Sec. 2). `C_or_target_loss` is a target loss in nats, or a training compute C whose
    Chinchilla-optimal loss becomes the target. kind='auto' reads values below 1e3 as a loss."""
    value = float(C_or_target_loss)
    if kind not in ("auto", "compute", "loss"):
        raise SpecError("kind must be auto, compute or loss", field="kind")
    if inference_tokens < 0 or not np.isfinite(inference_tokens):
        raise SpecError(f"must be >= 0 (got {inference_tokens!r})", field="inference_tokens")
    is_loss = kind == "loss" or (kind == "auto" and value < 1e3)
    if is_loss:
        target = value
    else:
        N0, D0 = law.optimal(value)
        target = float(law.loss(N0, D0))

    def cost(log_n: float) -> float:
        N = float(np.exp(log_n))
        D = law.tokens_for_loss(N, target)
        return float(np.log(total_flops(N, D, inference_tokens))) if np.isfinite(D) else np.inf

    grid = np.linspace(np.log(1e6), np.log(1e15), 901)
    costs = np.array([cost(x) for x in grid])
    if not np.isfinite(costs).any():
        raise SpecError(
            f"target loss {target:.4g} is unreachable with this law", field="target_loss"
        )
    i = int(np.argmin(costs))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    res = minimize_scalar(cost, bounds=(a, b), method="bounded", options={"xatol": 1e-9})
    log_n = float(res.x) if res.fun <= costs[i] else float(grid[i])
    N = float(np.exp(log_n))
    return N, law.tokens_for_loss(N, target)

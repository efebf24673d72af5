"""Loss through LR schedules: the multi-power law (MPL) of Luo et al. 2025,

    L(t) = L0 + A·(S1(t) + S_W)^(−α) − LD(t),
    LD(t) = B·Σ_{k≤t} (η_{k−1} − η_k)·G(η_k^(−γ)·S_k(t)),  G(x) = 1 − (C·x + 1)^(−β),
    S1(t) = Σ_{τ≤t} η_τ,  S_k(t) = Σ_{k≤τ≤t} η_τ,  S_W = Σ warmup LRs   (Luo et al. 2025 eq. 1-3),

fitted from loss curves, predicting the final loss under WSD or cosine and the gain of the
annealing phase (the size-aware variant for predicting a larger model is in
`schedule_law_sized`). Pure functions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from scaleplan.specs.errors import SpecError

from ._blas import single_thread_blas


def least_squares(*args: Any, **kwargs: Any) -> Any:
    """scipy.optimize.least_squares, imported on first use so that `scaleplan plan` starts fast."""
    from scipy.optimize import least_squares as _least_squares

    return _least_squares(*args, **kwargs)


PARAM_NAMES = ("L0", "A", "alpha", "B", "C", "beta", "gamma")


@dataclass(frozen=True)
class MPLParams:
    L0: float
    A: float
    alpha: float
    B: float
    C: float
    beta: float
    gamma: float
    source: str = "user"
    # The reference implementation (thu-yao-01-luo/MultiPowerLaw src/models.py) sums LD over every
    # LR change from step 1, so a linear warmup's increases enter LD as negative drops and lift
    # the loss by about B·η_peak; its published L0 is lower by that much. True follows it.
    warmup_in_decay: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def theta(self) -> np.ndarray:
        """The seven law constants in `PARAM_NAMES` order, as `_predict` takes them."""
        return np.array([getattr(self, k) for k in PARAM_NAMES])


# Published per-size fits (thu-yao-01-luo/MultiPowerLaw, MIT: README table and src/config.py
# PARAMS, fitted on cosine_24000, constant_24000 and wsdcon_9 of each size): 25M/100M/400M
# models, peak LR 3e-4, linear warmup from 0 over 2,160 steps counted in LD (`warmup_in_decay`).
def _luo(size: str, *values: float) -> MPLParams:
    return MPLParams(*values, source=f"Luo et al. 2025 MPL repo, {size}", warmup_in_decay=True)


MPL_PRESETS: dict[str, MPLParams] = {
    "25M": _luo("25M", 3.04045406, 0.52468604, 0.50786857, 363.78751622, 2.06560812, 0.58279013, 0.64142257),
    "100M": _luo("100M", 2.6514477, 0.60115152, 0.45295811, 437.9464276, 2.13245612, 0.59785199, 0.65523644),
    "400M": _luo("400M", 2.37474466, 0.65421216, 0.42878731, 523.42464371, 2.02462735, 0.59350493, 0.63472457),
}  # fmt: skip


# Our fit (fit_mpl, least squares) on all nine 400M curves of ../shared/data/
# mpl_luo2025_loss_curves.csv, printed by bench/scaling.py: RMSE 0.0048 nats. It uses this
# module's convention (warmup outside LD), which `fit_mpl` fits.
MPL_DEFAULT = MPLParams(
    2.552,
    0.6236,
    0.4379,
    525.2,
    0.008812,
    1.744,
    0.8889,
    "fit on mpl_luo2025_loss_curves.csv 400M (bench/scaling.py)",
)


def default_params() -> MPLParams:
    """A schedule-shape prior usable without the user's curves (400M model, peak LR 3e-4). Its
    L0 belongs to that setup: compare schedules by differences, not absolute losses."""
    return MPL_DEFAULT


@dataclass(frozen=True)
class _Design:
    """Precomputed sums of one LR schedule at a set of evaluation steps."""

    s1: np.ndarray  # S1(t) + S_W at each evaluation step, (n,)
    drops: np.ndarray  # binned LR drops η_{k−1} − η_k, (m,)
    eta_k: np.ndarray  # η at each bin's representative step, (m,)
    s_kt: np.ndarray  # S_k(t), (n, m); 0 where k > t
    mask: np.ndarray  # k <= t, (n, m)


def _design(
    lr_per_step: np.ndarray,
    eval_idx: np.ndarray | None = None,
    max_bins: int = 512,
    warmup_in_decay: bool = False,
) -> _Design:
    """lr_per_step[i] is the LR of step i (0-based); losses are predicted after step i for each
    i in eval_idx. Warmup = the steps before the LR first reaches its peak. LR drops are grouped
    into at most `max_bins` runs of consecutive steps (exact for step schedules, and a close
    approximation of smooth decays). `warmup_in_decay`: the warmup's LR increases also enter LD,
    as negative drops (the reference implementation's convention, `MPLParams.warmup_in_decay`)."""
    lr = np.asarray(lr_per_step, dtype=float)
    if lr.ndim != 1 or len(lr) == 0 or np.any(~np.isfinite(lr)) or np.any(lr < 0) or lr.max() <= 0:
        raise SpecError(
            "lr_per_step must be a 1-D array of non-negative LRs with a positive peak", field="lr"
        )
    idx = np.arange(len(lr)) if eval_idx is None else np.asarray(eval_idx, dtype=int)
    if np.any(idx < 0) or np.any(idx >= len(lr)):
        raise SpecError("evaluation steps outside the LR schedule", field="steps")
    w = int(np.argmax(lr >= lr.max() * (1 - 1e-9)))  # warmup steps
    P = np.concatenate([[0.0], np.cumsum(lr)])  # P[j] = Σ_{i<j} η_i
    s1 = P[idx + 1]  # S1(t) + S_W: every LR up to and including step t
    # A change into step j (η_{j-1} − η_j), for j after the first post-warmup step, or from
    # step 1 on when the warmup counts; its S_k(t) runs from step j to t.
    d = lr[:-1] - lr[1:]
    first = 1 if warmup_in_decay else w + 1
    js = np.flatnonzero(d[first - 1 :] != 0) + first if first < len(lr) else np.zeros(0, int)
    if len(js) == 0:
        z = np.zeros((len(idx), 0))
        return _Design(s1, np.zeros(0), np.zeros(0), z, z.astype(bool))
    parts = [js[js <= w], js[js > w]]  # warmup increases and drops are never binned together
    bins = [
        g
        for part in parts
        if len(part)
        for g in np.array_split(part, min(len(part), max(1, round(max_bins * len(part) / len(js)))))
    ]
    drops = np.array([d[g - 1].sum() for g in bins])
    rep = np.array([g[0] for g in bins])  # first step of each run of changes
    eta_k = lr[rep]
    mask = rep[None, :] <= idx[:, None]
    s_kt = np.where(mask, P[idx + 1][:, None] - P[rep][None, :], 0.0)
    return _Design(s1, drops, eta_k, s_kt, mask)


def _predict(theta: np.ndarray, des: _Design) -> np.ndarray:
    L0, A, alpha, B, C, beta, gamma = theta
    base = L0 + A * des.s1 ** (-alpha)
    if len(des.drops) == 0:
        return base
    x = C * des.eta_k[None, :] ** (-gamma) * des.s_kt
    G = np.where(des.mask, 1.0 - (x + 1.0) ** (-beta), 0.0)
    return base - B * (G * des.drops[None, :]).sum(axis=1)


def predict_loss_at(
    params: MPLParams, lr_per_step: np.ndarray, eval_idx: np.ndarray | None = None
) -> np.ndarray:
    """Predicted loss after each step in `eval_idx` (default: every step) of the schedule
    `lr_per_step` (Luo et al. 2025 eq. 1)."""
    design = _design(lr_per_step, eval_idx, warmup_in_decay=params.warmup_in_decay)
    return _predict(params.theta, design)


def predict_loss_curve(params: MPLParams, lr_per_step: np.ndarray) -> np.ndarray:
    """Predicted loss after every step of the schedule `lr_per_step` (Luo et al. 2025 eq. 1)."""
    return predict_loss_at(params, lr_per_step)


def predict_final_loss(params: MPLParams, lr_per_step: np.ndarray) -> float:
    return float(predict_loss_at(params, lr_per_step, np.array([len(lr_per_step) - 1]))[0])


# --- schedules ---------------------------------------------------------------------------------


def make_schedule(
    kind: str,
    total_steps: int,
    peak_lr: float,
    warmup_steps: int = 0,
    final_ratio: float = 0.1,
    decay_fraction: float = 0.2,
    decay_shape: str = "exp",
) -> np.ndarray:
    """Per-step LR: linear warmup, then cosine to final_ratio·peak, WSD (stable, then a decay over
    the last decay_fraction of steps, exponential or linear), or constant."""
    if total_steps <= warmup_steps or peak_lr <= 0 or not 0 < final_ratio <= 1:
        raise SpecError(
            "need total_steps > warmup_steps, peak_lr > 0 and 0 < final_ratio <= 1",
            field="schedule",
        )
    warm = peak_lr * np.arange(1, warmup_steps + 1) / max(warmup_steps, 1)
    n = total_steps - warmup_steps
    u = np.arange(n) / max(n - 1, 1)
    lo = final_ratio * peak_lr
    if kind == "cosine":
        main = lo + 0.5 * (peak_lr - lo) * (1 + np.cos(np.pi * u))
    elif kind == "constant":
        main = np.full(n, peak_lr)
    elif kind == "wsd":
        n_decay = max(int(round(decay_fraction * total_steps)), 1)
        main = np.full(n, peak_lr)
        v = np.arange(1, n_decay + 1) / n_decay
        main[n - n_decay :] = (
            peak_lr * final_ratio**v if decay_shape == "exp" else peak_lr - (peak_lr - lo) * v
        )
    else:
        raise SpecError(f"unknown schedule {kind!r} (cosine, wsd, constant)", field="schedule.kind")
    return np.concatenate([warm, main])


def annealing_gain(params: MPLParams, lr_per_step: np.ndarray) -> float:
    """Final-loss reduction of this schedule against holding the peak LR for as many steps."""
    const = np.full(len(lr_per_step), float(np.max(lr_per_step)))
    const[: int(np.argmax(lr_per_step >= np.max(lr_per_step)))] = lr_per_step[
        : int(np.argmax(lr_per_step >= np.max(lr_per_step)))
    ]
    return predict_final_loss(params, const) - predict_final_loss(params, lr_per_step)


def compare_schedules(
    params: MPLParams,
    total_steps: int,
    peak_lr: float,
    warmup_steps: int = 0,
    decay_fractions: tuple[float, ...] = (0.1, 0.2, 0.3),
) -> list[dict]:
    """Predicted final loss of cosine and WSD (each decay fraction), best first."""
    rows = [
        {
            "kind": "cosine",
            "decay_fraction": 1.0,
            "final_loss": predict_final_loss(
                params, make_schedule("cosine", total_steps, peak_lr, warmup_steps)
            ),
        }
    ]
    for f in decay_fractions:
        lr = make_schedule("wsd", total_steps, peak_lr, warmup_steps, decay_fraction=f)
        rows.append(
            {"kind": "wsd", "decay_fraction": f, "final_loss": predict_final_loss(params, lr)}
        )
    return sorted(rows, key=lambda r: r["final_loss"])


# --- fitting -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """One training run: per-step LR for the whole run, and measured losses at `steps` (0-based
    indices into lr_per_step)."""

    lr_per_step: np.ndarray
    steps: np.ndarray
    loss: np.ndarray
    n_params: float | None = None
    name: str = ""


_LO = np.array([-np.inf, 1e-6, 1e-3, 0.0, 1e-6, 1e-3, 1e-3])
_HI = np.array([np.inf, 1e3, 3.0, 1e5, 1e3, 3.0, 3.0])
_X0 = np.array([2.651, 0.601, 0.453, 437.946, 2.132, 0.598, 0.655])  # README 100M values as start


def fit_mpl(curves: list[Curve], max_bins: int = 128) -> tuple[MPLParams, float]:
    """Least squares on the loss of every measured point (Luo et al. 2025 fit on several
    schedules at once). Returns the params and the RMSE (nats)."""
    if not curves:
        raise SpecError("no loss curves to fit", field="curves")
    designs = [
        (_design(c.lr_per_step, c.steps, max_bins), np.asarray(c.loss, float)) for c in curves
    ]

    def resid(theta: np.ndarray) -> np.ndarray:
        return np.concatenate([_predict(theta, d) - y for d, y in designs])

    with single_thread_blas():
        res = least_squares(resid, _X0, bounds=(_LO, _HI), x_scale="jac", max_nfev=2000)
    p = MPLParams(*(float(v) for v in res.x), source="fit (multi-power law)")
    return p, float(np.sqrt(np.mean(res.fun**2)))


def lr_from_samples(
    steps: np.ndarray, lrs: np.ndarray, total_steps: int | None = None
) -> np.ndarray:
    """Rebuild a per-step LR from logged samples: linear warmup from 0 to the first sample,
    log-linear interpolation between samples (exact for exponential decays, close for cosine
    and linear ones sampled every ~100 steps), the last value held to total_steps."""
    steps = np.asarray(steps, dtype=float)
    lrs = np.asarray(lrs, dtype=float)
    o = np.argsort(steps)
    steps, lrs = steps[o], lrs[o]
    if len(steps) < 2 or np.any(lrs <= 0):
        raise SpecError("need >= 2 positive LR samples", field="lr")
    n = int(total_steps if total_steps is not None else steps[-1] + 1)
    grid = np.arange(n, dtype=float)
    out = np.exp(np.interp(grid, steps, np.log(lrs)))
    first = int(steps[0])
    out[:first] = lrs[0] * (np.arange(first) + 1) / max(first, 1)
    return out

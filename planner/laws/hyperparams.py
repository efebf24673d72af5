"""Learning-rate and batch-size laws, their fit from a user's LR x batch sweep, a warmup rule,
and the WSD-or-cosine choice. Pure functions."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scaleplan.specs.errors import SpecError

# DeepSeek LLM (arXiv 2401.02954) Formula 1: C in FLOPs, B in tokens.
DEEPSEEK_LR = (0.3118, -0.1250)
DEEPSEEK_BATCH = (0.2920, 0.3271)
# Step Law (Li et al. 2025, arXiv 2503.04715): means of the 1000 bootstrap fits in
# step-law/steplaw data/1004_fitted_lr_bs_scaling_model_parameters.csv; N params, D tokens.
STEPLAW_LR = (1.7973, -0.71292, 0.30749)  # eta = c * N^cN * D^cD
STEPLAW_BATCH = (0.58069, 0.57094)  # B_tokens = c * D^dD


def _pos(name: str, value: float) -> float:
    if not (isinstance(value, (int, float, np.floating)) and math.isfinite(value) and value > 0):
        raise SpecError(f"must be positive (got {value!r})", field=name)
    return float(value)


def deepseek_lr_batch(compute_flops: float) -> tuple[float, float]:
    """(peak LR, batch in tokens): eta = 0.3118·C^-0.125, B = 0.2920·C^0.3271 (DeepSeek LLM
    2024, Formula 1; fitted on 1e17-2e19 FLOPs)."""
    C = _pos("compute_flops", compute_flops)
    return DEEPSEEK_LR[0] * C ** DEEPSEEK_LR[1], DEEPSEEK_BATCH[0] * C ** DEEPSEEK_BATCH[1]


def step_law(n_params: float, n_tokens: float) -> tuple[float, float]:
    """(peak LR, batch in tokens): eta = 1.797·N^-0.713·D^0.307, B = 0.581·D^0.571
    (Li et al. 2025 Step Law, bootstrap-mean coefficients)."""
    N = _pos("n_params", n_params)
    D = _pos("n_tokens", n_tokens)
    c, cn, cd = STEPLAW_LR
    return c * N**cn * D**cd, STEPLAW_BATCH[0] * D ** STEPLAW_BATCH[1]


@dataclass(frozen=True)
class LrBatchLaw:
    """eta = exp(lr_log_coef)·N^lr_n_exp·D^lr_d_exp; B_tokens = exp(bs_log_coef)·D^bs_d_exp."""

    lr_log_coef: float
    lr_n_exp: float
    lr_d_exp: float
    bs_log_coef: float
    bs_d_exp: float
    n_points: int
    n_groups: int

    def predict(self, n_params: float, n_tokens: float) -> tuple[float, float]:
        lr = math.exp(self.lr_log_coef) * n_params**self.lr_n_exp * n_tokens**self.lr_d_exp
        return lr, math.exp(self.bs_log_coef) * n_tokens**self.bs_d_exp


def fit_lr_batch_law(
    n_params: np.ndarray,
    n_tokens: np.ndarray,
    lr: np.ndarray,
    batch_tokens: np.ndarray,
    loss: np.ndarray,
    near_optimal: float = 0.0025,
) -> LrBatchLaw:
    """Fit the Step Law forms to a sweep: in each (N, D) group keep the runs whose loss is within
    `near_optimal` (relative) of the group's best (Step Law's 0.25 % filter; DeepSeek LLM Sec 3.1
    uses the same idea), then ordinary least squares in log space on the kept runs:
    log eta = i + cN·log N + cD·log D and log B = j + dD·log D."""
    arrays = [np.asarray(x, dtype=float) for x in (n_params, n_tokens, lr, batch_tokens, loss)]
    N, D, eta, B, L = arrays
    if len({a.shape for a in arrays}) != 1:
        raise SpecError("columns must have equal length", field="sweep")
    if np.any(~np.isfinite(np.c_[N, D, eta, B, L])) or np.any(np.c_[N, D, eta, B, L] <= 0):
        raise SpecError("params, tokens, lr, batch and loss must be positive", field="sweep")
    keys = np.unique(np.c_[N, D], axis=0)
    keep = np.zeros(N.shape, dtype=bool)
    for n, d in keys:
        g = (N == n) & (D == d)
        keep |= g & (L <= L[g].min() * (1.0 + near_optimal))
    if len(keys) < 3 or len(np.unique(D[keep])) < 2 or len(np.unique(N[keep])) < 2:
        raise SpecError(
            "need at least 3 (N, D) groups spanning 2 sizes and 2 token counts", field="sweep"
        )
    X = np.c_[np.ones(keep.sum()), np.log(N[keep]), np.log(D[keep])]
    lr_coef, *_ = np.linalg.lstsq(X, np.log(eta[keep]), rcond=None)
    bs_coef, *_ = np.linalg.lstsq(X[:, [0, 2]], np.log(B[keep]), rcond=None)
    return LrBatchLaw(
        float(lr_coef[0]),
        float(lr_coef[1]),
        float(lr_coef[2]),
        float(bs_coef[0]),
        float(bs_coef[1]),
        int(keep.sum()),
        int(len(keys)),
    )


@dataclass(frozen=True)
class ComputeLrBatchLaw:
    """eta = lr_coef·C^lr_exp; B_tokens = bs_coef·C^bs_exp (the DeepSeek LLM form)."""

    lr_coef: float
    lr_exp: float
    bs_coef: float
    bs_exp: float
    n_points: int

    def predict(self, compute_flops: float) -> tuple[float, float]:
        C = _pos("compute_flops", compute_flops)
        return self.lr_coef * C**self.lr_exp, self.bs_coef * C**self.bs_exp


def fit_compute_lr_batch_law(
    compute_flops: np.ndarray,
    lr: np.ndarray,
    batch_tokens: np.ndarray,
    loss: np.ndarray,
    near_optimal: float = 0.0025,
) -> ComputeLrBatchLaw:
    """DeepSeek LLM Sec. 3.1: per compute budget keep the near-optimal runs (loss within
    `near_optimal` of the budget's best), then power laws of LR and batch in C by log-log OLS."""
    C, eta, B, L = (np.asarray(x, dtype=float) for x in (compute_flops, lr, batch_tokens, loss))
    if len({a.shape for a in (C, eta, B, L)}) != 1:
        raise SpecError("columns must have equal length", field="sweep")
    if np.any(~np.isfinite(np.c_[C, eta, B, L])) or np.any(np.c_[C, eta, B, L] <= 0):
        raise SpecError("compute, lr, batch and loss must be positive", field="sweep")
    keep = np.zeros(C.shape, dtype=bool)
    budgets = np.unique(C)
    for c in budgets:
        g = C == c
        keep |= g & (L <= L[g].min() * (1.0 + near_optimal))
    if len(budgets) < 2:
        raise SpecError("need runs at >= 2 compute budgets", field="sweep")
    X = np.c_[np.ones(keep.sum()), np.log(C[keep])]
    lr_coef, *_ = np.linalg.lstsq(X, np.log(eta[keep]), rcond=None)
    bs_coef, *_ = np.linalg.lstsq(X, np.log(B[keep]), rcond=None)
    return ComputeLrBatchLaw(
        float(np.exp(lr_coef[0])),
        float(lr_coef[1]),
        float(np.exp(bs_coef[0])),
        float(bs_coef[1]),
        int(keep.sum()),
    )


def warmup_steps(
    total_steps: int,
    n_params: float | None = None,
    batch_tokens: float | None = None,
    *,
    fraction: float = 0.01,
    max_fraction: float = 0.1,
    min_steps: int = 1,
) -> int:
    """Warmup length. With N and the batch size: warm up for N tokens, i.e. ceil(N / B) steps
    (Porian et al. 2024 Sec. 3.3, "short warmup" equal to the model size in tokens). Otherwise
    `fraction` of the run. Clipped to [min_steps, max_fraction·total_steps]."""
    if total_steps < 1:
        raise SpecError(f"must be >= 1 (got {total_steps!r})", field="total_steps")
    if n_params is not None and batch_tokens is not None:
        steps = math.ceil(_pos("n_params", n_params) / _pos("batch_tokens", batch_tokens))
    else:
        steps = math.ceil(fraction * total_steps)
    return int(min(max(steps, min_steps), max(int(max_fraction * total_steps), min_steps)))


@dataclass(frozen=True)
class ScheduleChoice:
    kind: str  # "wsd" or "cosine"
    decay_fraction: float  # WSD: share of steps in the final decay; cosine: 1.0
    final_lr_ratio: float  # final LR / peak LR
    reason: str


def choose_schedule(
    continued_training: bool, decay_fraction: float = 0.2, final_lr_ratio: float = 0.1
) -> ScheduleChoice:
    """WSD when the run will be extended, annealed on another mix or branched (a stable checkpoint
    can be decayed at any point; Hägele et al. 2024: a 20 % cooldown matches cosine; MiniCPM,
    Hu et al. 2024), else cosine to `final_lr_ratio` of the peak (Hoffmann et al. 2022 Sec. 3).
    `schedule_law.compare_schedules` ranks the two by predicted final loss when a multi-power
    law is available."""
    if not 0 < decay_fraction <= 1:
        raise SpecError(f"must be in (0, 1] (got {decay_fraction!r})", field="decay_fraction")
    if continued_training:
        return ScheduleChoice(
            "wsd", decay_fraction, final_lr_ratio, "run is extended, annealed or branched"
        )
    return ScheduleChoice("cosine", 1.0, final_lr_ratio, "single fixed-length run")

"""What the scaling law asks for under a budget: N and D for a compute (its target and data
cap), the data-cap check, and the loss it predicts. Pure functions over the budget and law,
except `budget_law`, which reads the budget's fit file."""

from __future__ import annotations

import math

from scaleplan.specs.budget import BudgetSpec
from scaleplan.specs.errors import SpecError

from .laws import (
    DataConstrainedLaw,
    Law,
    constrained_optimal,
    inference_aware_optimal,
    load_law,
)

MIN_TOKENS_PER_PARAM = 1.0  # below one token per parameter the data cap leaves nothing to learn
FLOPS_PER_PARAM_TOKEN = 6.0  # the laws' compute convention, C = 6 N D (Kaplan 2020, Hoffmann 2022)


def budget_law(budget: BudgetSpec) -> Law:
    """The budget's law: its fit file (`scaleplan fit --out`), else its preset."""
    if budget.law.fit:
        return load_law(fit_path=budget.law.fit)
    return load_law(preset=budget.law.preset)


def law_allocation(
    budget: BudgetSpec, law: Law, compute: float, fixed_n: float | None = None
) -> tuple[float, float, float]:
    """(N, D, epochs) the law picks for `compute` (C = 6ND) under the budget's target and cap.
    `fixed_n` is a fixed-size target's model counted as the law counts N (default: the target's
    total size)."""
    cap = budget.data.max_unique_tokens
    max_d = cap * budget.data.max_epochs if cap else math.inf
    kind = budget.target.kind
    if kind == "fixed-size":
        n = float(fixed_n if fixed_n is not None else budget.target.params or 0.0)
        d = compute / (FLOPS_PER_PARAM_TOKEN * n)
    elif kind == "inference-aware":
        n, d = inference_aware_optimal(
            law, compute, float(budget.target.inference_tokens or 0.0), kind="compute"
        )
    else:
        n, d, _ = constrained_optimal(law, compute, max_unique_tokens=cap)
    if d > max_d:  # the cap binds: fewer tokens, and (at fixed compute) a larger model
        d = max_d
        if kind == "compute-optimal":
            n = compute / (FLOPS_PER_PARAM_TOKEN * d)
    epochs = d / cap if cap else 1.0
    return float(n), float(d), float(max(epochs, 1.0) if cap else 1.0)


def check_data_cap(budget: BudgetSpec, law: Law, compute: float, n: float, d: float) -> None:
    cap = budget.data.max_unique_tokens
    if cap and d / n < MIN_TOKENS_PER_PARAM and budget.target.kind != "fixed-size":
        n_free, d_free = law.optimal(compute)
        need = float(d_free) / budget.data.max_epochs
        raise SpecError(
            f"max_unique_tokens={cap:.3g} is too small for this budget: spending its compute "
            f"({compute:.3g} FLOPs) would take a {n:.3g}-parameter model on {d:.3g} tokens "
            f"({d / n:.2g} tokens per parameter; compute-optimal is about "
            f"{float(d_free) / float(n_free):.0f}). Raise data.max_unique_tokens to about "
            f"{need:.3g} (or data.max_epochs), or shrink the budget (gpus, hours, dollars)",
            field="data.max_unique_tokens",
        )


def predicted_loss(law: Law, n: float, tokens: float, unique: float | None) -> float:
    """The law's loss; a data-constrained law also sees the unique tokens (repetition)."""
    if isinstance(law, DataConstrainedLaw) and unique:
        return float(law.loss(n, tokens, unique_tokens=unique))
    return float(law.loss(n, tokens))


def max_tokens(budget: BudgetSpec) -> float:
    cap = budget.data.max_unique_tokens
    return cap * budget.data.max_epochs if cap else math.inf

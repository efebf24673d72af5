"""Choosing a law form by how well it extrapolates in model size, on the user's own ladder.

A law is fitted to predict larger models than the ones it saw, so its form is judged the same
way: for each of the `folds` largest model sizes s, every candidate form is fitted on the runs
smaller than s and predicts the runs at s. The form with the lowest mean |relative error| over
those held-out runs wins (ties: fewer parameters). No run larger than the ladder is used, so the
choice can be made before the target model is trained. Pure functions over arrays.

When the ladder also gives each run's non-embedding parameter count, every form is scored on both
counts of N (total, as Hoffmann et al. 2022 count it; non-embedding, as Kaplan et al. 2020 do), and
the pair that extrapolates best wins the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from scaleplan.specs.errors import SpecError

from .fitting import MIN_POINTS, fit_law

SELECTABLE: tuple[str, ...] = ("chinchilla", "kaplan", "kaplan-irreducible")
N_PARAMS = {"chinchilla": 5, "kaplan": 4, "kaplan-irreducible": 5}
SAME_SIZE = 1.01  # runs within 1 % of each other's parameter count are one model size


@dataclass(frozen=True)
class FoldScore:
    held_out_params: float  # model size predicted in this fold
    n_train: int
    n_test: int
    mean_abs_pct: float
    max_abs_pct: float


@dataclass(frozen=True)
class FormScore:
    form: str
    folds: tuple[FoldScore, ...]
    param_count: str = "total"  # what N counts: "total" or "non-embedding"

    @property
    def mean_abs_pct(self) -> float:
        """Mean |error| over every held-out run of every fold (%)."""
        n = sum(f.n_test for f in self.folds)
        return sum(f.mean_abs_pct * f.n_test for f in self.folds) / n

    @property
    def max_abs_pct(self) -> float:
        return max(f.max_abs_pct for f in self.folds)

    def to_dict(self) -> dict:
        return {
            "form": self.form,
            "param_count": self.param_count,
            "mean_abs_pct": self.mean_abs_pct,
            "max_abs_pct": self.max_abs_pct,
            "folds": [f.__dict__ for f in self.folds],
        }


def _sizes(N: np.ndarray) -> np.ndarray:
    """Distinct model sizes (runs within 1 % of each other are one size)."""
    out: list[float] = []
    for n in np.sort(N):
        if not out or n > out[-1] * SAME_SIZE:
            out.append(float(n))
    return np.array(out)


def select_form(
    N: np.ndarray,
    D: np.ndarray,
    L: np.ndarray,
    forms: Sequence[str] = SELECTABLE,
    folds: int = 2,
    delta: float = 1e-3,
    progress: Callable[[int, int], None] | None = None,
    N_non_embedding: np.ndarray | None = None,
) -> tuple[FormScore, list[FormScore]]:
    """The (form, parameter count) that extrapolates best to the `folds` largest sizes, and every
    candidate's scores. Model sizes (the folds) are told apart by the total count N."""
    N, D, L = (np.asarray(x, dtype=float) for x in (N, D, L))
    counts = {"total": N}
    if N_non_embedding is not None:
        counts["non-embedding"] = np.asarray(N_non_embedding, dtype=float)
    sizes = _sizes(N)
    if folds < 1:
        raise SpecError("must be at least 1", field="folds")
    if len(sizes) < folds + 2:
        raise SpecError(
            f"{len(sizes)} model sizes are too few to choose a form by extrapolation "
            f"(need >= {folds + 2}: {folds} held out in turn, >= 2 to fit)",
            field="law",
        )
    total, done = len(forms) * folds * len(counts), 0
    scores: list[FormScore] = []
    for count, n_fit in counts.items():
        for form in forms:
            fold_scores = []
            for s in sizes[-folds:]:
                train = N < s / SAME_SIZE
                test = (N >= s / SAME_SIZE) & (N <= s * SAME_SIZE)
                if train.sum() < MIN_POINTS.get(form, 6):
                    raise SpecError(
                        f"{int(train.sum())} runs below {s:.3g} parameters are too few to fit "
                        f"{form}",
                        field="runs",
                    )
                law = fit_law(form, n_fit[train], D[train], L[train], delta=delta).law
                err = np.abs(law.loss(n_fit[test], D[test]) / L[test] - 1.0) * 100.0
                fold_scores.append(
                    FoldScore(
                        s, int(train.sum()), int(test.sum()), float(err.mean()), float(err.max())
                    )
                )
                done += 1
                if progress:
                    progress(done, total)
            scores.append(FormScore(form, tuple(fold_scores), count))
    best = min(scores, key=lambda f: (round(f.mean_abs_pct, 6), N_PARAMS.get(f.form, 9)))
    return best, scores

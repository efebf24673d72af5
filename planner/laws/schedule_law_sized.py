"""The multi-power law across model sizes: L0, A and B as laws in the parameter count N, the
schedule shape (α, C, β, γ) shared, fitted jointly on curves of two or more sizes and evaluated
at another size (Luo et al. 2025 eq. 1-3 per size; L0(N) is Chinchilla's parameter term,
Hoffmann et al. 2022 eq. 2). Pure functions."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from scaleplan.specs.errors import SpecError

from ._blas import single_thread_blas
from .schedule_law import Curve, MPLParams, _design, _predict, least_squares


@dataclass(frozen=True)
class SizedMPL:
    """MPL with size-dependent L0, A and B (shapes α, C, β, γ shared across sizes):
    L0(N) = E + K·N^(−a_N) (Chinchilla's parameter term, Hoffmann et al. 2022 eq. 2, with a_N
    fixed, since two sizes cannot pin three constants), A(N) = A0·(N/1e8)^a_A, B(N) = B0·(N/1e8)^a_B."""

    E: float
    K: float
    a_N: float
    A0: float
    a_A: float
    B0: float
    a_B: float
    alpha: float
    C: float
    beta: float
    gamma: float

    def at(self, n_params: float) -> MPLParams:
        r = n_params / 1e8
        return MPLParams(
            self.E + self.K * n_params ** (-self.a_N),
            self.A0 * r**self.a_A,
            self.alpha,
            self.B0 * r**self.a_B,
            self.C,
            self.beta,
            self.gamma,
            source=f"sized MPL at N={n_params:.3g}",
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


SIZED_PARAM_NAMES = tuple(f.name for f in fields(SizedMPL))


def sized_from_dict(values: dict[str, Any]) -> SizedMPL:
    """A SizedMPL from its `to_dict` (a FIT.json's law.params); one SpecError naming a missing
    or non-finite value."""
    out = {}
    for key in SIZED_PARAM_NAMES:
        try:
            out[key] = float(values[key])
        except (KeyError, TypeError, ValueError):
            raise SpecError(
                f"the size-aware schedule fit has no number for {key!r}", field=key
            ) from None
        if not np.isfinite(out[key]):
            raise SpecError(f"the size-aware schedule fit's {key} is not finite", field=key)
    return SizedMPL(**out)


def fit_mpl_sizes(
    curves: list[Curve], a_N: float = 0.34, max_bins: int = 128, E: float | None = None
) -> tuple[SizedMPL, float]:
    """Fit the size-aware MPL jointly on curves of >= 2 model sizes. Two sizes cannot pin all of
    L0(N) = E + K·N^(−a_N), so one constant is a prior: a_N (default Hoffmann et al. 2022's
    α = 0.34), or, when `E` is given, the irreducible loss E (then a_N is fitted)."""
    sizes = sorted({c.n_params for c in curves if c.n_params})
    if len(sizes) < 2 or any(c.n_params is None for c in curves):
        raise SpecError(
            "the size-aware fit needs n_params on every curve and >= 2 sizes", field="curves"
        )
    designs = [
        (_design(c.lr_per_step, c.steps, max_bins), np.asarray(c.loss, float), float(c.n_params))
        for c in curves
    ]

    def unpack(x: np.ndarray) -> SizedMPL:
        if E is None:
            return SizedMPL(*(float(v) for v in x[:2]), a_N, *(float(v) for v in x[2:]))
        return SizedMPL(E, *(float(v) for v in x))

    def resid(x: np.ndarray) -> np.ndarray:
        law = unpack(x)
        out = []
        for d, y, n in designs:
            p = law.at(n)
            out.append(_predict(p.theta, d) - y)
        return np.concatenate(out)

    # E, K (a_N) A0, a_A, B0, a_B, alpha, C, beta, gamma
    x0 = np.array([2.0, 300.0, 0.6, 0.1, 440.0, 0.1, 0.45, 2.1, 0.6, 0.65])
    lo = np.array([0.0, 0.0, 1e-6, -2.0, 0.0, -2.0, 1e-3, 1e-6, 1e-3, 1e-3])
    hi = np.array([10.0, 1e6, 1e3, 2.0, 1e5, 2.0, 3.0, 1e3, 3.0, 3.0])
    if E is not None:  # K, a_N, then the rest
        x0 = np.concatenate([[300.0, a_N], x0[2:]])
        lo = np.concatenate([[0.0, 0.01], lo[2:]])
        hi = np.concatenate([[1e6, 1.5], hi[2:]])
    with single_thread_blas():
        res = least_squares(resid, x0, bounds=(lo, hi), x_scale="jac", max_nfev=3000)
    return unpack(res.x), float(np.sqrt(np.mean(res.fun**2)))

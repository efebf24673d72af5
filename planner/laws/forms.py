"""Scaling-law forms L(N, D): Chinchilla, Kaplan, data-constrained (Muennighoff), and a
frontier-only law (Approaches 1/2). Pure, numpy-vectorized; no I/O.

N is the parameter count, D the number of training tokens, C = 6·N·D the training FLOPs
(Kaplan et al. 2020 eq. 2.1 / Hoffmann et al. 2022 Sec. 3), losses in nats per token.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from scaleplan.specs.errors import NotImplementedFeature, SpecError

ArrayLike = float | np.ndarray

FLOPS_PER_PARAM_TOKEN = 6.0  # C = 6ND (Kaplan et al. 2020 eq. 2.1)


def _positive(name: str, value: ArrayLike) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if np.any(~np.isfinite(arr)) or np.any(arr <= 0):
        raise SpecError(f"must be positive and finite (got {value!r})", field=name)
    return arr


PARAM_COUNTS = ("total", "non-embedding")


class Law(ABC):
    """A fitted or published scaling law. `param_count` says what its N counts: "total"
    parameters (Hoffmann et al. 2022; for MoE the active ones) or "non-embedding" ones (Kaplan et
    al. 2020 Sec. 1.2: no vocabulary or position embeddings, and no untied LM head); C = 6·N·D
    then counts the same parameters."""

    name: ClassVar[str]
    source: str
    param_count: str

    @property
    @abstractmethod
    def params(self) -> dict[str, float]: ...

    @abstractmethod
    def loss(self, N: ArrayLike, D: ArrayLike) -> np.ndarray:
        """Predicted loss (nats) for N parameters trained on D tokens, elementwise."""

    def optimal(self, C: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Compute-optimal (N_opt, D_opt) for C training FLOPs (C = 6ND). Default: numerical
        minimisation of loss(N, C/(6N)) along the iso-FLOP line."""
        from .frontier import numerical_optimal

        return numerical_optimal(self, C)

    def tokens_for_loss(self, N: float, target_loss: float) -> float:
        """Tokens D with loss(N, D) = target_loss (inf where N alone cannot reach it).
        Default: bisection in log D (loss is decreasing in D)."""
        lo, hi = np.log(1e3), np.log(1e20)
        if float(self.loss(N, np.exp(hi))) > target_loss:
            return float("inf")
        if float(self.loss(N, np.exp(lo))) <= target_loss:
            return float(np.exp(lo))
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if float(self.loss(N, np.exp(mid))) > target_loss:
                lo = mid
            else:
                hi = mid
            if hi - lo < 1e-12:
                break
        return float(np.exp(hi))

    def to_dict(self) -> dict[str, Any]:
        out = {"form": self.name, "params": dict(self.params), "source": self.source}
        if self.param_count != "total":
            out["param_count"] = self.param_count
        return out


@dataclass(frozen=True)
class ChinchillaLaw(Law):
    """L = E + A/N^α + B/D^β (Hoffmann et al. 2022 eq. 2)."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str = "user"
    param_count: str = "total"
    name: ClassVar[str] = "chinchilla"

    @property
    def params(self) -> dict[str, float]:
        return {"E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta}

    def loss(self, N: ArrayLike, D: ArrayLike) -> np.ndarray:
        N = np.asarray(N, dtype=float)
        D = np.asarray(D, dtype=float)
        return self.E + self.A / N**self.alpha + self.B / D**self.beta

    def frontier_constants(self) -> tuple[float, float, float]:
        """(G, a, b) of N_opt = G(C/6)^a, D_opt = G^-1 (C/6)^b (Hoffmann et al. 2022 eq. 4)."""
        G = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))
        a = self.beta / (self.alpha + self.beta)
        b = self.alpha / (self.alpha + self.beta)
        return G, a, b

    def optimal(self, C: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        C = np.asarray(C, dtype=float)
        G, a, b = self.frontier_constants()
        return G * (C / FLOPS_PER_PARAM_TOKEN) ** a, (C / FLOPS_PER_PARAM_TOKEN) ** b / G

    def optimal_params_for_tokens(self, D: ArrayLike) -> np.ndarray:
        """N that is compute-optimal for D tokens: invert D_opt(C) (Hoffmann eq. 4)."""
        G, a, b = self.frontier_constants()
        c6 = (np.asarray(D, dtype=float) * G) ** (1.0 / b)
        return G * c6**a

    def tokens_for_loss(self, N: float, target_loss: float) -> float:
        slack = target_loss - self.E - self.A / N**self.alpha
        return float((self.B / slack) ** (1.0 / self.beta)) if slack > 0 else float("inf")


@dataclass(frozen=True)
class KaplanLaw(Law):
    """L(N, D) = E + [(N_c/N)^(α_N/α_D) + D_c/D]^α_D: Kaplan et al. 2020 eq. 1.5, plus an
    irreducible loss E as in Henighan et al. 2020 eq. 1.1 (E = 0 is Kaplan's own form)."""

    N_c: float
    D_c: float
    alpha_N: float
    alpha_D: float
    E: float = 0.0
    source: str = "user"
    param_count: str = "total"
    name: ClassVar[str] = "kaplan"

    @property
    def params(self) -> dict[str, float]:
        out = {"N_c": self.N_c, "D_c": self.D_c, "alpha_N": self.alpha_N, "alpha_D": self.alpha_D}
        return {**out, "E": self.E} if self.E else out

    def loss(self, N: ArrayLike, D: ArrayLike) -> np.ndarray:
        N = np.asarray(N, dtype=float)
        D = np.asarray(D, dtype=float)
        reducible = ((self.N_c / N) ** (self.alpha_N / self.alpha_D) + self.D_c / D) ** self.alpha_D
        return self.E + reducible

    def optimal(self, C: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Minimum of eq. 1.5 along 6ND = C (E is a constant, so it does not move it): d/dN = 0
        gives N^(p+1) = p·N_c^p·C/(6·D_c), p = α_N/α_D. (Kaplan's own N ∝ C^0.73 of Table 6
        comes from the early-stopped L(N, S) analysis, not from eq. 1.5.)"""
        C = np.asarray(C, dtype=float)
        p = self.alpha_N / self.alpha_D
        N = (p * self.N_c**p * C / (FLOPS_PER_PARAM_TOKEN * self.D_c)) ** (1.0 / (p + 1.0))
        return N, C / (FLOPS_PER_PARAM_TOKEN * N)

    def tokens_for_loss(self, N: float, target_loss: float) -> float:
        if target_loss <= self.E:
            return float("inf")
        slack = (target_loss - self.E) ** (1.0 / self.alpha_D) - (self.N_c / N) ** (
            self.alpha_N / self.alpha_D
        )
        return float(self.D_c / slack) if slack > 0 else float("inf")


def effective_repeats(unique: ArrayLike, total: ArrayLike, r_star: float) -> np.ndarray:
    """Effective count under repetition: U + U·R*·(1 − exp(−R/R*)), R = total/U − 1
    (Muennighoff et al. 2023 eq. 5)."""
    unique = np.asarray(unique, dtype=float)
    total = np.asarray(total, dtype=float)
    u = np.minimum(unique, total)
    repeats = total / u - 1.0
    return u + u * r_star * (1.0 - np.exp(-repeats / r_star))


@dataclass(frozen=True)
class DataConstrainedLaw(Law):
    """Muennighoff et al. 2023 eq. 6: the Chinchilla form evaluated at effective parameters N'
    and effective data D'. `unique_tokens` is the unique-data budget U_D (None = unlimited);
    U_N = min(N, N_opt(U_D)) is the compute-optimal size for U_D tokens."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    R_D_star: float
    R_N_star: float
    unique_tokens: float | None = None
    source: str = "user"
    param_count: str = "total"
    name: ClassVar[str] = "data-constrained"

    @property
    def params(self) -> dict[str, float]:
        out = {"E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta}
        out |= {"R_D_star": self.R_D_star, "R_N_star": self.R_N_star}
        return out

    @property
    def base(self) -> ChinchillaLaw:
        return ChinchillaLaw(
            self.E,
            self.A,
            self.B,
            self.alpha,
            self.beta,
            source=self.source,
            param_count=self.param_count,
        )

    def with_unique_tokens(self, unique_tokens: float | None) -> DataConstrainedLaw:
        return DataConstrainedLaw(
            **self.params,
            unique_tokens=unique_tokens,
            source=self.source,  # type: ignore[arg-type]
            param_count=self.param_count,  # type: ignore[arg-type]
        )

    def loss(self, N: ArrayLike, D: ArrayLike, unique_tokens: float | None = None) -> np.ndarray:
        N = np.asarray(N, dtype=float)
        D = np.asarray(D, dtype=float)
        U = unique_tokens if unique_tokens is not None else self.unique_tokens
        if U is None:
            return self.base.loss(N, D)
        u_d = np.minimum(U, D)
        d_eff = effective_repeats(u_d, D, self.R_D_star)
        u_n = np.minimum(N, self.base.optimal_params_for_tokens(u_d))
        n_eff = effective_repeats(u_n, N, self.R_N_star)
        return self.E + self.A / n_eff**self.alpha + self.B / d_eff**self.beta

    def optimal(self, C: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        if self.unique_tokens is None:
            return self.base.optimal(C)
        return super().optimal(C)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.unique_tokens is not None:
            out["unique_tokens"] = self.unique_tokens
        return out


@dataclass(frozen=True)
class FrontierLaw(Law):
    """A compute-optimal frontier only: N_opt = n_coef·C^a, D_opt = d_coef·C^b (Hoffmann et al.
    2022 Approaches 1 and 2). It has no loss surface unless an L_opt(C) = E + k·C^-gamma fit is
    attached (loss on the frontier only)."""

    n_coef: float
    a: float
    d_coef: float
    b: float
    loss_params: dict[str, float] = field(default_factory=dict)
    source: str = "user"
    param_count: str = "total"
    name: ClassVar[str] = "frontier"

    @property
    def params(self) -> dict[str, float]:
        return {"n_coef": self.n_coef, "a": self.a, "d_coef": self.d_coef, "b": self.b}

    def optimal(self, C: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        C = np.asarray(C, dtype=float)
        return self.n_coef * C**self.a, self.d_coef * C**self.b

    def loss(self, N: ArrayLike, D: ArrayLike) -> np.ndarray:
        raise NotImplementedFeature(
            "an Approach 1/2 fit gives the compute-optimal frontier, not a loss surface L(N, D); "
            "fit with --method epoch for one",
            field="law.fit",
        )

    def frontier_loss(self, C: ArrayLike) -> np.ndarray:
        """Loss of the compute-optimal model at C (when the fit recorded one)."""
        if not self.loss_params:
            raise NotImplementedFeature("this frontier fit has no loss model", field="law.fit")
        p = self.loss_params
        return p["E"] + p["k"] * np.asarray(C, dtype=float) ** (-p["gamma"])

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.loss_params:
            out["loss_params"] = dict(self.loss_params)
        return out


FORMS: dict[str, type[Law]] = {
    "chinchilla": ChinchillaLaw,
    "kaplan": KaplanLaw,
    "data-constrained": DataConstrainedLaw,
    "frontier": FrontierLaw,
}


def law_from_dict(data: dict[str, Any], source: str | None = None) -> Law:
    """Rebuild a law from `Law.to_dict()` output. Every parameter must be a finite number > 0,
    except an irreducible loss `E`, which may be 0."""
    if not isinstance(data, dict):
        raise SpecError("must be an object with form and params", field="law", source=source)
    form = data.get("form")
    if not isinstance(form, str) or form not in FORMS:
        raise SpecError(
            f"unknown law form {form!r}; expected one of {sorted(FORMS)}", "law.form", source
        )
    params = data.get("params")
    if not isinstance(params, dict):
        raise SpecError("missing params object", field="law.params", source=source)
    values: dict[str, float] = {}
    for k, v in params.items():
        try:
            if isinstance(v, bool):
                raise TypeError
            values[str(k)] = float(v)
        except (TypeError, ValueError):
            raise SpecError(
                f"must be a number (got {v!r})", field=f"law.params.{k}", source=source
            ) from None
    for k, v in values.items():
        if not np.isfinite(v):
            raise SpecError(f"must be finite (got {v!r})", field=f"law.params.{k}", source=source)
        if k == "E" and v < 0:
            raise SpecError(
                f"the irreducible loss must be >= 0 (got {v!r})",
                field=f"law.params.{k}",
                source=source,
            )
        if k != "E" and v <= 0:
            raise SpecError(f"must be positive (got {v!r})", field=f"law.params.{k}", source=source)
    extra: dict[str, Any] = {"source": str(data.get("source", source or "fit"))}
    count = data.get("param_count", "total")
    if count not in PARAM_COUNTS:
        raise SpecError(
            f"param_count {count!r} is not one of {list(PARAM_COUNTS)}",
            field="law.param_count",
            source=source,
        )
    extra["param_count"] = count
    if form == "data-constrained" and data.get("unique_tokens") is not None:
        u = data["unique_tokens"]
        if isinstance(u, bool) or not isinstance(u, (int, float)) or not (np.isfinite(u) and u > 0):
            raise SpecError(
                f"must be a positive number of tokens (got {u!r})",
                field="law.unique_tokens",
                source=source,
            )
        extra["unique_tokens"] = float(u)
    if form == "frontier" and data.get("loss_params"):
        lp = data["loss_params"]
        if isinstance(lp, dict) and all(isinstance(v, (int, float)) for v in lp.values()):
            extra["loss_params"] = {k: float(v) for k, v in lp.items()}
    try:
        law = FORMS[form](**values, **extra)  # type: ignore[arg-type]
    except TypeError as exc:
        raise SpecError(
            f"wrong parameters for {form}: {exc}", field="law.params", source=source
        ) from None
    return law

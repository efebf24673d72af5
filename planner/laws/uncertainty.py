"""Bootstrap confidence intervals, leave-one-out residuals and the extrapolation warning for
Approach 3 fits. Pure: progress goes through an optional callback (the CLI draws the bar)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .fitting import FitResult, fit_law

EXTRAPOLATION_LIMIT = 10.0  # warn beyond 10x the largest fitted compute


def bootstrap(
    fit: FitResult,
    form: str,
    N: np.ndarray,
    D: np.ndarray,
    L: np.ndarray,
    *,
    n_samples: int = 100,
    seed: int = 0,
    compute: float | None = None,
    unique_tokens: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Refit on `n_samples` resamples (points drawn with replacement), each started from the
    full fit (Efron 1979 percentile bootstrap). Returns the parameter samples, their 2.5/50/97.5
    percentiles, and those of N_opt, D_opt at `compute` when given."""
    N, D, L = (np.asarray(v, float) for v in (N, D, L))
    rng = np.random.default_rng(seed)
    names = list(fit.law.params)
    samples, n_opt, d_opt = [], [], []
    for i in range(n_samples):
        idx = rng.integers(0, len(N), len(N))
        u = None if unique_tokens is None else np.asarray(unique_tokens, float)[idx]
        start = fit.theta if form != "data-constrained" else None
        res = fit_law(form, N[idx], D[idx], L[idx], unique_tokens=u, delta=fit.delta, start=start)
        samples.append([res.law.params[k] for k in names])
        if compute is not None:
            n, d = res.law.optimal(compute)
            n_opt.append(float(n))
            d_opt.append(float(d))
        if progress is not None:
            progress(i + 1, n_samples)
    arr = np.array(samples)
    ci = {k: np.percentile(arr[:, j], [2.5, 50, 97.5]).tolist() for j, k in enumerate(names)}
    out: dict = {
        "n_samples": n_samples,
        "seed": seed,
        "names": names,
        "samples": arr.tolist(),
        "ci": ci,
    }
    if compute is not None:
        out["compute"] = compute
        out["ci"]["N_opt"] = np.percentile(n_opt, [2.5, 50, 97.5]).tolist()
        out["ci"]["D_opt"] = np.percentile(d_opt, [2.5, 50, 97.5]).tolist()
    return out


def loo_residuals(
    fit: FitResult,
    form: str,
    N: np.ndarray,
    D: np.ndarray,
    L: np.ndarray,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Leave-one-out: refit without point i (warm-started from the full fit) and return
    log L_i − log L̂_(−i)(N_i, D_i) for every i."""
    N, D, L = (np.asarray(v, float) for v in (N, D, L))
    out = np.empty(len(N))
    for i in range(len(N)):
        m = np.arange(len(N)) != i
        res = fit_law(form, N[m], D[m], L[m], delta=fit.delta, start=fit.theta)
        out[i] = np.log(L[i]) - np.log(float(res.law.loss(N[i], D[i])))
        if progress is not None:
            progress(i + 1, len(N))
    return out


def extrapolation_warning(max_fitted_flops: float, compute: float) -> str | None:
    """A warning when `compute` is more than 10x the largest compute the law was fitted on."""
    ratio = compute / max_fitted_flops
    if ratio > EXTRAPOLATION_LIMIT:
        return (
            f"extrapolating {ratio:.3g}x beyond the largest fitted compute ({max_fitted_flops:.3g} FLOPs); "
            "scaling-law predictions this far out are uncertain"
        )
    return None


def frontier_band(fit_doc: dict, compute: float) -> dict:
    """2.5/50/97.5 percentiles of N_opt and D_opt at `compute` across the bootstrap laws stored
    in a FIT.json document ({} when it holds no bootstrap samples). A malformed bootstrap
    section is a SpecError (field `bootstrap`); the caller adds the file name."""
    from scaleplan.specs.errors import SpecError

    from .forms import law_from_dict

    boot = fit_doc.get("bootstrap")
    if not boot:
        return {}
    if not isinstance(boot, dict):
        raise SpecError("must be an object with names and samples", field="bootstrap")
    samples = boot.get("samples")
    if not samples:
        return {}
    names = boot.get("names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise SpecError("needs 'names': a list of parameter names", field="bootstrap.names")
    if not isinstance(samples, list):
        raise SpecError("must be a list of parameter rows", field="bootstrap.samples")
    form = fit_doc["law"]["form"]
    ns, ds = [], []
    for i, row in enumerate(samples):
        if not isinstance(row, list) or len(row) != len(names):
            raise SpecError(
                f"row {i} must be a list of {len(names)} numbers (one per name)",
                field="bootstrap.samples",
            )
        try:
            sample = law_from_dict({"form": form, "params": dict(zip(names, row, strict=True))})
        except SpecError as exc:
            raise SpecError(
                f"row {i}: {(exc.field or '').removeprefix('law.')} {exc.reason}".strip(),
                field="bootstrap.samples",
            ) from None
        n, d = sample.optimal(compute)
        ns.append(float(n))
        ds.append(float(d))
    return {
        "N": np.percentile(ns, [2.5, 50, 97.5]).tolist(),
        "D": np.percentile(ds, [2.5, 50, 97.5]).tolist(),
    }

"""Approach 3 fitting (Epoch's protocol), Approaches 1/2, bootstrap, LOO and extrapolation."""

from __future__ import annotations

import time

import numpy as np
import pytest

from scaleplan.planner.laws import ChinchillaLaw, KaplanLaw
from scaleplan.planner.laws.fitting import fit_chinchilla, fit_kaplan, fit_law, huber
from scaleplan.planner.laws.isoflop import (
    approach1,
    approach2,
    power_law_fit,
    power_law_fit_minimax,
)
from scaleplan.planner.laws.runs_csv import drop_highest, parse_column_map, read_runs
from scaleplan.planner.laws.uncertainty import bootstrap, extrapolation_warning, loo_residuals
from scaleplan.specs.errors import SpecError

TRUE = ChinchillaLaw(E=1.8, A=480.0, B=2100.0, alpha=0.35, beta=0.37)


def _synthetic(law, n: int = 40, noise: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(5e7), np.log(1e10), n))
    D = np.exp(rng.uniform(np.log(1e9), np.log(5e11), n))
    L = law.loss(N, D) * np.exp(noise * rng.standard_normal(n))
    return N, D, L


def test_epoch_protocol_reproduced(shared_data) -> None:
    """Besiroglu et al. 2024 notebook: A=477.84, B=2143.86, E=1.81724, α=0.34731, β=0.36718."""
    runs = read_runs(
        shared_data / "chinchilla_epoch.csv",
        parse_column_map("params=model_size,tokens=training_tokens,flops=training_flop"),
    )
    runs = drop_highest(runs, 5)
    assert len(runs.N) == 240
    t0 = time.process_time()  # CPU time: the shared test machine's wall clock is noisy
    fit = fit_law("chinchilla", runs.N, runs.D, runs.loss, delta=1e-3)
    assert time.process_time() - t0 < 15
    p = fit.law.params
    assert p["alpha"] == pytest.approx(0.34731, abs=1e-3)
    assert p["beta"] == pytest.approx(0.36718, abs=1e-3)
    assert p["E"] == pytest.approx(1.81724, abs=1e-3)
    assert p["A"] == pytest.approx(477.84, rel=0.01)
    assert p["B"] == pytest.approx(2143.86, rel=0.01)
    assert fit.n_starts == 4500


def test_chinchilla_fit_recovers_exact_law() -> None:
    N, D, L = _synthetic(TRUE)
    fit = fit_chinchilla(N, D, L)
    for k, v in TRUE.params.items():
        assert fit.law.params[k] == pytest.approx(v, rel=1e-4)
    assert fit.objective < 1e-12


def test_kaplan_fit_recovers_exact_law() -> None:
    law = KaplanLaw(N_c=6.4e13, D_c=1.8e13, alpha_N=0.076, alpha_D=0.103)
    N, D, L = _synthetic(law, n=30)
    fit = fit_kaplan(N, D, L)
    assert fit.law.params["alpha_N"] == pytest.approx(0.076, rel=1e-3)
    assert fit.law.params["alpha_D"] == pytest.approx(0.103, rel=1e-3)


def test_huber_delta_changes_robustness() -> None:
    N, D, L = _synthetic(TRUE, noise=0.002, seed=1)
    L = L.copy()
    L[:3] *= 1.3  # outliers
    robust = fit_chinchilla(N, D, L, delta=1e-3).law
    squared = fit_chinchilla(N, D, L, delta=10.0).law  # Huber with a huge δ is least squares
    assert abs(robust.alpha - TRUE.alpha) < abs(squared.alpha - TRUE.alpha)
    r = np.array([-1.0, 0.0005, 2.0])
    np.testing.assert_allclose(
        huber(r, 1e-3), [1e-3 * (1 - 5e-4), 0.5 * 0.0005**2, 1e-3 * (2 - 5e-4)]
    )


def test_too_few_points_and_bad_values() -> None:
    N, D, L = _synthetic(TRUE, n=5)
    with pytest.raises(SpecError, match="too few"):
        fit_law("chinchilla", N, D, L)
    N, D, L = _synthetic(TRUE, n=10)
    L[0] = -1
    with pytest.raises(SpecError):
        fit_law("chinchilla", N, D, L)
    with pytest.raises(SpecError):
        fit_law("nope", N, D, np.abs(L))


def test_bootstrap_ci_covers_truth_and_reports_progress() -> None:
    N, D, L = _synthetic(TRUE, n=60, noise=0.003, seed=2)
    fit = fit_chinchilla(N, D, L)
    calls = []
    boot = bootstrap(
        fit,
        "chinchilla",
        N,
        D,
        L,
        n_samples=20,
        compute=1e22,
        progress=lambda i, n: calls.append((i, n)),
    )
    assert calls[-1] == (20, 20) and len(calls) == 20
    lo, mid, hi = boot["ci"]["alpha"]
    assert lo < mid < hi
    assert np.array(boot["samples"]).shape == (20, 5)
    n_lo, _, n_hi = boot["ci"]["N_opt"]
    assert n_lo < float(fit.law.optimal(1e22)[0]) < n_hi


def test_loo_residuals_flag_an_outlier() -> None:
    N, D, L = _synthetic(TRUE, n=25, noise=0.001, seed=3)
    L = L.copy()
    L[7] *= 1.1
    fit = fit_chinchilla(N, D, L)
    r = loo_residuals(fit, "chinchilla", N, D, L)
    assert int(np.argmax(np.abs(r))) == 7
    assert abs(r[7]) > 0.05


def test_extrapolation_warning() -> None:
    assert extrapolation_warning(1e21, 5e21) is None
    assert "beyond" in extrapolation_warning(1e21, 2e22)


def test_approach2_recovers_frontier_exponent() -> None:
    law = ChinchillaLaw(E=1.7, A=400.0, B=400.0, alpha=0.34, beta=0.34)  # a = 0.5
    rows = []
    for C in np.geomspace(1e18, 1e21, 7):
        n_opt = float(law.optimal(C)[0])
        for f in np.geomspace(1 / 8, 8, 13):
            rows.append((n_opt * f, C / (6 * n_opt * f), C))
    N, D, C = np.array(rows).T
    fit = approach2(N, D, law.loss(N, D), C, window=6)
    assert fit.law.params["a"] == pytest.approx(0.5, abs=0.01)
    assert fit.law.params["a"] + fit.law.params["b"] == pytest.approx(1.0, abs=1e-9)


def test_approach1_envelope_of_training_curves() -> None:
    law = ChinchillaLaw(E=1.7, A=400.0, B=400.0, alpha=0.34, beta=0.34)
    N, D, run = [], [], []
    for i, n in enumerate(np.geomspace(1e7, 1e10, 16)):
        for d in np.geomspace(1e6, 1e14, 120):
            N.append(n)
            D.append(d)
            run.append(f"r{i}")
    N, D = np.array(N), np.array(D)
    fit = approach1(N, D, law.loss(N, D), np.array(run))
    assert fit.law.params["a"] == pytest.approx(0.5, abs=0.05)


def test_power_law_fit_weighted() -> None:
    x = np.geomspace(1e16, 1e20, 9)
    y = 3.0 * x**0.5
    y[0] *= 2  # heavily down-weighted point
    w = np.ones(9)
    w[0] = 1e-12
    coef, exp, _ = power_law_fit(x, y, w)
    assert exp == pytest.approx(0.5, abs=1e-6)
    assert coef == pytest.approx(3.0, rel=1e-5)


def test_power_law_fit_minimax_stays_within_each_points_rounding() -> None:
    """A rounded table of an exact power law: the minimax fit puts every point within its
    half-width (worst <= 1), where least squares, pulled by the coarse points, need not."""
    x = np.geomspace(1e19, 1e28, 9)
    exact = 1.7 * x**0.502
    digits = np.array([1, 1, 1, 1, 1, 1, 1, 1, 3])  # the last point printed more finely
    scale = 10.0 ** (np.floor(np.log10(exact)) - digits)
    y = np.round(exact / scale) * scale
    hw = 0.5 * scale / y
    coef, exp, worst = power_law_fit_minimax(x, y, hw)
    assert worst <= 1.0
    assert np.all(np.abs(np.log(coef * x**exp / y)) <= hw * (1 + 1e-9))
    assert exp == pytest.approx(0.502, abs=2e-3)
    with pytest.raises(SpecError):
        power_law_fit_minimax(x[:1], y[:1], hw[:1])


def test_data_constrained_two_stage_fit_recovers_muennighoff_law() -> None:
    from scaleplan.planner.laws import load_law

    law = load_law("data-constrained")
    rng = np.random.default_rng(4)
    n = 40
    N = np.exp(rng.uniform(np.log(1e7), np.log(3e9), n))
    D = np.exp(rng.uniform(np.log(1e8), np.log(3e11), n))
    U = np.where(np.arange(n) % 2 == 0, D * 2, D / rng.uniform(2, 40, n))  # half repeat 2-40 epochs
    L = law.loss(N, D, unique_tokens=U)
    fit = fit_law("data-constrained", N, D, L, unique_tokens=U)
    assert fit.law.params["R_D_star"] == pytest.approx(15.387756, rel=0.02)
    assert fit.law.params["alpha"] == pytest.approx(0.3526596, rel=0.01)
    with pytest.raises(SpecError, match="single-epoch"):
        fit_law("data-constrained", N, D, L, unique_tokens=D / 2)

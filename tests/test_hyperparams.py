"""LR and batch-size laws, their fit from a sweep, warmup and the schedule choice."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from scaleplan.planner.laws.hyperparams import (
    choose_schedule,
    deepseek_lr_batch,
    fit_compute_lr_batch_law,
    fit_lr_batch_law,
    step_law,
    warmup_steps,
)
from scaleplan.specs.errors import SpecError


def test_deepseek_formula() -> None:
    lr, batch = deepseek_lr_batch(1e20)
    assert lr == pytest.approx(0.3118 * 1e20**-0.125)
    assert batch == pytest.approx(0.2920 * 1e20**0.3271)
    # More compute: a lower LR and a larger batch.
    lr2, batch2 = deepseek_lr_batch(1e22)
    assert lr2 < lr and batch2 > batch
    with pytest.raises(SpecError):
        deepseek_lr_batch(-1.0)


def test_step_law_formula() -> None:
    lr, batch = step_law(1e9, 1e11)
    assert lr == pytest.approx(1.7973 * 1e9**-0.71292 * 1e11**0.30749)
    assert batch == pytest.approx(0.58069 * 1e11**0.57094)


def _sweep(path):
    rows = list(csv.DictReader(open(path)))
    col = lambda k: np.array([float(r[k]) for r in rows])  # noqa: E731
    return col("N"), col("D"), col("lr"), col("bs") * 2048, col("smooth loss")


def test_fit_reproduces_plain_ols_on_steplaw_sweep(shared_data) -> None:
    """data/README: a plain OLS with the 0.25 % filter gives lr = 77.7·N^-0.766·D^0.197 and
    B = 0.209·D^0.6125 (not the published law, which used more runs than were released)."""
    law = fit_lr_batch_law(*_sweep(shared_data / "steplaw_dense_lr_bs_loss.csv"))
    assert np.exp(law.lr_log_coef) == pytest.approx(77.7, rel=2e-3)
    assert law.lr_n_exp == pytest.approx(-0.766, abs=1e-3)
    assert law.lr_d_exp == pytest.approx(0.197, abs=1e-3)
    assert np.exp(law.bs_log_coef) == pytest.approx(0.209, rel=3e-3)
    assert law.bs_d_exp == pytest.approx(0.6125, abs=1e-4)


def test_fit_recovers_synthetic_law() -> None:
    rows = []
    for n in (1e8, 3e8, 1e9):
        for d in (1e10, 4e10, 1.6e11):
            lr_star, b_star = 2.0 * n**-0.7 * d**0.3, 0.5 * d**0.57
            for lr in lr_star * np.exp(np.linspace(-1, 1, 17)):
                for b in b_star * np.exp(np.linspace(-1, 1, 5)):
                    loss = 2.0 + 0.05 * np.log(lr / lr_star) ** 2 + 0.02 * np.log(b / b_star) ** 2
                    rows.append((n, d, lr, b, loss))
    law = fit_lr_batch_law(*np.array(rows).T, near_optimal=0.001)
    assert law.lr_n_exp == pytest.approx(-0.7, abs=1e-6)
    assert law.lr_d_exp == pytest.approx(0.3, abs=1e-6)
    assert law.bs_d_exp == pytest.approx(0.57, abs=1e-6)


def test_compute_form_fit_recovers_deepseek_law() -> None:
    rows = []
    for C in (1e17, 1e18, 1e19, 1e20):
        lr_star, b_star = deepseek_lr_batch(C)
        for lr in lr_star * np.exp(np.linspace(-1, 1, 17)):
            for b in b_star * np.exp(np.linspace(-1, 1, 5)):
                rows.append(
                    (
                        C,
                        lr,
                        b,
                        2.0 + 0.05 * np.log(lr / lr_star) ** 2 + 0.02 * np.log(b / b_star) ** 2,
                    )
                )
    law = fit_compute_lr_batch_law(*np.array(rows).T, near_optimal=0.001)
    assert law.lr_exp == pytest.approx(-0.125, abs=1e-9)
    assert law.bs_exp == pytest.approx(0.3271, abs=1e-9)
    assert law.predict(1e21)[0] == pytest.approx(deepseek_lr_batch(1e21)[0], rel=1e-9)


def test_fit_rejects_degenerate_sweep() -> None:
    with pytest.raises(SpecError):
        fit_lr_batch_law(np.ones(3), np.ones(3), np.ones(3), np.ones(3), np.ones(3))


def test_warmup_rule() -> None:
    # Porian et al.: warm up for N tokens.
    assert warmup_steps(100_000, n_params=1e9, batch_tokens=4e6) == 250
    assert warmup_steps(1000, n_params=1e10, batch_tokens=1e6) == 100  # capped at 10 %
    assert warmup_steps(50_000) == 500
    with pytest.raises(SpecError):
        warmup_steps(0)


def test_schedule_choice() -> None:
    assert choose_schedule(True).kind == "wsd"
    assert choose_schedule(True).decay_fraction == 0.2
    assert choose_schedule(False).kind == "cosine"

"""Kaplan's form with an irreducible loss, and choosing a form by extrapolation in model size."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

from scaleplan.planner.laws import ChinchillaLaw, KaplanLaw, law_from_dict
from scaleplan.planner.laws.fitting import fit_law
from scaleplan.planner.laws.runs_csv import last_per_run, parse_column_map, read_runs
from scaleplan.planner.laws.selection import select_form
from scaleplan.specs.errors import SpecError

KAPLAN_E = KaplanLaw(N_c=1.5e9, D_c=1.0e11, alpha_N=0.21, alpha_D=0.165, E=1.76)
CHINCHILLA = ChinchillaLaw(E=1.8, A=480.0, B=2100.0, alpha=0.35, beta=0.37)


def _ladder(law, sizes=(1.9e8, 3.7e8, 7.6e8, 1.3e9, 3.2e9), mults=(0.5, 1, 2, 5, 10)):
    """A ladder like OLMo's: every size at 0.5-10x Chinchilla's 20 tokens per parameter."""
    N = np.repeat(np.array(sizes), len(mults))
    D = N * 20.0 * np.tile(np.array(mults, dtype=float), len(sizes))
    return N, D, law.loss(N, D)


def test_irreducible_term_adds_to_kaplan_and_keeps_its_optimum() -> None:
    base = KaplanLaw(N_c=KAPLAN_E.N_c, D_c=KAPLAN_E.D_c, alpha_N=0.21, alpha_D=0.165)
    N, D = np.array([1e9, 3e10]), np.array([2e10, 1e12])
    np.testing.assert_allclose(KAPLAN_E.loss(N, D), base.loss(N, D) + 1.76)
    for a, b in zip(KAPLAN_E.optimal(1e23), base.optimal(1e23), strict=True):
        assert float(a) == pytest.approx(float(b))
    d = KAPLAN_E.tokens_for_loss(1e9, 2.9)
    assert float(KAPLAN_E.loss(1e9, d)) == pytest.approx(2.9, rel=1e-9)
    assert KAPLAN_E.tokens_for_loss(1e9, 1.7) == float("inf")  # below E
    back = law_from_dict({"form": "kaplan", "params": KAPLAN_E.params})
    assert back.params == KAPLAN_E.params
    assert "E" not in base.params  # Kaplan's own form keeps its four parameters


def test_kaplan_irreducible_fit_recovers_exact_law() -> None:
    N, D, L = _ladder(KAPLAN_E)
    fit = fit_law("kaplan-irreducible", N, D, L)
    assert fit.objective < 1e-10
    assert fit.law.params["E"] == pytest.approx(1.76, rel=1e-3)
    assert fit.law.params["alpha_D"] == pytest.approx(0.165, rel=1e-3)
    assert fit.law.params["alpha_N"] == pytest.approx(0.21, rel=1e-3)


@pytest.mark.parametrize(
    ("law", "expected"), [(KAPLAN_E, "kaplan-irreducible"), (CHINCHILLA, "chinchilla")]
)
def test_selection_picks_the_generating_form(law, expected: str) -> None:
    N, D, L = _ladder(law)
    seen: list[int] = []
    chosen, scores = select_form(N, D, L, progress=lambda done, _t: seen.append(done))
    assert chosen == expected
    assert seen == list(range(1, 7))  # 3 forms x 2 folds
    by = {s.form: s for s in scores}
    assert by[expected].mean_abs_pct < 0.01
    others = [s.mean_abs_pct for s in scores if s.form != expected]
    assert min(others) > 10 * by[expected].mean_abs_pct
    assert [f.held_out_params for f in by[expected].folds] == [1.3e9, 3.2e9]


def test_selection_needs_enough_sizes() -> None:
    N, D, L = _ladder(CHINCHILLA, sizes=(1e8, 2e8, 4e8))
    with pytest.raises(SpecError, match="too few to choose a form"):
        select_form(N, D, L)


def test_olmo_ladder_form_choice_and_3b_errors(shared_data) -> None:
    """Issue 4's ladder check, as measured (bench/RESULTS.md). Fitted on runs <= 1B only:
    kaplan-irreducible predicts every 3B run within 1.5 %, but the choice made inside the
    <= 1B ladder (760M and 1B held out in turn, 3B never seen) is Kaplan's own form, whose 3B
    errors reach 1.8 %. (An earlier fit stopped in a slightly worse local optimum of the 370M
    fold, objective 1.2566e-5 against 1.2483e-5, and chose kaplan-irreducible; the global
    optimum, checked from 3,000 starts, does not.)"""
    runs = last_per_run(
        read_runs(
            shared_data / "olmo_ladder_c4_loss_trajectories.csv",
            parse_column_map("params=n_params_ladder,loss=c4_en_val_ce_loss,flops="),
        )
    )
    small = runs.N < 2e9
    chosen, scores = select_form(runs.N[small], runs.D[small], runs.loss[small])
    by = {s.form: s for s in scores}
    assert chosen == "kaplan"
    assert by["kaplan"].mean_abs_pct < by["kaplan-irreducible"].mean_abs_pct
    assert by["kaplan-irreducible"].mean_abs_pct < by["chinchilla"].mean_abs_pct

    def errors(form: str) -> np.ndarray:
        law = fit_law(form, runs.N[small], runs.D[small], runs.loss[small]).law
        return np.abs(law.loss(runs.N[~small], runs.D[~small]) / runs.loss[~small] - 1)

    irreducible, kaplan = errors("kaplan-irreducible"), errors("kaplan")
    assert len(irreducible) == 6
    assert np.max(irreducible) <= 0.015
    assert 0.015 < np.max(kaplan) < 0.02


def test_cli_fit_auto(tmp_path, capsys) -> None:
    N, D, L = _ladder(KAPLAN_E)
    path = tmp_path / "ladder.csv"
    rows = "\n".join(f"{n},{d},{loss}" for n, d, loss in zip(N, D, L, strict=True))
    path.write_text("params,tokens,loss\n" + rows + "\n")
    code, out, _ = run_cli(["fit", str(path), "--law", "auto", "--json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["law"] == "kaplan-irreducible"
    assert doc["selection"]["chosen"] == "kaplan-irreducible"
    assert {f["form"] for f in doc["selection"]["forms"]} == {
        "chinchilla",
        "kaplan",
        "kaplan-irreducible",
    }
    assert doc["params"]["E"] == pytest.approx(1.76, rel=1e-3)
    short = tmp_path / "short.csv"
    short.write_text("params,tokens,loss\n" + "\n".join(rows.splitlines()[:10]) + "\n")
    code, out, err = run_cli(["fit", str(short), "--law", "auto"], capsys)
    assert code == 2
    assert "too few to choose a form" in err and "Traceback" not in err

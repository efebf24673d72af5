"""OLMo ladder extrapolation (bench/scaling.py's ladder section): the law form, and what N
counts, chosen inside the <= 1B ladder, then the final C4 loss of every 3B run predicted."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from scaleplan.planner.laws.fitting import fit_law
from scaleplan.planner.laws.isoflop import approach1
from scaleplan.planner.laws.runs_csv import last_per_run, parse_column_map, read_runs
from scaleplan.planner.laws.selection import select_form

Row = tuple[str, str, str, str]  # check, measured, target, verdict


# OLMo-ladder (allenai/OLMo-ladder src/ladder/ladder.py): every size has untied input and output
# embeddings of embedding_size 100352 x d_model, and its MODEL_PARAMS (the CSV's n_params_ladder)
# count the output one but not the input one. Kaplan's N leaves both out.
LADDER_EMBEDDING_ROWS = 100352
LADDER_D_MODEL = {
    190354176: 768,
    371262464: 1024,
    758220288: 1536,
    1279395840: 2048,
    3169537280: 3328,
}


def _ladder_runs(data: Path):
    runs = last_per_run(
        read_runs(
            data / "olmo_ladder_c4_loss_trajectories.csv",
            parse_column_map("params=n_params_ladder,loss=c4_en_val_ce_loss,flops="),
        )
    )
    head = np.array([LADDER_EMBEDDING_ROWS * LADDER_D_MODEL[int(n)] for n in runs.N], float)
    return dataclasses.replace(runs, N_non_embedding=runs.N - head)


def ladder(data: Path) -> list[Row]:
    runs = _ladder_runs(data)
    small = runs.N < 2e9  # 190M, 370M, 760M, 1B (1.28e9 params)
    # The form and what N counts are chosen inside the <= 1B ladder (760M and 1B held out in
    # turn), never on 3B.
    best, scores = select_form(
        runs.N[small],
        runs.D[small],
        runs.loss[small],
        N_non_embedding=runs.N_non_embedding[small],
    )
    chosen = f"{best.form}, N {best.param_count}"
    rows: list[Row] = []
    for sc in scores:
        rows.append(
            (
                f"ladder form choice (<= 1B only): {sc.form}, N {sc.param_count}",
                f"760M, 1B predicted from smaller: mean {sc.mean_abs_pct:.2f} %, "
                f"max {sc.max_abs_pct:.2f} %",
                "lowest mean wins",
                "chosen" if sc == best else "-",
            )
        )
    errs_by_choice = {}
    for sc in (best, *(s for s in scores if s != best)):
        n = runs.params(sc.param_count)
        fit = fit_law(sc.form, n[small], runs.D[small], runs.loss[small], delta=1e-3)
        errs_by_choice[(sc.form, sc.param_count)] = (
            fit.law.loss(n[~small], runs.D[~small]) / runs.loss[~small] - 1
        )
    errs = errs_by_choice[(best.form, best.param_count)]
    for r, e in sorted(zip(runs.run[~small], errs, strict=True)):
        rows.append(
            (
                f"ladder: {r} final C4 loss from ≤1B fit ({chosen})",
                f"{e:+.2%}",
                "≤ 1.5 %",
                "pass" if abs(e) <= 0.015 else "MISS",
            )
        )
    for (form, count), e in errs_by_choice.items():
        if (form, count) != (best.form, best.param_count):
            rows.append(
                (
                    f"ladder: 3B runs with {form}, N {count} (not chosen)",
                    f"mean |error| {np.mean(np.abs(e)):.2%}, max {np.max(np.abs(e)):.2%}",
                    "-",
                    "info",
                )
            )
    curves = read_runs(
        data / "olmo_ladder_c4_loss_trajectories.csv",
        parse_column_map("params=n_params_ladder,loss=c4_en_val_ce_loss,flops="),
    )
    a1 = approach1(curves.N, curves.D, curves.loss, curves.run).law.params["a"]
    rows.append(
        (
            "ladder: Approach 1 envelope over all 30 curves",
            f"N_opt ∝ C^{a1:.3f}",
            "-",
            "info (one cosine length per run: biased, see isoflop.approach1)",
        )
    )
    rows.append(
        (
            f"ladder: mean |error| over 3B runs ({chosen})",
            f"{np.mean(np.abs(errs)):.2%} ({int(small.sum())} fitted runs)",
            "≤ 1.5 %",
            "pass" if np.mean(np.abs(errs)) <= 0.015 else "MISS",
        )
    )
    return rows

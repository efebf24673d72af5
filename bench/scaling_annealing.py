"""Annealing across model sizes (bench/scaling.py's annealing section): the size-aware
multi-power law fitted on the 25M and 100M curves of mpl_luo2025_loss_curves.csv predicts the
400M runs; the priors' sensitivity and the form's in-sample floor at 400M."""

from __future__ import annotations

import csv
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from scaleplan.planner.laws.schedule_law import (
    MPL_PRESETS,
    Curve,
    fit_mpl,
    lr_from_samples,
    predict_final_loss,
)
from scaleplan.planner.laws.schedule_law_sized import SizedMPL, fit_mpl_sizes

Row = tuple[str, str, str, str]  # check, measured, target, verdict


def _mpl_curves(data: Path) -> dict[str, list[Curve]]:
    by = defaultdict(list)
    for r in csv.DictReader(open(data / "mpl_luo2025_loss_curves.csv")):
        by[(r["model"], r["schedule_file"])].append(
            (int(r["step"]), float(r["lr"]), float(r["loss"]))
        )
    sizes = {"25M": 25e6, "100M": 100e6, "400M": 400e6}
    out = defaultdict(list)
    for (model, name), v in sorted(by.items()):
        s = np.array(sorted(v))
        out[model].append(
            Curve(
                lr_from_samples(s[:, 0], s[:, 1]), s[:, 0].astype(int), s[:, 2], sizes[model], name
            )
        )
    return out


def annealing(data: Path) -> list[Row]:
    curves = _mpl_curves(data)
    t0 = time.perf_counter()
    law, rmse = fit_mpl_sizes(curves["25M"] + curves["100M"])
    seconds = time.perf_counter() - t0
    p400 = law.at(400e6)
    rows: list[Row] = []
    pred = {
        c.name: (predict_final_loss(p400, c.lr_per_step), float(c.loss[-1])) for c in curves["400M"]
    }
    for name, (p, y) in pred.items():
        if name.startswith(("wsd_", "wsdld_", "cosine_", "constant_")):
            e = p / y - 1
            rows.append(
                (
                    f"MPL 25M+100M -> 400M {name}",
                    f"{e:+.2%}",
                    "≤ 0.5 %",
                    "pass" if abs(e) <= 0.005 else "MISS",
                )
            )
    base_p, base_y = pred["constant_24000.csv"]
    for name in ("wsd_20000_24000.csv", "cosine_24000.csv"):
        p, y = pred[name]
        rows.append(
            (
                f"annealing gain vs constant, 400M {name}",
                f"predicted {base_p - p:.4f}, measured {base_y - y:.4f} nats",
                "-",
                "info",
            )
        )
    rows.append(
        (
            "size-aware MPL fit (a_N = 0.34 prior)",
            f"RMSE {rmse:.4f} nats, {seconds:.0f} s",
            "-",
            "info",
        )
    )

    # Sensitivity to the prior: no a_N puts both the cosine and the WSD runs within 0.5 %.
    def errors_24k(law: SizedMPL) -> dict[str, float]:
        """The 24k-step cosine and WSD 400M final losses: predicted / measured - 1."""
        p = law.at(400e6)
        return {
            c.name.split("_")[0]: predict_final_loss(p, c.lr_per_step) / float(c.loss[-1]) - 1
            for c in curves["400M"]
            if c.name in ("cosine_24000.csv", "wsd_20000_24000.csv")
        }

    sweep = []
    for a_N in (0.20, 0.25, 0.30, 0.40):
        e = errors_24k(fit_mpl_sizes(curves["25M"] + curves["100M"], a_N=a_N)[0])
        sweep.append(f"a_N={a_N:.2f}: cosine {e['cosine']:+.2%}, WSD {e['wsd']:+.2%}")
    rows.append(("MPL prior sweep (400M, 24k steps)", "; ".join(sweep), "-", "info"))
    # The other prior two sizes allow: fix the irreducible loss E (Hoffmann 2022: 1.69; Besiroglu
    # 2024: 1.82) and fit a_N. It moves L0(400M) down, and with it both runs.
    e_sweep = []
    for e_prior in (1.69, 1.82):
        law_e, _ = fit_mpl_sizes(curves["25M"] + curves["100M"], E=e_prior)
        e = errors_24k(law_e)
        e_sweep.append(
            f"E={e_prior:.2f} (a_N fitted {law_e.a_N:.3f}): cosine {e['cosine']:+.2%}, "
            f"WSD {e['wsd']:+.2%}"
        )
    rows.append(
        ("MPL with a prior on E instead (400M, 24k steps)", "; ".join(e_sweep), "-", "info")
    )
    p, rmse4 = fit_mpl(curves["400M"])
    vals = ", ".join(
        f"{k}={getattr(p, k):.4g}" for k in ("L0", "A", "alpha", "B", "C", "beta", "gamma")
    )
    rows.append(("MPL fit on all 400M curves (shipped default)", vals, f"RMSE {rmse4:.4f}", "info"))
    # The floor: the same form fitted on the 400M curves themselves, final losses in-sample.
    floor = ", ".join(
        f"{c.name.removesuffix('.csv')} {predict_final_loss(p, c.lr_per_step) / float(c.loss[-1]) - 1:+.2%}"
        for c in curves["400M"]
        if c.name.startswith(("cosine_", "wsd_"))
    )
    rows.append(("MPL in-sample on all nine 400M curves", floor, "-", "info"))
    # The same form fitted on the 24k-step 400M curves only (constant, cosine, WSD, WSD-linear):
    # one size's 24k-step finals are within reach of the form; the nine-curve fit above trades
    # them against the 16k two-stage and 72k curves.
    horizon = [c for c in curves["400M"] if "24000" in c.name]
    p24, _ = fit_mpl(horizon)
    rows.append(
        (
            "MPL in-sample on the four 24k-step 400M curves",
            ", ".join(
                f"{c.name.removesuffix('.csv')} {predict_final_loss(p24, c.lr_per_step) / float(c.loss[-1]) - 1:+.2%}"
                for c in horizon
            ),
            "-",
            "info",
        )
    )
    # The law's authors' own per-size fits (their repo's parameters, fitted at each size on
    # cosine/constant 24k and wsdcon_9, under their warmup convention), on the same final losses.
    own = []
    for size in ("25M", "100M", "400M"):
        errs = {
            c.name.split("_")[0]: predict_final_loss(MPL_PRESETS[size], c.lr_per_step)
            / float(c.loss[-1])
            - 1
            for c in curves[size]
            if c.name in ("cosine_24000.csv", "wsd_20000_24000.csv")
        }
        own.append(f"{size}: cosine {errs['cosine']:+.2%}, WSD {errs['wsd']:+.2%}")
    rows.append(("Luo et al.'s published per-size fits, in-sample", "; ".join(own), "-", "info"))
    return rows

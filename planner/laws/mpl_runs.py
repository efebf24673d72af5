"""`scaleplan fit --law mpl`: fit the multi-power law (schedule_law) to a loss-curves CSV with
columns run, step, lr, loss (one row per logged step; `--columns` maps other names). An optional
`params` column (each run's model size) with two or more sizes fits the size-aware law
(`fit_mpl_sizes`), which a plan evaluates at its own model size."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from scaleplan.specs.errors import SpecError
from scaleplan.specs.files import read_csv

from .schedule_law import (
    PARAM_NAMES,
    Curve,
    MPLParams,
    fit_mpl,
    lr_from_samples,
    predict_final_loss,
)
from .schedule_law_sized import SizedMPL, fit_mpl_sizes

COLUMNS = ("run", "step", "lr", "loss")
SIZE_SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}
DEFAULT_SIZE_EXPONENT = 0.34  # Hoffmann et al. 2022 eq. 10: α of the parameter term
MAX_STEPS = 100_000_000  # per run: the fit holds an LR (and loss) value for every step


def read_curves(path: str | Path, columns: dict[str, str] | None = None) -> list[Curve]:
    src = str(path)
    name = {k: (columns or {}).get(k, k) for k in COLUMNS}
    header, rows_in = read_csv(path)
    by_run = _read_rows(header, rows_in, name, src)
    size_col = (columns or {}).get("params", "params")
    sizes = _run_sizes(rows_in, name["run"], size_col, src) if size_col in header else {}
    curves = []
    for run, rows in sorted(by_run.items()):
        s = np.array(sorted(rows))
        if len(s) < 3:
            raise SpecError(
                f"run {run!r} has {len(s)} rows; need >= 3 logged steps", field="run", source=src
            )
        curves.append(
            Curve(
                lr_from_samples(s[:, 0], s[:, 1]),
                s[:, 0].astype(int),
                s[:, 2],
                n_params=sizes.get(run),
                name=run,
            )
        )
    if not curves:
        raise SpecError("no data rows", source=src)
    return curves


def parse_size(text: str) -> float | None:
    """'4e8', '400000000', '400M', '1.3B' -> parameters; None when it is not a positive size."""
    t = text.strip().lower()
    scale = SIZE_SUFFIXES.get(t[-1:], 1.0) if t else 1.0
    try:
        value = float(t[:-1] if scale != 1.0 else t) * scale
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def _run_sizes(
    rows: list[dict[str, str]], run_col: str, size_col: str, src: str
) -> dict[str, float]:
    """Each run's model size from the `params` column: one positive size per run."""
    sizes: dict[str, float] = {}
    for i, row in enumerate(rows):
        run, text = row[run_col], row.get(size_col) or ""
        size = parse_size(text)
        if size is None:
            raise SpecError(
                f"row {i + 2}: {size_col} {text!r} is not a model size (a positive number, or "
                "one with K/M/B/T)",
                field=size_col,
                source=src,
            )
        if sizes.setdefault(run, size) != size:
            raise SpecError(
                f"run {run!r} names two model sizes ({sizes[run]:.4g} and {size:.4g}) in "
                f"{size_col}; give each run one",
                field=size_col,
                source=src,
            )
    return sizes


def _read_rows(
    header: list[str], rows: list[dict[str, str]], name: dict[str, str], src: str
) -> dict[str, list[tuple[float, float, float]]]:
    missing = [name[k] for k in COLUMNS if name[k] not in header]
    if missing:
        raise SpecError(
            f"missing column {missing[0]!r} (--law mpl needs run, step, lr, loss)",
            field=missing[0],
            source=src,
        )
    by_run: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for i, row in enumerate(rows):
        try:
            vals = tuple(float(row[name[k]]) for k in ("step", "lr", "loss"))
        except (TypeError, ValueError):
            raise SpecError(
                f"row {i + 2}: step, lr and loss must be numbers", field="loss", source=src
            ) from None
        if not all(math.isfinite(v) for v in vals) or vals[1] <= 0 or vals[2] <= 0 or vals[0] < 0:
            raise SpecError(
                f"row {i + 2}: lr and loss must be positive, step >= 0",
                field="loss",
                source=src,
            )
        if vals[0] > MAX_STEPS:
            raise SpecError(
                f"row {i + 2}: step {row[name['step']]} is beyond {MAX_STEPS:.0e}; the law is "
                "evaluated at every step, and no training run is that long",
                field=name["step"],
                source=src,
            )
        by_run[row[name["run"]]].append(vals)  # type: ignore[arg-type]
    return by_run


def curve_params(law: MPLParams | SizedMPL, curve: Curve) -> MPLParams:
    """The MPL parameters that describe `curve`: a size-aware law's at the curve's size."""
    if isinstance(law, SizedMPL):
        return law.at(float(curve.n_params or 0.0))
    return law


def fit_curves_document(
    path: str | Path,
    columns: dict[str, str] | None = None,
    curves: list[Curve] | None = None,
    size_exponent: float = DEFAULT_SIZE_EXPONENT,
) -> tuple[dict[str, Any], MPLParams | SizedMPL, list[Curve]]:
    """Fit and return (summary, law, curves); the summary matches `fit --json`. `curves`:
    already read from `path` (so a caller can check its outputs between reading and fitting).
    Curves of two or more model sizes fit the size-aware law, with L0(N)'s exponent fixed at
    `size_exponent` (two sizes cannot pin it; `schedule_law_sized.SizedMPL`)."""
    t0 = time.perf_counter()
    if curves is None:
        curves = read_curves(path, columns)
    sizes = sorted({c.n_params for c in curves if c.n_params is not None})
    warnings: list[str] = []
    law: MPLParams | SizedMPL
    if len(sizes) >= 2:
        law, rmse = fit_mpl_sizes(curves, a_N=size_exponent)
        params = law.to_dict()
        warnings.append(
            f"size-aware fit over {len(sizes)} model sizes: L0(N) = E + K·N^-{size_exponent:g} "
            "with the exponent a prior (--size-exponent), not fitted. Extrapolating it to "
            "larger models is the uncertain part: predicting 400M from 25M and 100M curves, the "
            "bench's cosine runs came out 1.3 % high (bench/RESULTS.md, annealing)"
        )
    else:
        law, rmse = fit_mpl(curves)
        params = {k: getattr(law, k) for k in PARAM_NAMES}
    finals = {
        c.name: {
            "measured": float(c.loss[-1]),
            "predicted": predict_final_loss(curve_params(law, c), c.lr_per_step),
        }
        for c in curves
    }
    summary: dict[str, Any] = {
        "law": "mpl-sized" if isinstance(law, SizedMPL) else "mpl",
        "method": "least-squares",
        "params": params,
        "n_points": int(sum(len(c.steps) for c in curves)),
        "loss": rmse,
        "seconds": time.perf_counter() - t0,
        "final_loss": finals,
        "warnings": warnings,
    }
    if isinstance(law, SizedMPL):
        summary["sizes"] = sizes
        if len(sizes) >= 3:
            summary["extrapolation"] = largest_size_held_out(curves, size_exponent)
            worst = max(abs(e) for e in summary["extrapolation"]["error_pct"].values())
            warnings.append(
                f"your own extrapolation check: fitted without the largest size "
                f"({sizes[-1]:.3g}), the law predicts its final losses within {worst:.2f} %"
            )
    return summary, law, curves


def largest_size_held_out(curves: list[Curve], size_exponent: float) -> dict[str, Any]:
    """The size-aware law refitted without the largest model size, and its error on that size's
    final losses (predicted / measured - 1, in %): an estimate, from the user's own curves, of
    how far the law extrapolates one size step (the ladder protocol of `selection.select_form`)."""
    largest = max(float(c.n_params or 0.0) for c in curves)
    smaller = [c for c in curves if float(c.n_params or 0.0) < largest]
    law, _ = fit_mpl_sizes(smaller, a_N=size_exponent)
    errors = {
        c.name: (predict_final_loss(law.at(largest), c.lr_per_step) / float(c.loss[-1]) - 1) * 100
        for c in curves
        if float(c.n_params or 0.0) == largest
    }
    return {"held_out_size": largest, "error_pct": errors}

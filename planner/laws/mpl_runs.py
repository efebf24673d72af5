"""`scaleplan fit --law mpl`: fit the multi-power law (schedule_law) to a loss-curves CSV with
columns run, step, lr, loss (one row per logged step; `--columns` maps other names)."""

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

COLUMNS = ("run", "step", "lr", "loss")
MAX_STEPS = 100_000_000  # per run: the fit holds an LR (and loss) value for every step


def read_curves(path: str | Path, columns: dict[str, str] | None = None) -> list[Curve]:
    src = str(path)
    name = {k: (columns or {}).get(k, k) for k in COLUMNS}
    by_run = _read_rows(*read_csv(path), name, src)
    curves = []
    for run, rows in sorted(by_run.items()):
        s = np.array(sorted(rows))
        if len(s) < 3:
            raise SpecError(
                f"run {run!r} has {len(s)} rows; need >= 3 logged steps", field="run", source=src
            )
        curves.append(
            Curve(lr_from_samples(s[:, 0], s[:, 1]), s[:, 0].astype(int), s[:, 2], name=run)
        )
    if not curves:
        raise SpecError("no data rows", source=src)
    return curves


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


def fit_curves_document(
    path: str | Path,
    columns: dict[str, str] | None = None,
    curves: list[Curve] | None = None,
) -> tuple[dict[str, Any], MPLParams, list[Curve]]:
    """Fit and return (summary, params, curves); the summary matches `fit --json`. `curves`:
    already read from `path` (so a caller can check its outputs between reading and fitting)."""
    t0 = time.perf_counter()
    if curves is None:
        curves = read_curves(path, columns)
    params, rmse = fit_mpl(curves)
    finals = {
        c.name: {
            "measured": float(c.loss[-1]),
            "predicted": predict_final_loss(params, c.lr_per_step),
        }
        for c in curves
    }
    summary = {
        "law": "mpl",
        "method": "least-squares",
        "params": {k: getattr(params, k) for k in PARAM_NAMES},
        "n_points": int(sum(len(c.steps) for c in curves)),
        "loss": rmse,
        "seconds": time.perf_counter() - t0,
        "final_loss": finals,
        "warnings": [],
    }
    return summary, params, curves

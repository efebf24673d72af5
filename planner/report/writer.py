"""Draw every report figure and write report.html with the PNGs beside it."""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaleplan.specs.plan import Plan

from .context import ReportContext
from .figures import ReportFigure, Unavailable

HTML_NAME = "report.html"


def check_overwrite(out_dir: Path, force: bool, field: str | None = None) -> None:
    """Refuse to replace an existing report in out_dir unless forced (before any work)."""
    from scaleplan.specs.errors import SpecError

    if (Path(out_dir) / HTML_NAME).exists() and not force:
        raise SpecError(
            f"{HTML_NAME} already exists; pass --force to overwrite it",
            field=field,
            source=str(out_dir),
        )


# (file stem, section title, module in this package, builder). A builder takes the
# ReportContext and returns (matplotlib Figure, caption), or raises Unavailable(reason).
PLOTS: tuple[tuple[str, str, str, str], ...] = (
    ("1_scaling_law", "Scaling law: compute-optimal allocation", "plot_law", "build"),
    ("2_loss_forecast", "Forecast loss through the phases", "plot_forecast", "build"),
    ("3_layout_search", "Layout search: step time vs cost", "plot_search", "build"),
    ("4_memory", "Memory per GPU by pipeline stage", "plot_memory", "build"),
    ("5_pipeline_timeline", "One training step per pipeline stage", "plot_timeline", "build"),
    ("6_phases", "Time and cost per phase", "plot_phases", "build"),
)


@dataclass(frozen=True)
class ReportResult:
    html_path: Path
    figures: tuple[ReportFigure, ...]
    png_paths: tuple[Path, ...]
    seconds: float


def _builder(module: str, attr: str) -> Callable[[ReportContext], tuple[Any, str]]:
    return getattr(importlib.import_module(f"{__package__}.{module}"), attr)


def draw_figures(
    plan: Plan,
    *,
    fit_path: str | None = None,
    strict: bool = False,
    keys: Collection[str] | None = None,
) -> list[ReportFigure]:
    """Every figure of the report, drawn in memory. A plot whose inputs are missing becomes a
    `missing` figure with the reason; one that fails unexpectedly becomes `failed` (or raises
    when `strict`, as the tests ask). `keys` draws only those figures (file stems of PLOTS)."""
    from . import style

    ctx = ReportContext(plan=plan, fit_path=fit_path)
    out: list[ReportFigure] = []
    for key, title, module, attr in PLOTS:
        if keys is not None and key not in keys:
            continue
        start = time.perf_counter()
        try:
            with style.rc_context():
                fig, caption = _builder(module, attr)(ctx)
                png = style.png_bytes(fig)
        except Unavailable as exc:
            out.append(
                ReportFigure(
                    key, title, "", "missing", reason=str(exc), seconds=time.perf_counter() - start
                )
            )
            continue
        except Exception as exc:
            if strict:
                raise
            reason = f"{type(exc).__name__}: {exc}"
            out.append(
                ReportFigure(
                    key, title, "", "failed", reason=reason, seconds=time.perf_counter() - start
                )
            )
            continue
        out.append(
            ReportFigure(key, title, caption, "ok", png=png, seconds=time.perf_counter() - start)
        )
    return out


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("scaleplan")
    except PackageNotFoundError:
        return "0+unknown"


def build_report(
    plan: Plan, out_dir: Path, *, fit_path: str | None = None, strict: bool = False
) -> ReportResult:
    """Draw everything first, then write the PNGs and report.html into `out_dir` (created)."""
    from .html import render

    start = time.perf_counter()
    figures = draw_figures(plan, fit_path=fit_path, strict=strict)
    page = render(plan, figures, seconds=time.perf_counter() - start, version=_version())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for fig in figures:
        path = out_dir / fig.filename
        if fig.png is not None:
            path.write_bytes(fig.png)
            written.append(path)
        elif path.exists():
            path.unlink()  # a stale PNG from an earlier report would contradict this one
    html_path = out_dir / HTML_NAME
    tmp = out_dir / f".{HTML_NAME}.tmp"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, html_path)
    return ReportResult(html_path, tuple(figures), tuple(written), time.perf_counter() - start)


def write_report(plan: Plan, out_dir: Path, *, fit_path: str | None = None) -> Path:
    """Write `out_dir/report.html` (self-contained, PNGs embedded) and the PNGs beside it.

    Returns the path of the HTML file. Plots whose inputs the plan lacks are replaced by a line
    saying why.
    """
    return build_report(plan, Path(out_dir), fit_path=fit_path).html_path

"""The plan report: `report.html` with six plots (scaling law, loss forecast, layout search,
memory per stage, pipeline timeline, time and cost per phase) and the PNGs beside it.

matplotlib is imported only when a report is drawn.
"""

from __future__ import annotations

from .writer import ReportResult, build_report, draw_figures, write_report

__all__ = ["ReportResult", "build_report", "draw_figures", "write_report"]

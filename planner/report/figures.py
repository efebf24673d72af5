"""What a report figure is: a PNG with a title and caption, or the reason it could not be drawn."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "missing", "failed"]


class Unavailable(Exception):
    """A plot's inputs are absent from the plan (no fitted law, no event simulation, ...).

    The message says why, in words a reader of the report understands; the report shows it in
    place of the plot.
    """


@dataclass(frozen=True)
class ReportFigure:
    key: str  # file stem of the PNG, e.g. "1_frontier"
    title: str
    caption: str
    status: Status
    png: bytes | None = None
    reason: str | None = None  # why the figure is missing or failed
    seconds: float = 0.0  # time to gather its inputs and draw it

    @property
    def filename(self) -> str:
        return f"{self.key}.png"

"""(being written)"""

from __future__ import annotations

from typing import Any

from .context import ReportContext
from .figures import Unavailable


def build(ctx: ReportContext) -> tuple[Any, str]:
    raise Unavailable("this plot is not yet part of this build of scaleplan")

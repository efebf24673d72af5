"""Input and output checks every command shares: reading a CSV, making sure an output path can
be written, and a positive finite number. Each failure is one `SpecError`."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

from .errors import SpecError


def read_csv(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) of a CSV file; a spreadsheet's byte-order mark is fine. A missing file,
    bytes that are not UTF-8 and a malformed CSV are each one error naming the file."""
    p = Path(path)
    if not p.is_file():
        raise SpecError("file not found", source=str(p))
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            return list(reader.fieldnames or []), rows
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"not UTF-8 text (byte {exc.start}: {exc.reason}); expected a CSV file", source=str(p)
        ) from None
    except csv.Error as exc:
        raise SpecError(f"not a readable CSV file ({exc})", source=str(p)) from None


def prepare_output(path: str | Path, field: str, folder: bool = False) -> Path:
    """Make sure an output path can be written before any work is done (so a bad --out never
    leaves other outputs behind): its folder (or, with `folder`, itself) is created if missing;
    a path the OS refuses is one error naming the option."""
    p = Path(path)
    target = p if folder else (p.parent if str(p.parent) else Path("."))
    if folder and p.exists() and not p.is_dir():
        raise SpecError(f"{p} exists and is not a folder", field=field)
    if not folder and p.is_dir():
        raise SpecError(f"{p} is a folder; give a file name", field=field)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SpecError(f"cannot create {target}: {exc.strerror or exc}", field=field) from None
    if not os.access(target, os.W_OK | os.X_OK):
        raise SpecError(f"{target} is not writable", field=field)
    if not folder and p.exists() and not os.access(p, os.W_OK):
        raise SpecError(f"{p} is not writable", field=field)
    return p


def is_positive_finite(value: Any) -> bool:
    """A real number > 0 and finite (not a bool, not NaN or infinity)."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )

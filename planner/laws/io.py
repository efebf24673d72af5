"""FIT.json: a fitted law with its data points, bootstrap samples and method, so the report can
redraw the frontier with a confidence band and the IsoFLOP curves."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

from scaleplan.specs.errors import SpecError
from scaleplan.specs.files import is_positive_finite

from .forms import Law, law_from_dict

FIT_SCHEMA = "scaleplan.fit/1"


def _clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars/arrays to Python, non-finite floats to None."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def fit_document(
    law: Law,
    *,
    method: str,
    points: dict[str, list[float]],
    objective: dict[str, Any] | None = None,
    bootstrap: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The FIT.json object. `points` holds equal-length lists N, D, loss, flops (and run)."""
    doc: dict[str, Any] = {
        "schema": FIT_SCHEMA,
        "method": method,
        "law": law.to_dict(),
        "points": points,
        "objective": objective or {},
    }
    if bootstrap:
        doc["bootstrap"] = bootstrap
    if extra:
        doc.update(extra)
    return _clean(doc)


def write_fit(path: str | Path, doc: dict[str, Any]) -> None:
    """Write atomically (a temp file renamed into place: nothing half-written on failure)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    try:
        tmp.write_text(json.dumps(_clean(doc), indent=1) + "\n")
        tmp.replace(p)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise SpecError(f"cannot write: {exc.strerror or exc}", source=str(p)) from None


def read_fit(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise SpecError("file not found", field="law.fit", source=str(p))
    try:
        doc = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"not valid JSON ({exc})", field="law.fit", source=str(p)) from None
    if not isinstance(doc, dict) or doc.get("schema") != FIT_SCHEMA:
        raise SpecError(
            f"not a FIT.json file (schema must be {FIT_SCHEMA!r})", field="law.fit", source=str(p)
        )
    if not isinstance(doc.get("law"), dict):
        raise SpecError("missing law object", field="law.fit", source=str(p))
    flops = doc.get("max_fitted_flops")
    if flops is not None and not is_positive_finite(flops):
        raise SpecError(
            f"must be a positive number of FLOPs (got {flops!r})",
            field="max_fitted_flops",
            source=str(p),
        )
    if (
        "bootstrap" in doc
        and doc["bootstrap"] is not None
        and not isinstance(doc["bootstrap"], dict)
    ):
        raise SpecError("must be an object", field="bootstrap", source=str(p))
    return doc


def law_from_fit(path: str | Path) -> Law:
    doc = read_fit(path)
    try:
        return law_from_dict(doc["law"], source=str(path))
    except SpecError as exc:
        raise SpecError(exc.reason, field=exc.field or "law.fit", source=str(path)) from None

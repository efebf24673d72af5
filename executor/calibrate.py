"""`scaleplan calibrate`: measured step times (metrics JSONL of `scaleplan run`) against the cost
model's prediction for the same model, layout and hardware, and a hardware efficiency profile
fitted to them (`scaleplan.costmodels.calibration.calibrate`).

The measured step time of a phase is the median `step_time_s` of its steps after the first
`WARMUP_STEPS` (start-up, allocator and compilation effects). The model, cluster, layout and
sequence length come from the run's `start` record (or from `--plan` when given).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaleplan.specs.errors import SpecError
from scaleplan.specs.files import is_positive_finite
from scaleplan.specs.hardware import ClusterSpec
from scaleplan.specs.layout import LayoutSpec, validate_layout
from scaleplan.specs.loader import load_spec, validate
from scaleplan.specs.model import ModelSpec
from scaleplan.specs.plan import Plan

WARMUP_STEPS = 3


@dataclass(frozen=True)
class Measurement:
    source: str
    phase: str
    device: str
    model: ModelSpec
    cluster: ClusterSpec
    layout: LayoutSpec
    seq_length: int
    step_time_s: float
    steps: int


def read_measurement(path: Path, plan: Plan | None) -> Measurement:
    """One phase's measured step time and its configuration, from a metrics JSONL file."""
    src = str(path)
    if not path.exists():
        raise SpecError("file not found", source=src)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"not UTF-8 text (byte {exc.start}: {exc.reason}); expected the metrics JSONL of "
            "`scaleplan run`",
            source=src,
        ) from None
    except OSError as exc:
        raise SpecError(f"cannot read: {exc.strerror or exc}", source=src) from None
    start: dict[str, Any] | None = None
    start_line = 0
    times: list[float] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue  # a trailing (or stray) blank line
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise SpecError(f"line {n} is not JSON", source=src) from None
        if not isinstance(rec, dict):
            raise SpecError(
                f"line {n}: expected a JSON object (a metrics record), got {type(rec).__name__}",
                source=src,
            )
        if rec.get("event") == "start":
            # a resumed run appends a new start: keep the last segment
            start, start_line, times = rec, n, []
        elif rec.get("event") == "step":
            if "step_time_s" not in rec:
                raise SpecError(
                    f"line {n}: the step record lacks 'step_time_s'",
                    field="step_time_s",
                    source=src,
                )
            value = rec["step_time_s"]
            if not is_positive_finite(value):
                raise SpecError(
                    f"line {n}: must be a positive, finite number of seconds (got {value!r})",
                    field="step_time_s",
                    source=src,
                )
            times.append(float(value))
    if start is None:
        raise SpecError("no 'start' record: not a metrics file of `scaleplan run`", source=src)
    steady = times[WARMUP_STEPS:] if len(times) > WARMUP_STEPS else times
    if not steady:
        raise SpecError("no 'step' records", source=src)
    try:
        phase_name, model, cluster, layout, seq = _configuration(start, plan, src)
    except SpecError as err:
        raise SpecError(f"line {start_line} (start record): {err.reason}", err.field, src) from None
    cluster = cluster.model_copy(update={"num_gpus": layout.num_gpus})
    return Measurement(
        src,
        phase_name,
        str(start.get("device", "?")),
        model,
        cluster,
        layout,
        seq,
        statistics.median(steady),
        len(steady),
    )


def _configuration(
    start: dict[str, Any], plan: Plan | None, src: str
) -> tuple[str, ModelSpec, ClusterSpec, LayoutSpec, int]:
    """(phase, model, cluster, layout, seq_length) of a start record (or of --plan's phase),
    with the layout checked by the rules every other command applies."""
    phase_name = start.get("phase", "")
    if not isinstance(phase_name, str):
        raise SpecError(f"must be a phase name (got {phase_name!r})", field="phase")
    if plan is not None:
        names = [p.name for p in plan.phases]
        if phase_name not in names:
            raise SpecError(
                f"phase {phase_name!r} is not in the plan (its phases: {', '.join(names)})",
                field="phase",
            )
        phase = plan.phase(phase_name)
        model, cluster, layout, seq = plan.model, plan.cluster, phase.layout, phase.seq_length
    else:
        for key in ("model", "cluster", "layout", "seq_length"):
            if key not in start:
                raise SpecError(f"lacks '{key}'; pass --plan", field=key)
        model = validate(ModelSpec, start["model"], "model", src)
        cluster = validate(ClusterSpec, start["cluster"], "cluster", src)
        layout = validate(LayoutSpec, start["layout"], "layout", src)
        seq = start["seq_length"]
        if isinstance(seq, float) and seq.is_integer():
            seq = int(seq)
        if isinstance(seq, bool) or not isinstance(seq, int) or seq <= 0:
            raise SpecError(f"must be a positive whole number (got {seq!r})", field="seq_length")
    validate_layout(layout, model, seq_length=seq)
    return phase_name, model, cluster, layout, seq


def compare_and_fit(
    paths: list[Path], plan_path: Path | None, allow_device_mismatch: bool = False
) -> dict[str, Any]:
    """Per-run measured vs predicted step time, before and after fitting the profile."""
    from scaleplan.costmodels.calibration import MeasuredRun, calibrate_report, predict_step_times

    plan = load_spec(Plan, plan_path) if plan_path else None
    found = [read_measurement(p, plan) for p in paths]
    cpu = [m.source for m in found if m.device != "cuda"]
    if cpu and not allow_device_mismatch:
        raise SpecError(
            f"{', '.join(cpu)}: measured on '{found[0].device}', not on the plan's "
            f"{found[0].cluster.gpu.name}; a GPU profile fitted to these times would be meaningless "
            "(pass --allow-device-mismatch to fit anyway, e.g. to test the pipeline)",
            field="device",
        )
    runs = [MeasuredRun(m.model, m.cluster, m.layout, m.seq_length, m.step_time_s) for m in found]
    before = predict_step_times(runs)
    report = calibrate_report(runs, name=f"calibrated-{found[0].cluster.gpu.name}")
    after = predict_step_times(runs, report.profile)
    rows = [
        {
            "source": m.source,
            "phase": m.phase,
            "device": m.device,
            "gpus": m.layout.num_gpus,
            "layout": f"tp{m.layout.tp} pp{m.layout.pp} dp{m.layout.dp} ep{m.layout.ep} z{m.layout.zero_stage}",
            "measured_step_time_s": m.step_time_s,
            "steps": m.steps,
            "predicted_step_time_s": float(b),
            "error_pct": 100.0 * (float(b) / m.step_time_s - 1.0),
            "fitted_step_time_s": float(a),
            "fitted_error_pct": 100.0 * (float(a) / m.step_time_s - 1.0),
        }
        for m, b, a in zip(found, before, after, strict=True)
    ]
    return {
        "runs": rows,
        "profile": report.profile.model_dump(),
        "fit_mape_pct": report.mape_pct,
        "fit_max_pct": report.max_pct,
        "fit_success": report.success,
        "fit_message": report.message,
    }

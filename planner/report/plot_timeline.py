"""Plot 5: one training step as a Gantt chart, one row per pipeline stage, from the event-level
pipeline simulation (costmodels.pipeline): forward, backward, communication and bubbles."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from . import style
from .context import ReportContext
from .figures import Unavailable

KIND_COLORS: dict[str, str] = {
    "forward": style.COLORS["blue"],
    "backward": style.COLORS["orange"],
    "comm": style.COLORS["green"],
    "bubble": "#DDDDDD",
}
KIND_LABELS: dict[str, str] = {
    "forward": "forward",
    "backward": "backward",
    "comm": "communication (p2p)",
    "bubble": "bubble (idle)",
}
MAX_LABELLED_EVENTS = 400  # write micro-batch numbers inside the bars only when they can be read


def _get(obj: Any, *names: str) -> Any:
    for name in names:
        value = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
        if value is not None:
            return value
    return None


def simulate_main_phase(ctx: ReportContext) -> tuple[Any, Any]:
    """(step estimate, pipeline timeline) of the main phase's layout, cached on the context."""

    def compute() -> tuple[Any, Any]:
        try:
            from scaleplan.costmodels.pipeline import simulate_schedule
            from scaleplan.costmodels.step import estimate_step
        except ImportError:
            raise Unavailable(
                "the event-level pipeline simulation (scaleplan.costmodels.pipeline, .step) is not available in this installation"
            ) from None
        phase = ctx.main_phase
        est = estimate_step(ctx.plan.model, ctx.plan.cluster, phase.layout, phase.seq_length)
        timeline = _get(est, "timeline", "pipeline_timeline")
        if timeline is None:
            fwd = _get(est, "stage_forward_s")
            bwd = _get(est, "stage_backward_s")
            if fwd is None or bwd is None:
                raise Unavailable(
                    "the step estimate carries no per-stage forward/backward times to simulate the pipeline from"
                )
            p2p = _get(est, "p2p_s", "pp_p2p_s") or 0.0
            timeline = simulate_schedule(
                list(np.ravel(fwd)),
                list(np.ravel(bwd)),
                phase.layout.num_microbatches,
                phase.layout.vp,
                float(np.ravel(p2p)[0]),
            )
        return est, timeline

    return ctx.cached("pipeline", compute)


def build(ctx: ReportContext) -> tuple[Any, str]:
    _, timeline = simulate_main_phase(ctx)
    events = list(getattr(timeline, "events", ()) or ())
    if not events:
        raise Unavailable("the pipeline simulation produced no events")
    phase = ctx.main_phase
    layout = phase.layout
    makespan_s = float(getattr(timeline, "makespan_s", max(e.end_s for e in events)))
    scale, unit = (1e3, "ms") if makespan_s < 10 else (1.0, "s")

    spans: dict[tuple[int, str], list[tuple[float, float]]] = defaultdict(list)
    busy: dict[str, float] = defaultdict(float)
    stages = sorted({int(e.stage) for e in events})
    for e in events:
        width = (float(e.end_s) - float(e.start_s)) * scale
        if width <= 0:
            continue
        spans[(int(e.stage), str(e.kind))].append((float(e.start_s) * scale, width))
        busy[str(e.kind)] += width / scale

    height_in = max(2.8, 0.4 * len(stages) + 1.9)
    fig, ax = style.figure(
        1,
        height_in=height_in,
        margins={"left": 0.08, "top": 1 - 0.4 / height_in, "bottom": 1.05 / height_in},
    )
    height = 0.8
    for (stage, kind), bars in sorted(spans.items()):
        ax.broken_barh(
            bars,
            (stage - height / 2, height),
            facecolors=KIND_COLORS.get(kind, style.COLORS["grey"]),
            edgecolor="white" if len(events) < 2000 else "none",
            linewidth=0.4,
        )
    if len(events) <= MAX_LABELLED_EVENTS:
        for e in events:
            mb = getattr(e, "microbatch", None)
            if str(e.kind) in ("forward", "backward") and mb is not None and mb >= 0:
                mid = 0.5 * (float(e.start_s) + float(e.end_s)) * scale
                ax.text(
                    mid, int(e.stage), str(mb), ha="center", va="center", fontsize=7, color="white"
                )
    from matplotlib.patches import Patch

    kinds = [
        k for k in ("forward", "backward", "comm", "bubble") if any(key[1] == k for key in spans)
    ]
    fig.legend(
        handles=[Patch(color=KIND_COLORS[k], label=KIND_LABELS[k]) for k in kinds],
        loc="lower center",
        bbox_to_anchor=(0.5, 0.01),
        ncol=len(kinds),
    )
    ax.set_yticks(stages, [f"stage {s}" for s in stages])
    ax.set_ylim(max(stages) + 0.6, min(stages) - 0.6)
    ax.set_xlim(0, makespan_s * scale)
    ax.set_xlabel(f"time within one step ({unit})")
    ax.grid(axis="y", visible=False)
    m = layout.num_microbatches
    sched = "interleaved 1F1B" if layout.vp > 1 else "1F1B"
    ax.set_title(
        f"One {phase.name} step: {sched}, {layout.pp} stages"
        + (f" × {layout.vp} virtual" if layout.vp > 1 else "")
        + f", {m} micro-batches"
    )
    bubble_frac = busy.get("bubble", 0.0) / (makespan_s * len(stages)) if makespan_s > 0 else 0.0
    ideal = (
        (layout.pp - 1) / (layout.vp * m) if m > 0 else 0.0
    )  # Narayanan et al. 2021 eq. 1 (÷v interleaved)
    caption = (
        f"Gantt chart of one optimizer step of the {phase.name} layout from the event-level pipeline simulation: "
        f"one row per pipeline stage, forward and backward passes of each micro-batch (numbered"
        f"{'' if len(events) <= MAX_LABELLED_EVENTS else ' in the simulation; too many to label here'}), "
        f"point-to-point communication and idle bubbles. Pipeline makespan {makespan_s * scale:.3g} {unit}; "
        f"bubbles take {100 * bubble_frac:.1f} % of stage time (closed form (p−1)/(v·m) = {100 * ideal:.1f} % of the busy time)."
    )
    return fig, caption

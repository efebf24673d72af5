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
    "dp_sync": style.COLORS["purple"],
    "optimizer": style.COLORS["black"],
}
KIND_LABELS: dict[str, str] = {
    "forward": "forward",
    "backward": "backward",
    "comm": "p2p send",
    "bubble": "bubble (idle)",
    "dp_sync": "gradient sync (exposed)",
    "optimizer": "optimizer step",
}
MAX_LABELLED_EVENTS = 600  # micro-batch numbers drawn at most (text is the slowest thing to draw)


def simulate_main_phase(ctx: ReportContext) -> tuple[Any, list[float]]:
    """The event-level timeline of one step of the main phase's layout
    (costmodels.step.pipeline_timeline), and each stage's p2p send time per pass (half the step
    model's per-micro-batch pp term: one send forward, one backward), cached on the context."""

    def compute() -> tuple[Any, list[float]]:
        from scaleplan.costmodels.batch import LayoutBatch
        from scaleplan.costmodels.step import pipeline_timeline
        from scaleplan.costmodels.step_parts import STAGE_NAMES, stage_parts
        from scaleplan.planner.search import cluster_of

        phase = ctx.pipeline_phase
        cluster = cluster_of(ctx.plan.cluster, phase.num_gpus)
        timeline = pipeline_timeline(ctx.plan.model, cluster, phase.layout, phase.seq_length)
        parts = stage_parts(
            ctx.plan.model,
            cluster,
            LayoutBatch.from_specs([phase.layout]),
            phase.seq_length,
            cluster.profile,
        )
        send = dict(zip(STAGE_NAMES, (float(p.pp_s[0]) / 2.0 for p in parts), strict=True))
        pp = phase.layout.pp
        per_stage = [
            send["first" if r == 0 else "last" if r == pp - 1 else "middle"] for r in range(pp)
        ]
        return timeline, per_stage

    return ctx.cached("pipeline", compute)


def _step_tail_s(ctx: ReportContext) -> tuple[float, float]:
    """(exposed data-parallel gradient sync, optimizer step) that follow the pipeline in one
    step, from the step model (costmodels.step)."""
    from scaleplan.costmodels.batch import LayoutBatch
    from scaleplan.costmodels.step import estimate_step_batch
    from scaleplan.planner.search import cluster_of

    phase = ctx.pipeline_phase
    cluster = cluster_of(ctx.plan.cluster, phase.num_gpus)
    row = estimate_step_batch(
        ctx.plan.model,
        cluster,
        LayoutBatch.from_specs([phase.layout]),
        phase.seq_length,
        with_memory=False,
    ).row(0)
    return float(row["dp_s"]), float(row["optimizer_s"])


def build(ctx: ReportContext) -> tuple[Any, str]:
    timeline, send_s = simulate_main_phase(ctx)
    events = list(timeline.events)
    if not events:
        raise Unavailable("the pipeline simulation produced no events")
    phase = ctx.pipeline_phase
    layout = phase.layout
    makespan_s = float(timeline.makespan_s)
    dp_s, opt_s = _step_tail_s(ctx)
    step_s = makespan_s + dp_s + opt_s
    scale, unit = (1e3, "ms") if step_s < 2 else (1.0, "s")

    spans: dict[tuple[int, str], list[tuple[float, float]]] = defaultdict(list)
    busy: dict[str, float] = defaultdict(float)
    stages = sorted({int(e.stage) for e in events})
    for e in events:
        start_s, end_s, kind = float(e.start_s), float(e.end_s), str(e.kind)
        if end_s <= start_s:
            continue
        busy[kind] += end_s - start_s
        comm_s = (
            min(send_s[int(e.stage)], end_s - start_s) if kind in ("forward", "backward") else 0.0
        )
        if comm_s > 0:  # the pass's p2p send closes it (the step model counts it in the pass)
            spans[(int(e.stage), "comm")].append(((end_s - comm_s) * scale, comm_s * scale))
            busy["comm"] += comm_s
            end_s -= comm_s
        spans[(int(e.stage), kind)].append((start_s * scale, (end_s - start_s) * scale))
    for stage in stages:  # gradient sync then the optimizer step close every stage's step
        if dp_s > 0:
            spans[(stage, "dp_sync")].append((makespan_s * scale, dp_s * scale))
        spans[(stage, "optimizer")].append(((makespan_s + dp_s) * scale, opt_s * scale))

    height_in = max(2.6, 0.4 * len(stages) + 1.7)
    fig, ax = style.figure(
        1,
        height_in=height_in,
        margins={"left": 0.08, "top": 1 - 0.4 / height_in, "bottom": 0.9 / height_in},
    )
    from matplotlib.collections import PolyCollection

    half = 0.4  # half a row's bar height
    for kind in KIND_COLORS:  # one collection per kind: tens of thousands of bars draw at once
        rows = [
            (stage, np.asarray(bars)) for (stage, k), bars in spans.items() if k == kind and bars
        ]
        if not rows:
            continue
        x0 = np.concatenate([b[:, 0] for _, b in rows])
        x1 = x0 + np.concatenate([b[:, 1] for _, b in rows])
        y = np.concatenate([np.full(len(b), float(stage)) for stage, b in rows])
        verts = np.stack(
            [
                np.column_stack(c)
                for c in ((x0, y - half), (x0, y + half), (x1, y + half), (x1, y - half))
            ],
            axis=1,
        )
        ax.add_collection(
            PolyCollection(
                verts,
                facecolors=KIND_COLORS[kind],
                edgecolors="white" if len(events) < 2000 else "none",
                linewidths=0.4,
            )
        )
    # micro-batch numbers, where a bar is wide enough to hold them
    axis_px = style.WIDTH_IN * (style.MARGINS["right"] - 0.08) * style.DPI
    px_per_unit = axis_px / (step_s * scale)
    passes = [
        e
        for e in events
        if str(e.kind) in ("forward", "backward") and getattr(e, "microbatch", -1) >= 0
    ]
    narrowest_px = min(((e.end_s - e.start_s) * scale * px_per_unit for e in passes), default=0.0)
    widest_label = len(str(max((e.microbatch for e in passes), default=0)))
    numbered = (
        bool(passes) and len(passes) <= MAX_LABELLED_EVENTS and narrowest_px >= 6 * widest_label + 4
    )
    if numbered:  # all or none, so a reader never wonders why some bars are unnumbered
        for e in passes:
            mid = 0.5 * (float(e.start_s) + float(e.end_s)) * scale
            ax.text(
                mid,
                int(e.stage),
                str(e.microbatch),
                ha="center",
                va="center",
                fontsize=7,
                color="white",
            )
    from matplotlib.patches import Patch

    kinds = [k for k in KIND_COLORS if any(key[1] == k for key in spans)]
    fig.legend(
        handles=[Patch(color=KIND_COLORS[k], label=KIND_LABELS[k]) for k in kinds],
        loc="lower center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=len(kinds),
    )
    ax.set_yticks(stages, [f"stage {s}" for s in stages])
    ax.set_ylim(max(stages) + 0.6, min(stages) - 0.6)
    ax.set_xlim(0, step_s * scale)
    ax.set_xlabel(f"time within one step ({unit})")
    ax.grid(axis="y", visible=False)
    m = layout.num_microbatches
    sched = "interleaved 1F1B" if layout.vp > 1 else "1F1B"
    stages_text = f"{layout.pp} stages" if layout.pp > 1 else "1 stage (no pipeline parallelism)"
    ax.set_title(
        f"One {phase.name} step: {sched}, {stages_text}"
        + (f" × {layout.vp} virtual" if layout.vp > 1 else "")
        + f", {m} micro-batch{'es' if m != 1 else ''}"
    )
    bubble_frac = busy.get("bubble", 0.0) / (makespan_s * len(stages)) if makespan_s > 0 else 0.0
    # Narayanan et al. 2021 eq. 1 (÷v interleaved): bubble over ideal time
    ideal = (layout.pp - 1) / (layout.vp * m) if m > 0 else 0.0
    caption = (
        f"Gantt chart of one optimizer step of the {phase.name} layout from the event-level pipeline simulation: "
        f"one row per pipeline stage, forward and backward passes of each micro-batch{' (numbered)' if numbered else ''}"
        f"{' (each narrower than a pixel here, so the rows read as texture)' if narrowest_px < 1 else ''}, "
        f"the point-to-point send that closes each pass on a pipeline (green; tensor-, context- and expert-parallel "
        f"collectives stay inside the passes), idle bubbles, then the exposed data-parallel gradient sync and the optimizer "
        f"step ({dp_s * scale:.3g} and {opt_s * scale:.3g} {unit}). Pipeline makespan {makespan_s * scale:.3g} {unit}, "
        f"whole step {step_s * scale:.3g} {unit}; "
        f"bubbles take {100 * bubble_frac:.1f} % of the pipeline's stage time (closed form (p−1)/(v·m) = "
        f"{100 * ideal:.1f} % of the ideal time)."
    )
    return fig, caption + ctx.pipeline_note()

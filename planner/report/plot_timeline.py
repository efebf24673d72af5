"""Plot 5: one training step as a Gantt chart, one row per pipeline stage, from the event-level
pipeline simulation (costmodels.pipeline): forward, backward, communication and bubbles."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

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
    "comm": "communication (p2p)",
    "bubble": "bubble (idle)",
    "dp_sync": "gradient sync (exposed)",
    "optimizer": "optimizer step",
}
MAX_LABELLED_EVENTS = 600  # micro-batch numbers drawn at most (text is the slowest thing to draw)


def stage_pass_times(ctx: ReportContext) -> tuple[list[float], list[float], float]:
    """Per pipeline stage, one micro-batch's forward and backward seconds, and the p2p delay.

    Composed from the step model's own per-stage terms (costmodels.step_parts: the one
    definition of a stage's time per micro-batch, communication and overheads included): each
    stage's time less its p2p sends is split into forward and backward in the ratio of that
    stage's forward to total compute (costmodels.compute.layer_times; backward and recompute
    go with the backward pass, Narayanan et al. 2021 eq. 3)."""
    from scaleplan.costmodels.batch import LayoutBatch
    from scaleplan.costmodels.compute import layer_times
    from scaleplan.costmodels.step_parts import STAGE_NAMES, stage_parts

    phase = ctx.main_phase
    model, cluster, lay = ctx.plan.model, ctx.plan.cluster, phase.layout
    from scaleplan.planner.search import cluster_of

    cluster = cluster_of(cluster, phase.num_gpus)
    batch = LayoutBatch.from_specs([lay])
    prof = cluster.profile
    parts = dict(
        zip(STAGE_NAMES, stage_parts(model, cluster, batch, phase.seq_length, prof), strict=True)
    )
    lt = layer_times(
        model,
        cluster.gpu,
        prof,
        phase.seq_length,
        batch.tp,
        batch.cp,
        batch.ep,
        batch.etp,
        batch.micro_batch,
        batch.sequence_parallel,
        batch.precision,
    )
    pp = lay.pp
    per_stage_layers = model.num_layers / pp
    moe_share = model.num_moe_layers / model.num_layers
    fwd_layers = per_stage_layers * (
        (1 - moe_share) * float(lt.dense_fwd_s[0]) + moe_share * float(lt.moe_fwd_s[0])
    )
    fwd_s: list[float] = []
    bwd_s: list[float] = []
    p2p_s = 0.0
    for rank in range(pp):
        name = "first" if rank == 0 else "last" if rank == pp - 1 else "middle"
        part = parts[name]
        forward = fwd_layers
        if rank == 0:
            forward += float(lt.embed_fwd_s[0])
        if rank == pp - 1:
            forward += float(lt.head_fwd_s[0])
        compute = float(part.compute_s[0])
        share = min(max(forward / compute, 0.0), 1.0) if compute > 0 else 1.0 / 3.0
        p2p_s = float(part.pp_s[0]) / 2.0  # one send forward, one backward per micro-batch
        busy = float(part.total_s[0]) - float(part.pp_s[0])
        fwd_s.append(share * busy)
        bwd_s.append((1.0 - share) * busy)
    return fwd_s, bwd_s, p2p_s


def simulate_main_phase(ctx: ReportContext) -> Any:
    """The event-level pipeline timeline of the main phase's layout, cached on the context."""

    def compute() -> Any:
        try:
            from scaleplan.costmodels.pipeline import simulate_schedule
        except ImportError:
            raise Unavailable(
                "the event-level pipeline simulation (scaleplan.costmodels.pipeline) is not available in this installation"
            ) from None
        layout = ctx.main_phase.layout
        fwd, bwd, p2p = stage_pass_times(ctx)
        return simulate_schedule(fwd, bwd, max(layout.num_microbatches, 1), layout.vp, p2p)

    return ctx.cached("pipeline", compute)


def _step_tail_s(ctx: ReportContext) -> tuple[float, float]:
    """(exposed data-parallel gradient sync, optimizer step) that follow the pipeline in one
    step, from the step model (costmodels.step)."""
    from scaleplan.costmodels.batch import LayoutBatch
    from scaleplan.costmodels.step import estimate_step_batch
    from scaleplan.planner.search import cluster_of

    phase = ctx.main_phase
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
    timeline = simulate_main_phase(ctx)
    events = list(timeline.events)
    if not events:
        raise Unavailable("the pipeline simulation produced no events")
    phase = ctx.main_phase
    layout = phase.layout
    makespan_s = float(timeline.makespan_s)
    dp_s, opt_s = _step_tail_s(ctx)
    step_s = makespan_s + dp_s + opt_s
    scale, unit = (1e3, "ms") if step_s < 2 else (1.0, "s")

    spans: dict[tuple[int, str], list[tuple[float, float]]] = defaultdict(list)
    busy: dict[str, float] = defaultdict(float)
    stages = sorted({int(e.stage) for e in events})
    for e in events:
        width = (float(e.end_s) - float(e.start_s)) * scale
        if width <= 0:
            continue
        spans[(int(e.stage), str(e.kind))].append((float(e.start_s) * scale, width))
        busy[str(e.kind)] += width / scale
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
    height = 0.8
    for (stage, kind), bars in sorted(spans.items()):
        ax.broken_barh(
            bars,
            (stage - height / 2, height),
            facecolors=KIND_COLORS.get(kind, style.COLORS["grey"]),
            edgecolor="white" if len(events) < 2000 else "none",
            linewidth=0.4,
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
        f"one row per pipeline stage, forward and backward passes of each micro-batch{' (numbered)' if numbered else ''}, "
        f"point-to-point communication and idle bubbles, then the exposed data-parallel gradient sync and the optimizer "
        f"step ({dp_s * scale:.3g} and {opt_s * scale:.3g} {unit}). Pipeline makespan {makespan_s * scale:.3g} {unit}, "
        f"whole step {step_s * scale:.3g} {unit}; "
        f"bubbles take {100 * bubble_frac:.1f} % of the pipeline's stage time (closed form (p−1)/(v·m) = "
        f"{100 * ideal:.1f} % of the ideal time)."
    )
    return fig, caption

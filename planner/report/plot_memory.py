"""Plot 4: memory per GPU by component for the first, a middle and the last pipeline stage of
the main phase's layout, against the GPU's HBM capacity. One memory model: costmodels.memory."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import style
from .context import ReportContext
from .figures import Unavailable

GIB = 2**30


def components_of(result: Any) -> dict[str, float]:
    """{component name: bytes} of layout 0 of a `memory_per_gpu` result, without the total."""
    parts = dict(result.component(0))
    parts.pop("total", None)
    return parts


def stages_to_show(pp: int) -> list[tuple[str, int]]:
    """(stage kind, stage index) for the first, a middle and the last stage."""
    if pp == 1:
        return [("first", 0)]  # one stage holds embedding and LM head alike
    if pp == 2:
        return [("first", 0), ("last", 1)]
    return [("first", 0), ("middle", pp // 2), ("last", pp - 1)]


def _gib(value: float) -> str:
    return "<0.1" if 0 < value < 0.05 else f"{value:.1f}"


def _pretty(name: str) -> str:
    return name.removesuffix("_bytes").replace("_", " ")


def build(ctx: ReportContext) -> tuple[Any, str]:
    try:
        from scaleplan.costmodels.memory import memory_per_gpu
    except ImportError:
        raise Unavailable(
            "the memory model (scaleplan.costmodels.memory) is not available in this installation"
        ) from None
    from scaleplan.costmodels.batch import LayoutBatch

    phase = ctx.pipeline_phase
    layout = phase.layout
    batch = LayoutBatch.from_specs([layout])
    stages = stages_to_show(layout.pp)
    per_stage = [
        components_of(memory_per_gpu(ctx.plan.model, batch, phase.seq_length, kind))
        for kind, _ in stages
    ]
    names = [n for n in per_stage[0] if any(s.get(n, 0.0) > 0 for s in per_stage)]
    if not names:
        raise Unavailable("the memory model returned no components for this layout")
    hbm_gib = ctx.plan.cluster.gpu.hbm_bytes / GIB

    fig, ax = style.figure(
        1, height_in=4.8, margins={"left": 0.07, "right": 0.74, "top": 0.91, "bottom": 0.13}
    )
    x = np.arange(len(stages))
    bottom = np.zeros(len(stages))
    palette = [
        style.COLORS[k]
        for k in ("blue", "orange", "green", "purple", "sky", "red", "yellow", "grey", "black")
    ]
    for i, name in enumerate(names):
        vals = np.array([s.get(name, 0.0) for s in per_stage]) / GIB
        lo_text, hi_text = _gib(float(vals.min())), _gib(float(vals.max()))
        span = hi_text if lo_text == hi_text else f"{lo_text}–{hi_text}"
        ax.bar(
            x,
            vals,
            bottom=bottom,
            width=0.55,
            color=palette[i % len(palette)],
            label=f"{_pretty(name)}: {span} GiB",
            edgecolor="white",
            lw=0.5,
        )
        bottom += vals
    for xi, total in zip(x, bottom, strict=True):
        ax.text(
            xi, total, f"{total:.1f} GiB", ha="center", va="bottom", fontsize=9, fontweight="bold"
        )
    ax.axhline(
        hbm_gib, color=style.CHOSEN, ls="--", lw=1.5, label=f"HBM capacity {hbm_gib:.1f} GiB"
    )
    ax.set_xticks(x, [f"{kind} stage\n(stage {idx} of {layout.pp})" for kind, idx in stages])
    ax.set_xlim(-0.9, len(stages) - 0.1)
    ax.set_ylabel("memory per GPU (GiB)")
    ax.set_ylim(0, max(hbm_gib, float(bottom.max())) * 1.15)
    ax.grid(axis="x", visible=False)
    handles, labels = ax.get_legend_handles_labels()
    # the HBM line first, then the components top-down, in the order they are stacked
    order = [labels.index(next(lab for lab in labels if lab.startswith("HBM")))] + [
        i for i in reversed(range(len(labels))) if not labels[i].startswith("HBM")
    ]
    ax.legend(
        [handles[i] for i in order],
        [labels[i] for i in order],
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
    )
    lay = f"TP{layout.tp} PP{layout.pp} CP{layout.cp} DP{layout.dp}" + (
        (f" EP{layout.ep}" if layout.ep > 1 else "")
        + (f" ETP{layout.expert_tp}" if layout.expert_tp != layout.tp else "")
    )
    ax.set_title(
        f"Memory per GPU, {phase.name} ({lay}, micro-batch {layout.micro_batch}, seq {phase.seq_length})"
    )
    worst = float(bottom.max())
    caption = (
        f"Memory per GPU of the {phase.name} layout ({lay}, ZeRO {layout.zero_stage}"
        f"{', distributed optimizer' if layout.distributed_optimizer else ''}, recompute {layout.recompute}) by component "
        f"for {', '.join(f'the {k} stage' for k, _ in stages)}, stacked, against the {ctx.plan.cluster.gpu.name}'s "
        f"{hbm_gib:.1f} GiB of HBM (dashed). The fullest stage uses {worst:.1f} GiB ({100 * worst / hbm_gib:.0f} % of HBM)."
    )
    return fig, caption + ctx.pipeline_note()

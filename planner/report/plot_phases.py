"""Plot 6: wall-clock time and dollars per phase."""

from __future__ import annotations

from typing import Any

from . import style
from .context import ReportContext

TITLE = "Time and cost per phase"


def _time_unit(seconds: list[float]) -> tuple[float, str]:
    longest = max(seconds, default=0.0)
    if longest >= 3 * 86400:
        return 86400.0, "days"
    if longest >= 3 * 3600:
        return 3600.0, "hours"
    if longest >= 180:
        return 60.0, "minutes"
    return 1.0, "seconds"


def build(ctx: ReportContext) -> tuple[Any, str]:
    phases = ctx.plan.phases
    names = [p.name for p in phases]
    seconds = [p.time_s for p in phases]
    dollars = [p.cost_usd for p in phases]
    scale, unit = _time_unit(seconds)
    colors = [style.PHASE_COLORS.get(n, style.COLORS["grey"]) for n in names]

    height_in = max(2.6, 0.55 * len(names) + 1.3)
    fig, (ax_t, ax_d) = style.figure(
        2,
        height_in=height_in,
        margins={
            "left": 0.11,
            "wspace": 0.1,
            "top": 1 - 0.4 / height_in,
            "bottom": 0.55 / height_in,
        },
    )
    y = list(range(len(names)))
    ax_t.barh(y, [s / scale for s in seconds], color=colors)
    ax_d.barh(y, dollars, color=colors)
    for ax in (ax_t, ax_d):
        ax.set_yticks(y, [f"{n}\n{p.num_gpus} GPUs" for n, p in zip(names, phases, strict=True)])
        ax.invert_yaxis()
        ax.grid(axis="y", visible=False)
    total_s, total_usd = sum(seconds), sum(dollars)
    ax_t.set_title(f"Wall-clock time (total {total_s / scale:.3g} {unit})")
    ax_t.set_xlabel(f"time ({unit})")
    ax_d.set_title(f"Cost (total {style.dollars(total_usd)})")
    ax_d.set_xlabel("cost (USD)")
    ax_d.set_yticklabels([])
    labels = [
        (ax_t, [v / scale for v in seconds], [style.duration(v) for v in seconds]),
        (ax_d, dollars, [style.dollars(v) for v in dollars]),
    ]
    for ax, values, texts in labels:
        top = max(values, default=0.0) or 1.0
        ax.set_xlim(0, top * 1.25)
        for yi, v, text in zip(y, values, texts, strict=True):
            ax.text(v + top * 0.01, yi, text, va="center", fontsize=9)
    from matplotlib.ticker import FuncFormatter

    ax_d.xaxis.set_major_formatter(
        FuncFormatter(lambda v, _pos: style.dollars(v) if v > 0 else "0")
    )
    share = (
        [f"{n} {100 * d / total_usd:.0f} %" for n, d in zip(names, dollars, strict=True)]
        if total_usd > 0
        else []
    )
    caption = (
        f"Predicted wall-clock time ({unit}) and cost (USD) of each of the {len(names)} phases as the plan "
        "records them: optimizer steps × the step model's time per step (with rollout and reference passes for "
        f"DPO/GRPO), and cost = time × GPUs × ${ctx.plan.cluster.price_usd_per_gpu_hour:.2f} per GPU-hour. "
        + (f"Share of cost: {', '.join(share)}." if share else "")
    )
    return fig, caption

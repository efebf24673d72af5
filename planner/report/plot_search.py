"""Plot 3: the layout search. Left: step time against dollars per million tokens for the
evaluated layouts (coloured by memory headroom), the Pareto front, the chosen layout, and the
out-of-memory layouts apart (grey crosses, at the time they would take). Right: why the other
layouts were rejected, by rule, with the out-of-memory families and their closest miss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import style
from .context import ReportContext
from .figures import Unavailable

MAX_POINTS = 20_000  # scatter at most this many layouts (a deterministic thinning beyond it)
MAX_REASON_CHARS = 50


@dataclass(frozen=True)
class Scatter:
    """Arrays over layouts: step time, dollars per million tokens, memory headroom."""

    step_time_s: np.ndarray
    usd_per_mtok: np.ndarray
    headroom_gib: np.ndarray
    oom_step_time_s: np.ndarray  # out-of-memory layouts, at the time they would take
    oom_usd_per_mtok: np.ndarray
    evaluated: int
    reproduced: bool  # the re-run search picks the plan's own layout


def _search_summary(ctx: ReportContext) -> dict[str, Any]:
    summary = ctx.plan.search.get(ctx.main_phase.name)
    if not isinstance(summary, dict) or not summary.get("pareto"):
        raise Unavailable(
            f"the plan records no layout search for its {ctx.main_phase.name} phase "
            "(its `search` field has no Pareto front)"
        )
    return summary


def _target_sequences(ctx: ReportContext) -> float:
    """The global batch (in sequences) the planner asked the search for."""
    phase = ctx.main_phase
    batch_tokens = ctx.plan.law.get("batch_tokens_law") if phase.name == "pretrain" else None
    return (
        max(float(batch_tokens) / phase.seq_length, 1.0)
        if batch_tokens
        else float(phase.layout.global_batch)
    )


def _rerun(ctx: ReportContext) -> Scatter | None:
    """Every layout the search evaluated, re-run from the plan's model, cluster and phase; None
    where this build's search cannot hand its candidates out."""
    try:
        from scaleplan.planner.search_evaluated import evaluated_layouts
    except ImportError:
        return None
    phase = ctx.main_phase
    if phase.name != "pretrain":  # post-training searches run over slices of the cluster
        return None
    from scaleplan.planner.search import NoLayoutFits, cluster_of

    cluster = cluster_of(ctx.plan.cluster, phase.num_gpus)
    try:
        ev = evaluated_layouts(ctx.plan.model, cluster, phase.seq_length, _target_sequences(ctx))
    except NoLayoutFits:  # the plan was made under another cost model: draw what it recorded
        return None
    return Scatter(
        step_time_s=np.asarray(ev.step_time_s, dtype=float),
        usd_per_mtok=np.asarray(ev.usd_per_token, dtype=float) * 1e6,
        headroom_gib=np.asarray(ev.headroom_bytes, dtype=float) / 2**30,
        oom_step_time_s=np.asarray(ev.oom_step_time_s, dtype=float),
        oom_usd_per_mtok=np.asarray(ev.oom_usd_per_token, dtype=float) * 1e6,
        evaluated=int(ev.layouts_evaluated),
        reproduced=ev.result.best == phase.layout,
    )


def _thin(n: int) -> np.ndarray:
    return np.arange(n) if n <= MAX_POINTS else np.linspace(0, n - 1, MAX_POINTS).astype(int)


def _chosen_point(ctx: ReportContext, pareto: list[dict[str, Any]]) -> tuple[float, float]:
    """(step time, $/M tokens) of the plan's layout: its Pareto entry when it is on the front
    (the search's best is), else the phase's own figures."""
    from scaleplan.costmodels.batch import LayoutBatch
    from scaleplan.planner.search_report import describe

    phase = ctx.main_phase
    name = describe(LayoutBatch.from_specs([phase.layout]), 0, phase.num_gpus)
    for entry in pareto:
        if entry.get("layout") == name:
            return float(entry["step_time_s"]), float(entry["usd_per_million_tokens"])
    step_s = phase.estimate.step_time_s if phase.estimate else phase.time_s / max(phase.steps, 1)
    return step_s, phase.cost_usd / max(phase.tokens, 1.0) * 1e6


def _short(text: str) -> str:
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def build(ctx: ReportContext) -> tuple[Any, str]:
    summary = _search_summary(ctx)
    pareto = [p for p in summary["pareto"] if "step_time_s" in p and "usd_per_million_tokens" in p]
    phase = ctx.main_phase
    scatter = ctx.cached("search_rerun", lambda: _rerun(ctx))

    fig, (ax, ax_r) = style.figure(
        2,
        height_in=5.2,
        margins={"left": 0.07, "right": 0.975, "wspace": 0.22, "bottom": 0.11, "top": 0.92},
        gridspec_kw={"width_ratios": [1.75, 1.0]},
    )
    described = []
    if scatter is not None and scatter.step_time_s.size:
        idx = _thin(scatter.step_time_s.size)
        sc = ax.scatter(
            scatter.step_time_s[idx],
            scatter.usd_per_mtok[idx],
            c=scatter.headroom_gib[idx],
            cmap=style.sequential_cmap(),
            s=9,
            alpha=0.6,
            lw=0,
            zorder=2,
            label=f"fits in memory ({scatter.step_time_s.size:,})",
        )
        fig.colorbar(sc, ax=ax, label="memory headroom (GiB)", pad=0.01)
        if scatter.oom_step_time_s.size:
            j = _thin(scatter.oom_step_time_s.size)
            ax.scatter(
                scatter.oom_step_time_s[j],
                scatter.oom_usd_per_mtok[j],
                marker="x",
                s=12,
                lw=0.8,
                color=style.REJECTED,
                alpha=0.5,
                zorder=1,
                label=f"out of memory ({scatter.oom_step_time_s.size:,})",
            )
        described.append(
            f"Left: every layout of the {phase.name} search that fits in memory "
            f"({scatter.step_time_s.size:,} of {scatter.evaluated:,} evaluated), step time against cost per "
            "million tokens, coloured by memory headroom; out-of-memory layouts as grey crosses at the step "
            "time they would take"
            + (
                ""
                if scatter.reproduced
                else " (a re-run of the search now picks another layout than the plan's: the plan "
                "predates this cost model or was edited)"
            )
        )
    else:
        described.append(
            f"Left: the Pareto front the {phase.name} search recorded in the plan (this build's search does "
            "not hand out every evaluated layout, so only the front is drawn)"
        )
    t = np.array([p["step_time_s"] for p in pareto])
    d = np.array([p["usd_per_million_tokens"] for p in pareto])
    order = np.argsort(t)
    ax.scatter(
        t[order],
        d[order],
        marker="o",
        s=34,
        facecolor="white",
        edgecolor=style.FIT,
        lw=1.3,
        zorder=5,
        label=f"Pareto front over time, $ and headroom ({len(pareto)})",
    )
    chosen_t, chosen_d = _chosen_point(ctx, pareto)
    style.mark_chosen(ax, chosen_t, chosen_d, "chosen layout")
    ax.set_xlabel("step time (s)")
    ax.set_ylabel("cost (USD per million tokens)")
    ax.set_title(f"{phase.name} layouts on {phase.num_gpus} GPUs")
    ax.legend(loc="upper left")
    described.append(
        f"; the open circles are the Pareto front over time, dollars and memory headroom, and the star the chosen "
        f"layout ({chosen_t:.3g} s per step, ${chosen_d:.3g} per million tokens), the fastest per token "
        "(layouts differ in global batch, so step times differ at equal speed per token)."
    )

    # Right: rejections by rule, out of memory highlighted
    by_rule = {str(k): int(v) for k, v in (summary.get("rejected_by_rule") or {}).items()}
    if by_rule:
        rules = sorted(by_rule, key=by_rule.get, reverse=True)[:8]
        counts = [by_rule[r] for r in rules]
        colors = [style.COLORS["red"] if r == "out of memory" else style.REJECTED for r in rules]
        y = np.arange(len(rules))
        ax_r.barh(y, counts, height=0.45, color=colors)
        for yi, rule in zip(y, rules, strict=True):  # the reason above its bar, not beside it
            ax_r.text(0, yi - 0.28, _short(rule), va="bottom", ha="left", fontsize=8)
        ax_r.set_yticks([])
        ax_r.set_ylim(len(rules) - 0.5, -0.85)
        ax_r.set_xlabel("layouts rejected")
        ax_r.grid(axis="y", visible=False)
        for yi, c in zip(y, counts, strict=True):
            ax_r.text(c, yi, f" {c:,}", va="center", fontsize=8)
        ax_r.set_xlim(0, max(counts) * 1.3)
        from matplotlib.ticker import FuncFormatter, MaxNLocator

        ax_r.xaxis.set_major_locator(MaxNLocator(4, integer=True))
        ax_r.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: style.human(v)))
        oom = [r for r in summary.get("rejected") or [] if r.get("rule") == "out of memory"]
        if oom:  # whole families out of memory, apart, in a band kept free below the bars
            shown = oom[:4]
            lines = "\n".join(
                f"{r['family']}: short by ≥ {r.get('closest_miss_gib', float('nan')):.1f} GiB"
                for r in shown
            )
            ax_r.set_ylim(len(rules) + 0.55 * (len(shown) + 1), -0.85)
            ax_r.text(
                0.98,
                0.02,
                "families entirely out of memory\n" + lines,
                transform=ax_r.transAxes,
                ha="right",
                va="bottom",
                fontsize=8,
                color=style.COLORS["red"],
                bbox={"facecolor": "white", "edgecolor": style.COLORS["red"], "alpha": 0.9},
            )
        described.append(
            " Right: why the other layouts were rejected, by rule (out of memory in red)"
            + (
                f"; whole families out of memory: {', '.join(r['family'] for r in oom[:5])}, with their closest miss."
                if oom
                else "."
            )
        )
    else:
        ax_r.axis("off")
        style.note(ax_r, "the plan records no rejection counts")
    ax_r.set_title("Rejected layouts by reason")
    return fig, "".join(described)

"""Plot 1: the scaling law. Left: loss against compute along the compute-optimal frontier with
its bootstrap band and the fitted runs, or the IsoFLOP curves when the fit came from IsoFLOP
slices. Right: N_opt(C) and D_opt(C) with their bands. The plan's (N, D) is starred on both."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import style
from .context import ReportContext
from .law_data import (
    FLOPS_PER_PARAM_TOKEN,
    LawView,
    band,
    budget_labels,
    chosen_nd,
    frontier_loss,
    has_loss,
    law_view,
    load_fit_law,
)

BAND = (2.5, 97.5)  # percentiles: the 95 % bootstrap interval, as `scaleplan fit` reports CIs

__all__ = ["build", "load_fit_law"]


def _isoflop_panel(ax: Any, view: LawView, n_chosen: float, d_chosen: float) -> str:
    """IsoFLOP slices: runs per budget, the fit's parabolas in log N (Hoffmann et al. 2022
    Sec. 3.2) or the law's curves, and each budget's optimum."""
    law, pts = view.law, view.points
    labels = budget_labels(pts["flops"])
    budgets = [np.flatnonzero(labels == lab) for lab in np.unique(labels)]
    cmap = style.sequential_cmap()
    colour = {i: cmap(0.05 + 0.85 * i / max(1, len(budgets) - 1)) for i in range(len(budgets))}
    budget_c = [float(np.exp(np.mean(np.log(pts["flops"][idx])))) for idx in budgets]
    for i, idx in enumerate(budgets):
        ax.scatter(pts["N"][idx], pts["loss"][idx], s=16, color=colour[i], zorder=3, alpha=0.85)

    def nearest(c: float) -> int:
        return int(np.argmin([abs(np.log(c / b)) for b in budget_c]))

    drawn = 0
    for p in view.parabolas:  # the fit's own parabolas: loss = c2 x^2 + c1 x + c0, x = ln N
        i = nearest(p["C"])
        xs = np.linspace(p["log_n_min"] - 0.2, p["log_n_max"] + 0.2, 50)
        ax.plot(np.exp(xs), p["c2"] * xs**2 + p["c1"] * xs + p["c0"], color=colour[i], lw=1.3)
        drawn += 1
    if not view.parabolas and has_loss(law):  # a loss surface: its IsoFLOP curves
        for i, idx in enumerate(budgets):
            c = budget_c[i]
            n_line = np.geomspace(pts["N"][idx].min() / 1.5, pts["N"][idx].max() * 1.5, 50)
            ax.plot(
                n_line,
                law.loss(n_line, c / (FLOPS_PER_PARAM_TOKEN * n_line)),
                color=colour[i],
                lw=1.3,
            )
            drawn += 1
    if "N_opt" in view.optima and "loss_opt" in view.optima:
        for c, n, loss in zip(
            view.optima["C"], view.optima["N_opt"], view.optima["loss_opt"], strict=True
        ):
            ax.scatter(
                [n], [loss], marker="D", s=34, color=colour[nearest(c)], edgecolor="black", zorder=5
            )
    elif has_loss(law):
        for i, c in enumerate(budget_c):
            n = float(np.asarray(law.optimal(c)[0]))
            loss = float(law.loss(n, c / (FLOPS_PER_PARAM_TOKEN * n)))
            ax.scatter([n], [loss], marker="D", s=34, color=colour[i], edgecolor="black", zorder=5)
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker="o", ls="-", color=colour[0], label=f"C = {budget_c[0]:.2g} FLOPs"),
        Line2D(
            [],
            [],
            marker="o",
            ls="-",
            color=colour[len(budgets) - 1],
            label=f"C = {budget_c[-1]:.2g} FLOPs",
        ),
        Line2D(
            [],
            [],
            marker="D",
            ls="",
            color="white",
            markeredgecolor="black",
            label="each budget's optimum",
        ),
    ]
    c_chosen = FLOPS_PER_PARAM_TOKEN * n_chosen * d_chosen
    if has_loss(law):
        n_line = np.geomspace(n_chosen / 8, n_chosen * 8, 50)
        ax.plot(
            n_line,
            law.loss(n_line, c_chosen / (FLOPS_PER_PARAM_TOKEN * n_line)),
            color=style.CHOSEN,
            ls="--",
            lw=1.2,
        )
        style.mark_chosen(ax, n_chosen, float(law.loss(n_chosen, d_chosen)), "plan's (N, D)")
    else:  # a frontier-only law places N, not a loss
        ax.axvline(n_chosen, color=style.CHOSEN, ls="--", lw=1.4)
        handles.append(
            Line2D([], [], color=style.CHOSEN, ls="--", label=f"plan's N = {style.human(n_chosen)}")
        )
    ax.legend(handles=handles + ax.get_legend_handles_labels()[0], loc="best")
    style.log_scale(ax, "x")
    ax.set_xlabel("parameters N")
    ax.set_title("IsoFLOP curves")
    return (
        f"Left: IsoFLOP slices, loss against model size at {len(budgets)} compute budgets (colour: budget, "
        f"from {budget_c[0]:.2g} to {budget_c[-1]:.2g} FLOPs), {'the fit' if view.parabolas else 'the law'}'s "
        f"curve through each ({drawn} drawn) and each budget's optimum (diamonds); the plan's "
        + (
            "(N, D) is the star on the law's curve at its compute (dashed)."
            if has_loss(law)
            else "N is the dashed line."
        )
    )


def _frontier_panel(
    fig: Any, ax: Any, view: LawView, compute: np.ndarray, n_chosen: float, d_chosen: float
) -> str:
    law, pts = view.law, view.points
    c_chosen = FLOPS_PER_PARAM_TOKEN * n_chosen * d_chosen
    if view.has_points:
        coloured = "N" in pts
        sc = ax.scatter(
            pts["flops"],
            pts["loss"],
            s=22,
            edgecolor="white",
            linewidth=0.4,
            c=np.log10(pts["N"]) if coloured else style.DATA,
            cmap=style.sequential_cmap() if coloured else None,
            alpha=0.85,
            zorder=3,
            label=f"fitted runs ({pts['loss'].size})",
        )
        if coloured:
            fig.colorbar(sc, ax=ax, label="log10 parameters", pad=0.01)
    else:
        style.note(ax, "no data points: preset law")
    curve = frontier_loss(law, compute)
    drew_band = False
    if curve is not None:
        fitted = view.has_points or bool(view.samples)
        ax.plot(
            compute,
            curve,
            color=style.FIT,
            label="fitted frontier L(N_opt, D_opt)" if fitted else "law's frontier",
        )
        b = band(view.samples, compute, frontier_loss, BAND)
        if b is not None:
            drew_band = True
            ax.fill_between(
                compute,
                b[0],
                b[1],
                color=style.FIT,
                alpha=style.BAND_ALPHA,
                lw=0,
                label="95 % bootstrap band",
            )
        chosen_loss = (
            float(law.loss(n_chosen, d_chosen))
            if has_loss(law)
            else float(np.interp(np.log(c_chosen), np.log(compute), curve))
        )
        style.mark_chosen(ax, c_chosen, chosen_loss, "plan's (N, D)")
        text = (
            "Left: loss against training compute C = 6ND along the compute-optimal frontier"
            + (" with its 95 % bootstrap band" if drew_band else "")
            + (", the fitted runs as points (colour: model size)" if view.has_points else "")
            + "; the star is the plan's (N, D)."
        )
    else:
        style.note(ax, "this law has no loss model", "upper right")
        text = "Left: this law gives no loss model (a frontier fit), so only the fitted runs are shown."
    style.log_scale(ax, "x")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_title("Loss on the compute-optimal frontier")
    ax.legend(loc="lower left" if view.has_points else "upper right")
    return text


def _optimal_panel(
    ax: Any, view: LawView, compute: np.ndarray, n_chosen: float, d_chosen: float
) -> str:
    law = view.law
    n_opt, d_opt = (np.asarray(v, dtype=float) for v in law.optimal(compute))
    ax.plot(compute, n_opt, color=style.COLORS["blue"], label="N_opt(C) parameters")
    ax.plot(compute, d_opt, color=style.COLORS["orange"], label="D_opt(C) tokens")
    banded = False
    for which, color in ((0, style.COLORS["blue"]), (1, style.COLORS["orange"])):
        b = band(
            view.samples,
            compute,
            lambda lw, c, w=which: np.asarray(lw.optimal(c)[w], dtype=float),
            BAND,
        )
        if b is not None:
            banded = True
            ax.fill_between(compute, b[0], b[1], color=color, alpha=style.BAND_ALPHA, lw=0)
    if "N_opt" in view.optima:
        c = view.optima["C"]
        ax.scatter(
            c,
            view.optima["N_opt"],
            marker="D",
            s=30,
            color=style.COLORS["blue"],
            edgecolor="black",
            zorder=5,
            label="fitted optima N",
        )
        ax.scatter(
            c,
            view.optima["D_opt"],
            marker="D",
            s=30,
            color=style.COLORS["orange"],
            edgecolor="black",
            zorder=5,
            label="fitted optima D",
        )
    c_chosen = FLOPS_PER_PARAM_TOKEN * n_chosen * d_chosen
    style.mark_chosen(ax, c_chosen, n_chosen, f"plan: N = {style.human(n_chosen)}")
    ax.scatter(
        [c_chosen],
        [d_chosen],
        marker=style.CHOSEN_MARKER,
        s=style.CHOSEN_SIZE,
        color=style.COLORS["purple"],
        edgecolor="white",
        zorder=10,
        label=f"plan: D = {style.human(d_chosen)}",
    )
    style.log_scale(ax, "x")
    style.log_scale(ax, "y")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("parameters N / tokens D")
    ax.set_title("Compute-optimal N and D")
    ax.legend(loc="upper left")
    return (
        "Right: compute-optimal parameters N_opt(C) and tokens D_opt(C)"
        + (" with 95 % bootstrap bands" if banded else "")
        + (" and the per-budget optima the fit used (diamonds)" if "N_opt" in view.optima else "")
        + f"; stars: the plan's N = {style.human(n_chosen)} and D = {style.human(d_chosen)} at "
        f"C = {c_chosen:.3g} FLOPs ({d_chosen / n_chosen:.1f} tokens per parameter)."
    )


def build(ctx: ReportContext) -> tuple[Any, str]:
    view = law_view(ctx)
    n_chosen, d_chosen = chosen_nd(ctx)
    c_chosen = FLOPS_PER_PARAM_TOKEN * n_chosen * d_chosen
    known_c = [c_chosen, *(view.points["flops"].tolist() if view.has_points else [])]
    compute = np.geomspace(min(known_c) / 10, max(known_c) * 10, 80)

    fig, (ax_l, ax_r) = style.figure(2, margins={"wspace": 0.32})
    if view.isoflop:
        left = _isoflop_panel(ax_l, view, n_chosen, d_chosen)
    else:
        left = _frontier_panel(fig, ax_l, view, compute, n_chosen, d_chosen)
    ax_l.set_ylabel("loss (nats/token)")
    right = _optimal_panel(ax_r, view, compute, n_chosen, d_chosen)
    fig.suptitle(f"Scaling law: {view.law.name} ({view.origin})")
    tail = (
        ""
        if view.has_points
        else f" No data points: the law is a published preset ({getattr(view.law, 'source', '')})."
    )
    if ctx.plan.model.is_moe:
        tail += " For this MoE model N counts the active parameters (compute per token), as the planner applies the law."
    return fig, f"{left} {right}{tail}"

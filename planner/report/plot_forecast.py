"""Plot 2: the forecast loss through pretraining (warmup, stable) and the anneal decay, from the
multi-power schedule law along the plan's own LR schedule, with the LR beneath it."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import style
from .context import ReportContext
from .forecast_data import forecast


def build(ctx: ReportContext) -> tuple[Any, str]:
    fc = forecast(ctx)
    cum_tokens = np.cumsum(fc.tokens_per_step)
    x = cum_tokens[fc.eval_steps] / 1e9
    scale_lr = 10 ** np.floor(np.log10(fc.lr.max()))

    fig, (ax, ax_lr) = style.figure(
        1,
        2,
        height_in=5.6,
        margins={"top": 0.9, "bottom": 0.1, "hspace": 0.08},
        sharex=True,
        gridspec_kw={"height_ratios": [3.0, 1.0]},
    )
    # background: warmup, stable and decay regions of the whole schedule
    regions: list[tuple[str, float, float]] = []
    start = 0
    for phase in fc.phases:
        lr = fc.lr[start : start + phase.steps]
        peak = lr.max()
        warm = phase.schedule.warmup_steps
        decaying = np.flatnonzero(lr < peak * (1 - 1e-9))
        decay_from = next((int(i) for i in decaying if i > warm), phase.steps)
        if warm:
            regions.append(("warmup", start, start + min(warm, phase.steps)))
        if decay_from > warm:
            regions.append(("stable", start + warm, start + decay_from))
        if decay_from < phase.steps:
            regions.append(
                (
                    f"{phase.name} decay" if phase.name == "anneal" else "decay",
                    start + decay_from,
                    start + phase.steps,
                )
            )
        start += phase.steps
    merged: list[list[Any]] = []
    for name, a, b in regions:  # one band per region, across the phase boundary
        if merged and merged[-1][0] == name and merged[-1][2] >= a:
            merged[-1][2] = b
        else:
            merged.append([name, a, b])
    shade = {"warmup": style.COLORS["yellow"], "stable": style.COLORS["sky"]}
    x_max = cum_tokens[-1] / 1e9
    for name, a, b in merged:
        lo, hi = (cum_tokens[a - 1] / 1e9 if a else 0.0), cum_tokens[b - 1] / 1e9
        color = shade.get(name, style.COLORS["orange"])
        for axis in (ax, ax_lr):
            axis.axvspan(lo, hi, color=color, alpha=0.16, lw=0)
        wide = hi - lo > 0.08 * x_max
        if wide:
            at, ha = (lo + hi) / 2, "center"
        elif hi < 0.8 * x_max:
            at, ha = hi + 0.005 * x_max, "left"
        else:
            at, ha = lo - 0.005 * x_max, "right"
        ax.text(
            at,
            0.98,
            name,
            transform=ax.get_xaxis_transform(),
            ha=ha,
            va="top",
            fontsize=9,
            color=style.COLORS["black"],
        )

    ax.plot(x, fc.loss, color=style.FIT, label="forecast loss")
    ends = np.cumsum([p.steps for p in fc.phases]) - 1
    for phase, end in zip(fc.phases, ends, strict=True):
        k = int(np.searchsorted(fc.eval_steps, end))
        ax.scatter(
            [x[k]],
            [fc.loss[k]],
            color=style.PHASE_COLORS.get(phase.name, style.FIT),
            s=40,
            zorder=5,
            edgecolor="black",
            label=f"end of {phase.name}: {fc.loss[k]:.3f}",
        )
    # the first steps' loss is far above the rest: scale to the loss after 1 % of the steps
    settled = fc.loss[fc.eval_steps >= 0.01 * len(fc.lr)]
    low, top = float(fc.loss.min()), float(settled.max())
    ax.set_ylim(low - 0.08 * (top - low), top + 0.15 * (top - low))
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(f"Forecast loss{'' if fc.fitted else ' (default prior, shifted)'}")
    ax.legend(loc="center right")

    ax_lr.plot(cum_tokens / 1e9, fc.lr / scale_lr, color=style.COLORS["blue"], lw=1.4)
    ax_lr.set_ylabel(f"LR (×{scale_lr:.0e})")
    ax_lr.set_xlabel("tokens (billions)")
    ax_lr.set_ylim(0, fc.lr.max() / scale_lr * 1.15)
    ax_lr.set_xlim(0, x_max * 1.01)

    gain = ""
    if len(fc.phases) > 1:
        k0 = int(np.searchsorted(fc.eval_steps, ends[0]))
        gain = f" The anneal lowers the forecast loss by {fc.loss[k0] - fc.loss[-1]:.3f} nats."
    source = (
        f"the multi-power schedule law (Luo et al. 2025) fitted to your loss curves ({fc.origin})"
        if fc.fitted
        else f"the multi-power law's default parameters ({fc.origin}) as the shape, shifted by {fc.shift:+.3f} nats so the "
        "final loss equals the scaling law's L(N, D); no schedule fit was given (budget law.schedule_fit), so read "
        "the differences between phases, not the level"
    )
    caption = (
        f"Forecast training loss against tokens through {' and '.join(p.name for p in fc.phases)} "
        f"({len(fc.lr):,} optimizer steps), with the warmup, stable and decay regions shaded and the LR schedule "
        f"below, from {source}.{gain} Post-training phases optimise other objectives and are not drawn."
    )
    return fig, caption

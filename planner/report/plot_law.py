"""Plot 1: the scaling law. Left: loss against compute (the fitted compute-optimal frontier with
its bootstrap band and the data points), or IsoFLOP curves when the fit came from IsoFLOP data.
Right: N_opt(C) and D_opt(C) with their bands. The plan's (N, D) is the red star on both."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scaleplan.specs.errors import SpecError

from . import style
from .context import ReportContext
from .figures import Unavailable

FLOPS_PER_PARAM_TOKEN = 6.0  # C = 6ND (Kaplan et al. 2020 eq. 2.1), as the law engine uses
BAND = (5.0, 95.0)  # percentiles of the bootstrap band
MAX_BAND_SAMPLES = 400  # enough for stable 5/95 % percentiles, cheap to evaluate


@dataclass
class LawView:
    """The law to draw and what is known about how it was obtained."""

    law: Any  # scaleplan.planner.laws.Law
    origin: str  # "fit FILE (method)" or "preset NAME"
    method: str | None = None
    points: dict[str, np.ndarray] = field(default_factory=dict)  # N, D, loss, flops
    samples: list[Any] = field(default_factory=list)  # bootstrap laws


def load_fit_law(path: str) -> Any:
    """The law of a FIT.json (raises SpecError naming the file when it is unreadable)."""
    from scaleplan.planner.laws import load_law

    return load_law(None, path)


def _bootstrap_laws(doc: dict[str, Any], law: Any) -> list[Any]:
    """Laws rebuilt from the bootstrap parameter samples a FIT.json records (any of: a list of
    param dicts, or a dict of equal-length lists keyed by parameter)."""
    from scaleplan.planner.laws import law_from_dict

    boot = doc.get("bootstrap") or {}
    raw = boot.get("samples") if isinstance(boot, dict) else None
    if isinstance(raw, dict):  # columns -> rows
        keys = list(raw)
        raw = [
            dict(zip(keys, row, strict=True)) for row in zip(*(raw[k] for k in keys), strict=True)
        ]
    if not isinstance(raw, list):
        return []
    base = law.to_dict()
    laws = []
    for sample in raw[:MAX_BAND_SAMPLES]:
        params = sample.get("params", sample) if isinstance(sample, dict) else None
        if not isinstance(params, dict) or any(v is None for v in params.values()):
            continue
        try:
            laws.append(law_from_dict({**base, "params": {**base["params"], **params}}))
        except SpecError:
            continue
    return laws


def law_view(ctx: ReportContext) -> LawView:
    """The fitted law (with its data) when a FIT.json is known, else the plan's preset law."""
    from scaleplan.planner.laws import get_preset, law_from_dict
    from scaleplan.planner.laws.io import read_fit

    fit_path = ctx.resolved_fit_path()
    if fit_path is not None:
        try:
            doc = read_fit(fit_path)
            law = load_fit_law(fit_path)
        except SpecError as exc:
            raise Unavailable(f"the fit file could not be read ({exc.message})") from None
        pts = doc.get("points") or {}
        points = {
            k: np.asarray(pts[k], dtype=float)
            for k in ("N", "D", "loss", "flops")
            if pts.get(k) is not None
        }
        if "flops" not in points and "N" in points and "D" in points:
            points["flops"] = FLOPS_PER_PARAM_TOKEN * points["N"] * points["D"]
        method = doc.get("method")
        return LawView(
            law,
            f"fit {fit_path}" + (f" ({method})" if method else ""),
            method,
            points,
            _bootstrap_laws(doc, law),
        )
    info = ctx.plan.law
    budget_law = ctx.plan.budget.law if ctx.plan.budget is not None else None
    preset = info.get("preset") or (
        budget_law.preset if budget_law and not budget_law.fit else None
    )
    if isinstance(info.get("form"), str) and isinstance(info.get("params"), dict):
        try:
            law = law_from_dict(info)
        except SpecError as exc:
            raise Unavailable(f"the plan's law could not be rebuilt ({exc.message})") from None
        origin = (
            f"preset {preset}" if isinstance(preset, str) else str(info.get("source") or law.name)
        )
        return LawView(law, origin)
    if isinstance(preset, str):
        try:
            return LawView(get_preset(preset), f"preset {preset}")
        except SpecError as exc:
            raise Unavailable(exc.message) from None
    raise Unavailable(
        "the plan records no scaling law (its `law` field is empty) and no fit file was given"
    )


def chosen_nd(ctx: ReportContext) -> tuple[float, float]:
    """The plan's (N, D): parameters the law was applied to, and pretraining tokens."""
    model = ctx.plan.model
    law = ctx.plan.law
    n = law.get("n_params") or (model.params_active if model.is_moe else model.params_total)
    d = law.get("tokens") or ctx.plan.tokens
    if not d:
        raise Unavailable(
            "the plan has no pretraining tokens, so there is no (N, D) to place on the law"
        )
    return float(n), float(d)


def _has_loss(law: Any) -> bool:
    try:
        law.loss(1e9, 2e10)
        return True
    except SpecError:
        return False


def _frontier_loss(law: Any, compute: np.ndarray) -> np.ndarray | None:
    if _has_loss(law):
        n, d = law.optimal(compute)
        return np.asarray(law.loss(n, d), dtype=float)
    frontier_loss = getattr(law, "frontier_loss", None)
    if frontier_loss is not None:
        try:
            return np.asarray(frontier_loss(compute), dtype=float)
        except SpecError:
            return None
    return None


def _band(samples: list[Any], compute: np.ndarray, fn: Any) -> tuple[np.ndarray, np.ndarray] | None:
    rows = []
    for law in samples:
        try:
            values = fn(law, compute)
        except (SpecError, FloatingPointError, ValueError):
            continue
        if values is not None and np.all(np.isfinite(values)):
            rows.append(values)
    if len(rows) < 10:
        return None
    stack = np.vstack(rows)
    return np.percentile(stack, BAND[0], axis=0), np.percentile(stack, BAND[1], axis=0)


def _isoflop_groups(flops: np.ndarray) -> list[np.ndarray]:
    """Indices of points sharing one compute budget (equal within 5 %), largest groups first."""
    order = np.argsort(flops)
    groups: list[list[int]] = []
    for i in order:
        if groups and flops[i] <= flops[groups[-1][0]] * 1.05:
            groups[-1].append(int(i))
        else:
            groups.append([int(i)])
    return [np.asarray(g) for g in groups if len(g) >= 3]


def build(ctx: ReportContext) -> tuple[Any, str]:
    view = law_view(ctx)
    n_chosen, d_chosen = chosen_nd(ctx)
    c_chosen = FLOPS_PER_PARAM_TOKEN * n_chosen * d_chosen
    law = view.law
    pts = view.points
    has_points = "loss" in pts and "flops" in pts and len(pts["loss"]) > 0
    lo_c = min([c_chosen, *(pts["flops"].tolist() if has_points else [])]) / 10
    hi_c = max([c_chosen, *(pts["flops"].tolist() if has_points else [])]) * 10
    compute = np.geomspace(lo_c, hi_c, 80)
    groups = _isoflop_groups(pts["flops"]) if has_points and "N" in pts else []
    isoflop = bool(groups) and (view.method or "").lower() in ("approach2", "isoflop", "approach-2")

    fig, (ax_l, ax_r) = style.figure(2, margins={"wspace": 0.32})
    described: list[str] = []

    # Left panel: loss
    if isoflop and "N" in pts:
        cmap = style.sequential_cmap()
        optima: list[tuple[float, float]] = []  # (C, N_opt) of each budget's curve
        for k, idx in enumerate(groups):
            color = cmap(0.1 + 0.8 * k / max(1, len(groups) - 1))
            c_g = float(np.median(pts["flops"][idx]))
            ax_l.scatter(
                pts["N"][idx],
                pts["loss"][idx],
                s=18,
                color=color,
                zorder=3,
                label=f"C = {c_g:.2g} FLOPs",
            )
            if _has_loss(law):
                n_line = np.geomspace(pts["N"][idx].min() / 1.5, pts["N"][idx].max() * 1.5, 60)
                ax_l.plot(
                    n_line,
                    law.loss(n_line, c_g / (FLOPS_PER_PARAM_TOKEN * n_line)),
                    color=color,
                    lw=1.2,
                )
                n_g = float(np.asarray(law.optimal(c_g)[0]))
                optima.append((c_g, n_g))
                ax_l.scatter(
                    [n_g],
                    [float(law.loss(n_g, c_g / (FLOPS_PER_PARAM_TOKEN * n_g)))],
                    marker="D",
                    s=30,
                    color=color,
                    edgecolor="black",
                    zorder=4,
                )
            else:  # Approach 2's own parabola in log N, per budget (Hoffmann et al. 2022 Sec. 3.2)
                x = np.log(pts["N"][idx])
                coef = np.polyfit(x, pts["loss"][idx], 2)
                xs = np.linspace(x.min(), x.max(), 60)
                ax_l.plot(np.exp(xs), np.polyval(coef, xs), color=color, lw=1.2)
                if coef[0] > 0:
                    x_opt = -coef[1] / (2 * coef[0])
                    optima.append((c_g, float(np.exp(x_opt))))
                    ax_l.scatter(
                        [np.exp(x_opt)],
                        [np.polyval(coef, x_opt)],
                        marker="D",
                        s=30,
                        color=color,
                        edgecolor="black",
                        zorder=4,
                    )
        if _has_loss(law):  # the law's IsoFLOP curve at the plan's own compute, through the star
            n_line = np.geomspace(n_chosen / 8, n_chosen * 8, 60)
            ax_l.plot(
                n_line,
                law.loss(n_line, c_chosen / (FLOPS_PER_PARAM_TOKEN * n_line)),
                color=style.CHOSEN,
                ls="--",
                lw=1.2,
                label=f"law at plan's C = {c_chosen:.2g}",
            )
        style.log_scale(ax_l, "x")
        ax_l.set_xlabel("parameters N")
        ax_l.set_title("IsoFLOP curves")
        if _has_loss(law):
            style.mark_chosen(ax_l, n_chosen, float(law.loss(n_chosen, d_chosen)), "plan's (N, D)")
        described.append(
            f"Left: IsoFLOP curves, loss against model size at {len(groups)} fixed compute budgets (points: the runs; lines: fitted curves; diamonds: each budget's optimum)."
        )
    else:
        if has_points:
            sc = ax_l.scatter(
                pts["flops"],
                pts["loss"],
                s=24,
                edgecolor="white",
                linewidth=0.4,
                c=np.log10(pts["N"]) if "N" in pts else style.DATA,
                cmap=style.sequential_cmap() if "N" in pts else None,
                alpha=0.8,
                zorder=3,
                label=f"runs ({len(pts['loss'])})",
            )
            if "N" in pts:
                fig.colorbar(sc, ax=ax_l, label="log10 parameters", pad=0.01)
        else:
            style.note(ax_l, "no data points: preset law")
        frontier = _frontier_loss(law, compute)
        if frontier is not None:
            ax_l.plot(
                compute,
                frontier,
                color=style.FIT,
                label="fitted frontier L(N_opt, D_opt)"
                if view.samples or has_points
                else "law's frontier",
            )
            band = _band(view.samples, compute, _frontier_loss)
            if band is not None:
                ax_l.fill_between(
                    compute,
                    band[0],
                    band[1],
                    color=style.FIT,
                    alpha=style.BAND_ALPHA,
                    lw=0,
                    label=f"{BAND[0]:.0f}–{BAND[1]:.0f} % bootstrap band",
                )
            chosen_loss = (
                float(law.loss(n_chosen, d_chosen))
                if _has_loss(law)
                else float(np.interp(np.log(c_chosen), np.log(compute), frontier))
            )
            style.mark_chosen(ax_l, c_chosen, chosen_loss, "plan's (N, D)")
            described.append(
                "Left: loss against training compute C = 6ND along the compute-optimal frontier"
                + (" with its bootstrap band" if band is not None else "")
                + (", the fitted runs as points" if has_points else "")
                + "; the star is the plan's (N, D)."
            )
        else:
            style.note(ax_l, "this law has no loss model")
            described.append(
                "Left: this law gives no loss model, so only the fitted runs are shown."
            )
        style.log_scale(ax_l, "x")
        ax_l.set_xlabel("training compute C (FLOPs)")
        ax_l.set_title("Loss on the compute-optimal frontier")
    ax_l.set_ylabel("loss (nats/token)")
    ax_l.legend(loc="upper right" if not has_points else "lower left")

    # Right panel: N_opt(C) and D_opt(C)
    n_opt, d_opt = (np.asarray(v, dtype=float) for v in law.optimal(compute))
    ax_r.plot(compute, n_opt, color=style.COLORS["blue"], label="N_opt(C) parameters")
    ax_r.plot(compute, d_opt, color=style.COLORS["orange"], label="D_opt(C) tokens")
    for which, color in ((0, style.COLORS["blue"]), (1, style.COLORS["orange"])):
        band = _band(
            view.samples, compute, lambda lw, c, w=which: np.asarray(lw.optimal(c)[w], dtype=float)
        )
        if band is not None:
            ax_r.fill_between(compute, band[0], band[1], color=color, alpha=style.BAND_ALPHA, lw=0)
    if isoflop and optima:
        c_o, n_o = (np.array(v) for v in zip(*optima, strict=True))
        ax_r.scatter(
            c_o,
            n_o,
            marker="D",
            s=30,
            color=style.COLORS["blue"],
            edgecolor="black",
            zorder=5,
            label="IsoFLOP optima N",
        )
        ax_r.scatter(
            c_o,
            c_o / (FLOPS_PER_PARAM_TOKEN * n_o),
            marker="D",
            s=30,
            color=style.COLORS["orange"],
            edgecolor="black",
            zorder=5,
            label="IsoFLOP optima D",
        )
    style.mark_chosen(ax_r, c_chosen, n_chosen, f"plan: N = {style.human(n_chosen)}")
    ax_r.scatter(
        [c_chosen],
        [d_chosen],
        marker=style.CHOSEN_MARKER,
        s=style.CHOSEN_SIZE,
        color=style.COLORS["purple"],
        edgecolor="white",
        zorder=10,
        label=f"plan: D = {style.human(d_chosen)}",
    )
    style.log_scale(ax_r, "x")
    style.log_scale(ax_r, "y")
    ax_r.set_xlabel("training compute C (FLOPs)")
    ax_r.set_ylabel("parameters / tokens")
    ax_r.set_title("Compute-optimal N and D")
    ax_r.legend(loc="upper left")
    described.append(
        "Right: compute-optimal parameters N_opt(C) and tokens D_opt(C)"
        + (" with 5–95 % bootstrap bands" if view.samples else "")
        + (" and the IsoFLOP optima (diamonds)" if isoflop else "")
        + f"; stars: the plan's N = {style.human(n_chosen)} and D = {style.human(d_chosen)} at C = {c_chosen:.3g} FLOPs"
        + f" ({d_chosen / n_chosen:.1f} tokens per parameter)."
    )
    fig.suptitle(f"Scaling law: {law.name} ({view.origin})")
    source = (
        ""
        if has_points
        else f" No data points: the law is a published preset ({getattr(law, 'source', '')})."
    )
    return fig, " ".join(described) + source

"""Plots for fits (matplotlib, Agg backend, imported lazily): IsoFLOP curves with the fitted
optimum, data over the fitted surface, and a loss-curve forecast."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .forms import FLOPS_PER_PARAM_TOKEN, law_from_dict


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_fit(doc: dict[str, Any], out: str | Path) -> None:
    """Left: loss against N with one IsoFLOP curve per budget and the fitted optimum.
    Right: measured against fitted loss (Approach 3), or N_opt(C) (Approaches 1/2)."""
    plt = _plt()
    law = law_from_dict(doc["law"])
    pts = doc["points"]
    N, L, C = (np.asarray(pts[k], float) for k in ("N", "loss", "flops"))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    ax1.scatter(N, L, c=np.log10(C), s=12, cmap="viridis", label="runs")
    ax1.set_xscale("log")
    ax1.set_xlabel("parameters N")
    ax1.set_ylabel("loss (nats)")
    budgets = np.geomspace(C.min(), C.max(), 6)
    if doc["method"] == "approach2":
        for p in doc.get("isoflop", {}).get("parabolas", []):
            x = np.linspace(p["log_n_min"], p["log_n_max"], 100)
            ax1.plot(np.exp(x), p["c2"] * x * x + p["c1"] * x + p["c0"], color="gray", lw=0.8)
        opt = doc.get("isoflop", {}).get("optima", {})
        ax1.scatter(
            opt.get("N_opt", []),
            opt.get("loss_opt", []),
            marker="*",
            s=80,
            color="red",
            label="fitted optimum",
        )
        ax2.loglog(opt.get("C", []), opt.get("N_opt", []), "o", label="IsoFLOP optima")
        cs = np.geomspace(C.min(), C.max() * 100, 50)
        ax2.loglog(cs, law.optimal(cs)[0], "-", label=f"N_opt ∝ C^{law.params['a']:.3f}")
        ax2.set_xlabel("compute C (FLOPs)")
        ax2.set_ylabel("N_opt")
    elif doc["method"] == "approach1":
        opt = doc.get("isoflop", {}).get("optima", {})
        ax2.loglog(opt.get("C", []), opt.get("N_opt", []), ".", label="envelope optima")
        cs = np.geomspace(C.min(), C.max() * 100, 50)
        ax2.loglog(cs, law.optimal(cs)[0], "-", label=f"N_opt ∝ C^{law.params['a']:.3f}")
        ax2.set_xlabel("compute C (FLOPs)")
        ax2.set_ylabel("N_opt")
    else:
        for c in budgets:
            n = np.geomspace(N.min() / 3, N.max() * 3, 200)
            ax1.plot(n, law.loss(n, c / (FLOPS_PER_PARAM_TOKEN * n)), lw=0.8, color="gray")
        n_opt, d_opt = law.optimal(budgets)
        ax1.scatter(
            n_opt, law.loss(n_opt, d_opt), marker="*", s=80, color="red", label="fitted optimum"
        )
        ax1.set_ylim(L.min() * 0.95, np.percentile(L, 98) * 1.05)
        fitted = law.loss(N, np.asarray(pts["D"], float))
        ax2.scatter(fitted, L, s=10)
        lim = [min(fitted.min(), L.min()), max(fitted.max(), L.max())]
        ax2.plot(lim, lim, "k--", lw=0.8)
        ax2.set_xlabel("fitted loss")
        ax2.set_ylabel("measured loss")
    ax1.legend(fontsize=8)
    form = doc["law"]["form"]
    if form == "kaplan" and doc["law"].get("params", {}).get("E"):
        form = "kaplan-irreducible"  # Kaplan's form with a fitted irreducible loss
    fig.suptitle(f"{form} fit ({doc['method']})")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def plot_loss_forecast(
    steps: np.ndarray,
    predicted: np.ndarray,
    out: str | Path,
    observed: np.ndarray | None = None,
    lr: np.ndarray | None = None,
    title: str = "loss forecast",
) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    if observed is not None:
        ax.plot(steps, observed, ".", ms=3, color="gray", label="measured")
    ax.plot(steps, predicted, "-", color="C0", label="predicted")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats)")
    if lr is not None:
        ax2 = ax.twinx()
        ax2.plot(steps, lr, color="C1", lw=0.8, alpha=0.6)
        ax2.set_ylabel("learning rate")
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)

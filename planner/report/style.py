"""The one look shared by every report figure: fonts, colours, sizes, DPI and helpers.

matplotlib is imported inside the functions (Agg backend), so importing this module is cheap.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 110  # moderate: a 10-inch figure is 1100 px wide, sharp on screen, fast to write
WIDTH_IN = 10.0
HEIGHT_IN = 4.6

# Okabe-Ito palette: distinguishable with the common forms of colour blindness.
COLORS: dict[str, str] = {
    "blue": "#0072B2",
    "orange": "#E69F00",
    "green": "#009E73",
    "red": "#D55E00",
    "purple": "#CC79A7",
    "sky": "#56B4E9",
    "yellow": "#F0E442",
    "grey": "#8C8C8C",
    "black": "#222222",
}
CHOSEN = COLORS["red"]  # the plan's choice is always red, with a star marker
CHOSEN_MARKER = "*"
CHOSEN_SIZE = 260
DATA = COLORS["blue"]
FIT = COLORS["black"]
BAND_ALPHA = 0.22
REJECTED = COLORS["grey"]

# One colour per training phase, the same on every plot.
PHASE_COLORS: dict[str, str] = {
    "pretrain": COLORS["blue"],
    "anneal": COLORS["orange"],
    "long_context": COLORS["green"],
    "sft": COLORS["purple"],
    "dpo": COLORS["sky"],
    "grpo": COLORS["red"],
    "warmup": COLORS["yellow"],
    "stable": COLORS["blue"],
}

RC: dict[str, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.titley": 1.0,  # a fixed title position: automatic placement measures every tick label
    "axes.titlepad": 6.0,
    "axes.labelsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linestyle": "-",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "figure.titlesize": 13,
    "figure.titleweight": "bold",
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "lines.linewidth": 1.8,
}


def rc_context() -> Any:
    """The shared rc parameters, for the duration of one figure's drawing: a caller's own
    matplotlib settings (and backend) are left as they were."""
    import matplotlib
    from cycler import cycler

    rc = dict(RC)
    rc["axes.prop_cycle"] = cycler(
        color=[COLORS[k] for k in ("blue", "orange", "green", "red", "purple", "sky", "grey")]
    )
    return matplotlib.rc_context(rc)


# Fixed margins (figure fractions) rather than a layout engine: constrained layout measures every
# text extent twice per figure and doubled the report's drawing time.
MARGINS: dict[str, float] = {
    "left": 0.075,
    "right": 0.98,
    "top": 0.86,
    "bottom": 0.13,
    "wspace": 0.28,
    "hspace": 0.3,
}


def figure(
    ncols: int = 1,
    nrows: int = 1,
    *,
    width_in: float = WIDTH_IN,
    height_in: float = HEIGHT_IN,
    margins: dict[str, float] | None = None,
    **kw: Any,
) -> tuple[Figure, Any]:
    """A new figure of the shared size and margins; returns (figure, axes) like `plt.subplots`.
    `margins` overrides entries of MARGINS (e.g. right=0.8 to leave room for an outside legend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in))
    FigureCanvasAgg(fig)  # rendered by Agg, whatever backend the process has selected
    fig.subplots_adjust(**{**MARGINS, **(margins or {})})
    axes = fig.subplots(nrows, ncols, squeeze=True, **kw)
    return fig, axes


def png_bytes(fig: Figure) -> bytes:
    """The figure rendered as PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return buf.getvalue()


def mark_chosen(ax: Axes, x: float, y: float, label: str = "chosen") -> None:
    """The plan's choice: a red star with a white edge, on top of everything."""
    ax.scatter(
        [x],
        [y],
        marker=CHOSEN_MARKER,
        s=CHOSEN_SIZE,
        color=CHOSEN,
        edgecolor="white",
        linewidth=1.0,
        zorder=10,
        label=label,
    )


def human(value: float, unit: str = "") -> str:
    """1.23e12 -> '1.23T' (with unit appended)."""
    for scale, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}{unit}"
    return f"{value:.3g}{unit}"


def note(ax: Axes, text: str, where: str = "lower left") -> None:
    """A small grey italic note inside an axes corner (e.g. 'no data points: preset law')."""
    x, ha = (0.02, "left") if "left" in where else (0.98, "right")
    y, va = (0.03, "bottom") if "lower" in where else (0.97, "top")
    ax.text(
        x,
        y,
        text,
        transform=ax.transAxes,
        ha=ha,
        va=va,
        fontsize=9,
        color=COLORS["grey"],
        style="italic",
    )


def sequential_cmap() -> Any:
    """The colour map for ordered quantities (model size, compute budget)."""
    import matplotlib

    return matplotlib.colormaps["viridis"]


def duration(seconds: float) -> str:
    """A duration in the unit a person would use: '12.3 days', '5.1 hours', '42 s'."""
    for scale, unit in ((86400.0, "days"), (3600.0, "hours"), (60.0, "minutes")):
        if seconds >= 2 * scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds:.3g} s"


def dollars(usd: float) -> str:
    """'$1.23M', '$950', '$0.01'."""
    return f"${human(usd)}" if usd >= 1000 else f"${usd:.3g}" if usd < 10 else f"${usd:,.0f}"


def log_scale(ax: Axes, which: str = "x") -> None:
    """Log scale without minor ticks (they cost more to draw than they help to read)."""
    from matplotlib.ticker import NullLocator

    if which == "x":
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
    else:
        ax.set_yscale("log")
        ax.yaxis.set_minor_locator(NullLocator())

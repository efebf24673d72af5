"""`scaleplan validate --plot`: predicted against measured step time, and each row's signed
error by source, so the outliers and any bias per source are seen at a glance."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from .style import BAND_ALPHA, COLORS, figure, log_scale, note, png_bytes, rc_context

BANDS_PCT = (10.0, 30.0)  # the whole-file tolerances: MAPE <= 10 %, no row over 30 %
SOURCE_COLORS = ("blue", "orange", "green", "red", "purple", "sky", "grey", "yellow", "black")


def measured_step_time_s(row: dict[str, Any]) -> float:
    """The measurement as a step time: step times are compared directly; tokens/s, TFLOP/s and
    MFU/HFU are all inversely proportional to the step time at a fixed layout and model."""
    if row["metric"] == "step_time_s":
        return float(row["measured"])
    return float(row["predicted_step_time_s"]) * float(row["predicted"]) / float(row["measured"])


def step_time_error_pct(row: dict[str, Any]) -> float:
    """Predicted over measured step time, minus 1, in %: + means predicted slower, whatever the
    row's metric (a throughput metric's error has the other sign)."""
    return (float(row["predicted_step_time_s"]) / measured_step_time_s(row) - 1.0) * 100.0


def validation_figure_png(payload: dict[str, Any]) -> bytes:
    """Two panels from `validation_payload`'s object: left, predicted against measured step time
    (log-log, with the ±10 % and ±30 % bands); right, each row's signed step-time error per
    source, rows over 30 % (in the row's own metric, as the table reports it) labelled."""
    rows = payload["rows"]
    by_source: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_source[row["source"]].append(row)
    sources = sorted(by_source, key=lambda s: -len(by_source[s]))
    color = {s: COLORS[SOURCE_COLORS[i % len(SOURCE_COLORS)]] for i, s in enumerate(sources)}
    with rc_context():
        fig, (ax1, ax2) = figure(2, width_in=12.0, height_in=5.2, margins={"left": 0.06, "top": 0.86,
                                                                            "right": 0.985,
                                                                            "wspace": 0.55})  # fmt: skip
        times = [measured_step_time_s(r) for r in rows] + [r["predicted_step_time_s"] for r in rows]
        lo, hi = (min(times) / 1.5, max(times) * 1.5) if rows else (0.1, 10.0)
        line = [lo, hi]
        ax1.plot(line, line, color=COLORS["black"], lw=1.0, label="predicted = measured")
        for pct, alpha in zip(BANDS_PCT, (BAND_ALPHA, BAND_ALPHA / 2), strict=True):
            f = pct / 100.0
            ax1.fill_between(line, [v * (1 - f) for v in line], [v * (1 + f) for v in line],
                             color=COLORS["grey"], alpha=alpha, lw=0, label=f"±{pct:g} %")  # fmt: skip
        for s in sources:
            pts = by_source[s]
            ax1.scatter([measured_step_time_s(r) for r in pts],
                        [r["predicted_step_time_s"] for r in pts],
                        s=16, color=color[s], alpha=0.85, label=f"{s} ({len(pts)})")  # fmt: skip
        log_scale(ax1, "x")
        log_scale(ax1, "y")
        ax1.set_xlim(lo, hi)
        ax1.set_ylim(lo, hi)
        ax1.set_xlabel("measured step time (s)")
        ax1.set_ylabel("predicted step time (s)")
        ax1.set_title("Predicted vs measured")
        ax1.legend(loc="upper left", fontsize=7.5)
        for i, s in enumerate(sources):
            errs = [step_time_error_pct(r) for r in by_source[s]]
            jitter = [i + ((k * 0.618) % 1.0 - 0.5) * 0.5 for k in range(len(errs))]
            ax2.scatter(errs, jitter, s=14, color=color[s], alpha=0.85)
            for r, e, y in zip(by_source[s], errs, jitter, strict=True):
                if abs(r["error_pct"]) > BANDS_PCT[1]:
                    ax2.annotate(f"row {r['index']}", (e, y), fontsize=7,
                                 xytext=(3, 3), textcoords="offset points")  # fmt: skip
        for pct in BANDS_PCT:
            for sign in (-1, 1):
                ax2.axvline(sign * pct, color=COLORS["grey"], lw=0.8, ls="--")
        ax2.axvline(0.0, color=COLORS["black"], lw=0.8)
        ax2.set_yticks(range(len(sources)))
        ax2.set_yticklabels([s[:30] for s in sources], fontsize=8)
        ax2.set_xlabel("step-time error, % (+: predicted slower than measured)")
        s = payload["summary"]
        if s["mape_pct"] is not None:
            fig.suptitle(f"scaleplan validate: {s['n_predicted']} rows, MAPE {s['mape_pct']:.1f} %, "
                         f"median {s['median_pct']:.1f} %, max {s['max_pct']:.1f} % "
                         "(in each row's own metric)", fontsize=11)  # fmt: skip
        else:
            note(ax2, "no row predicted", where="lower right")
        ax2.set_title("Error per row, by source")
        return png_bytes(fig)


def write_validation_plot(payload: dict[str, Any], out: str | Path) -> Path:
    """Write the figure as a PNG; returns the path."""
    path = Path(out)
    path.write_bytes(validation_figure_png(payload))
    return path

"""The report page: one self-contained HTML file (CSS inline, PNGs as base64 data URIs)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape

from scaleplan.specs.plan import Plan

from . import style
from .figures import ReportFigure

CSS = """
body { font-family: 'DejaVu Sans', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1180px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.7em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
figure { margin: 0.5em 0 1.5em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.95em; margin-top: 0.4em; }
.missing { background: #fff6e5; border-left: 4px solid #E69F00; padding: 0.6em 1em; }
.failed { background: #fdecea; border-left: 4px solid #D55E00; padding: 0.6em 1em; }
.meta { color: #666; font-size: 0.9em; }
"""


def _summary(plan: Plan) -> str:
    total_s = sum(p.time_s for p in plan.phases)
    total_usd = sum(p.cost_usd for p in plan.phases)
    model = plan.model
    rows = [
        (
            "Model",
            f"{escape(model.name)}: {style.human(model.params_total)} parameters"
            + (f" ({style.human(model.params_active)} active)" if model.is_moe else "")
            + f", {model.num_layers} layers, hidden {model.hidden_size}",
        ),
        ("Pretraining tokens", style.human(plan.tokens)),
        (
            "Cluster",
            f"{plan.cluster.num_gpus} × {escape(plan.cluster.gpu.name)} "
            f"(${plan.cluster.price_usd_per_gpu_hour:.2f}/GPU-hour)",
        ),
        ("Total", f"{style.duration(total_s)}, {style.dollars(total_usd)}"),
    ]
    if plan.law:
        law = plan.law.get("name") or plan.law.get("form") or plan.law.get("preset") or ""
        if law:
            rows.append(("Scaling law", escape(str(law))))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    notes = "".join(f"<li>{escape(n)}</li>" for n in plan.notes)
    return f"<table>{body}</table>" + (f"<ul class='meta'>{notes}</ul>" if notes else "")


def _phase_table(plan: Plan) -> str:
    head = "<tr><th>phase</th><th>GPUs</th><th>layout</th><th>seq</th><th>tokens</th><th>steps</th><th>time</th><th>cost</th><th>MFU</th></tr>"
    rows = []
    for p in plan.phases:
        lay = p.layout
        layout = (
            f"TP{lay.tp} PP{lay.pp}"
            + (f"×{lay.vp}" if lay.vp > 1 else "")
            + f" CP{lay.cp} DP{lay.dp}"
        )
        if lay.ep > 1:
            layout += f" EP{lay.ep}"
        if lay.expert_tp != lay.tp:
            layout += f" ETP{lay.expert_tp}"
        layout += f", mb {lay.micro_batch}, gb {lay.global_batch}"
        rows.append(
            f"<tr><td>{escape(p.name)}</td><td>{p.num_gpus}</td><td>{escape(layout)}</td><td>{p.seq_length}</td>"
            f"<td>{style.human(p.tokens)}</td><td>{p.steps:,}</td><td>{style.duration(p.time_s)}</td>"
            f"<td>{style.dollars(p.cost_usd)}</td><td>{100 * p.mfu:.1f} %</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _figure_block(fig: ReportFigure) -> str:
    title = f"<h2 id='{escape(fig.key)}'>{escape(fig.title)}</h2>"
    if fig.status == "ok" and fig.png is not None:
        data = base64.b64encode(fig.png).decode("ascii")
        return (
            f"{title}<figure><img src='data:image/png;base64,{data}' alt='{escape(fig.title)}' "
            f"data-file='{escape(fig.filename)}'><figcaption>{escape(fig.caption)}</figcaption></figure>"
        )
    css = "failed" if fig.status == "failed" else "missing"
    lead = "Could not draw this plot" if fig.status == "failed" else "Not drawn"
    return f"{title}<p class='{css}'>{lead}: {escape(fig.reason or 'no reason given')}</p>"


def render(plan: Plan, figures: Sequence[ReportFigure], *, seconds: float, version: str) -> str:
    blocks = "\n".join(_figure_block(f) for f in figures)
    toc = " · ".join(f"<a href='#{escape(f.key)}'>{escape(f.title)}</a>" for f in figures)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>scaleplan report: {escape(plan.name)}</title><style>{CSS}</style></head><body>"
        f"<h1>Training plan: {escape(plan.name)}</h1>"
        f"<p class='meta'>scaleplan {escape(version)} · plan schema {escape(plan.schema_version)} · "
        f"report drawn in {seconds:.2f} s</p>"
        f"{_summary(plan)}<h2>Phases</h2>{_phase_table(plan)}<p class='meta'>{toc}</p>\n{blocks}\n"
        "</body></html>\n"
    )

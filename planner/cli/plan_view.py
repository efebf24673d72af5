"""The terminal summary of a plan (rich tables): model, phases, layouts, search, notes."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from scaleplan.specs.plan import Plan


def _layout(phase: Any) -> str:
    lay = phase.layout
    parts = [f"TP{lay.tp}", f"PP{lay.pp}"]
    if lay.vp > 1:
        parts.append(f"VP{lay.vp}")
    if lay.cp > 1:
        parts.append(f"CP{lay.cp}")
    parts.append(f"DP{lay.dp}")
    if lay.ep > 1:
        parts.append(f"EP{lay.ep}")
    if lay.expert_tp != lay.tp:
        parts.append(f"ETP{lay.expert_tp}")
    opt = "ZeRO-3" if lay.zero_stage >= 3 else "dist-opt" if lay.shards_optimizer else ""
    extras = [
        x
        for x in (
            "SP" if lay.sequence_parallel else "",
            opt,
            f"rc={lay.recompute}" if lay.recompute != "none" else "",
            # uneven pipeline splits (costmodels.stage_layers)
            "emb+loss in PP" if lay.account_embedding_loss_in_pipeline_split else "",
            "balanced PP" if lay.balanced_pipeline_layout else "",
        )
        if x
    ]
    return (
        " ".join(parts)
        + (f" ({', '.join(extras)})" if extras else "")
        + f" mb{lay.micro_batch} gb{lay.global_batch}"
    )


def _hours(seconds: float) -> str:
    return f"{seconds / 86400:.1f} d" if seconds >= 2 * 86400 else f"{seconds / 3600:.1f} h"


def print_plan(
    plan: Plan,
    *,
    out: str | None = None,
    report_dir: str | None = None,
    console: Console | None = None,
) -> None:
    con = console or Console()
    if not con.is_terminal:
        con.width = max(con.width, 150)
    m = plan.model
    head = Table(
        title=f"plan {plan.name}: {plan.cluster.num_gpus} x {plan.cluster.gpu.name}",
        show_header=False,
    )
    head.add_row(
        "model",
        f"{m.params_total / 1e9:.2f}B params"
        + (f" ({m.params_active / 1e9:.2f}B active)" if m.moe else "")
        + f": {m.num_layers} layers, hidden {m.hidden_size}, {m.num_heads} heads "
        f"({m.kv_heads} KV), FFN {m.ffn_hidden_size}",
    )
    head.add_row(
        "tokens",
        f"{plan.tokens / 1e9:,.1f}B (pretrain + anneal), {plan.compute_flops:.3g} model FLOPs",
    )
    law = plan.law
    if "predicted_loss" in law:
        head.add_row(
            "law",
            f"{law.get('source', law.get('form', ''))}: predicted loss "
            f"{law['predicted_loss']:.4f}, {law.get('epochs', 1.0):.2f} epochs of unique data"
            + (
                f"; N = {law['n_params'] / 1e9:.3g}B non-embedding parameters"
                if law.get("param_count") == "non-embedding" and "n_params" in law
                else ""
            ),
        )
    pre = plan.phases[0]
    head.add_row(
        "LR / batch",
        f"peak {pre.schedule.peak_lr:.3g} ({pre.schedule.style}), "
        f"{pre.layout.global_batch} x {pre.seq_length} tokens, warmup {pre.schedule.warmup_steps} steps",
    )
    fp = plan.fixed_point
    head.add_row(
        "fixed point",
        f"{len(fp.get('iterations', []))} iterations, "
        f"{fp.get('status', 'converged' if fp.get('converged') else 'stopped')}",
    )
    head.add_row(
        "search",
        f"{plan.search.get('layouts_evaluated', 0):,} layouts in "
        f"{plan.search.get('seconds', 0):.2f} s",
    )
    prof = plan.cluster.profile
    origin = "your profile (cluster.profile)" if plan.cluster.efficiency else "shipped"
    fitted = f"; fitted on {prof.fitted_on}" if prof.fitted_on else ""
    head.add_row("efficiency", f"{prof.name} ({origin}{fitted})")
    con.print(head)
    table = Table(title="phases")
    for col in (
        "phase",
        "GPUs",
        "layout",
        "seq",
        "tokens",
        "steps",
        "time",
        "cost",
        "MFU",
        "mem GiB",
    ):
        table.add_column(
            col, justify="left" if col in ("phase", "layout") else "right", no_wrap=col != "layout"
        )
    total_t = total_usd = 0.0
    for p in plan.phases:
        total_t += p.time_s
        total_usd += p.cost_usd
        table.add_row(
            p.name,
            str(p.num_gpus),
            _layout(p),
            str(p.seq_length),
            f"{p.tokens / 1e9:,.2f}B",
            f"{p.steps:,}",
            _hours(p.time_s),
            f"${p.cost_usd:,.0f}",
            f"{p.mfu:.1%}",
            f"{p.estimate.memory_gib:.1f}" if p.estimate else "",
        )
    table.add_row("total", "", "", "", "", "", _hours(total_t), f"${total_usd:,.0f}", "", "")
    con.print(table)
    front = plan.search.get("pretrain", {}).get("pareto", [])
    if len(front) > 1:
        pareto = Table(title="pretraining Pareto front (time, dollars, memory headroom)")
        for col in ("layout", "tokens/s", "$/M tokens", "headroom GiB"):
            pareto.add_column(col, justify="left" if col == "layout" else "right")
        for e in front[:6]:
            pareto.add_row(
                e["layout"],
                f"{e['tokens_per_s']:,.0f}",
                f"{e['usd_per_million_tokens']:.3f}",
                f"{e['headroom_gib']:.1f}",
            )
        con.print(pareto)
    rejected = plan.search.get("pretrain", {}).get("rejected", [])
    if rejected:
        con.print("[bold]pretraining layouts rejected by family[/bold]")
        for r in rejected[:8]:
            con.print(f"  - {r['reason']}")
    for note in plan.notes:
        con.print(f"note: {note}")
    if out:
        con.print(f"wrote {out}")
    if report_dir:
        con.print(f"wrote report into {report_dir}")

"""`scaleplan simulate`'s step-time section: breakdown, MFU/HFU, tokens/s, time and dollars for a
token budget, and (`--explain`) every term with its formula and source.

Plugged into `simulate_cmd` through its SECTIONS / RENDERERS lists.
"""

from __future__ import annotations

from typing import Any

from .simulate_inputs import SimulationInput

BREAKDOWN = (
    ("compute_s", "compute"),
    ("tp_s", "exposed comm: TP"),
    ("cp_s", "exposed comm: CP"),
    ("ep_s", "exposed comm: EP"),
    ("pp_s", "exposed comm: PP"),
    ("dp_s", "exposed comm: DP"),
    ("bubble_s", "pipeline bubble"),
    ("optimizer_s", "optimizer step"),
    ("overhead_s", "host/framework overhead"),
)


def step_section(inp: SimulationInput, result: dict[str, Any]) -> dict[str, Any]:
    from scaleplan.costmodels.step import estimate_step

    est = estimate_step(inp.model, inp.cluster, inp.layout, inp.seq_length)
    return {"step": est.as_dict()}


def add_token_budget(result: dict[str, Any], tokens: float | None) -> None:
    """Time to train and dollars for `tokens` tokens, from the step section's throughput."""
    if tokens is None or "step" not in result:
        return
    step = result["step"]
    seconds = float(tokens) / (step["tokens_per_s_per_gpu"] * step["num_gpus"])
    step["tokens"] = float(tokens)
    step["time_to_train_s"] = seconds
    step["cost_usd"] = seconds / 3600.0 * step["num_gpus"] * step["price_usd_per_gpu_hour"]


def render_step(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    step = result["step"]
    total = step["step_time_s"]
    table = Table(title=f"Step time (profile {step['profile_name']})")
    table.add_column("term")
    table.add_column("seconds", justify="right")
    table.add_column("share", justify="right")
    for key, label in BREAKDOWN:
        value = step[key]
        if value or key in ("compute_s", "bubble_s"):
            table.add_row(label, f"{value:.4f}", f"{100 * value / total:.1f} %")
    table.add_row("step time", f"{total:.4f}", "100.0 %", style="bold")
    console.print(table)
    console.print(
        f"MFU {100 * step['mfu']:.1f} %  HFU {100 * step['hfu']:.1f} %  "
        f"tokens/s/GPU {step['tokens_per_s_per_gpu']:,.0f}"
    )
    if "time_to_train_s" in step:
        days = step["time_to_train_s"] / 86400.0
        console.print(
            f"{step['tokens']:.3g} tokens: {days:,.2f} days on {step['num_gpus']} GPUs, "
            f"${step['cost_usd']:,.0f} at ${step['price_usd_per_gpu_hour']:.2f}/GPU-hour"
        )


def render_explain(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    table = Table(title="How the step time was computed", show_lines=True)
    table.add_column("term")
    table.add_column("seconds", justify="right")
    table.add_column("formula")
    table.add_column("source")
    for term in result["step"]["terms"]:
        table.add_row(term["name"], f"{term['value_s']:.4f}", term["formula"], term["source"])
    console.print(table)

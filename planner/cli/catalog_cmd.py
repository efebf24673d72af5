"""`scaleplan catalog gpus|models|profiles`: what the shipped catalogs hold."""

from __future__ import annotations

import json
from typing import Any

import click


def gpu_rows() -> list[dict[str, Any]]:
    from scaleplan.specs.efficiency import profile_name_for
    from scaleplan.specs.hardware import gpu_catalog

    return [
        {
            "name": g.name,
            "aliases": list(g.aliases),
            "peak_tflops": g.peak_tflops.model_dump(),
            "hbm_gb": g.hbm_gb,
            "hbm_gbps": g.hbm_gbps,
            "nvlink_gbps": g.nvlink_gbps,
            "nvlink_domain": g.nvlink_domain,
            "gpus_per_node": g.gpus_per_node,
            "nic_gbps_per_gpu": g.nic_gbps_per_gpu,
            "usd_per_gpu_hour": g.usd_per_gpu_hour,
            "profile": profile_name_for(g.name),
            "legacy_profile": profile_name_for(g.name, "megatron-legacy"),
        }
        for g in gpu_catalog().values()
    ]


def model_rows() -> list[dict[str, Any]]:
    from scaleplan.specs.model import model_presets

    return [
        {
            "name": m.name,
            "params_total": m.params_total,
            "params_active": m.params_active,
            "layers": m.num_layers,
            "hidden": m.hidden_size,
            "heads": m.num_heads,
            "kv_heads": m.kv_heads,
            "seq_length": m.seq_length,
            "experts": m.moe.num_experts if m.moe else None,
            "top_k": m.moe.top_k if m.moe else None,
        }
        for m in model_presets().values()
    ]


def profile_rows() -> list[dict[str, Any]]:
    from scaleplan.specs.efficiency import shipped_profiles

    return [
        {"name": name, "stack": p.stack, "gpus": list(p.gpus), "fitted_on": p.fitted_on}
        for name, p in shipped_profiles().items()
    ]


def _tflops(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


@click.command("catalog")
@click.argument("what", type=click.Choice(["gpus", "models", "profiles"]))
@click.option("--json", "as_json", is_flag=True, help="print one JSON list to stdout")
def catalog(what: str, as_json: bool) -> None:
    """List the shipped GPUs (datasheet figures and the efficiency profile each uses), model
    presets, or efficiency profiles (their GPUs, stack and what they were fitted on).

    GPUs of your own join the catalog, for every command, from a YAML file named by the
    SCALEPLAN_GPUS environment variable (`gpus:` and entries in the shipped catalog's schema,
    as the README shows)."""
    rows = {"gpus": gpu_rows, "models": model_rows, "profiles": profile_rows}[what]()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"scaleplan catalog: {what}")
    if what == "gpus":
        cols = ("GPU", "bf16 TF", "fp16 TF", "fp8 TF", "HBM GB", "HBM GB/s", "NVLink GB/s",
                "domain", "NIC Gb/s", "$/GPU-h", "profile")  # fmt: skip
        for col in cols:
            table.add_column(col, justify="left" if col in ("GPU", "profile") else "right")
        for r in rows:
            p = r["peak_tflops"]
            table.add_row(
                r["name"], _tflops(p["bf16"]), _tflops(p["fp16"]), _tflops(p["fp8"]),
                f"{r['hbm_gb']:g}", f"{r['hbm_gbps']:,.0f}", f"{r['nvlink_gbps']:,.0f}",
                str(r["nvlink_domain"]), f"{r['nic_gbps_per_gpu']:g}",
                f"{r['usd_per_gpu_hour']:.2f}", r["profile"],
            )  # fmt: skip
    elif what == "models":
        for col in ("model", "params", "active", "layers", "hidden", "heads/kv", "seq", "experts"):
            table.add_column(col, justify="left" if col == "model" else "right")
        for r in rows:
            experts = f"{r['experts']} (top {r['top_k']})" if r["experts"] else "-"
            table.add_row(
                r["name"], f"{r['params_total'] / 1e9:.1f}B", f"{r['params_active'] / 1e9:.1f}B",
                str(r["layers"]), str(r["hidden"]), f"{r['heads']}/{r['kv_heads']}",
                str(r["seq_length"]), experts,
            )  # fmt: skip
    else:
        for col in ("profile", "stack", "GPUs", "fitted on"):
            table.add_column(col, overflow="fold")
        for r in rows:
            table.add_row(r["name"], r["stack"], ", ".join(r["gpus"]), r["fitted_on"])
    Console(width=160).print(table)

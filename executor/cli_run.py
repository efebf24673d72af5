"""Click commands `scaleplan run` and `scaleplan calibrate` (torch is imported only when they run)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click
import yaml

from scaleplan.specs.errors import SpecError
from scaleplan.specs.files import prepare_output


@click.command("run")
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option(
    "--phases", default="all", show_default=True, help="all, or a comma list: pretrain,anneal,..."
)
@click.option("--resume", is_flag=True, help="skip finished phases; continue an interrupted one")
@click.option(
    "--run-dir", type=click.Path(file_okay=False), default=None, help="default: runs/<plan name>"
)
@click.option(
    "--nproc", type=int, default=None, help="most processes a phase may use (default: GPUs here)"
)
@click.option(
    "--backend",
    type=click.Choice(["megatron", "deepspeed"]),
    default=None,
    help="default: deepspeed for zero_stage>=2 layouts, else megatron",
)
@click.option(
    "--max-steps", type=int, default=None, help="stop each phase after this step (smoke runs)"
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def run_cmd(
    plan: str,
    phases: str,
    resume: bool,
    run_dir: str | None,
    nproc: int | None,
    backend: str | None,
    max_steps: int | None,
    as_json: bool,
) -> None:
    """Train PLAN's phases in order through Megatron-core (DeepSpeed for ZeRO-2/3 layouts)."""
    from scaleplan.executor.run import PhaseFailed, run_plan

    try:
        results = run_plan(
            plan, phases, run_dir, resume, nproc, backend, max_steps, log=not as_json
        )
    except PhaseFailed as err:
        raise click.ClickException(str(err)) from None
    if as_json:
        click.echo(json.dumps({"phases": [asdict(r) for r in results]}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"scaleplan run {plan}")
    for col in ("phase", "status", "procs", "steps", "final loss", "wall s", "metrics"):
        table.add_column(col)
    for r in results:
        loss = f"{r.final_loss:.4f}" if r.final_loss is not None else "-"
        table.add_row(
            r.phase, r.status, str(r.nproc), str(r.steps), loss, f"{r.wall_s:.1f}", r.metrics
        )
    Console().print(table)


@click.command("calibrate")
@click.argument("metrics", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--plan",
    "plan_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="take model/cluster/layout from this plan instead of the metrics' start record",
)
@click.option(
    "--out", type=click.Path(dir_okay=False), default=None, help="write the fitted profile (YAML)"
)
@click.option(
    "--allow-device-mismatch",
    is_flag=True,
    help="fit even when the steps were not measured on the plan's GPU (pipeline tests)",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def calibrate_cmd(
    metrics: tuple[str, ...],
    plan_path: str | None,
    out: str | None,
    allow_device_mismatch: bool,
    as_json: bool,
) -> None:
    """Compare measured step times in METRICS (JSONL of `scaleplan run`) with the cost model and
    fit the hardware efficiency profile to them."""
    from scaleplan.executor.calibrate import compare_and_fit

    if out:
        prepare_output(out, "--out")  # before any reading or fitting
    result = compare_and_fit(
        [Path(m) for m in metrics], Path(plan_path) if plan_path else None, allow_device_mismatch
    )
    if out:
        profile = dict(result["profile"])
        name = profile.pop("name")
        try:
            Path(out).write_text(yaml.safe_dump({name: profile}, sort_keys=False))
        except OSError as err:
            raise SpecError(f"cannot write: {err}", source=out) from None
        result["out"] = out
    if as_json:
        click.echo(json.dumps(result))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="measured vs predicted step time")
    for col in (
        "phase",
        "device",
        "layout",
        "measured s",
        "predicted s",
        "error %",
        "fitted s",
        "fitted error %",
    ):
        table.add_column(col)
    for r in result["runs"]:
        table.add_row(
            r["phase"],
            r["device"],
            r["layout"],
            f"{r['measured_step_time_s']:.4f}",
            f"{r['predicted_step_time_s']:.4f}",
            f"{r['error_pct']:+.1f}",
            f"{r['fitted_step_time_s']:.4f}",
            f"{r['fitted_error_pct']:+.1f}",
        )
    console = Console()
    console.print(table)
    console.print(
        f"fit: MAPE {result['fit_mape_pct']:.1f} %, max {result['fit_max_pct']:.1f} % "
        f"({result['fit_message']})" + (f"; profile written to {out}" if out else "")
    )

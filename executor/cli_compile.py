"""`scaleplan compile`, `scaleplan submit`, `scaleplan status`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from scaleplan.specs.errors import SpecError

ENGINE_CHOICE = click.Choice(["megatron", "megatron-lm", "deepspeed"])


def _load_plan(path: str):  # noqa: ANN202 - returns scaleplan.specs.plan.Plan
    from scaleplan.specs.loader import load_spec
    from scaleplan.specs.plan import Plan

    return load_spec(Plan, path)


def _compile(
    plan_path: str, out: str, engine: str, phases: str | None, run_dir: str | None, force: bool
):
    from scaleplan.executor.compile import compile_plan, write_compiled

    plan = _load_plan(plan_path)
    from scaleplan.executor.run import parse_phase_list

    wanted = tuple(parse_phase_list(phases, "--phases")) if phases is not None else None
    try:
        compiled = compile_plan(
            plan, engine, phases=wanted, run_dir=str(Path(run_dir).resolve()) if run_dir else None
        )
    except SpecError as err:
        raise err.with_source(plan_path) from None
    written = write_compiled(compiled, out, force=force)
    return compiled, written


@click.command("compile")
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option(
    "--out", "out", required=True, type=click.Path(file_okay=False), help="Output folder."
)
@click.option(
    "--engine",
    type=ENGINE_CHOICE,
    default="megatron",
    show_default=True,
    help="megatron: megatron-core configs for scaleplan's entry point; megatron-lm: pretrain_gpt.py arguments; deepspeed: DeepSpeed JSON.",
)
@click.option("--phases", default=None, help="Comma-separated subset of phases (default: all).")
@click.option(
    "--run-dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Default RUN_DIR baked into the scripts (default: OUT/run).",
)
@click.option("--force", is_flag=True, help="Replace a non-empty output folder.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def compile_cmd(
    plan: str,
    out: str,
    engine: str,
    phases: str | None,
    run_dir: str | None,
    force: bool,
    as_json: bool,
) -> None:
    """Compile PLAN into engine configs and torchrun/Slurm scripts for every phase."""
    compiled, written = _compile(plan, out, engine, phases, run_dir, force)
    root = Path(out)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "out": str(root),
                    "engine": engine,
                    "files": sorted(compiled.files),
                    "phases": compiled.phases,
                    "notes": compiled.notes,
                }
            )
        )
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"compiled {len(compiled.phases)} phase(s) for {engine} into {root}")
    for col in ("phase", "folder", "nodes x GPUs", "steps", "starts from"):
        table.add_column(col, no_wrap=True)
    for ph in compiled.phases:
        nodes = f"{ph['nodes']} x {ph['gpus_per_node']}"
        table.add_row(ph["name"], ph["dir"] + "/", nodes, str(ph["steps"]), ph["init_from"] or "-")
    console.print(table)
    first = compiled.phases[0]["dir"] + "/"
    per_phase = sorted(f.removeprefix(first) for f in compiled.files if f.startswith(first))
    click.echo(f"each phase folder holds: {', '.join(per_phase)}")
    click.echo(f"also wrote: {', '.join(sorted(f for f in compiled.files if '/' not in f))}")
    for note in compiled.notes:
        click.echo(f"note: {note}")
    click.echo("launch:")
    click.echo(
        f"  Slurm:      scaleplan submit {root} --run-dir RUN_DIR   (or: RUN_DIR=... bash {root}/submit_all.sh)"
    )
    if all(ph["nodes"] == 1 for ph in compiled.phases):
        click.echo(f"  this node:  RUN_DIR=... bash {root}/run_all_local.sh")
    one = f"{root}/{compiled.phases[0]['dir']}/torchrun.sh"
    click.echo(f"  one phase:  bash {one}   (SCALEPLAN_DRY_RUN=1 prints the command)")
    if any(ph["nodes"] > 1 for ph in compiled.phases):
        click.echo(
            "              multi-node without Slurm: run it on every node with NODE_RANK and MASTER_ADDR set"
        )
    del written


@click.command("submit")
@click.argument("target", type=click.Path(exists=True))
@click.option(
    "--run-dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Where checkpoints, metrics, logs and slurm_jobs.json go.",
)
@click.option(
    "--engine",
    type=ENGINE_CHOICE,
    default="megatron",
    show_default=True,
    help="When TARGET is a plan file.",
)
@click.option("--phases", default=None, help="When TARGET is a plan file: comma-separated subset.")
@click.option(
    "--sbatch-args", default="", help="Extra sbatch flags, e.g. '--partition=gpu --account=x'."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def submit_cmd(
    target: str, run_dir: str, engine: str, phases: str | None, sbatch_args: str, as_json: bool
) -> None:
    """Submit a plan (compiled into RUN_DIR/compiled) or a compiled folder to Slurm, phases chained."""
    from scaleplan.executor import slurm

    compiled_dir = Path(target)
    if compiled_dir.is_file():
        compiled_dir = Path(run_dir) / "compiled"
        _compile(target, str(compiled_dir), engine, phases, run_dir, force=True)
    elif phases:
        raise click.UsageError("--phases applies to a plan file; TARGET is already compiled")
    record = slurm.submit(compiled_dir, run_dir, sbatch_args=sbatch_args)
    if as_json:
        click.echo(json.dumps(record))
        return
    for job in record["jobs"]:
        click.echo(f"{job['phase']}: job {job['job_id']}")
    click.echo(
        f"recorded in {Path(run_dir) / slurm.JOBS_FILE}; follow with: scaleplan status {run_dir}"
    )


@click.command("status")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def status_cmd(run_dir: str, as_json: bool) -> None:
    """Report each submitted phase's Slurm state (RUN_DIR holds slurm_jobs.json)."""
    from scaleplan.executor import slurm

    states = slurm.status(run_dir)
    if as_json:
        click.echo(json.dumps({"run_dir": run_dir, "phases": [s.as_dict() for s in states]}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Slurm state of {run_dir}")
    for col in ("phase", "job", "state", "exit", "nodes", "elapsed", "reason"):
        table.add_column(col)
    for s in states:
        table.add_row(
            s.phase,
            s.job_id,
            s.state,
            s.exit_code or "-",
            s.node_list or "-",
            s.run_time or "-",
            s.reason or "-",
        )
    Console().print(table)

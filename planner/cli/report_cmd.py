"""`scaleplan report PLAN.json --out DIR`: an HTML report with plots for a plan."""

from __future__ import annotations

import json
from pathlib import Path

import click

from scaleplan.specs.errors import SpecError
from scaleplan.specs.files import prepare_output


@click.command("report")
@click.argument("plan_file", metavar="PLAN.json", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for report.html and the PNGs (created).",
)
@click.option(
    "--fit",
    "fit_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="FIT.json from `scaleplan fit` (default: the one the plan names).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing report in DIR.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object (files, figure statuses, seconds).",
)
def report(
    plan_file: Path, out_dir: Path, fit_path: Path | None, force: bool, as_json: bool
) -> None:
    """Write DIR/report.html (self-contained, images embedded) and the PNGs beside it."""
    from scaleplan.specs.loader import load_spec
    from scaleplan.specs.plan import Plan

    from ..report import build_report
    from ..report.writer import check_overwrite

    plan = load_spec(Plan, plan_file)
    if fit_path is not None:
        check_fit_file(fit_path)
    if out_dir.exists() and not out_dir.is_dir():
        raise SpecError("exists and is not a folder", source=str(out_dir))
    prepare_output(out_dir, "--out", folder=True)
    check_overwrite(out_dir, force)
    result = build_report(plan, out_dir, fit_path=str(fit_path) if fit_path else None)

    if as_json:
        figures = [
            {
                "key": f.key,
                "title": f.title,
                "status": f.status,
                "file": str(out_dir / f.filename) if f.png else None,
                "reason": f.reason,
            }
            for f in result.figures
        ]
        click.echo(
            json.dumps(
                {
                    "html": str(result.html_path),
                    "figures": figures,
                    "seconds": round(result.seconds, 3),
                }
            )
        )
        return
    click.echo(f"wrote {result.html_path} ({result.seconds:.2f} s)")
    for fig in result.figures:
        if fig.status == "ok":
            click.echo(f"  {out_dir / fig.filename}  {fig.title}")
        else:
            click.echo(f"  {fig.status}: {fig.title}: {fig.reason}", err=fig.status == "failed")


def check_fit_file(path: Path) -> None:
    """A FIT.json given on the command line must exist and load; else one error line, exit 2."""
    from ..report.law_data import load_fit_law

    load_fit_law(str(path))

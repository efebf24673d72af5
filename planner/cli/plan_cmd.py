"""`scaleplan plan BUDGET.yaml`: a budget in, a multi-phase plan out (rich summary or --json).

Nothing is written unless the whole plan (and, with --report, the report module) succeeds.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from scaleplan.specs.errors import SpecError
from scaleplan.specs.files import prepare_output


def plan_json(plan: Any) -> dict[str, Any]:
    """The plan object as `--json` prints it: the plan file plus the model's derived counts."""
    doc = plan.model_dump(mode="json")
    model = plan.model
    doc["model"] = {
        **doc["model"],
        "params_total": model.params_total,
        "params_active": model.params_active,
        "non_embedding_params": model.non_embedding_params,
    }
    return doc


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the plan file is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _beside_budget(name: str, budget_path: Path, field: str, what: str, hint: str) -> Path:
    """A file a budget names: as given if it exists (or is absolute), else next to the budget
    file (as a user writes it); else one error naming the field and how to make the file."""
    path, beside = Path(name), budget_path.parent / name
    if path.exists():
        return path
    if not path.is_absolute() and beside.exists():
        return beside
    raise SpecError(
        f"{what} file '{name}' not found (looked in the working directory and next to the "
        f"budget); {hint}",
        field=field,
        source=str(budget_path),
    )


# law files a budget names: (field of LawChoice, what it is, how to make one)
LAW_FILES = (
    ("fit", "fit", "run `scaleplan fit ... --out FIT.json` or use law.preset"),
    ("schedule_fit", "schedule fit", "run `scaleplan fit CURVES.csv --law mpl --out FIT.json`"),
)


def _resolve_law_files(budget: Any, budget_path: Path) -> Any:
    """A relative `law.fit` or `law.schedule_fit` is read next to the budget file (as a user
    writes it), unless it exists relative to the working directory."""
    found = {
        key: str(_beside_budget(name, budget_path, f"law.{key}", what, hint))
        for key, what, hint in LAW_FILES
        if (name := getattr(budget.law, key))
    }
    if not found:
        return budget
    return budget.model_copy(update={"law": budget.law.model_copy(update=found)})


def _resolve_profile(budget: Any, budget_path: Path) -> Any:
    """`cluster.profile` (a file of `scaleplan calibrate --out`), read from the working directory
    or next to the budget, becomes the cluster's inline `efficiency` for the budget's GPU."""
    from scaleplan.specs.hardware import get_gpu
    from scaleplan.specs.loader import profile_for_gpu, read_profiles

    name = budget.cluster.profile
    if not name:
        return budget
    path = _beside_budget(
        name, budget_path, "cluster.profile", "profile",
        "write one with `scaleplan validate --runs RUNS.csv --fit-profile FILE` or "
        "`scaleplan calibrate METRICS --out FILE`",
    )  # fmt: skip
    gpu = get_gpu(budget.gpu, field="gpu")
    prof = profile_for_gpu(read_profiles(path), gpu.name, path)
    return budget.model_copy(
        update={"cluster": budget.cluster.model_copy(update={"efficiency": prof})}
    )


def _report_writer() -> Any:
    """`scaleplan.planner.report.write_report`, or None when that module is not installed."""
    if importlib.util.find_spec("scaleplan.planner.report") is None:
        return None
    module = importlib.import_module("scaleplan.planner.report")
    return getattr(module, "write_report", None)


@click.command("plan")
@click.argument("budget_file", metavar="BUDGET.yaml", type=click.Path(dir_okay=False))
@click.option("--out", "out", type=click.Path(dir_okay=False), help="Write the plan file (JSON).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as one JSON object.")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False),
    help="Also write an HTML report into this folder.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing report in the --report folder.")
def plan(
    budget_file: str, out: str | None, as_json: bool, report_dir: str | None, force: bool
) -> None:
    """Turn a budget into a plan: model, tokens, schedule, layouts and every phase's cost."""
    from scaleplan.specs.budget import BudgetSpec
    from scaleplan.specs.loader import load_spec

    from ..planning import plan as make_plan

    writer = None
    if report_dir is not None:
        writer = _report_writer()
        if writer is None:
            raise SpecError(
                "the HTML report is not available in this installation "
                "(scaleplan.planner.report.write_report is missing); drop --report",
                field="--report",
            )
    budget = _resolve_law_files(load_spec(BudgetSpec, budget_file), Path(budget_file))
    budget = _resolve_profile(budget, Path(budget_file))
    if out is not None:  # both outputs writable before any is written
        prepare_output(out, "--out")
    if report_dir is not None:
        prepare_output(report_dir, "--report", folder=True)
        from ..report.writer import check_overwrite

        check_overwrite(Path(report_dir), force, field="--report")
    progress = None if as_json else _progress
    try:
        result = make_plan(budget, progress=progress)
    except SpecError as err:
        raise err.with_source(budget_file) from None
    text = result.model_dump_json(indent=2)
    if writer is not None:  # the report first: if it fails, no plan file is left behind
        writer(result, Path(report_dir), fit_path=budget.law.fit)  # type: ignore[arg-type]
    if out is not None:
        _write_atomic(Path(out), text + "\n")
    if as_json:
        click.echo(json.dumps(plan_json(result), indent=2))
        return
    from .plan_view import print_plan

    print_plan(result, out=out, report_dir=report_dir)


def _progress(message: str) -> None:
    click.echo(f"  {message}", err=True)


if __name__ == "__main__":  # pragma: no cover
    plan(sys.argv[1:])

"""The `scaleplan` command line. Subcommands load lazily, so `scaleplan --help` stays fast and
never imports torch, deepspeed or megatron.

Every user error (`SpecError`) prints one line naming the file, field and reason, and exits 2.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

import click

from scaleplan.specs.errors import SpecError
from scaleplan.specs.files import is_positive_finite

# command name -> (module, attribute, one-line help). Listed only if the module exists.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "plan": (
        "scaleplan.planner.cli.plan_cmd",
        "plan",
        "Turn a budget into a multi-phase training plan.",
    ),
    "simulate": (
        "scaleplan.planner.cli.simulate_cmd",
        "simulate",
        "Dry-run a layout or a plan: FLOPs, memory, step time, cost.",
    ),
    "validate": (
        "scaleplan.planner.cli.validate_cmd",
        "validate",
        "Check the simulator against measured published runs.",
    ),
    "catalog": (
        "scaleplan.planner.cli.catalog_cmd",
        "catalog",
        "List the shipped GPUs, model presets and efficiency profiles.",
    ),
    "fit": ("scaleplan.planner.cli.fit_cmd", "fit", "Fit a scaling law to ladder runs."),
    "optimal": (
        "scaleplan.planner.cli.optimal_cmd",
        "optimal",
        "Compute-optimal N and D for a compute budget.",
    ),
    "report": (
        "scaleplan.planner.cli.report_cmd",
        "report",
        "Write an HTML report with plots for a plan.",
    ),
    "compile": (
        "scaleplan.executor.cli_compile",
        "compile_cmd",
        "Compile a plan into engine configs and launch scripts.",
    ),
    "submit": (
        "scaleplan.executor.cli_compile",
        "submit_cmd",
        "Submit a compiled plan's phase chain to Slurm.",
    ),
    "status": (
        "scaleplan.executor.cli_compile",
        "status_cmd",
        "Report each phase's Slurm state for a submitted run.",
    ),
    "run": (
        "scaleplan.executor.cli_run",
        "run_cmd",
        "Train a plan's phases through Megatron-core / DeepSpeed.",
    ),
    "calibrate": (
        "scaleplan.executor.cli_run",
        "calibrate_cmd",
        "Fit the hardware efficiency profile to measured steps.",
    ),
}


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (mod, _, _) in COMMANDS.items() if _available(mod)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS or not _available(COMMANDS[cmd_name][0]):
            return None
        module, attr, _ = COMMANDS[cmd_name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("scaleplan")
    except PackageNotFoundError:
        return "0+unknown"


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="scaleplan")
def cli() -> None:
    """scaleplan: given a GPU budget, what to train and how.

    plan -> simulate -> compile -> run -> calibrate.
    """


class PositiveFinite(click.ParamType):
    """A float option that must be > 0 and finite (click's FloatRange lets nan and inf by)."""

    name = "number"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not is_positive_finite(number):
            self.fail(f"must be positive and finite (got {value!r})", param, ctx)
        return number


POSITIVE_FINITE = PositiveFinite()


def fail(message: str) -> None:
    """Print one error line and exit 2."""
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


# click >= 8.2 raises this for a bare group invocation; older versions print the help themselves
_NO_ARGS_IS_HELP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())


def main(argv: list[str] | None = None) -> Any:
    try:
        return cli.main(args=argv, prog_name="scaleplan", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except _NO_ARGS_IS_HELP as exc:  # bare `scaleplan`: the help, not an error
        click.echo(exc.format_message())
        sys.exit(0)
    except click.ClickException as exc:  # usage errors too: one line, not click's three
        where = ""
        ctx = getattr(exc, "ctx", None)
        if ctx is not None and ctx.command_path:
            where = f"{ctx.command_path}: "
        fail(f"{where}{exc.format_message()}")
    except SpecError as exc:
        fail(exc.message)
    except OSError as exc:  # a path the OS refuses (an unwritable --out, a directory as a file)
        name = exc.filename or ""
        fail(f"{name}: {exc.strerror or exc}" if name else f"{exc.strerror or exc}")
    except OverflowError as exc:
        fail(f"a number in the input is too large to compute with ({exc})")
    except Exception as exc:  # pydantic errors raised outside a loader still get one line
        if type(exc).__name__ != "ValidationError":
            raise
        from scaleplan.specs.loader import spec_error_from_validation

        fail(spec_error_from_validation(exc).message)  # type: ignore[arg-type]
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()

"""`scaleplan validate`: predict every published run of a CSV and score the simulator."""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

import click


def _builtin_runs() -> str:
    return str(resources.files("scaleplan.specs").joinpath("data/published_runs_dev.csv"))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def profile_overrides(path: str, cases: list[Any]) -> dict[str, Any]:
    """Shipped profile name -> the profile a `--profile` file gives it: a file with one profile
    (e.g. `scaleplan calibrate --out`) applies to every row; a file with several (the
    profiles.yaml format) replaces the shipped profiles of the same names."""
    from scaleplan.specs.loader import read_profiles

    profiles = read_profiles(path)
    if len(profiles) == 1:
        only = next(iter(profiles.values()))
        return {c.cluster.profile.name: only for c in cases}
    return profiles


def _profile_label(name: str, override: dict[str, Any] | None, path: str | None) -> str:
    """The shipped profile's name, or `FILE:name` where the --profile file replaced it."""
    if override and name in override:
        return f"{path}:{override[name].name}"
    return name


def validation_payload(
    path: str,
    profile_path: str | None = None,
    assume: dict[str, str] | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """Rows, skipped rows and the summary, as one JSON-able object."""
    from scaleplan.planner.validation import load_cases
    from scaleplan.planner.validation_score import predict_cases, summarize

    cases, skipped = load_cases(path, assume=assume, source=source)
    override = profile_overrides(profile_path, cases) if profile_path is not None else None
    preds = predict_cases(cases, override)
    summary = summarize(preds, n_skipped=len(skipped))
    rows = [
        {
            "index": p.case.index,
            "source": p.case.source,
            "model": p.case.label,
            "gpu": p.case.cluster.gpu.name,
            "num_gpus": p.case.layout.num_gpus,
            "stack": p.case.stack,
            "profile": _profile_label(p.case.cluster.profile.name, override, profile_path),
            "metric": p.case.metric,
            "measured": p.case.measured,
            "predicted": p.predicted,
            "error_pct": p.error_pct,
            "predicted_step_time_s": p.predicted_step_time_s,
            "predicted_mfu": p.mfu,
            "fits_memory": p.fits,
            "layout": p.case.layout.model_dump(mode="json"),
            "assumptions": list(p.case.assumptions),
        }
        for p in preds
    ]
    by_source = {
        name: {k: (_finite(v) if k != "n" else int(v)) for k, v in stats.items()}
        for name, stats in summary.by_source.items()
    }
    return {
        "runs": path,
        "rows": rows,
        "skipped": [
            {"index": s.index, "source": s.source, "model": s.label, "reason": s.reason}
            for s in skipped
        ],
        "summary": {
            "mape_pct": _finite(summary.mape_pct),
            "median_pct": _finite(summary.median_pct),
            "max_pct": _finite(summary.max_pct),
            "n_predicted": summary.n_predicted,
            "n_skipped": summary.n_skipped,
            "by_source": by_source,
        },
    }


def _fmt(value: float) -> str:
    return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"


def _assumed(assumptions: list[str]) -> str:
    """The names of what a row's assumptions filled in: 'vocab, precision, sp'."""
    short = {
        "sequence_parallel": "sp",
        "tied_embeddings": "tied",
        "distributed optimizer": "dist-opt",
    }
    names = []
    for text in assumptions:
        head = text.split("=")[0].split(" (")[0].strip()
        if "architecture from the catalog preset" in text:
            head = "preset"
        elif "pipeline" in text and "layout" in text:
            head = "pp-layout"
        elif head.startswith(("gradient all-reduce", "embedding and loss", "network")):
            head = head.split()[0]
        names.append(short.get(head, head)[:16])
    return ", ".join(dict.fromkeys(names))


def render(payload: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    table = Table(title=f"Predicted vs measured ({payload['runs']})")
    for col, justify in (("row", "right"), ("source", "left"), ("model", "left"), ("GPUs", "right"),
                         ("metric", "left"), ("measured", "right"), ("predicted", "right"),
                         ("error", "right"), ("memory", "left"), ("assumed", "left")):  # fmt: skip
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for row in payload["rows"]:
        err = row["error_pct"]
        style = "red" if abs(err) > 30 else ("yellow" if abs(err) > 10 else None)
        table.add_row(
            str(row["index"]), row["source"][:28], row["model"][:28], str(row["num_gpus"]),
            row["metric"], _fmt(row["measured"]), _fmt(row["predicted"]), f"{err:+.1f} %",
            "fits" if row["fits_memory"] else "over HBM", _assumed(row["assumptions"]),
            style=style,
        )  # fmt: skip
    console.print(table)
    console.print(
        "memory: the layout as stated, against the GPU's HBM; assumed: what the row left unstated "
        "(the full text is in --json's 'assumptions')"
    )
    if payload["skipped"]:
        skipped = Table(title="Rows not predicted")
        skipped.add_column("row", justify="right")
        skipped.add_column("source")
        skipped.add_column("model")
        skipped.add_column("reason")
        for row in payload["skipped"]:
            skipped.add_row(str(row["index"]), row["source"][:28], row["model"][:28], row["reason"])
        console.print(skipped)
    summary = Table(title="Absolute percentage error")
    for col in ("source", "rows", "MAPE", "median", "max"):
        summary.add_column(col, justify="left" if col == "source" else "right")

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f} %"

    for name, stats in sorted(payload["summary"]["by_source"].items()):
        summary.add_row(name, str(stats["n"]), pct(stats["mape_pct"]), pct(stats["median_pct"]),
                        pct(stats["max_pct"]))  # fmt: skip
    s = payload["summary"]
    summary.add_row("all", str(s["n_predicted"]), pct(s["mape_pct"]), pct(s["median_pct"]),
                    pct(s["max_pct"]), style="bold")  # fmt: skip
    console.print(summary)
    console.print(
        f"{s['n_predicted']} rows predicted, {s['n_skipped']} not predicted (listed above)"
    )


@click.command("validate")
@click.option(
    "--runs",
    "runs_path",
    type=click.Path(exists=True, dir_okay=False),
    help="CSV in the published-runs schema (default: the built-in published_runs_dev.csv)",
)
@click.option(
    "--profile",
    "profile_path",
    type=click.Path(exists=True, dir_okay=False),
    help="use this efficiency profile (YAML/JSON) for every row instead of the shipped ones",
)
@click.option(
    "--assume",
    "assume_items",
    multiple=True,
    metavar="COLUMN=VALUE",
    help="fill COLUMN where a row leaves it empty (e.g. micro_batch=1); repeatable; each use is "
    "listed in the row's assumptions",
)
@click.option(
    "--source", "source_filter", default=None, help="only rows whose source contains this text"
)
@click.option(
    "--fit-profile",
    "fit_out",
    type=click.Path(dir_okay=False),
    default=None,
    help="refit the shipped profiles on these runs (your own measurements) and write them here",
)
@click.option(
    "--cv-folds",
    type=click.IntRange(2, 50),
    default=None,
    help="with --fit-profile: also estimate the refitted profiles' error on runs they were not "
    "fitted on (K-fold cross-validation; K refits per profile)",
)
@click.option(
    "--plot",
    "plot_out",
    type=click.Path(dir_okay=False),
    default=None,
    help="also draw predicted vs measured step time and each row's error by source (PNG)",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object to stdout")
def validate(
    runs_path: str | None,
    profile_path: str | None,
    assume_items: tuple[str, ...],
    source_filter: str | None,
    fit_out: str | None,
    cv_folds: int | None,
    plot_out: str | None,
    as_json: bool,
) -> None:
    """Predict every run of a published-runs CSV and compare with what was measured.

    Each row is compared on its measured step time, else tokens/s per GPU, else TFLOP/s per GPU
    (converted with the source's FLOP convention), else MFU/HFU. Rows that cannot be predicted
    are listed with the reason. Profiles: the shipped ones, per GPU and software stack (an
    optional `software_stack` column picks the stack; without it, Megatron-DeepSpeed, fp16 and
    pre-Hopper Megatron-LM runs use `megatron-legacy`, llm-foundry/Composer/torchtitan runs
    `pytorch`, the rest `default`), or --profile for all rows.

    --fit-profile OUT.yaml refits each shipped profile the rows use on those rows (from the
    shipped values; fewer runs fit fewer parameters) and writes them for `--profile`, `simulate
    --profile` and a budget's `cluster.profile`; the error it reports after the fit is in-sample,
    and --cv-folds K adds the K-fold error on runs each refit did not see.

    --json keys: rows (index, source, model, metric, measured, predicted, error_pct, ...),
    skipped (index, reason), summary (mape_pct, median_pct, max_pct, n_predicted, n_skipped,
    by_source); with --fit-profile also fits (profile, n_runs, mape_before_pct,
    mape_after_pct, and with --cv-folds mape_held_out_pct), profiles and out; with --plot also
    plot (the PNG's path).
    """
    from scaleplan.planner.validation import parse_assumptions
    from scaleplan.specs.errors import SpecError
    from scaleplan.specs.files import prepare_output

    path = runs_path or _builtin_runs()
    assume = parse_assumptions(assume_items)
    if fit_out is not None and profile_path is not None:
        raise SpecError(
            "--fit-profile refits the shipped profiles; drop --profile", field="--fit-profile"
        )
    if cv_folds is not None and fit_out is None:
        raise SpecError("cross-validates a refit; add --fit-profile OUT.yaml", field="--cv-folds")
    for out, option in ((fit_out, "--fit-profile"), (plot_out, "--plot")):
        if out is not None:
            prepare_output(out, option)
    if fit_out is not None and plot_out is not None and Path(fit_out) == Path(plot_out):
        raise SpecError("--plot and --fit-profile name the same file", field="--plot")
    try:
        payload = validation_payload(path, profile_path, assume, source_filter)
        if fit_out is not None:
            from scaleplan.planner.validation import load_cases

            from .calibrate_runs import fit_profiles_payload, write_profiles

            cases, _ = load_cases(path, assume=assume, source=source_filter)
            payload.update(fit_profiles_payload(cases, cv_folds))
            write_profiles(payload["profiles"], fit_out)
            payload["out"] = fit_out
    except SpecError as err:
        raise err.with_source(path) from None
    if plot_out is not None:
        from ..report.plot_validation import write_validation_plot

        write_validation_plot(payload, plot_out)
        payload["plot"] = plot_out
    if as_json:
        click.echo(json.dumps(payload, indent=2))
        return
    from rich.console import Console

    console = Console(width=160)
    render(payload, console)
    if fit_out is not None:
        from .calibrate_runs import render_fits

        render_fits(payload, fit_out, console)
    if plot_out is not None:
        console.print(f"plot: {plot_out}")

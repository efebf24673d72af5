"""Terminal output of `scaleplan fit`: the progress bar, the parameter table, clean JSON."""

from __future__ import annotations


def progress_bar(total: int, label: str):
    """A rich progress bar on stderr (stdout stays clean for --json); returns (bar, callback)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = bar.add_task(label, total=total)
    return bar, lambda done, _total: bar.update(task, completed=done)


def doc_clean(obj):
    from scaleplan.planner.laws.io import _clean

    return _clean(obj)


def print_fit(summary: dict, out: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    counted = (
        " (N: non-embedding parameters)" if summary.get("param_count") == "non-embedding" else ""
    )
    table = Table(
        title=f"{summary['law']} fit ({summary['method']}){counted}: {summary['n_points']} "
        f"points, objective {summary['loss']:.6g}, {summary['seconds']:.2f} s"
    )
    table.add_column("parameter")
    table.add_column("value", justify="right")
    has_ci = "ci" in summary
    if has_ci:
        table.add_column("95% CI", justify="right")
    for k, v in summary["params"].items():
        row = [k, f"{v:.6g}"]
        if has_ci:
            lo, _, hi = summary["ci"][k]
            row.append(f"[{lo:.4g}, {hi:.4g}]")
        table.add_row(*row)
    if has_ci:
        for k in ("N_opt", "D_opt"):
            if k in summary["ci"]:
                lo, mid, hi = summary["ci"][k]
                table.add_row(k, f"{mid:.4g}", f"[{lo:.4g}, {hi:.4g}]")
    console = Console()
    if "selection" in summary:
        sel = Table(
            title=f"form chosen by extrapolation: held out the {summary['selection']['folds']} "
            "largest sizes in turn, each predicted from the smaller ones"
        )
        for col in ("form", "N counts", "mean |error|", "max |error|"):
            sel.add_column(col, justify="right" if "error" in col else "left")
        chosen = (summary["selection"]["chosen"], summary["selection"]["param_count"])
        for f in summary["selection"]["forms"]:
            mark = " (chosen)" if (f["form"], f["param_count"]) == chosen else ""
            sel.add_row(
                f["form"] + mark,
                f["param_count"],
                f"{f['mean_abs_pct']:.2f} %",
                f"{f['max_abs_pct']:.2f} %",
            )
        console.print(sel)
    console.print(table)
    if "loo" in summary:
        console.print(
            f"leave-one-out: RMSE {summary['loo']['rmse_log']:.4g} (log loss), max |rel. error| {summary['loo']['max_abs_rel']:.3%}"
        )
    for w in summary["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}")
    if out:
        console.print(f"wrote {out}")

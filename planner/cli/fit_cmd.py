"""`scaleplan fit` (a scaling law from ladder runs) and `scaleplan optimal` (compute-optimal N, D)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from scaleplan.planner.cli import POSITIVE_FINITE
from scaleplan.planner.laws.forms import FLOPS_PER_PARAM_TOKEN
from scaleplan.specs.errors import NotImplementedFeature, SpecError
from scaleplan.specs.files import prepare_output

from .fit_view import doc_clean, print_fit, progress_bar

LAWS = ("chinchilla", "kaplan", "kaplan-irreducible", "data-constrained", "auto", "mpl")
METHODS = ("epoch", "approach1", "approach2")


def _check_plot_suffix(plot: str | None) -> None:
    """Refuse a --plot file type matplotlib cannot write (matplotlib imported only for --plot)."""
    if not plot:
        return
    suffix = Path(plot).suffix.lower().lstrip(".")
    if not suffix:  # matplotlib writes its default format (PNG)
        return
    from matplotlib.backend_bases import FigureCanvasBase

    supported = sorted(FigureCanvasBase.get_supported_filetypes())
    if suffix not in supported:
        raise SpecError(
            f"cannot write a .{suffix} plot; supported file types: {', '.join(supported)}",
            field="--plot",
        )


def _prepare_outputs(out: str | None, plot: str | None) -> None:
    """Create the folders of --out and --plot (or refuse them) before any fitting or writing."""
    for path, field in ((out, "--out"), (plot, "--plot")):
        if path:
            prepare_output(path, field)


@click.command("fit")
@click.argument("runs_csv", type=click.Path(dir_okay=False))
@click.option(
    "--law",
    "form",
    type=click.Choice(LAWS),
    default="chinchilla",
    show_default=True,
    help="kaplan-irreducible: Kaplan's form plus an irreducible loss E. auto: the form among "
    "chinchilla, kaplan and kaplan-irreducible that best predicts the ladder's two largest "
    "model sizes from the smaller ones (--select-folds). mpl: loss curves through LR schedules.",
)
@click.option(
    "--select-folds",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="With --law auto: how many of the largest model sizes are held out in turn.",
)
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default="epoch",
    show_default=True,
    help="epoch: Approach 3 (Huber, L-BFGS-B, 4,500-start grid); approach1: training-curve envelope; approach2: IsoFLOP parabolas.",
)
@click.option(
    "--drop-highest",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Drop the K highest-loss points (Epoch drops 5).",
)
@click.option(
    "--last-per-run", is_flag=True, help="Keep only each run's final row (needs a run column)."
)
@click.option(
    "--delta",
    type=POSITIVE_FINITE,
    default=1e-3,
    show_default=True,
    help="Huber delta on the log-loss residual.",
)
@click.option(
    "--bootstrap",
    "n_boot",
    type=click.IntRange(min=0),
    default=0,
    help="Bootstrap resamples for confidence intervals.",
)
@click.option(
    "--ci-compute",
    type=POSITIVE_FINITE,
    default=None,
    help="Also give bootstrap CIs of N_opt, D_opt at this compute (FLOPs).",
)
@click.option(
    "--loo", is_flag=True, help="Leave-one-out residuals (one warm-started refit per point)."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--param-count",
    type=click.Choice(["total", "non-embedding"]),
    default=None,
    help="What N counts: the params column (total), or the non_embedding_params column "
    "(Kaplan et al. 2020's N). Default: total; --law auto tries both when the CSV has both.",
)
@click.option(
    "--columns",
    default=None,
    help="Map column names: params=model_size,tokens=training_tokens,loss=loss.",
)
@click.option(
    "--size-exponent",
    type=click.FloatRange(0.01, 2.0),
    default=0.34,
    show_default=True,
    help="With --law mpl and curves of >= 2 model sizes (a params column): the exponent of "
    "L0(N) = E + K·N^-a, a prior that two sizes cannot fit (Hoffmann et al. 2022's α).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Write a PNG plot.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write FIT.json.")
def fit(
    runs_csv: str,
    form: str,
    select_folds: int,
    method: str,
    drop_highest: int,
    last_per_run: bool,
    delta: float,
    n_boot: int,
    ci_compute: float | None,
    loo: bool,
    seed: int,
    param_count: str | None,
    columns: str | None,
    size_exponent: float,
    as_json: bool,
    plot: str | None,
    out: str | None,
) -> None:
    """Fit a scaling law to RUNS_CSV (columns: params, tokens, loss; optional flops, run,
    unique_tokens). With --law mpl: a multi-power law to loss curves (columns run, step, lr, loss;
    an optional params column, each run's total parameter count, with two or more model sizes
    fits the size-aware law, which a plan evaluates at its own model's total size)."""
    from scaleplan.planner.laws import runs_csv as rc
    from scaleplan.planner.laws.io import fit_document, write_fit

    _check_plot_suffix(plot)
    if form == "mpl":
        return _fit_mpl(runs_csv, rc.parse_column_map(columns), as_json, plot, out, size_exponent)
    t0 = time.perf_counter()
    runs = rc.read_runs(runs_csv, rc.parse_column_map(columns))
    if last_per_run:
        runs = rc.last_per_run(runs)
    runs = rc.drop_highest(runs, drop_highest)
    if form == "auto" and method != "epoch":
        raise NotImplementedFeature("--law auto needs --method epoch", field="--method")
    if method != "epoch" and form != "chinchilla":
        raise NotImplementedFeature(
            f"--method {method} fits a frontier; --law {form} needs --method epoch",
            field="--method",
        )
    if method != "epoch" and (n_boot or loo):
        raise NotImplementedFeature(
            "--bootstrap and --loo are implemented for --method epoch", field="--method"
        )
    if loo and form == "data-constrained":
        raise NotImplementedFeature(
            "--loo is implemented for chinchilla and the kaplan forms", field="--loo"
        )
    if method == "approach1" and runs.run is None:
        raise SpecError(
            "approach1 needs a run column (training curves)", field="run", source=runs.source
        )
    if param_count:
        runs.params(param_count)  # a missing non_embedding_params column, before any work
    _prepare_outputs(out, plot)  # every output path checked before fitting
    selection = None
    if form == "auto":
        from scaleplan.planner.laws.selection import SELECTABLE, select_form

        both = param_count is None and runs.N_non_embedding is not None
        bar, cb = progress_bar(
            len(SELECTABLE) * select_folds * (2 if both else 1), "choosing the form"
        )
        with bar:
            best, scores = select_form(
                runs.params(param_count or "total"),
                runs.D,
                runs.loss,
                folds=select_folds,
                delta=delta,
                progress=cb,
                N_non_embedding=runs.N_non_embedding if both else None,
            )
        form, param_count = best.form, (param_count or best.param_count)
        selection = {
            "chosen": form,
            "param_count": param_count,
            "folds": select_folds,
            "forms": [s.to_dict() for s in scores],
        }
    param_count = param_count or "total"
    n_fit = runs.params(param_count)
    # the law's compute counts the parameters its N counts (C = 6ND; Kaplan et al. 2020 eq. 2.1)
    flops_fit = runs.flops if param_count == "total" else FLOPS_PER_PARAM_TOKEN * n_fit * runs.D
    if param_count != "total" and method != "epoch":
        raise NotImplementedFeature(
            f"--method {method} groups runs by their FLOPs as the CSV counts them; fit it on "
            "--param-count total",
            field="--param-count",
        )
    warnings: list[str] = []
    extra: dict = {}
    bootstrap = None
    if method == "epoch":
        from scaleplan.planner.laws.fitting import fit_law
        from scaleplan.planner.laws.uncertainty import bootstrap as run_bootstrap
        from scaleplan.planner.laws.uncertainty import loo_residuals

        res = fit_law(form, n_fit, runs.D, runs.loss, unique_tokens=runs.unique_tokens, delta=delta)
        law, objective, n_points = res.law, res.objective, res.n_points
        if n_boot:
            bar, cb = progress_bar(n_boot, "bootstrap")
            with bar:
                bootstrap = run_bootstrap(
                    res,
                    form,
                    n_fit,
                    runs.D,
                    runs.loss,
                    n_samples=n_boot,
                    seed=seed,
                    compute=ci_compute,
                    unique_tokens=runs.unique_tokens,
                    progress=cb,
                )
        if loo:
            bar, cb = progress_bar(len(runs.N), "leave-one-out")
            with bar:
                r = loo_residuals(res, form, n_fit, runs.D, runs.loss, progress=cb)
            extra["loo"] = {
                "residuals_log": r.tolist(),
                "rmse_log": float(np.sqrt(np.mean(r**2))),
                "max_abs_rel": float(np.max(np.abs(np.expm1(r)))),
            }
    else:
        from scaleplan.planner.laws.isoflop import approach1, approach2

        if method == "approach2":
            ff = approach2(n_fit, runs.D, runs.loss, runs.flops)
        else:
            ff = approach1(n_fit, runs.D, runs.loss, runs.run)
        law, objective, n_points = ff.law, ff.objective, ff.n_points
        extra["isoflop"] = {"optima": ff.optima, "parabolas": ff.parabolas}
    if ci_compute is not None:
        from scaleplan.planner.laws.uncertainty import extrapolation_warning

        w = extrapolation_warning(float(flops_fit.max()), ci_compute)
        if w:
            warnings.append(w)
    law = dataclasses.replace(law, param_count=param_count)  # type: ignore[type-var]
    seconds = time.perf_counter() - t0
    objective_info = {
        "value": objective,
        "delta": delta if method == "epoch" else None,
        "dropped_highest": drop_highest,
    }
    doc = fit_document(
        law,
        method=method,
        points={**runs.points(), "N": n_fit.tolist(), "flops": flops_fit.tolist()},
        objective=objective_info,
        bootstrap=bootstrap,
        extra={
            **extra,
            "max_fitted_flops": float(flops_fit.max()),
            "seconds": seconds,
            "input": runs.source,
            **({"selection": selection} if selection else {}),
        },
    )
    if out:
        write_fit(out, doc)
    if plot:
        from scaleplan.planner.laws.plots import plot_fit

        try:
            plot_fit(doc, plot)
        except OSError as exc:
            raise SpecError(f"cannot write {plot}: {exc.strerror or exc}", field="--plot") from None
    summary = {
        "law": form if method == "epoch" else law.name,
        "method": method,
        "params": law.params,
        "param_count": param_count,
        "n_points": n_points,
        "loss": objective,
        "seconds": seconds,
        "warnings": warnings,
    }
    if bootstrap:
        summary["ci"] = bootstrap["ci"]
    if selection:
        summary["selection"] = selection
    if "loo" in extra:
        summary["loo"] = {k: v for k, v in extra["loo"].items() if k != "residuals_log"}
    if as_json:
        click.echo(json.dumps(doc_clean(summary)))
        return
    print_fit(summary, out)


def _fit_mpl(
    path: str,
    columns: dict[str, str],
    as_json: bool,
    plot: str | None,
    out: str | None,
    size_exponent: float,
) -> None:
    """Multi-power law (Luo et al. 2025) from loss curves: columns run, step, lr, loss."""
    from scaleplan.planner.laws.io import write_fit
    from scaleplan.planner.laws.mpl_runs import curve_params, fit_curves_document, read_curves

    curves = read_curves(path, columns)
    _prepare_outputs(out, plot)
    summary, law, curves = fit_curves_document(
        path, columns, curves=curves, size_exponent=size_exponent
    )
    sized = summary["law"] == "mpl-sized"
    if out:
        doc: dict[str, Any] = {
            "schema": "scaleplan.mpl-sized/1" if sized else "scaleplan.mpl/1",
            "law": {"form": summary["law"], "params": summary["params"]},
            "final_loss": summary["final_loss"],
            "input": path,
        }
        if sized:
            doc["law"]["sizes"] = summary["sizes"]
        write_fit(out, doc)
    if plot:
        from scaleplan.planner.laws.plots import plot_loss_forecast
        from scaleplan.planner.laws.schedule_law import predict_loss_curve

        c = max(curves, key=lambda c: (c.n_params or 0.0, len(c.lr_per_step)))
        steps = np.asarray(c.steps)
        try:
            plot_loss_forecast(
                steps,
                predict_loss_curve(curve_params(law, c), c.lr_per_step)[steps],
                plot,
                observed=c.loss,
                lr=c.lr_per_step[steps],
                title=f"multi-power law forecast: {c.name}",
            )
        except OSError as exc:
            raise SpecError(f"cannot write {plot}: {exc.strerror or exc}", field="--plot") from None
    if as_json:
        click.echo(json.dumps(doc_clean(summary)))
        return
    print_fit(summary, out)

"""`scaleplan optimal --compute C`: the compute-optimal (or constrained, or inference-aware) N and
D of a fitted or published law."""

from __future__ import annotations

import json

import click
import numpy as np

from scaleplan.planner.cli import POSITIVE_FINITE
from scaleplan.specs.errors import NotImplementedFeature, SpecError

from .fit_view import doc_clean


@click.command("optimal")
@click.option(
    "--compute", type=POSITIVE_FINITE, required=True, help="Training compute C in FLOPs (C = 6ND)."
)
@click.option(
    "--fit",
    "fit_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="A FIT.json from `scaleplan fit`.",
)
@click.option(
    "--preset",
    default=None,
    help="Published law: chinchilla, epoch, kaplan, data-constrained, ... (default chinchilla).",
)
@click.option(
    "--max-tokens",
    type=POSITIVE_FINITE,
    default=None,
    help="Unique tokens available (repetition per Muennighoff beyond).",
)
@click.option(
    "--max-params", type=POSITIVE_FINITE, default=None, help="Largest model size allowed."
)
@click.option(
    "--inference-tokens",
    type=POSITIVE_FINITE,
    default=None,
    help="Expected lifetime inference tokens (Sardana et al.).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def optimal(
    compute: float,
    fit_path: str | None,
    preset: str | None,
    max_tokens: float | None,
    max_params: float | None,
    inference_tokens: float | None,
    as_json: bool,
) -> None:
    """Compute-optimal model size N and tokens D for a compute budget."""
    from scaleplan.planner.laws import constrained_optimal, inference_aware_optimal, load_law
    from scaleplan.planner.laws.uncertainty import extrapolation_warning, frontier_band

    if not (np.isfinite(compute) and compute > 0):
        raise SpecError(f"must be positive (got {compute!r})", field="--compute")
    law = load_law(preset=preset, fit_path=fit_path)
    warnings: list[str] = []
    ci = {}
    if fit_path:
        from scaleplan.planner.laws.io import read_fit

        doc = read_fit(fit_path)
        if doc.get("max_fitted_flops"):
            w = extrapolation_warning(float(doc["max_fitted_flops"]), compute)
            if w:
                warnings.append(w)
        try:
            ci = frontier_band(doc, compute)
        except SpecError as err:
            raise err.with_source(fit_path) from None
    if inference_tokens:
        if max_tokens or max_params:
            raise NotImplementedFeature(
                "--inference-tokens with --max-tokens/--max-params", field="--inference-tokens"
            )
        N, D = inference_aware_optimal(law, compute, inference_tokens, kind="compute")
        epochs = 1.0
    else:
        N, D, epochs = constrained_optimal(
            law, compute, max_unique_tokens=max_tokens, max_params=max_params
        )
    try:
        loss = float(
            law.loss(N, D, unique_tokens=max_tokens)
            if max_tokens and law.name == "data-constrained"
            else law.loss(N, D)
        )
    except NotImplementedFeature:
        loss = None
    result = {
        "compute": compute,
        "law": law.name,
        "source": law.source,
        "N": N,
        "param_count": law.param_count,
        "D": D,
        "tokens_per_param": D / N,
        "epochs": epochs,
        "loss": loss,
        "warnings": warnings,
    }
    if ci:
        result["ci"] = ci
    if as_json:
        click.echo(json.dumps(doc_clean(result)))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"compute-optimal at C = {compute:.3g} FLOPs ({law.source})")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    counted = " (non-embedding)" if law.param_count == "non-embedding" else ""
    table.add_row(f"parameters N{counted}", f"{N:.4g}")
    table.add_row("tokens D", f"{D:.4g}")
    table.add_row("tokens / parameter", f"{D / N:.2f}")
    table.add_row("epochs over unique data", f"{epochs:.2f}")
    if loss is not None:
        table.add_row("predicted loss", f"{loss:.4f}")
    for k, (lo, _, hi) in ci.items():
        table.add_row(f"{k} 95% band", f"[{lo:.4g}, {hi:.4g}]")
    console = Console()
    console.print(table)
    for w in warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")

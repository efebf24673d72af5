"""`scaleplan validate --fit-profile OUT.yaml`: the shipped efficiency profiles refitted on the
runs being validated (a user's own measurements in the published-runs CSV schema), written in the
format `--profile`, `simulate --profile` and a budget's `cluster.profile` read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from scaleplan.specs.errors import SpecError


def fit_profiles_payload(cases: list[Any], cv_folds: int | None = None) -> dict[str, Any]:
    """Per shipped profile the rows use: the refitted profile and the rows' error before/after;
    with `cv_folds`, also the K-fold held-out error of the refit (`cross_validated_mape`)."""
    from scaleplan.planner.profile_fit import calibrate_from_shipped, cross_validated_mape

    if not cases:
        raise SpecError(
            "no row can be predicted, so there is no profile to fit", field="--fit-profile"
        )
    fits = calibrate_from_shipped(cases)
    held_out: dict[str, float | None] = {}
    if cv_folds:
        for name in fits:
            members = [c for c in cases if c.cluster.profile.name == name]
            held_out[name] = cross_validated_mape(members, cv_folds)
    return {
        "fits": [
            {
                "profile": name,
                "n_runs": fit.report.n_runs,
                "mape_before_pct": before,
                "mape_after_pct": after,
                **({"mape_held_out_pct": held_out[name], "cv_folds": cv_folds} if cv_folds else {}),
                "fit_message": fit.report.message,
            }
            for name, (fit, before, after) in fits.items()
        ],
        "profiles": {
            name: fit.report.profile.model_dump(mode="json", exclude={"name"})
            for name, (fit, _, _) in fits.items()
        },
    }


def write_profiles(profiles: dict[str, Any], out: str) -> None:
    try:
        Path(out).write_text(yaml.safe_dump(profiles, sort_keys=False))
    except OSError as err:
        raise SpecError(f"cannot write: {err}", source=out) from None


def render_fits(payload: dict[str, Any], out: str, console: Any) -> None:
    from rich.table import Table

    cv = any("cv_folds" in f for f in payload["fits"])
    table = Table(title="efficiency profiles refitted on these runs")
    cols = ["profile", "runs", "MAPE shipped", "MAPE refitted (in-sample)"]
    if cv:
        cols.append(f"MAPE held out ({payload['fits'][0]['cv_folds']}-fold)")
    for col in cols:
        table.add_column(col, justify="left" if col == "profile" else "right")
    for f in payload["fits"]:
        row = [
            f["profile"],
            str(f["n_runs"]),
            f"{f['mape_before_pct']:.1f} %",
            f"{f['mape_after_pct']:.1f} %",
        ]
        if cv:
            held = f.get("mape_held_out_pct")
            row.append("fewer runs than folds" if held is None else f"{held:.1f} %")
        table.add_row(*row)
    console.print(table)
    console.print(
        f"profiles written to {out}: use them with `scaleplan validate --profile {out}`, "
        f"`scaleplan simulate --profile {out}`, or `cluster: {{profile: {out}}}` in a budget"
    )

"""Fit the shipped efficiency profiles on published runs, and test them honestly.

`fit_profiles` groups predictable rows by the profile their GPU and software stack use and runs
`scaleplan.costmodels.calibration.calibrate` on each group, starting from documented priors
(not from the shipped, already fitted values). `leave_one_source_out` refits without each source
in turn and predicts that source with the profiles fitted on the others, so overfitting to a
source shows; a profile with no other data falls back to its prior.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scaleplan.costmodels.calibration import FitReport, calibrate_report, default_fit
from scaleplan.specs.efficiency import EfficiencyProfile, shipped_profiles

from .validation import RunCase
from .validation_score import Prediction, predict_cases, to_measured_runs

# Priors per software stack, from what each stack is documented to do (efficiency.STACKS):
# the legacy Megatron softmax kernels read and write the score matrix several times (scale+mask,
# softmax, dropout; Korthikanti 2022 table 2's 5as/h term), and its DDP reduces gradients after
# the backward pass.
STACK_PRIORS: dict[str, dict[str, float]] = {
    "default": {"attention_score_passes": 0.0},
    "megatron-legacy": {"attention_score_passes": 6.0, "dp_overlap": 0.0, "tp_overlap": 0.0},
}


def fit_parameters(cases: Sequence[RunCase]) -> tuple[str, ...]:
    """`calibration.default_fit` for these cases: the legacy stack's overlaps stay 0, and only a
    stack that does not fuse attention fits the unfused score-matrix passes."""
    return default_fit(
        len(cases),
        has_moe=any(c.model.moe is not None for c in cases),
        fused_attention=all(c.stack == "default" for c in cases),
        overlaps=not all(c.stack == "megatron-legacy" for c in cases),
    )


def prior_profile(name: str) -> EfficiencyProfile:
    """The unfitted starting point of a shipped profile: its GPUs and stack, default values."""
    shipped = shipped_profiles().get(name)
    gpus = shipped.gpus if shipped else ()
    stack = shipped.stack if shipped else "default"
    return EfficiencyProfile(name=name, gpus=gpus, stack=stack, **STACK_PRIORS.get(stack, {}))


@dataclass(frozen=True)
class ProfileFit:
    name: str
    report: FitReport
    sources: tuple[str, ...]


def fit_profiles(cases: Sequence[RunCase], max_nfev: int = 300) -> dict[str, ProfileFit]:
    """One fitted profile per shipped profile name that has runs among `cases`."""
    groups: dict[str, list[RunCase]] = {}
    for case in cases:
        groups.setdefault(case.cluster.profile.name, []).append(case)
    fits: dict[str, ProfileFit] = {}
    for name, members in sorted(groups.items()):
        runs = to_measured_runs(members)
        report = calibrate_report(
            runs, base=prior_profile(name), fit=fit_parameters(members), name=name,
            max_nfev=max_nfev,
        )  # fmt: skip
        sources = tuple(sorted({c.source for c in members}))
        fitted = report.profile.model_copy(
            update={"fitted_on": f"{len(runs)} runs: {', '.join(sources)}"}
        )
        fits[name] = ProfileFit(name, _with_profile(report, fitted), sources)
    return fits


def _with_profile(report: FitReport, profile: EfficiencyProfile) -> FitReport:
    return FitReport(
        profile, report.mape_pct, report.max_pct, report.n_runs, report.success, report.message
    )


def leave_one_source_out(cases: Sequence[RunCase], max_nfev: int = 300) -> list[Prediction]:
    """Each source predicted by profiles fitted on every other source (priors where none)."""
    out: list[Prediction] = []
    for source in sorted({c.source for c in cases}):
        train = [c for c in cases if c.source != source]
        test = [c for c in cases if c.source == source]
        fitted = {name: f.report.profile for name, f in fit_profiles(train, max_nfev).items()}
        table = {
            name: fitted.get(name) or prior_profile(name)
            for name in {c.cluster.profile.name for c in test}
        }
        out.extend(predict_cases(test, table))
    return sorted(out, key=lambda p: p.case.index)

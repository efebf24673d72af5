"""Fit the shipped efficiency profiles on published runs, and test them honestly.

`pooled_priors` fits one profile per software stack on the runs of all its GPU families, from
documented priors (not from the shipped, already fitted values). `fit_profiles` groups
predictable rows by the profile their GPU and software stack use and runs
`scaleplan.costmodels.calibration.calibrate` on each group, starting from its stack's pooled fit.
`leave_one_source_out` refits both without each source in turn and predicts that source with the
profiles fitted on the others, so overfitting to a source shows; a profile with no other data
falls back to its stack's pooled fit (its priors where the stack has no other family).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scaleplan.costmodels.calibration import STARTS, FitReport, calibrate_report, default_fit
from scaleplan.specs.efficiency import EfficiencyProfile, shipped_profiles

from .validation import RunCase
from .validation_score import Prediction, predict_cases, summarize, to_measured_runs

# Priors per software stack, from what each stack is documented to do (efficiency.STACKS):
# the legacy Megatron softmax kernels read and write the score matrix several times (scale+mask,
# softmax, dropout; Korthikanti 2022 table 2's 5as/h term), and its DDP reduces gradients after
# the backward pass.
STACK_PRIORS: dict[str, dict[str, float]] = {
    "default": {"attention_score_passes": 0.0},
    "megatron-legacy": {"attention_score_passes": 6.0, "dp_overlap": 0.0, "tp_overlap": 0.0},
    # PyTorch tensor parallelism (DTensor) runs its collectives in line with the GEMMs unless
    # torchtitan's opt-in async TP is on; Megatron-core/TE overlap them.
    "pytorch": {"attention_score_passes": 0.0, "tp_overlap": 0.0},
}
# A stack without a pooled fit of its own starts its families from this stack's (both fuse
# attention and overlap gradient sync).
STACK_FALLBACK: dict[str, str] = {"pytorch": "default"}

# Profiles no run informs that are derived from a fitted profile of the same stack on another GPU
# generation: {derived: (fitted source profile, its generation, the derived one's generation)}.
# GEMM and elementwise efficiencies carry over as fractions of peak; the GEMM size at which
# efficiency halves scales with peak FLOP/s (a fixed time per call: eff = F / (F + peak * t0));
# attention scales with FlashAttention-2's utilisation on each generation
# (efficiency.FLASH_ATTENTION_2_UTIL); the derived stack's priors (`STACK_PRIORS`) replace what
# the source fit's runs could not inform (the A100 runs of these trainers have no TP).
# On Ampere every stack's attention runs FlashAttention-2-class kernels, so the A100 profile
# (fitted on llm-foundry and torchtitan runs) serves the `pytorch` stack there too.
DERIVED: dict[str, tuple[str, str, str]] = {"H100/pytorch": ("A100", "A100", "H100")}


POOL = True  # fit each stack's pooled profile first (`pooled_priors`)


def fit_parameters(cases: Sequence[RunCase]) -> tuple[str, ...]:
    """`calibration.default_fit` for these cases: the legacy stack's overlaps stay 0, and only a
    stack that does not fuse attention fits the unfused score-matrix passes."""
    return default_fit(
        len(cases),
        has_moe=any(c.model.moe is not None for c in cases),
        fused_attention=all(c.stack != "megatron-legacy" for c in cases),
        overlaps=not all(c.stack == "megatron-legacy" for c in cases),
    )


def prior_profile(name: str) -> EfficiencyProfile:
    """The unfitted starting point of a shipped profile: its GPUs and stack, default values."""
    shipped = shipped_profiles().get(name)
    gpus = shipped.gpus if shipped else ()
    stack = shipped.stack if shipped else "default"
    return EfficiencyProfile(name=name, gpus=gpus, stack=stack, **STACK_PRIORS.get(stack, {}))


FIXED_FIELDS = ("name", "gpus", "stack", "fitted_on")  # identity, not efficiency


def _rebase(prior: EfficiencyProfile, pooled: EfficiencyProfile | None) -> EfficiencyProfile:
    """`prior` (a profile's identity) with the efficiency values of its stack's pooled fit."""
    if pooled is None:
        return prior
    values = {k: v for k, v in pooled.model_dump().items() if k not in FIXED_FIELDS}
    return prior.model_copy(update=values)


def pooled_priors(
    cases: Sequence[RunCase], max_nfev: int = 300, starts: int = STARTS
) -> dict[str, EfficiencyProfile]:
    """Per software stack whose runs span several GPU families: one profile fitted on all of
    them, from the stack's documented priors. Achieved fractions of peak and host times carry
    over between GPU families better than generic defaults do, so each family's fit starts from
    (and is pulled towards) its stack's pooled fit, and a family without runs falls back to it
    (partial pooling, Gelman & Hill 2007 ch. 12)."""
    by_stack: dict[str, list[RunCase]] = {}
    for case in cases:
        by_stack.setdefault(prior_profile(case.cluster.profile.name).stack, []).append(case)
    out: dict[str, EfficiencyProfile] = {}
    for stack, members in sorted(by_stack.items()):
        if len({c.cluster.profile.name for c in members}) < 2:
            continue  # one family: its own fit is the pooled fit
        base = EfficiencyProfile(name=f"{stack} (pooled)", stack=stack, **STACK_PRIORS[stack])
        report = calibrate_report(
            to_measured_runs(members), base=base, fit=fit_parameters(members),
            max_nfev=max_nfev, starts=starts,
        )  # fmt: skip
        out[stack] = report.profile
    return out


def fallback_profile(name: str, pooled: Mapping[str, EfficiencyProfile]) -> EfficiencyProfile:
    """The profile of a family without runs: its stack's pooled fit, else the documented priors.
    Through `STACK_FALLBACK` (another stack's pooled fit) the family's own stack priors stay."""
    prior = prior_profile(name)
    if prior.stack in pooled:
        return _rebase(prior, pooled[prior.stack])
    other = pooled.get(STACK_FALLBACK.get(prior.stack, ""))
    if other is None:
        return prior
    return _rebase(prior, other).model_copy(update=STACK_PRIORS.get(prior.stack, {}))


def derived_profile(name: str, fitted: EfficiencyProfile) -> EfficiencyProfile:
    """`DERIVED[name]` from its fitted source profile, moved to the derived GPU generation."""
    from scaleplan.specs.efficiency import FLASH_ATTENTION_2_UTIL
    from scaleplan.specs.hardware import gpu_catalog

    _, src_gen, dst_gen = DERIVED[name]
    prior = prior_profile(name)
    src_gpu = gpu_catalog()[shipped_profiles()[DERIVED[name][0]].gpus[0]]
    dst_gpu = gpu_catalog()[prior.gpus[0]]
    peak_ratio = dst_gpu.dense16_flops / src_gpu.dense16_flops
    util_ratio = FLASH_ATTENTION_2_UTIL[dst_gen] / FLASH_ATTENTION_2_UTIL[src_gen]
    values = _rebase(prior, fitted).model_copy(
        update={
            **STACK_PRIORS.get(prior.stack, {}),
            "gemm_half_flops": fitted.gemm_half_flops * peak_ratio,
            "attention_eff": fitted.attention_eff * util_ratio,
            "fitted_on": f"not fitted: derived from {DERIVED[name][0]} ({fitted.fitted_on}); "
            f"GEMM half-efficiency size x {peak_ratio:.2f} (peak), attention x {util_ratio:.2f} "
            f"(FlashAttention-2 utilisation, {dst_gen} vs {src_gen}); {prior.stack} stack priors "
            + ", ".join(f"{k}={v:g}" for k, v in STACK_PRIORS.get(prior.stack, {}).items()),
        }
    )
    return values


@dataclass(frozen=True)
class ProfileFit:
    name: str
    report: FitReport
    sources: tuple[str, ...]


def fit_profiles(
    cases: Sequence[RunCase],
    max_nfev: int = 300,
    starts: int = STARTS,
    pooled: Mapping[str, EfficiencyProfile] | None = None,
) -> dict[str, ProfileFit]:
    """One fitted profile per shipped profile name that has runs among `cases`, each from its
    stack's `pooled` fit where given (`pooled_priors`), else from the documented priors."""
    pooled = pooled or {}
    groups: dict[str, list[RunCase]] = {}
    for case in cases:
        groups.setdefault(case.cluster.profile.name, []).append(case)
    fits: dict[str, ProfileFit] = {}
    for name, members in sorted(groups.items()):
        runs = to_measured_runs(members)
        report = calibrate_report(
            runs, base=fallback_profile(name, pooled), fit=fit_parameters(members), name=name,
            max_nfev=max_nfev, starts=starts,
        )  # fmt: skip
        sources = tuple(sorted({c.source for c in members}))
        fitted = report.profile.model_copy(
            update={"fitted_on": f"{len(runs)} runs: {', '.join(sources)}" + _from(name, pooled)}
        )
        fits[name] = ProfileFit(name, _with_profile(report, fitted), sources)
    return fits


def _from(name: str, pooled: Mapping[str, EfficiencyProfile]) -> str:
    stack = prior_profile(name).stack
    return f"; from the {stack} stack's pooled fit" if stack in pooled else ""


def _with_profile(report: FitReport, profile: EfficiencyProfile) -> FitReport:
    return FitReport(
        profile, report.mape_pct, report.max_pct, report.n_runs, report.success, report.message
    )


def leave_one_source_out(
    cases: Sequence[RunCase], max_nfev: int = 300, starts: int = STARTS, pool: bool = POOL
) -> list[Prediction]:
    """Each source predicted by profiles fitted on every other source (with `pool`, a family
    left without runs gets its stack's pooled fit on the others; else the priors)."""
    out: list[Prediction] = []
    for source in sorted({c.source for c in cases}):
        test = [c for c in cases if c.source == source]
        # Only the profiles the test rows use are refitted (and only their stacks pooled): the
        # same figures as refitting everything, in a fraction of the time.
        names = {c.cluster.profile.name for c in test}
        stacks = {prior_profile(n).stack for n in names}
        train = [
            c for c in cases
            if c.source != source and prior_profile(c.cluster.profile.name).stack in stacks
        ]  # fmt: skip
        pooled = pooled_priors(train, max_nfev, starts) if pool else {}
        members = [c for c in train if c.cluster.profile.name in names]
        fitted = {
            name: f.report.profile
            for name, f in fit_profiles(members, max_nfev, starts, pooled).items()
        }
        table = {name: fitted.get(name) or fallback_profile(name, pooled) for name in names}
        out.extend(predict_cases(test, table))
    return sorted(out, key=lambda p: p.case.index)


def calibrate_from_shipped(
    cases: Sequence[RunCase], max_nfev: int = 300
) -> dict[str, tuple[ProfileFit, float, float]]:
    """A user's measured runs (`scaleplan calibrate --runs`): per shipped profile their rows use,
    that profile refitted on them, starting from (and pulled towards) the shipped values, with the
    rows' MAPE before and after. Fewer runs fit fewer parameters (`calibration.default_fit`)."""
    groups: dict[str, list[RunCase]] = {}
    for case in cases:
        groups.setdefault(case.cluster.profile.name, []).append(case)
    out: dict[str, tuple[ProfileFit, float, float]] = {}
    for name, members in sorted(groups.items()):
        base = members[0].cluster.profile
        report = calibrate_report(
            to_measured_runs(members), base=base, fit=fit_parameters(members), name=name,
            max_nfev=max_nfev,
        )  # fmt: skip
        sources = tuple(sorted({c.source for c in members}))
        fitted = report.profile.model_copy(
            update={
                "fitted_on": f"{len(members)} runs: {', '.join(sources)}; from the shipped {name}"
            }
        )
        before = summarize(predict_cases(members)).mape_pct
        after = summarize(predict_cases(members, {name: fitted})).mape_pct
        out[name] = (ProfileFit(name, _with_profile(report, fitted), sources), before, after)
    return out


def cross_validated_mape(cases: Sequence[RunCase], folds: int, max_nfev: int = 300) -> float | None:
    """K-fold estimate of a refitted profile's error on runs it was not fitted on: the runs
    (all of one shipped profile) are split into `folds` folds by position, each fold is predicted
    by the profile refitted on the others (`calibrate_from_shipped`'s fit), and the MAPE is over
    every held-out prediction. None when there are fewer runs than folds."""
    if folds < 2 or len(cases) < folds:
        return None
    name = cases[0].cluster.profile.name
    base = cases[0].cluster.profile
    errors: list[float] = []
    for k in range(folds):
        train = [c for i, c in enumerate(cases) if i % folds != k]
        test = [c for i, c in enumerate(cases) if i % folds == k]
        report = calibrate_report(
            to_measured_runs(train), base=base, fit=fit_parameters(train), name=name,
            max_nfev=max_nfev,
        )  # fmt: skip
        errors += [abs(p.error_pct) for p in predict_cases(test, {name: report.profile})]
    return float(sum(errors) / len(errors))

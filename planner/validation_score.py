"""Predict the cases of a published-runs CSV (`validation.load_cases`) and score them: per-row
errors, MAPE / median / max per source and overall."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from scaleplan.costmodels import flops
from scaleplan.costmodels.calibration import MeasuredRun, predict_step_times
from scaleplan.costmodels.memory import memory_breakdown
from scaleplan.specs.efficiency import EfficiencyProfile
from scaleplan.specs.hardware import ClusterSpec

from .validation import RunCase, metric_from_step_time
from .validation_rows import flops_per_token_for

# --- scoring --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    case: RunCase
    predicted: float
    predicted_step_time_s: float
    mfu: float
    fits: bool

    @property
    def error_pct(self) -> float:
        return (self.predicted - self.case.measured) / self.case.measured * 100.0


@dataclass(frozen=True)
class Summary:
    mape_pct: float
    median_pct: float
    max_pct: float
    n_predicted: int
    n_skipped: int = 0
    by_source: dict[str, dict[str, float]] = field(default_factory=dict)


def _stats(errors: Iterable[float]) -> dict[str, float]:
    ape = [abs(e) for e in errors]
    if not ape:
        return {
            "mape_pct": float("nan"),
            "median_pct": float("nan"),
            "max_pct": float("nan"),
            "n": 0,
        }
    return {
        "mape_pct": sum(ape) / len(ape),
        "median_pct": statistics.median(ape),
        "max_pct": max(ape),
        "n": len(ape),
    }


def summarize(predictions: list[Prediction], n_skipped: int = 0) -> Summary:
    overall = _stats(p.error_pct for p in predictions)
    sources: dict[str, list[float]] = {}
    for p in predictions:
        sources.setdefault(p.case.source, []).append(p.error_pct)
    return Summary(
        mape_pct=overall["mape_pct"],
        median_pct=overall["median_pct"],
        max_pct=overall["max_pct"],
        n_predicted=len(predictions),
        n_skipped=n_skipped,
        by_source={k: _stats(v) for k, v in sources.items()},
    )


# --- predicting -----------------------------------------------------------------------------


def case_flops_per_token(case: RunCase) -> float:
    return flops_per_token_for(case.convention, case.model, case.layout, case.seq_length)


def to_measured_runs(cases: list[RunCase]) -> list[MeasuredRun]:
    """The cases as calibration records, every measurement converted to a step time."""
    return [
        MeasuredRun(
            model=c.model,
            cluster=c.cluster,
            layout=c.layout,
            seq_length=c.seq_length,
            measured_step_time_s=c.measured_step_time_s(case_flops_per_token(c)),
        )  # fmt: skip
        for c in cases
    ]


def profile_chooser(
    profiles: Mapping[str, EfficiencyProfile] | None,
) -> Callable[[ClusterSpec], EfficiencyProfile]:
    """Profile for a cluster: `profiles[name of its shipped profile]` when given, else the
    cluster's own (validation sets each row's cluster to its GPU's and stack's profile)."""
    table = dict(profiles or {})
    return lambda cluster: table.get(cluster.profile.name) or cluster.profile


def predict_cases(
    cases: list[RunCase], profiles: Mapping[str, EfficiencyProfile] | None = None
) -> list[Prediction]:
    """Predict every case (batched per model and cluster); memory is checked per case."""
    if not cases:
        return []
    runs = to_measured_runs(cases)
    steps = predict_step_times(runs, profile_chooser(profiles))
    out = []
    for case, step_s in zip(cases, steps, strict=True):
        fpt = case_flops_per_token(case)
        mfu = (
            flops.model_flops_per_token(case.model, case.seq_length)
            * case.tokens_per_step
            / (step_s * case.layout.num_gpus * case.cluster.gpu.dense16_flops)
        )
        mem = memory_breakdown(case.model, case.layout, case.seq_length)["total"]
        out.append(
            Prediction(
                case=case,
                predicted=metric_from_step_time(case, float(step_s), fpt),
                predicted_step_time_s=float(step_s),
                mfu=float(mfu),
                fits=bool(mem <= case.cluster.gpu.hbm_bytes),
            )
        )
    return out

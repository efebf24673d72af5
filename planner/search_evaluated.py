"""Every layout one search evaluated, with its cost: for the report's time-vs-dollars scatter
(planner/report/plot_search.py). Composes `search.search_layouts` (through its `on_costed` hook)
and `search._estimate_by_count`; computes no cost of its own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from scaleplan.specs.hardware import ClusterSpec
from scaleplan.specs.model import ModelSpec

from .search import CostedLayouts, SearchResult, _estimate_by_count, search_layouts

__all__ = ["EvaluatedLayouts", "evaluated_layouts"]


@dataclass(frozen=True)
class EvaluatedLayouts:
    """Every layout of one search with its cost, for a time-vs-dollars scatter: the feasible
    ones, and the out-of-memory ones at the step time they would take."""

    result: SearchResult
    layouts_evaluated: int
    step_time_s: np.ndarray
    usd_per_token: np.ndarray
    headroom_bytes: np.ndarray
    oom_step_time_s: np.ndarray
    oom_usd_per_token: np.ndarray
    oom_over_bytes: np.ndarray


def evaluated_layouts(
    model: ModelSpec,
    cluster: ClusterSpec,
    seq_length: int,
    target_sequences: float,
    *,
    max_oom_costed: int = 20_000,
    **search_kw: Any,
) -> EvaluatedLayouts:
    """`search_layouts` with every candidate it costed kept, and the out-of-memory candidates
    (rules passed, memory did not) costed too (at most `max_oom_costed`, evenly thinned), so a
    plot can show what the memory limit cost. Same arguments as `search_layouts`."""
    kept: list[CostedLayouts] = []
    result = search_layouts(
        model, cluster, seq_length, target_sequences, on_costed=kept.append, **search_kw
    )
    c = kept[0]
    oom = np.flatnonzero(c.code == len(c.reasons) - 1)
    if oom.size > max_oom_costed:
        oom = oom[np.linspace(0, oom.size - 1, max_oom_costed).astype(int)]
    oom_time = np.zeros(0)
    oom_usd = np.zeros(0)
    if oom.size:
        lay = c.candidates.select(oom)
        step = _estimate_by_count(model, cluster, lay, c.gpus[oom], seq_length)
        oom_time = step.step_time_s
        oom_usd = (
            oom_time
            / (lay.global_batch * seq_length)
            * c.gpus[oom]
            * c.price_usd_per_gpu_hour
            / 3600.0
        )
    return EvaluatedLayouts(
        result=result,
        layouts_evaluated=len(c.candidates),
        step_time_s=c.step.step_time_s,
        usd_per_token=c.usd_per_token,
        headroom_bytes=c.headroom_bytes,
        oom_step_time_s=oom_time,
        oom_usd_per_token=oom_usd,
        oom_over_bytes=c.memory_bytes[oom] - cluster.gpu.hbm_bytes,
    )

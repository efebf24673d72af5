"""Vectorized parallel-layout search: candidates as numpy arrays, pruned by the layout rules and
the memory model, ranked by the step-time model.

No Python loop runs over candidates: the grid is a meshgrid over every dimension, the rules are
`specs.layout.layout_violations` evaluated on whole arrays, memory is `costmodels.memory`, time is
`costmodels.step.estimate_step_batch`. Loops here run over dimensions and rule lists only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from scaleplan.costmodels.batch import LayoutBatch
from scaleplan.costmodels.memory import GIB, memory_per_gpu
from scaleplan.costmodels.stage_layers import balanced_layout, embedding_loss_split
from scaleplan.costmodels.step import StepBatch, estimate_step_batch
from scaleplan.specs.hardware import ClusterSpec
from scaleplan.specs.layout import PRECISION_CODES, RECOMPUTE_CODES, LayoutSpec, layout_violations
from scaleplan.specs.model import ModelSpec

from .search_report import family_rejections, pareto_front

# optimizer sharding choices: (zero_stage, distributed_optimizer)
OPTIMIZER_MODES: dict[str, tuple[int, int]] = {
    "replicated": (0, 0),
    "distributed": (0, 1),  # Megatron distributed optimizer = ZeRO-1
    "zero3": (3, 0),  # ZeRO-3 / FSDP
}
# The batch may exceed its target by this factor when dp * micro_batch forces it; beyond it the
# layout is rejected (past the critical batch size returns diminish; McCandlish et al. 2018).
MAX_BATCH_FACTOR = 2.0


def _powers_of_two(limit: int) -> tuple[int, ...]:
    out, v = [], 1
    while v <= limit:
        out.append(v)
        v *= 2
    return tuple(out)


@dataclass(frozen=True)
class SearchSpace:
    """The values each dimension may take. dp follows from the GPU count."""

    tp: tuple[int, ...]
    pp: tuple[int, ...]
    vp: tuple[int, ...] = (1, 2, 4)
    cp: tuple[int, ...] = (1, 2, 4, 8)
    ep: tuple[int, ...] = (1,)
    # expert tensor parallel: 0 = same as tp (Megatron's default), 1 = experts unsplit, EP
    # folded over the TP ranks (MoE parallel folding, Megatron-core expert_tensor_parallel_size)
    etp: tuple[int, ...] = (0,)
    sequence_parallel: tuple[int, ...] = (0, 1)
    optimizer: tuple[str, ...] = ("replicated", "distributed", "zero3")
    micro_batch: tuple[int, ...] = (1, 2, 4, 8)
    recompute: tuple[str, ...] = ("none", "selective", "full")
    # compute precision of every layout: the GPU's 16-bit format (fp16 on V100, else bf16)
    precision: str = "bf16"

    @classmethod
    def default(cls, model: ModelSpec, cluster: ClusterSpec, seq_length: int) -> SearchSpace:
        """TP up to twice the NVLink domain (so crossing it is reported), PP up to the depth,
        CP up to seq/4096 chunks, EP over the expert count for MoE, and for MoE both expert-TP
        choices (etp = tp, or etp = 1 with EP folded over the TP ranks)."""
        gpus = cluster.num_gpus
        tp = _powers_of_two(min(2 * cluster.nvlink_domain_size, gpus, model.num_heads))
        pp = _powers_of_two(min(model.num_layers, gpus, 64))
        cp = _powers_of_two(min(max(seq_length // 4096, 1), 32, gpus))
        ep = _powers_of_two(min(model.moe.num_experts, gpus)) if model.moe else (1,)
        etp = (0, 1) if model.moe else (0,)
        return cls(tp=tp, pp=pp, cp=cp, ep=ep, etp=etp, precision=cluster.gpu.half_precision)

    def size(self, gpu_counts: Sequence[int] = (1,)) -> int:
        dims = (
            self.pp,
            self.vp,
            self.cp,
            self.ep,
            self.sequence_parallel,
            self.optimizer,
            self.micro_batch,
            self.recompute,
            tuple(gpu_counts),
        )
        # (tp, etp) pairs, without the etp = 1 copy of tp = 1 (the same layout as etp = tp)
        pairs = sum(len(self.etp) - int(t == 1 and self._folds) for t in self.tp)
        return pairs * int(np.prod([len(d) for d in dims]))

    @property
    def _folds(self) -> bool:
        """Both expert-TP choices are searched (then tp = 1 has only one)."""
        return 0 in self.etp and 1 in self.etp


def round_global_batch(target_sequences: Any, dp: Any, micro_batch: Any, pp: Any, vp: Any) -> Any:
    """The global batch (sequences) a layout runs for a target: a whole number of
    dp x micro_batch, at least one micro-batch per DP rank, and with the interleaved schedule a
    multiple of pp micro-batches. Works on ints and on numpy arrays alike."""
    per = dp * micro_batch
    accum = np.maximum(np.rint(np.asarray(target_sequences) / per), 1).astype(np.int64)
    accum = np.where(vp > 1, -(-accum // pp) * pp, accum)
    out = accum * per
    return int(out) if np.ndim(out) == 0 else out


def candidate_grid(
    space: SearchSpace,
    gpu_counts: Sequence[int],
    target_sequences: float,
    num_layers: int | None = None,
) -> tuple[LayoutBatch, np.ndarray]:
    """Every combination of the space's values, as a LayoutBatch, and the GPU count of each.

    With `num_layers`, layouts whose pp*vp divides num_layers + 2 but not num_layers count the
    embedding and loss as pipeline layers (`embedding_loss_split`); where neither divides, they
    take the balanced uneven layout where it is valid (`balanced_layout`)."""
    opt = np.array([OPTIMIZER_MODES[o] for o in space.optimizer], dtype=np.int64)
    rec = np.array([RECOMPUTE_CODES[r] for r in space.recompute], dtype=np.int64)
    axes = [
        np.asarray(a, dtype=np.int64)
        for a in (
            space.tp,
            space.pp,
            space.vp,
            space.cp,
            space.ep,
            space.etp,
            space.sequence_parallel,
            np.arange(len(opt)),
            space.micro_batch,
            rec,
            gpu_counts,
        )
    ]
    grids = [g.ravel() for g in np.meshgrid(*axes, indexing="ij")]
    tp, pp, vp, cp, ep, etp, sp, oi, mb, rc, gpus = grids
    # etp = 1 with tp = 1 is the default etp = tp again: keep one copy of each layout
    keep = ~((etp == 1) & (tp == 1) & space._folds)
    tp, pp, vp, cp, ep, etp, sp, oi, mb, rc, gpus = (g[keep] for g in grids)
    dp = np.maximum(gpus // (tp * pp * cp), 1)
    gb = round_global_batch(target_sequences, dp, mb, pp, vp)
    split = 0 if num_layers is None else embedding_loss_split(num_layers, pp, vp)
    balanced = 0 if num_layers is None else balanced_layout(num_layers, pp, vp)
    batch = LayoutBatch.from_arrays(
        tp=tp,
        pp=pp,
        vp=vp,
        cp=cp,
        dp=dp,
        ep=ep,
        etp=etp,
        sequence_parallel=sp,
        zero_stage=opt[oi, 0],
        distributed_optimizer=opt[oi, 1],
        micro_batch=mb,
        global_batch=gb,
        recompute=rc,
        account_embedding_loss_in_pipeline_split=split,
        balanced_pipeline_layout=balanced,
        precision=PRECISION_CODES[space.precision],
    )
    return batch, gpus


@dataclass
class SearchResult:
    """The best layout, the Pareto front and why the rest lost. Arrays are per feasible layout."""

    best: LayoutSpec
    num_gpus: int
    step: dict[str, float]  # the best layout's StepBatch entries
    memory_bytes: float
    layouts_evaluated: int
    layouts_feasible: int
    layouts_costed: int
    seconds: float
    pareto: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    rejected_by_rule: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "layouts_evaluated": self.layouts_evaluated,
            "layouts_feasible": self.layouts_feasible,
            "layouts_costed": self.layouts_costed,
            "seconds": round(self.seconds, 4),
            "best": self.best.model_dump(mode="json"),
            "pareto": self.pareto,
            "rejected": self.rejected,
            "rejected_by_rule": self.rejected_by_rule,
        }


class NoLayoutFits(Exception):
    """No candidate passes the rules and the memory model; carries the family reasons."""

    def __init__(self, rejected: list[dict[str, Any]], evaluated: int) -> None:
        self.rejected = rejected
        self.evaluated = evaluated
        lines = "; ".join(r["reason"] for r in rejected[:4])
        super().__init__(f"none of {evaluated} layouts is valid and fits in memory ({lines})")


ExtraMemory = Callable[[LayoutBatch], np.ndarray]


def cluster_of(cluster: ClusterSpec, num_gpus: int) -> ClusterSpec:
    """The same machines, `num_gpus` of them (a slice of the cluster)."""
    if num_gpus == cluster.num_gpus:
        return cluster
    return cluster.model_copy(
        update={"num_gpus": num_gpus, "gpus_per_node": min(cluster.gpus_per_node, num_gpus)}
    )


def _estimate_by_count(
    model: ModelSpec, cluster: ClusterSpec, lay: LayoutBatch, gpus: np.ndarray, seq_length: int
) -> StepBatch:
    """`estimate_step_batch` per distinct GPU count (topology depends on it), reassembled."""
    counts = np.unique(gpus)
    if len(counts) == 1:
        return estimate_step_batch(
            model, cluster_of(cluster, int(counts[0])), lay, seq_length, with_memory=False
        )
    parts = {}
    for g in counts:  # a handful of GPU counts, not candidates
        idx = np.flatnonzero(gpus == g)
        parts[int(g)] = (
            idx,
            estimate_step_batch(
                model, cluster_of(cluster, int(g)), lay.select(idx), seq_length, with_memory=False
            ),
        )
    out = {}
    for f in fields(StepBatch):
        first = getattr(next(iter(parts.values()))[1], f.name)
        arr = np.empty(len(lay), dtype=first.dtype)
        for idx, sb in parts.values():
            arr[idx] = getattr(sb, f.name)
        out[f.name] = arr
    return StepBatch(**out)


def search_layouts(
    model: ModelSpec,
    cluster: ClusterSpec,
    seq_length: int,
    target_sequences: float,
    *,
    gpu_counts: Sequence[int] | None = None,
    space: SearchSpace | None = None,
    extra_memory: ExtraMemory | None = None,
    price_usd_per_gpu_hour: float | None = None,
    time_tolerance: float = 0.0,
    on_costed: Callable[[CostedLayouts], None] | None = None,
) -> SearchResult:
    """Search every layout of `space` on each GPU count for a global batch near
    `target_sequences`; rank feasible ones by time per token (then dollars per token).

    `time_tolerance` > 0 trades time for dollars: the cheapest layout whose time per token is
    within that fraction of the fastest wins (with several GPU counts, fewer GPUs that are
    almost as fast).

    `extra_memory(layouts)` adds bytes per GPU a phase holds beyond training state (a DPO
    reference model). Raises `NoLayoutFits` when nothing fits. `on_costed`, when given, receives
    every candidate the search screened and costed (`search_evaluated.evaluated_layouts`).
    """
    start = time.perf_counter()
    counts = tuple(gpu_counts or (cluster.num_gpus,))
    space = space or SearchSpace.default(model, cluster, seq_length)
    cand, gpus = candidate_grid(space, counts, target_sequences, model.num_layers)
    n = len(cand)
    # 1. the layout rules (the one definition), then the planner's policies
    rules = layout_violations(
        cand.as_rule_dict(),
        num_layers=model.num_layers,
        num_heads=model.num_heads,
        num_kv_heads=model.kv_heads,
        num_experts=model.moe.num_experts if model.moe else 1,
        seq_length=seq_length,
        vocab_size=model.vocab_size,
        ffn_hidden_size=model.ffn_hidden_size,
        num_gpus=gpus,
    )
    # planner policies first, so a family's reason names them (TP=16 crosses NVLink) before
    # any divisibility consequence
    domain = cluster.nvlink_domain_size
    masks = [
        cand.tp > domain,
        cand.global_batch > MAX_BATCH_FACTOR * max(target_sequences, 1.0),
    ]
    reasons = [
        f"crosses the NVLink domain of {domain} GPUs",
        f"dp x micro_batch forces a batch over {MAX_BATCH_FACTOR:g}x the target "
        f"({target_sequences:.0f} sequences)",
    ]
    masks += [np.broadcast_to(np.asarray(m, dtype=bool), (n,)) for _, m, _ in rules]
    reasons += [reason for _, _, reason in rules]
    rule_fail = np.stack(masks)
    valid = ~rule_fail.any(axis=0)
    # 2. memory, on the valid ones only
    capacity = cluster.gpu.hbm_bytes
    mem = np.full(n, np.inf)
    idx = np.flatnonzero(valid)
    if idx.size:
        sub = cand.select(idx)
        m = memory_per_gpu(model, sub, seq_length).total
        if extra_memory is not None:
            m = m + extra_memory(sub)
        mem[idx] = m
    fits = valid & (mem <= capacity)
    code = np.where(rule_fail.any(axis=0), np.argmax(rule_fail, axis=0), -1)
    code = np.where(valid & ~fits, len(reasons), code)
    reasons.append("out of memory")
    # 3. step time on the survivors
    feas = np.flatnonzero(fits)
    rejected = family_rejections(cand, gpus, code, reasons, mem - capacity, fits)
    if feas.size == 0:
        raise NoLayoutFits(rejected, n)
    lay = cand.select(feas)
    step = _estimate_by_count(model, cluster, lay, gpus[feas], seq_length)
    tokens = lay.global_batch * seq_length
    sec_per_token = step.step_time_s / tokens
    price = price_usd_per_gpu_hour or cluster.price_usd_per_gpu_hour
    usd_per_token = sec_per_token * gpus[feas] * price / 3600.0
    headroom = capacity - mem[feas]
    if time_tolerance > 0:
        near = sec_per_token <= (1.0 + time_tolerance) * sec_per_token.min()
        order = np.lexsort((-headroom, sec_per_token, np.where(near, usd_per_token, np.inf)))
    else:
        order = np.lexsort((-headroom, usd_per_token, sec_per_token))
    if on_costed is not None:
        on_costed(
            CostedLayouts(
                cand, gpus, code, reasons, mem, feas, step, usd_per_token, headroom, price
            )
        )
    b = int(order[0])
    best = lay.to_spec(b)
    step_dict = {k: float(v) for k, v in step.row(b).items()}
    step_dict["memory_bytes"] = float(mem[feas][b])
    front = pareto_front(lay, gpus[feas], sec_per_token, usd_per_token, headroom, step.step_time_s)
    counts_by_rule: dict[str, int] = {}
    for i, reason in enumerate(reasons):
        c = int((code == i).sum())
        if c:
            counts_by_rule[reason] = c
    return SearchResult(
        best=best,
        num_gpus=int(gpus[feas][b]),
        step=step_dict,
        memory_bytes=float(mem[feas][b]),
        layouts_evaluated=n,
        layouts_feasible=int(feas.size),
        layouts_costed=int(feas.size),
        seconds=time.perf_counter() - start,
        pareto=front,
        rejected=rejected,
        rejected_by_rule=counts_by_rule,
    )


# --- what a search screened and costed, for plots (planner/search_evaluated.py) ---------------


@dataclass(frozen=True)
class CostedLayouts:
    """What `search_layouts` screened and costed: all candidates, why each was rejected
    (`code` indexes `reasons`, -1 = kept), memory per GPU, and the kept ones' step estimates."""

    candidates: LayoutBatch
    gpus: np.ndarray
    code: np.ndarray
    reasons: list[str]
    memory_bytes: np.ndarray
    feasible: np.ndarray  # indices into candidates
    step: StepBatch  # of the feasible ones
    usd_per_token: np.ndarray  # of the feasible ones
    headroom_bytes: np.ndarray  # of the feasible ones
    price_usd_per_gpu_hour: float


__all__ = [
    "CostedLayouts",
    "GIB",
    "MAX_BATCH_FACTOR",
    "NoLayoutFits",
    "OPTIMIZER_MODES",
    "SearchResult",
    "SearchSpace",
    "candidate_grid",
    "balanced_layout",
    "embedding_loss_split",
    "round_global_batch",
    "search_layouts",
]

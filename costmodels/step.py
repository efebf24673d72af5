"""One optimizer step, composed: compute, exposed communication per dimension, bubble, optimizer.

`estimate_step_batch` evaluates a whole `LayoutBatch` with numpy (no Python loop over layouts);
`estimate_step` wraps it for one `LayoutSpec` and adds the terms `simulate --explain` prints.

Composition (per micro-batch and pipeline stage s; Narayanan et al. 2021 section 3):
  t_s = forward_s + backward_s (+ recompute) + exposed TP/CP/EP comm + 2 p2p + overheads
  pipeline = (m-1)·max t_s + Σ t_s (1F1B), or m·max t_s + (Σ t_s - max t_s)/v (interleaved)
  step = pipeline + exposed DP comm + optimizer step + fixed step overhead.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from scaleplan.specs.efficiency import EfficiencyProfile
from scaleplan.specs.hardware import ClusterSpec
from scaleplan.specs.layout import LayoutSpec
from scaleplan.specs.model import ModelSpec

from . import flops
from .batch import LayoutBatch
from .compute import optimizer_step_s
from .pipeline import PipelineTimeline, simulate_schedule
from .stage_layers import split_code
from .step_parts import StageParts, _unique_rows, stage_parts

STEP_FIELDS = (
    "step_time_s",
    "compute_s",
    "exposed_comm_s",
    "tp_s",
    "cp_s",
    "pp_s",
    "dp_s",
    "ep_s",
    "bubble_s",
    "optimizer_s",
    "overhead_s",
    "mfu",
    "hfu",
    "tokens_per_s_per_gpu",
    "memory_bytes",
    "fits",
)


@dataclass(frozen=True)
class StepBatch:
    """Arrays over layouts. step_time_s = compute_s + exposed_comm_s + bubble_s + optimizer_s +
    overhead_s; exposed_comm_s = tp_s + cp_s + pp_s + dp_s + ep_s (all on the critical stage)."""

    step_time_s: np.ndarray
    compute_s: np.ndarray
    exposed_comm_s: np.ndarray
    tp_s: np.ndarray
    cp_s: np.ndarray
    pp_s: np.ndarray
    dp_s: np.ndarray
    ep_s: np.ndarray
    bubble_s: np.ndarray
    optimizer_s: np.ndarray
    overhead_s: np.ndarray
    mfu: np.ndarray
    hfu: np.ndarray
    tokens_per_s_per_gpu: np.ndarray
    memory_bytes: np.ndarray
    fits: np.ndarray

    def __len__(self) -> int:
        return int(self.step_time_s.shape[0])

    def row(self, i: int) -> dict[str, float | bool]:
        return {
            f.name: (bool(v[i]) if v.dtype == bool else float(v[i]))
            for f in fields(self)
            for v in [getattr(self, f.name)]
        }


def estimate_step_batch(
    model: ModelSpec,
    cluster: ClusterSpec,
    layouts: LayoutBatch,
    seq_length: int,
    profile: EfficiencyProfile | None = None,
    *,
    with_memory: bool = True,
) -> StepBatch:
    """Step time and its breakdown for every layout of the batch (vectorized)."""
    prof = profile or cluster.profile
    parts: list[StageParts] = stage_parts(model, cluster, layouts, seq_length, prof)
    pp = layouts.pp
    m = np.maximum(layouts.num_microbatches, 1).astype(np.float64)
    v = layouts.vp.astype(np.float64)
    t = [p.total_s for p in parts]

    # pp == 1: one stage holds everything (first and last are the same rank).
    single = pp == 1
    t_max = np.where(single, t[0], np.maximum(np.maximum(t[0], t[2]), np.where(pp > 2, t[1], 0.0)))
    t_sum = np.where(single, t[0], t[0] + t[2] + np.maximum(pp - 2, 0) * t[1])
    # Narayanan 2021 eq. 1 generalised to unequal stages; interleaving divides the fill by v.
    pipeline_s = m * t_max + (t_sum - t_max) / v
    bubble_s = pipeline_s - m * t_max
    # The critical (slowest) stage: stages differ in the embedding, the LM head, their
    # parameters (DP sync, optimizer), in their transformer layers when the pipeline split is
    # uneven (embedding/loss split, balanced layout: costmodels.stage_layers) and in their mix
    # of dense and MoE layers (DeepSeek-V3's dense layers sit on the first stage).
    crit_last = np.where(pp > 2, t[2] >= np.maximum(t[0], t[1]), t[2] >= t[0]) & ~single
    crit_mid = (pp > 2) & (t[1] > np.maximum(t[0], t[2]))

    def pick(name: str) -> np.ndarray:
        a, b, c = (getattr(p, name) for p in parts)
        return np.where(crit_last, c, np.where(crit_mid, b, a))

    compute_s = m * pick("compute_s")
    tp_s, cp_s, ep_s, pp_s = (m * pick(n) for n in ("tp_s", "cp_s", "ep_s", "pp_s"))
    overhead_s = m * pick("overhead_s") + prof.step_overhead_s
    # Data-parallel gradient sync (and ZeRO-3 gathers) of the critical stage, already exposed.
    dp_s = pick("dp_exposed_step_s")
    opt_s = optimizer_step_s(pick("params_updated"), cluster.gpu, prof, layouts.offload_optimizer)
    step_s = pipeline_s + dp_s + opt_s + prof.step_overhead_s
    exposed = tp_s + cp_s + pp_s + dp_s + ep_s
    tokens_step = layouts.global_batch.astype(np.float64) * seq_length
    gpus = layouts.num_gpus.astype(np.float64)
    tok_per_gpu = tokens_step / step_s / gpus
    peak = cluster.gpu.dense16_flops
    mfu = flops.model_flops_per_token(model, seq_length) * tok_per_gpu / peak
    frac = flops.recompute_layers_fraction(
        model.num_layers, pp, layouts.recompute_layers, split_code(layouts), layouts.vp
    )
    hw = flops.hardware_flops_per_token(model, seq_length, layouts.recompute, frac)
    hfu = hw * tok_per_gpu / peak
    if with_memory:
        from .memory import memory_per_gpu

        # The memory model runs once per distinct layout (search batches repeat many).
        first_idx, inverse = _unique_rows(*(getattr(layouts, f.name) for f in fields(layouts)))
        if len(first_idx) < len(layouts):
            mem = memory_per_gpu(model, layouts.select(first_idx), seq_length).total[inverse]
        else:
            mem = memory_per_gpu(model, layouts, seq_length).total
    else:
        mem = np.full(len(layouts), np.nan)
    return StepBatch(
        step_time_s=step_s,
        compute_s=compute_s,
        exposed_comm_s=exposed,
        tp_s=tp_s,
        cp_s=cp_s,
        pp_s=pp_s,
        dp_s=dp_s,
        ep_s=ep_s,
        bubble_s=bubble_s,
        optimizer_s=opt_s,
        overhead_s=overhead_s,
        mfu=mfu,
        hfu=np.asarray(hfu, dtype=np.float64) * np.ones_like(mfu),
        tokens_per_s_per_gpu=tok_per_gpu,
        memory_bytes=mem,
        fits=(mem <= cluster.gpu.hbm_bytes) if with_memory else np.ones(len(layouts), dtype=bool),
    )


def pipeline_timeline(
    model: ModelSpec,
    cluster: ClusterSpec,
    layout: LayoutSpec,
    seq_length: int,
    profile: EfficiencyProfile | None = None,
) -> PipelineTimeline:
    """One step's pipeline, event by event (`pipeline.simulate_schedule`), with the per-stage
    forward and backward times of the step model: for Gantt charts of a layout."""
    prof = profile or cluster.profile
    parts = stage_parts(model, cluster, LayoutBatch.from_specs([layout]), seq_length, prof)
    fwd = [float(p.forward_s[0]) for p in parts]
    bwd = [float(p.total_s[0]) - f for p, f in zip(parts, fwd, strict=True)]
    p = layout.pp
    pick = [0] if p == 1 else [0] + [1] * (p - 2) + [2]
    return simulate_schedule(
        [fwd[i] for i in pick],
        [bwd[i] for i in pick],
        max(layout.num_microbatches, 1),
        vp=layout.vp,
    )


# --- one layout, with the terms `simulate --explain` prints ------------------------------------

TERM_FORMULAS: dict[str, tuple[str, str]] = {
    "compute_s": (
        "m x sum over the critical stage's ops: max(FLOPs/(peak*eff(F)), bytes/(HBM*hbm_eff)); "
        "backward = 2x GEMMs, 2.5x attention; + recompute",
        "roofline (Williams et al. 2009); FLOPs per op: costmodels.flops (Narayanan et al. 2021 "
        "eq. 3); FlashAttention-2 (Dao 2023)",
    ),
    "tp_s": (
        "m x layers x (2 fwd + 2 bwd [+2 recompute]) x all-reduce(T*h*2 B): 2(n-1)/n*S/BW + "
        "2(n-1)*latency",
        "Shoeybi et al. 2019 section 3; Korthikanti et al. 2022 section 4.2.2 (sequence parallel)",
    ),
    "cp_s": (
        "m x layers x max(0, (cp-1) x K,V ring step - attention time), backward 2x",
        "ring attention (Liu et al. 2023); Megatron-core context parallelism",
    ),
    "ep_s": (
        "m x MoE layers x (2 fwd + 2 bwd) x all-to-all(T*top_k*h*2 B): (n-1)/n*S/BW",
        "GShard (Lepikhin et al. 2020)",
    ),
    "pp_s": (
        "m x 2 x p2p(T*h*2 B / tp): S/BW + latency",
        "Narayanan et al. 2021 section 4.1 (scatter/gather)",
    ),
    "dp_s": (
        "gradient all-reduce 2(n-1)/n*S/BW (or reduce-scatter + all-gather when sharded) over "
        "dp*cp ranks, minus dp_overlap x the last micro-batch's backward; ZeRO-3: per micro-batch",
        "Rajbhandari et al. 2020 (ZeRO); Li et al. 2020 (PyTorch DDP bucketing)",
    ),
    "bubble_s": (
        "(m-1)*max t_s + sum t_s - m*max t_s (1F1B); /v interleaved = (p-1)/(v*m) of ideal",
        "Narayanan et al. 2021 eq. 1 and section 2.2.2",
    ),
    "optimizer_s": (
        "params updated on this GPU x 34 B / (HBM * optimizer_eff)",
        "mixed-precision Adam (Micikevicius et al. 2018; ZeRO section 3.1)",
    ),
    "overhead_s": (
        "m x layers x host-bound wait (layer_host_s) + m x MoE layers x moe_layer_host_s (after "
        "the dispatcher's host sync) + m x microbatch_overhead_s + step_overhead_s",
        "efficiency profile (fitted: specs/catalog/profiles.yaml); Megatron-core MoE all-to-all "
        "token dispatcher (per-expert token counts copied to the host)",
    ),
}


@dataclass(frozen=True)
class StepEstimate:
    """One layout's step time, its breakdown, and the terms behind it."""

    step_time_s: float
    compute_s: float
    exposed_comm_s: float
    tp_s: float
    cp_s: float
    pp_s: float
    dp_s: float
    ep_s: float
    bubble_s: float
    optimizer_s: float
    overhead_s: float
    mfu: float
    hfu: float
    tokens_per_s_per_gpu: float
    memory_bytes: float
    fits: bool
    num_gpus: int
    tokens_per_step: int
    price_usd_per_gpu_hour: float
    profile_name: str
    terms: tuple[tuple[str, float, str, str], ...]  # (name, value_s, formula, source)

    def time_to_train_s(self, tokens: float) -> float:
        return float(tokens) / (self.tokens_per_s_per_gpu * self.num_gpus)

    def cost_usd(self, tokens: float) -> float:
        return self.time_to_train_s(tokens) / 3600.0 * self.num_gpus * self.price_usd_per_gpu_hour

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name != "terms"
        }
        out["terms"] = [
            {"name": n, "value_s": v, "formula": f, "source": s} for n, v, f, s in self.terms
        ]
        return out


def estimate_step(
    model: ModelSpec,
    cluster: ClusterSpec,
    layout: LayoutSpec,
    seq_length: int,
    profile: EfficiencyProfile | None = None,
) -> StepEstimate:
    """`estimate_step_batch` for one layout, with each term's formula and source."""
    prof = profile or cluster.profile
    row = estimate_step_batch(
        model, cluster, LayoutBatch.from_specs([layout]), seq_length, prof
    ).row(0)
    terms = tuple(
        (name, float(row[name]), formula, source)
        for name, (formula, source) in TERM_FORMULAS.items()
    )
    return StepEstimate(
        **{k: row[k] for k in STEP_FIELDS if k != "fits"},
        fits=bool(row["fits"]),
        num_gpus=layout.num_gpus,
        tokens_per_step=layout.global_batch * seq_length,
        price_usd_per_gpu_hour=cluster.price_usd_per_gpu_hour,
        profile_name=prof.name,
        terms=terms,
    )

"""Phase sizing: tokens, steps, schedule, layout, time and dollars of every phase of a plan.

pretrain (warmup + stable) and anneal (the WSD decay on a high-quality mix) share the pretraining
layout; long_context, sft, dpo and grpo each get their own layout search (post-training may run on
a slice of the cluster). GRPO's step includes rollout generation (`costmodels.decode`) and the
reference and old-policy forward passes; DPO's includes the reference model's two forwards per
pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scaleplan.costmodels.batch import LayoutBatch
from scaleplan.costmodels.decode import frozen_weight_bytes, rollout_time
from scaleplan.costmodels.flops import hardware_flops_per_token, model_flops_per_token
from scaleplan.specs.budget import BudgetSpec, DataSource
from scaleplan.specs.errors import SpecError
from scaleplan.specs.hardware import ClusterSpec
from scaleplan.specs.model import ModelSpec
from scaleplan.specs.plan import ObjectiveSpec, PhaseEstimate, PhaseSpec, ScheduleSpec

from .laws.hyperparams import choose_schedule
from .search import SearchResult, cluster_of, search_layouts

GIB = 1024**3
SFT_LR_RATIO = 0.1  # SFT peak LR = pretraining peak / 10 (DESIGN.md; Tulu 3 uses ~1/60 at 8B)
PREF_LR_RATIO = 0.1  # DPO / GRPO LR = SFT LR / 10 (Tulu 3: SFT 5e-6, DPO 5e-7 at 8B)
LONG_CONTEXT_LR_RATIO = 0.1  # Xiong et al. 2023 (Llama 2 Long): 2e-5 after 1.5e-4 pretraining
POST_WARMUP_FRACTION = 0.03  # Tulu 3 SFT warmup ratio
DPO_WARMUP_FRACTION = 0.1  # Tulu 3 DPO warmup ratio
POST_TIME_TOLERANCE = 0.1  # post-training: fewer GPUs if at most 10 % slower (planner policy)


def next_pow2(x: float) -> int:
    return 1 << max(0, math.ceil(math.log2(max(x, 1.0))))


def ntk_rope_base(base: float, scale: float, head_dim: int) -> float:
    """RoPE base for a context `scale` times longer: base * scale^(d/(d-2)) ("NTK-aware"
    interpolation; Peng et al. 2023, YaRN, eq. 16)."""
    return float(base * scale ** (head_dim / (head_dim - 2)))


@dataclass
class PhaseContext:
    """What every phase needs: the budget, the pretraining cluster, the model, the peak LR."""

    budget: BudgetSpec
    cluster: ClusterSpec
    model: ModelSpec
    peak_lr: float  # pretraining peak LR after the batch rescale
    price: float
    searches: dict[str, SearchResult] = field(default_factory=dict)

    @property
    def post_gpus(self) -> int:
        slice_ = self.budget.phases.post_training_gpus or self.cluster.num_gpus
        return min(slice_, self.cluster.num_gpus)

    @property
    def post_gpu_counts(self) -> tuple[int, ...]:
        """The post-training slice and its halvings down to 1/8 of it (whole nodes only)."""
        top, node = self.post_gpus, self.cluster.gpus_per_node
        counts = [top]
        while counts[-1] % 2 == 0 and counts[-1] // 2 >= max(node, top // 8):
            counts.append(counts[-1] // 2)
        return tuple(c for c in counts if c <= node or c % node == 0)

    def post_search(self, model: ModelSpec, seq: int, target: float, **kw: Any) -> SearchResult:
        """A post-training layout search over the slice's GPU counts: the cheapest layout within
        POST_TIME_TOLERANCE of the fastest (small post-training batches do not use a large
        slice well)."""
        cluster = cluster_of(self.cluster, self.post_gpus)
        return search_layouts(
            model,
            cluster,
            seq,
            target,
            gpu_counts=self.post_gpu_counts,
            time_tolerance=POST_TIME_TOLERANCE,
            **kw,
        )


def _estimate(
    result: SearchResult,
    step_time_s: float,
    tokens_per_step: float,
    gpus: int,
    extra: dict[str, float] | None = None,
) -> PhaseEstimate:
    s = result.step
    return PhaseEstimate(
        step_time_s=step_time_s,
        compute_s=s["compute_s"],
        exposed_comm_s=s["exposed_comm_s"],
        bubble_s=s["bubble_s"],
        optimizer_s=s["optimizer_s"],
        hfu=s["hfu"] * s["step_time_s"] / step_time_s,
        tokens_per_s_per_gpu=tokens_per_step / step_time_s / gpus,
        memory_gib=result.memory_bytes / GIB,
        **(extra or {}),
    )


def _phase(
    ctx: PhaseContext,
    name: str,
    result: SearchResult,
    seq: int,
    tokens: float,
    schedule: ScheduleSpec,
    *,
    step_time_s: float | None = None,
    extra: dict[str, float] | None = None,
    **fields_: Any,
) -> PhaseSpec:
    """A PhaseSpec from a layout search result: steps from tokens, time from the step time."""
    layout = result.best
    tokens_per_step = float(layout.global_batch * seq)
    # pretraining tokens are a ceiling (the data cap, the time): whole steps, rounded down
    rounding = math.floor if name in ("pretrain", "anneal") else math.ceil
    steps = max(1, rounding(tokens / tokens_per_step))
    step_s = result.step["step_time_s"] if step_time_s is None else step_time_s
    time_s = steps * step_s
    # MFU of the whole step: the training FLOPs over the time, extras (rollouts) included
    mfu = result.step["mfu"] * result.step["step_time_s"] / step_s
    return PhaseSpec(
        name=name,  # type: ignore[arg-type]
        num_gpus=result.num_gpus,
        layout=layout,
        seq_length=seq,
        tokens=float(steps * tokens_per_step),
        steps=steps,
        schedule=schedule,
        time_s=time_s,
        cost_usd=time_s * result.num_gpus * ctx.price / 3600.0,
        mfu=mfu,
        estimate=_estimate(result, step_s, tokens_per_step, result.num_gpus, extra),
        checkpoint_every_steps=max(1, min(1000, steps // 10 or 1)),
        **fields_,
    )


def pretrain_and_anneal(
    ctx: PhaseContext, result: SearchResult, tokens: float, warmup: int
) -> list[PhaseSpec]:
    """Warmup + stable on the pretraining mix, then the WSD decay over `anneal.fraction` of the
    tokens on the anneal mix (Hägele et al. 2024: 1-sqrt cooldown; MiniCPM, Hu et al. 2024), to
    `choose_schedule`'s final LR ratio. Without an anneal phase `choose_schedule` picks WSD (the
    run continues into later phases) or cosine (it ends here)."""
    seq = ctx.budget.data.seq_length
    anneal = ctx.budget.phases.anneal
    frac = anneal.fraction if anneal is not None else 0.0
    pre = _phase(
        ctx,
        "pretrain",
        result,
        seq,
        tokens * (1 - frac),
        ScheduleSpec(style="wsd", peak_lr=ctx.peak_lr, warmup_steps=warmup, decay_steps=0),
        data=ctx.budget.data.mix,
    )
    if anneal is None:  # no separate anneal: the pretraining run carries its own decay
        phases = ctx.budget.phases
        extended = any(
            x is not None for x in (phases.long_context, phases.sft, phases.dpo, phases.grpo)
        )
        choice = choose_schedule(continued_training=extended)
        floor = ctx.peak_lr * choice.final_lr_ratio
        if choice.kind == "cosine":
            sched = pre.schedule.model_copy(update={"style": "cosine", "min_lr": floor})
        else:
            decay = max(1, int(choice.decay_fraction * pre.steps))
            sched = pre.schedule.model_copy(
                update={"decay_steps": decay, "decay_shape": "sqrt", "min_lr": floor}
            )
        return [pre.model_copy(update={"schedule": sched})]
    choice = choose_schedule(continued_training=True, decay_fraction=anneal.fraction)
    steps = max(1, math.floor(tokens * frac / (result.best.global_batch * seq)))
    ann = _phase(
        ctx,
        "anneal",
        result,
        seq,
        tokens * frac,
        ScheduleSpec(
            style="wsd",
            peak_lr=ctx.peak_lr,
            start_lr=ctx.peak_lr,
            warmup_steps=0,
            decay_steps=steps,
            decay_shape="sqrt",
            min_lr=ctx.peak_lr * choice.final_lr_ratio,
        ),
        data=anneal.mix,
        init_from="pretrain",
    )
    return [pre, ann]


def long_context(ctx: PhaseContext, batch_tokens: float, init_from: str) -> PhaseSpec | None:
    """~`tokens_per_stage` tokens per doubling of the context, trained at the target length with
    a new RoPE base (Xiong et al. 2023; Llama 3: staged 8K -> 128K)."""
    lc = ctx.budget.phases.long_context
    if lc is None:
        return None
    seq0 = ctx.budget.data.seq_length
    seq = lc.target_length
    stages = max(1, math.ceil(math.log2(max(seq / seq0, 1.0))))
    model = ctx.model.model_copy(update={"seq_length": seq})
    result = search_layouts(model, ctx.cluster, seq, max(batch_tokens / seq, 1.0))
    ctx.searches["long_context"] = result
    base = lc.rope_base or ntk_rope_base(ctx.model.rope_base, seq / seq0, ctx.model.head_size)
    lr = ctx.peak_lr * LONG_CONTEXT_LR_RATIO
    tokens = lc.tokens_per_stage * stages
    return _phase(
        ctx,
        "long_context",
        result,
        seq,
        tokens,
        ScheduleSpec(
            style="cosine",
            peak_lr=lr,
            min_lr=lr / 10,
            warmup_steps=max(1, int(0.01 * tokens / (result.best.global_batch * seq))),
        ),
        init_from=init_from,
        rope_base=base,
        data=ctx.budget.data.mix,
    )


def sft(ctx: PhaseContext, init_from: str | None) -> PhaseSpec | None:
    """Examples x tokens x epochs, packed into sequences; loss on responses only (same FLOPs)."""
    s = ctx.budget.phases.sft
    if s is None:
        return None
    seq = max(ctx.budget.data.seq_length, next_pow2(s.tokens_per_example))
    tokens = s.examples * s.tokens_per_example * s.epochs
    result = ctx.post_search(
        ctx.model, seq, max(s.batch_examples * s.tokens_per_example / seq, 1.0)
    )
    ctx.searches["sft"] = result
    lr = ctx.peak_lr * SFT_LR_RATIO
    steps = max(1, math.ceil(tokens / (result.best.global_batch * seq)))
    return _phase(
        ctx,
        "sft",
        result,
        seq,
        tokens,
        ScheduleSpec(
            style="linear", peak_lr=lr, warmup_steps=max(1, int(POST_WARMUP_FRACTION * steps))
        ),
        objective=ObjectiveSpec(kind="sft"),
        data=(DataSource(name="sft", weight=1.0),),
        init_from=init_from,
    )


def _forward_share(model: ModelSpec, seq: int, recompute: str) -> float:
    """Forward FLOPs as a share of a training step's hardware FLOPs (forward = model / 3)."""
    return (
        model_flops_per_token(model, seq)
        / 3.0
        / float(hardware_flops_per_token(model, seq, recompute))
    )


def dpo(ctx: PhaseContext, init_from: str | None) -> PhaseSpec | None:
    """Pairs x tokens; per pair the reference model runs two forwards (chosen and rejected;
    Rafailov et al. 2023, eq. 7) and its weights stay resident."""
    d = ctx.budget.phases.dpo
    if d is None:
        return None
    seq = next_pow2(d.tokens_per_pair / 2)
    tokens = d.pairs * d.tokens_per_pair * d.epochs

    def reference(lay: LayoutBatch) -> np.ndarray:
        return frozen_weight_bytes(ctx.model, lay)

    result = ctx.post_search(ctx.model, seq, 2.0 * d.batch_pairs, extra_memory=reference)
    ctx.searches["dpo"] = result
    ref_s = result.step["compute_s"] * _forward_share(ctx.model, seq, result.best.recompute)
    step_s = result.step["step_time_s"] + ref_s
    lr = ctx.peak_lr * SFT_LR_RATIO * PREF_LR_RATIO
    steps = max(1, math.ceil(tokens / (result.best.global_batch * seq)))
    return _phase(
        ctx,
        "dpo",
        result,
        seq,
        tokens,
        ScheduleSpec(
            style="linear", peak_lr=lr, warmup_steps=max(1, int(DPO_WARMUP_FRACTION * steps))
        ),
        step_time_s=step_s,
        extra={"reference_s": ref_s},
        objective=ObjectiveSpec(kind="dpo", dpo_beta=d.beta),
        data=(DataSource(name="dpo", weight=1.0),),
        init_from=init_from,
    )


def grpo(ctx: PhaseContext, init_from: str | None) -> PhaseSpec | None:
    """Prompts x group size rollouts per step: generation (memory-bound decode), then the old
    policy's and the reference model's forward passes, then the policy update (Shao et al. 2024,
    DeepSeekMath, section 4.1)."""
    g = ctx.budget.phases.grpo
    if g is None:
        return None
    seq_tokens = g.prompt_tokens + g.max_response_tokens
    seq = next_pow2(seq_tokens)
    rollouts_per_step = g.prompts_per_step * g.group_size
    total_prompts = g.prompts * g.epochs
    steps = max(1, math.ceil(total_prompts / g.prompts_per_step))

    def reference(lay: LayoutBatch) -> np.ndarray:
        return frozen_weight_bytes(ctx.model, lay)

    # the whole slice: rollouts, which dominate the step, scale with the engine replicas
    cluster = cluster_of(ctx.cluster, ctx.post_gpus)
    result = search_layouts(
        ctx.model, cluster, seq, float(rollouts_per_step), extra_memory=reference
    )
    ctx.searches["grpo"] = result
    # rollout engine: the fastest inference TP whose weights and KV cache fit
    gen = rollout_time(
        ctx.model,
        cluster,
        [1, 2, 4, 8],
        rollouts_per_step,
        g.prompt_tokens,
        g.max_response_tokens,
        num_gpus=cluster.num_gpus,
    )
    ok = gen.fits & (gen.tp <= min(cluster.nvlink_domain_size, cluster.num_gpus))
    if not ok.any():
        largest = int(gen.tp[gen.tp <= cluster.nvlink_domain_size].max(initial=1))
        raise SpecError(
            f"GRPO rollouts: the {ctx.model.params_total / 1e9:.1f}B-parameter model and one "
            f"sequence's KV cache do not fit an inference engine of {largest} GPUs (tensor "
            "parallel within one NVLink domain); use a GPU with more memory, a larger "
            "phases.post_training_gpus slice if it is below one NVLink domain, shorter "
            "responses (grpo.max_response_tokens), or drop the grpo phase",
            field="phases.grpo",
        )
    i = int(np.argmin(np.where(ok, gen.time_s, np.inf)))
    rollout_s = float(gen.time_s[i])
    # old-policy log-probs and reference log-probs: two forwards over the step's sequences
    fwd_s = 2.0 * result.step["compute_s"] * _forward_share(ctx.model, seq, result.best.recompute)
    step_s = result.step["step_time_s"] + fwd_s + rollout_s
    lr = ctx.peak_lr * SFT_LR_RATIO * PREF_LR_RATIO
    tokens = steps * result.best.global_batch * seq
    return _phase(
        ctx,
        "grpo",
        result,
        seq,
        tokens,
        ScheduleSpec(style="constant", peak_lr=lr, warmup_steps=0),
        step_time_s=step_s,
        extra={"rollout_s": rollout_s, "reference_s": fwd_s},
        objective=ObjectiveSpec(
            kind="grpo",
            group_size=g.group_size,
            clip_eps=g.clip_eps,
            kl_beta=g.kl_beta,
            max_response_tokens=g.max_response_tokens,
            prompt_tokens=g.prompt_tokens,
        ),
        data=(DataSource(name="rlvr", weight=1.0),),
        init_from=init_from,
    )


def post_training(ctx: PhaseContext, batch_tokens: float, last: str) -> list[PhaseSpec]:
    """long_context, sft, dpo, grpo in order, each starting from the phase before it."""
    out: list[PhaseSpec] = []
    prev: str | None = last
    lc = long_context(ctx, batch_tokens, last)
    if lc is not None:
        out.append(lc)
        prev = "long_context"
    for make in (sft, dpo, grpo):
        phase = make(ctx, prev)
        if phase is not None:
            out.append(phase)
            prev = phase.name
    return out

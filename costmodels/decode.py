"""Autoregressive generation (GRPO rollouts): prefill is compute-bound, decoding is
memory-bandwidth-bound. Pure functions, vectorized over the inference TP degree.

Per decode step every engine replica reads its shard of the weights once for the whole batch,
plus the KV cache of every sequence in the batch (Pope et al. 2023, "Efficiently Scaling
Transformer Inference", section 2: decode latency >= (weights + KV cache bytes) / HBM bandwidth),
and does 2·N FLOPs (plus attention) per generated token; the step takes the larger of the two
times (roofline, Williams et al. 2009). Prefill processes the prompts at matmul speed.

The inference engine runs colocated on the training GPUs (HybridFlow/veRL, Sheng et al. 2024):
while it generates, the training state is offloaded, so the KV cache may use the HBM left after
the inference weights. Sequences that do not fit at once run in waves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scaleplan.specs.hardware import ClusterSpec
from scaleplan.specs.model import ModelSpec

from .batch import LayoutBatch
from .comm import all_reduce_s
from .flops import forward_flops_per_token_total
from .memory import WEIGHT_BYTES
from .memory_params import STAGES, rank_params

BF16_BYTES = 2
HBM_USABLE_FRACTION = 0.9  # allocator and framework reserve (vLLM's default gpu_memory_utilization)


@dataclass(frozen=True)
class DecodeEstimate:
    """Rollout generation cost, one entry per inference TP degree."""

    tp: np.ndarray
    time_s: np.ndarray  # prefill + decode, all waves
    prefill_s: np.ndarray
    decode_s: np.ndarray
    waves: np.ndarray
    batch_per_replica: np.ndarray  # concurrent sequences per engine replica
    weight_bytes_per_gpu: np.ndarray
    kv_bytes_per_sequence_per_gpu: np.ndarray
    memory_bound_fraction: np.ndarray  # share of decode steps limited by HBM bandwidth
    fits: np.ndarray  # the weights and one sequence's KV cache fit


def kv_cache_bytes_per_token(model: ModelSpec, bytes_per_value: int = BF16_BYTES) -> int:
    """Bytes of KV cache per token for the whole model: K and V for every KV head and layer
    (GQA, Ainslie et al. 2023); MLA caches the compressed latent plus the RoPE key (DeepSeek-V2,
    section 2.1.2: (d_c + d_h^R) per token per layer)."""
    if model.attention == "mla":
        m = model.mla
        assert m is not None
        return model.num_layers * (m.kv_lora_rank + m.qk_rope_head_dim) * bytes_per_value
    return 2 * model.num_layers * model.kv_heads * model.head_size * bytes_per_value


def weight_bytes_read(
    model: ModelSpec, batch: np.ndarray, bytes_per_value: int = BF16_BYTES
) -> np.ndarray:
    """Weight bytes one decode step reads for `batch` concurrent tokens. MoE: a routed expert is
    read when at least one token picks it; with uniform routing that is 1 - (1 - k/E)^batch of
    them per layer."""
    batch = np.asarray(batch, dtype=np.float64)
    total = float(model.params_total)
    if model.moe is None:
        return np.full_like(batch, total * bytes_per_value)
    moe = model.moe
    routed = float(model.num_moe_layers * model.expert_params_per_moe_layer)
    touched = 1.0 - (1.0 - moe.top_k / moe.num_experts) ** np.maximum(batch, 1.0)
    return (total - routed * (1.0 - touched)) * bytes_per_value


def _kv_shards(model: ModelSpec, tp: np.ndarray) -> np.ndarray:
    """Ways the KV cache splits over TP: by KV head, one head per rank at most; MLA's latent is
    replicated."""
    if model.attention == "mla":
        return np.ones_like(tp, dtype=np.float64)
    return np.minimum(tp, model.kv_heads).astype(np.float64)


def rollout_time(
    model: ModelSpec,
    cluster: ClusterSpec,
    tp: np.ndarray | list[int] | int,
    sequences: int,
    prompt_tokens: int,
    response_tokens: int,
    num_gpus: int | None = None,
) -> DecodeEstimate:
    """Time to generate `sequences` responses of `response_tokens` after `prompt_tokens` each,
    on `num_gpus` GPUs split into engine replicas of `tp` GPUs (data parallel across replicas)."""
    tp = np.atleast_1d(np.asarray(tp, dtype=np.int64))
    gpus = int(num_gpus or cluster.num_gpus)
    gpu, prof = cluster.gpu, cluster.profile
    replicas = np.maximum(gpus // tp, 1)
    per_replica = np.ceil(sequences / replicas)

    kv_tok = kv_cache_bytes_per_token(model) / _kv_shards(model, tp)
    kv_seq = kv_tok * (prompt_tokens + response_tokens)
    weights_gpu = model.params_total * BF16_BYTES / tp
    free = HBM_USABLE_FRACTION * gpu.hbm_bytes - weights_gpu
    fits = free >= kv_seq
    batch_max = np.maximum(np.floor(np.maximum(free, 0.0) / kv_seq), 1.0)
    batch = np.minimum(per_replica, batch_max)
    full_waves = np.floor(per_replica / batch)
    rest = per_replica - full_waves * batch

    # forward FLOPs per token are affine in the context length (attention over c keys)
    f0 = forward_flops_per_token_total(model, 1)
    f1 = forward_flops_per_token_total(model, 2) - f0
    peak = gpu.dense16_flops * prof.gemm_max
    hbm = gpu.hbm_bytes_per_s * prof.hbm_eff
    nvlink = gpu.nvlink_bytes_per_s_per_direction * prof.nvlink_eff

    def wave(b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(prefill_s, decode_s, memory-bound steps) of one wave of b sequences per replica."""
        b = b[:, None]
        tpc = tp[:, None].astype(np.float64)
        ctx = prompt_tokens + np.arange(response_tokens, dtype=np.float64)[None, :]
        read = weight_bytes_read(model, b) / tpc + b * kv_tok[:, None] * ctx
        flops = b * (f0 + f1 * ctx) / tpc
        mem_s, comp_s = read / hbm, flops / peak
        # Megatron-style TP: two all-reduces of the batch's hidden states per layer per step
        comm = (
            2
            * model.num_layers
            * all_reduce_s(
                b * model.hidden_size * BF16_BYTES, tpc, nvlink, prof.collective_latency_s
            )
        )
        step = np.maximum(mem_s, comp_s) + comm
        decode = np.where(b[:, 0] > 0, step.sum(axis=1), 0.0)
        prompt_flops = b[:, 0] * prompt_tokens * (f0 + f1 * prompt_tokens) / tp
        prefill = np.where(b[:, 0] > 0, prompt_flops / peak + weights_gpu / hbm, 0.0)
        bound = np.where(b[:, 0] > 0, (mem_s >= comp_s).sum(axis=1), 0)
        return prefill, decode, bound.astype(np.float64)

    p_full, d_full, m_full = wave(batch)
    p_rest, d_rest, m_rest = wave(rest)
    prefill = full_waves * p_full + p_rest
    decode = full_waves * d_full + d_rest
    steps = (full_waves + (rest > 0)) * response_tokens
    mem_frac = (full_waves * m_full + m_rest) / np.maximum(steps, 1.0)
    return DecodeEstimate(
        tp=tp,
        time_s=prefill + decode,
        prefill_s=prefill,
        decode_s=decode,
        waves=full_waves + (rest > 0),
        batch_per_replica=batch,
        weight_bytes_per_gpu=weights_gpu,
        kv_bytes_per_sequence_per_gpu=kv_seq,
        memory_bound_fraction=mem_frac,
        fits=fits,
    )


def frozen_weight_bytes(model: ModelSpec, layouts: LayoutBatch) -> np.ndarray:
    """Bytes per GPU of a frozen copy of the model (DPO/GRPO reference), placed like the policy
    (`memory_params.rank_params`) in bf16, without gradients or optimizer state; the largest
    over pipeline stages."""
    per_stage = [rank_params(model, layouts, stage).total for stage in STAGES]
    return np.max(np.stack(per_stage), axis=0) * WEIGHT_BYTES

"""The one memory model: bytes per GPU by component, vectorized over a `LayoutBatch`.

Model states (mixed precision with Adam; Megatron-LM `megatron/training/theoretical_memory_usage.py`,
`compute_weight_and_optimizer_memory`): bf16 weights 2 B/param, fp32 main gradients 4 B/param
(Megatron DDP's grad buffer), fp32 master weights + Adam m and v 12 B/param: 18 B/param, or
6 + 12/dp with the distributed optimizer. ZeRO (Rajbhandari et al. 2020, §5): stage 1 (= Megatron's
distributed optimizer) shards the 12 B over the data-parallel ranks, stage 2 also the gradients,
stage 3 also the weights. Dense parameters shard over dp·cp ranks, routed experts over the
expert-data-parallel ranks dp·cp·tp/(ep·etp) (Megatron's expert DP group). Offload flags move the
optimizer states or the weights to host memory (0 bytes on the GPU).

Activations: `memory_activations` (Korthikanti et al. 2022). Parameter placement:
`memory_params` (Megatron-Core GPTModel).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from scaleplan.specs.layout import PRECISION_CODES, LayoutSpec
from scaleplan.specs.model import ModelSpec

from .batch import LayoutBatch
from .memory_activations import BF16_BYTES, stage_activation_bytes
from .memory_params import STAGES, RankParams, params_per_rank, rank_params, stage_rank
from .stage_layers import split_code, stage_layers

__all__ = [
    "COMPONENTS",
    "MemoryBatch",
    "memory_breakdown",
    "memory_per_gpu",
    "params_per_rank",
]

GIB = 1024**3
WEIGHT_BYTES = 2.0  # bf16/fp16 model weights
FP8_WEIGHT_CACHE_BYTES = 1.0  # fp8: Transformer Engine also caches an fp8 copy of each weight
GRAD_BYTES = 4.0  # fp32 main gradients (Megatron DDP grad buffer)
OPTIMIZER_BYTES = 12.0  # fp32 master weights + Adam first and second moments
# Framework margin, fixed part: CUDA context and kernel images (~0.5-0.8 GiB on Hopper with
# CUDA 12 and PyTorch), cuBLAS/cuDNN/TE workspaces (~0.2 GiB), NCCL communicator buffers for the
# TP/PP/DP/EP groups (NCCL_BUFFSIZE 4 MiB x channels x peers, ~0.5-1 GiB). Total ~2 GiB.
FRAMEWORK_FIXED_BYTES = 2.0 * GIB
# ... and the caching allocator's fragmentation, which grows with the transient tensors
# (activations and communication buffers); 5 % is the typical reserved-minus-allocated gap of
# Megatron runs (PyTorch memory stats), not a law.
ALLOCATOR_FRAGMENTATION = 0.05

COMPONENTS: tuple[str, ...] = (
    "weights",
    "gradients",
    "optimizer",
    "embeddings_extra",
    "moe_experts",
    "activations",
    "comm_buffers",
    "framework_margin",
)


@dataclass(frozen=True)
class MemoryBatch:
    """Bytes per GPU, one entry per layout. Parts add up exactly to `total`.

    weights/gradients/optimizer: transformer-layer parameters that are not routed experts.
    embeddings_extra: the embedding and LM-head weights, gradients and optimizer states that the
    first/last stage holds. moe_experts: the same three for this rank's routed-expert shards.
    activations: in-flight micro-batches (+ token ids on the first stage, logits on the last).
    """

    weights: np.ndarray
    gradients: np.ndarray
    optimizer: np.ndarray
    embeddings_extra: np.ndarray
    moe_experts: np.ndarray
    activations: np.ndarray
    comm_buffers: np.ndarray
    framework_margin: np.ndarray
    total: np.ndarray
    stage_rank: np.ndarray  # the pipeline rank these figures are for (the worst one for "max")

    def __len__(self) -> int:
        return int(self.total.shape[0])

    def component(self, i: int) -> dict[str, float]:
        """Layout i's components in bytes, with `total` (= their exact sum)."""
        parts = {name: float(getattr(self, name)[i]) for name in COMPONENTS}
        parts["total"] = float(sum(parts.values()))
        return parts

    def fits(self, hbm_bytes: float) -> np.ndarray:
        return self.total <= hbm_bytes


def _state_bytes(
    params: np.ndarray, layouts: LayoutBatch, shard: np.ndarray
) -> tuple[np.ndarray, ...]:
    """(weights, gradients, optimizer) bytes of `params` whose states shard over `shard` ranks."""
    zero = layouts.zero_stage
    shard_opt = (layouts.distributed_optimizer != 0) | (zero >= 1)
    w_bytes = WEIGHT_BYTES + np.where(
        layouts.precision == PRECISION_CODES["fp8"], FP8_WEIGHT_CACHE_BYTES, 0.0
    )
    weights = params * w_bytes / np.where(zero >= 3, shard, 1.0)
    weights = np.where(layouts.offload_params != 0, 0.0, weights)
    grads = params * GRAD_BYTES / np.where(zero >= 2, shard, 1.0)
    optimizer = params * OPTIMIZER_BYTES / np.where(shard_opt, shard, 1.0)
    optimizer = np.where(layouts.offload_optimizer != 0, 0.0, optimizer)
    return weights, grads, optimizer


def _comm_buffer_bytes(
    model: ModelSpec, layouts: LayoutBatch, seq_length: int, params: RankParams, rank: np.ndarray
) -> np.ndarray:
    """Transient communication buffers at the peak (bytes)."""
    h, b = model.hidden_size, BF16_BYTES
    t = layouts.tp.astype(np.float64)
    sb = seq_length / layouts.cp * layouts.micro_batch
    sp = layouts.sequence_parallel != 0
    rep = np.where(sp, t, 1.0)
    # SP all-gathers a layer's input to full (s/cp)·b·h before QKV and FC1: two live buffers
    # (Korthikanti §4.2.2, overlapped with compute).
    out = np.where(sp & (layouts.tp > 1), 2 * b * sb * h, 0.0)
    # PP send/recv of one activation each way, double-buffered (Narayanan 2021 §4.1 scatter/gather)
    out = out + np.where(layouts.pp > 1, 4 * b * sb * h / rep, 0.0)
    # CP ring attention: K and V blocks in flight, send and receive (Liu et al. 2023 Ring Attention)
    kv_dim = (
        model.kv_heads * model.head_size
        if model.attention == "gqa"
        else model.num_heads * model.head_size
    )
    out = out + np.where(
        layouts.cp > 1, 2 * 2 * b * sb * np.maximum(kv_dim / t, model.head_size), 0.0
    )
    if model.moe is not None:  # all-to-all dispatch and combine of the top-k token copies
        etp = layouts.etp.astype(np.float64)
        tokens = sb * model.moe.top_k * np.minimum(etp, rep) / rep
        out = out + 2 * b * tokens * h
    # ZeRO-3 / parameter offload: the gathered weights of the current and the prefetched layer
    gathered = (layouts.zero_stage >= 3) | (layouts.offload_params != 0)
    layers_here = np.maximum(
        stage_layers(
            model.num_layers,
            layouts.pp,
            layouts.vp,
            split_code(layouts),
            rank,
        ),
        1.0,
    )
    per_layer = (params.dense + params.experts) / layers_here
    out = out + np.where(gathered, 2 * WEIGHT_BYTES * per_layer, 0.0)
    return out


def _stage_memory(
    model: ModelSpec,
    layouts: LayoutBatch,
    seq_length: int,
    stage: str,
    dropout: bool,
    vocab_divisible_by: int,
    flash_attention: bool,
) -> MemoryBatch:
    params = rank_params(model, layouts, stage, vocab_divisible_by)
    dense_shard = (layouts.dp * layouts.cp).astype(np.float64)
    expert_shard = (layouts.dp * layouts.cp * layouts.tp / (layouts.ep * layouts.etp)).astype(
        np.float64
    )
    weights, grads, optimizer = _state_bytes(params.dense, layouts, dense_shard)
    embeddings = sum(_state_bytes(params.embedding, layouts, dense_shard))
    experts = sum(_state_bytes(params.experts, layouts, expert_shard))
    rank = stage_rank(stage, layouts.pp)
    act = stage_activation_bytes(
        model, layouts, seq_length, rank, dropout, vocab_divisible_by, flash_attention
    ).total
    comm = _comm_buffer_bytes(model, layouts, seq_length, params, rank)
    margin = FRAMEWORK_FIXED_BYTES + ALLOCATOR_FRAGMENTATION * (act + comm)
    parts = [weights, grads, optimizer, embeddings, experts, act, comm, margin]
    parts = [np.asarray(p, dtype=np.float64) * np.ones(len(layouts)) for p in parts]
    total = sum(parts)  # same order as MemoryBatch.component, so parts add up exactly
    return MemoryBatch(*parts, total=total, stage_rank=rank)


def memory_per_gpu(
    model: ModelSpec,
    layouts: LayoutBatch,
    seq_length: int,
    stage: str = "max",
    *,
    dropout: bool = False,
    vocab_divisible_by: int = 128,
    flash_attention: bool = True,
) -> MemoryBatch:
    """Bytes per GPU by component for every layout of the batch.

    stage: "first", "middle" (rank pp//2), "last", or "max" (per layout, the stage with the
    largest total). `vocab_divisible_by` is Megatron's `make_vocab_size_divisible_by` (default 128).
    `dropout`: count dropout masks (GPT-3 style training); off for Llama-style models.
    `flash_attention`: fused attention kernels that keep no a·s² scores (the default); False is
    Korthikanti's unfused attention (pass `profile.attention_score_passes == 0` to follow a
    cluster's efficiency profile).
    """
    opts = (dropout, vocab_divisible_by, flash_attention)
    if stage != "max":
        return _stage_memory(model, layouts, seq_length, stage, *opts)
    per_stage = [_stage_memory(model, layouts, seq_length, s, *opts) for s in STAGES]
    worst = np.argmax(np.stack([m.total for m in per_stage]), axis=0)
    picked = {
        f.name: np.choose(worst, [getattr(m, f.name) for m in per_stage])
        for f in fields(MemoryBatch)
    }
    return MemoryBatch(**picked)


def memory_breakdown(
    model: ModelSpec, layout: LayoutSpec, seq_length: int, stage: str = "max", **kwargs: object
) -> dict[str, float]:
    """One layout's bytes per GPU by component, with `total`."""
    return memory_per_gpu(
        model, LayoutBatch.from_specs([layout]), seq_length, stage, **kwargs
    ).component(0)  # type: ignore[arg-type]

"""Compute time per op: a roofline with efficiency curves, vectorized over layouts.

FLOPs come from `scaleplan.costmodels.flops` (the project's one FLOP count); this module only
turns them into seconds on one GPU, given how a layout splits the work (TP, CP, EP, micro-batch):
- GEMMs: `gemm_s` — the larger of FLOPs / (peak · eff(F)) and operand bytes / HBM bandwidth
  (roofline, Williams et al. 2009), eff(F) = gemm_max · F / (F + gemm_half_flops) per call.
- Core attention: causal kernels skip the masked half (FlashAttention-2, Dao 2023) and run at
  `attention_eff` of peak; unfused kernels also move the (b, a, s, s) score matrix through HBM
  `attention_score_passes` times (Korthikanti et al. 2022, the 5as/h activation term).
- Element-wise ops (norms, residuals, activations, dropout) are memory-bound: bytes / HBM.
- Backward costs 2x the forward GEMMs (input and weight gradients, Narayanan 2021 section 5.1),
  2.5x the attention core (FlashAttention-2: 5 matmuls backward vs 2 forward), 2x element-wise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scaleplan.costmodels import flops
from scaleplan.specs.efficiency import EfficiencyProfile
from scaleplan.specs.errors import SpecError
from scaleplan.specs.hardware import GPUSpec
from scaleplan.specs.model import ModelSpec

ACT_BYTES = 2.0  # bf16/fp16 activations (fp8 GEMM inputs are cast per tile, outputs stay bf16)
REPLICATED_ELEMENTWISE = 10.0 / 34.0  # Korthikanti et al. 2022, table 2 (sbh·10 of sbh·34)
ATTN_BWD_FACTOR = 2.5  # FlashAttention-2 (Dao 2023): backward does 5 matmuls, forward 2
# Mixed-precision Adam (Micikevicius et al. 2018; Rajbhandari et al. 2020, ZeRO section 3.1):
# read fp32 master weight, gradient, m, v (16 B), write master, m, v (12 B), write the bf16 copy
# (2 B), plus one read of the gradient for the norm and clipping (4 B).
OPTIMIZER_BYTES_PER_PARAM = 34.0
FP8_CAST_BYTES = 3.0  # read bf16 (2 B), write fp8 (1 B) per element cast (Transformer Engine)
PCIE_BYTES_PER_S = 25e9  # PCIe Gen4 x16 effective, for offloaded optimizer states
CPU_ADAM_BYTES_PER_S = 50e9  # host memory bandwidth a CPU Adam (DeepSpeed) streams at


def peak_flops_for(gpu: GPUSpec, precision_code: np.ndarray) -> np.ndarray:
    """Dense GEMM peak per layout: bf16 (0), fp16 (1), fp8 (2; the 16-bit peak where the GPU has
    no fp8). A bf16 layout on a GPU without bf16 (V100) is refused."""
    code = np.asarray(precision_code)
    if gpu.peak_tflops.bf16 is None and np.any(code == 0):
        raise SpecError(f"{gpu.name} has no bf16 tensor cores; use fp16", field="precision")
    fp16 = gpu.peak_flops("fp16")
    bf16 = gpu.peak_tflops.bf16 * 1e12 if gpu.peak_tflops.bf16 else fp16
    fp8 = gpu.peak_tflops.fp8 * 1e12 if gpu.peak_tflops.fp8 else gpu.dense16_flops
    return np.where(code == 2, fp8, np.where(code == 1, fp16, bf16)).astype(np.float64)


def gemm_s(
    m: np.ndarray,
    k: np.ndarray,
    n: np.ndarray,
    peak: np.ndarray,
    gpu: GPUSpec,
    prof: EfficiencyProfile,
) -> np.ndarray:
    """One (m x k)·(k x n) GEMM: roofline with the profile's size-dependent efficiency."""
    f = 2.0 * m * k * n
    eff = prof.gemm_max * f / (f + prof.gemm_half_flops)
    compute = f / (peak * np.maximum(eff, 1e-9))
    memory = ACT_BYTES * (m * k + k * n + m * n) / (gpu.hbm_bytes_per_s * prof.hbm_eff)
    return np.maximum(compute, memory)


@dataclass(frozen=True)
class LayerTimes:
    """Per-layer, per-micro-batch times on one GPU (arrays over layouts), seconds."""

    dense_fwd_s: np.ndarray  # a layer with a dense MLP, forward
    moe_fwd_s: np.ndarray  # a layer with an MoE MLP, forward (zeros for dense models)
    attn_core_fwd_s: np.ndarray  # the attention core alone (what selective recompute replays)
    dense_bwd_s: np.ndarray
    moe_bwd_s: np.ndarray
    attn_core_bwd_s: np.ndarray
    head_fwd_s: np.ndarray  # LM head + loss on the last stage
    head_bwd_s: np.ndarray
    embed_fwd_s: np.ndarray  # embedding lookup on the first stage
    embed_bwd_s: np.ndarray


def layer_times(
    model: ModelSpec,
    gpu: GPUSpec,
    prof: EfficiencyProfile,
    seq_length: int,
    tp: np.ndarray,
    cp: np.ndarray,
    ep: np.ndarray,
    etp: np.ndarray,
    micro_batch: np.ndarray,
    sequence_parallel: np.ndarray,
    precision: np.ndarray,
) -> LayerTimes:
    """Times of one micro-batch through one layer of each kind, on one GPU of each layout."""
    ops = flops.forward_flops_per_token(model, seq_length)
    h = float(model.hidden_size)
    layers = float(model.num_layers)
    tp = tp.astype(np.float64)
    tokens = micro_batch.astype(np.float64) * seq_length / cp  # tokens this GPU's GEMMs see
    peak = peak_flops_for(gpu, precision)
    peak16 = gpu.dense16_flops
    hbm = gpu.hbm_bytes_per_s * prof.hbm_eff

    fp8 = np.asarray(precision) == 2

    def linear(
        total_flops_per_token: float,
        count: float,
        k: float,
        split: np.ndarray,
        gemm_peak: np.ndarray | float | None = None,
    ) -> np.ndarray:
        # `count` GEMMs of inner size k sharing the op's FLOPs; n follows from the FLOPs.
        if total_flops_per_token <= 0:
            return np.zeros_like(tokens)
        per_gemm = total_flops_per_token / count
        n = per_gemm / (2.0 * k) / split
        kk = np.full_like(tokens, k)
        t = gemm_s(tokens, kk, n, peak if gemm_peak is None else gemm_peak, gpu, prof)
        if gemm_peak is None:  # fp8 (Transformer Engine): cast input and weight, 2+1 bytes each
            t = t + np.where(fp8, FP8_CAST_BYTES * (tokens * kk + kk * n) / hbm, 0.0)
        return count * t

    qkv = linear(ops["qkv"] / layers, 1.0, h, tp)
    attn_out = linear(ops["attn_out"] / layers, 1.0, h, tp)
    # Attention core: half of the full-s count runs (causal), at the attention kernel efficiency.
    attn_flops = 0.5 * (ops["attn_scores"] + ops["attn_context"]) / layers * tokens / tp
    heads_local = model.num_heads / tp
    score_bytes = (
        prof.attention_score_passes
        * micro_batch
        * heads_local
        * (seq_length / cp)
        * seq_length
        * ACT_BYTES
    )
    attn_core = attn_flops / (peak16 * prof.attention_eff) + score_bytes / hbm
    # Element-wise ops: replicated across TP ranks unless sequence parallel shards them.
    elem_split = np.where(sequence_parallel > 0, tp, 1.0)
    # Korthikanti 2022 table 2: of a layer's 34 sbh activation bytes, 10 (norm inputs, dropout
    # masks, residuals) are replicated across TP ranks without sequence parallelism and 24 (the
    # 4h bias-GeLU, attention-side tensors) are sharded; element-wise traffic follows that split.
    elementwise = (
        prof.elementwise_bytes_per_hidden
        * tokens
        * h
        / hbm
        * (REPLICATED_ELEMENTWISE / elem_split + (1.0 - REPLICATED_ELEMENTWISE) / tp)
    )
    attn_part = qkv + attn_out + attn_core + elementwise
    mlp_dense = np.zeros_like(tokens)
    if model.num_dense_layers:
        mats = 3.0 if model.activation == "swiglu" else 2.0
        mlp_flops = flops._mlp_flops(model, model.ffn_hidden_size)
        mlp_dense = linear(mlp_flops, mats, h, tp)
    moe_mlp = np.zeros_like(tokens)
    if model.moe is not None:
        moe = model.moe
        mats = 3.0 if model.activation == "swiglu" else 2.0
        per_expert = flops._mlp_flops(model, moe.expert_ffn_hidden_size)
        # Balanced routing: each expert of this rank sees tokens·top_k·ep/E tokens (Megatron-core
        # MoE, expert parallelism inside DP x CP); its GEMMs are split by expert TP.
        expert_tokens = tokens * moe.top_k * ep / moe.num_experts
        local_experts = moe.num_experts / ep
        n = per_expert / mats / (2.0 * h) / etp
        routed = (
            local_experts
            * mats
            * gemm_s(expert_tokens, np.full_like(tokens, h), n, peak, gpu, prof)
        )
        shared = (
            linear(moe.num_shared_experts * per_expert, mats, h, tp)
            if moe.num_shared_experts
            else 0.0
        )
        router = linear(2.0 * h * moe.num_experts, 1.0, h, np.ones_like(tp))
        # Permutation/unpermutation moves each routed token's hidden state twice each way.
        permute = 4.0 * tokens * moe.top_k * h * ACT_BYTES / hbm
        moe_mlp = routed + shared + router + permute
    # The output layer stays in bf16 under fp8 recipes (Megatron's output_layer is not a TE
    # linear), so it runs at the bf16 peak.
    head = linear(ops["lm_head"], 1.0, h, tp, peak16)
    # Cross-entropy over the vocab shard: logits read/written a few times in fp32.
    head = head + 3.0 * tokens * model.vocab_size / tp * 4.0 / hbm
    embed = tokens * h * ACT_BYTES * 2.0 / hbm
    gemm_attn = qkv + attn_out
    dense_fwd = attn_part + mlp_dense
    moe_fwd = attn_part + moe_mlp if model.moe is not None else np.zeros_like(tokens)
    attn_bwd = ATTN_BWD_FACTOR * attn_core
    dense_bwd = 2.0 * (gemm_attn + mlp_dense + elementwise) + attn_bwd
    moe_bwd = (
        2.0 * (gemm_attn + moe_mlp + elementwise) + attn_bwd if model.moe is not None else moe_fwd
    )
    return LayerTimes(
        dense_fwd_s=dense_fwd,
        moe_fwd_s=moe_fwd,
        attn_core_fwd_s=attn_core,
        dense_bwd_s=dense_bwd,
        moe_bwd_s=moe_bwd,
        attn_core_bwd_s=attn_bwd,
        head_fwd_s=head,
        head_bwd_s=2.0 * head,
        embed_fwd_s=embed,
        embed_bwd_s=2.0 * embed,
    )


def optimizer_step_s(
    params_on_gpu: np.ndarray, gpu: GPUSpec, prof: EfficiencyProfile, offload: np.ndarray
) -> np.ndarray:
    """Adam step over the parameters this GPU updates: memory-bound, by HBM bandwidth.

    Offloaded (ZeRO-Offload, Ren et al. 2021): gradients down and bf16 weights up over PCIe, and
    the update streamed through host memory.
    """
    on_gpu = params_on_gpu * OPTIMIZER_BYTES_PER_PARAM / (gpu.hbm_bytes_per_s * prof.optimizer_eff)
    on_cpu = params_on_gpu * (
        6.0 / PCIE_BYTES_PER_S + OPTIMIZER_BYTES_PER_PARAM / CPU_ADAM_BYTES_PER_S
    )
    return np.where(np.asarray(offload) > 0, on_cpu, on_gpu)

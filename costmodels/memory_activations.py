"""Activation memory per GPU, vectorized over a `LayoutBatch`.

Per layer and micro-batch, Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
Transformer Models"), §4 and Table 2, in bytes (s sequence, b micro-batch, h hidden, a heads,
t tensor-parallel size):
    no parallelism                  sbh(34 + 5as/h)
    tensor parallel                 sbh(10 + 24/t + 5as/(ht))
    tensor + sequence parallel      sbh(34/t + 5as/(ht))
    + selective recompute           sbh·34/t            (the 5as²b attention core is recomputed)
    full recompute                  2sbh (/t with SP)   (only the layer input is kept)
The 34 splits into the terms below; each is generalized to GQA (K and V have kv_heads heads),
MLA, SwiGLU (FC1 is 2·ffn wide), MoE (each token's top-k expert copies) and context parallelism
(s -> s/cp; the attention core is (s/cp)·s per rank). Dropout masks (1 byte per element) count
only with `dropout=True` (GPT-3/Megatron defaults); Llama-style models train without dropout.
The a·s² attention core is stored only with unfused attention (`flash_attention=False`, as in
Korthikanti); fused FlashAttention kernels (the default of Megatron-Core/TE, torchtitan, NeMo)
keep one fp32 logsumexp per query row and head instead.

In-flight micro-batches (Narayanan et al. 2021 §2.2; Korthikanti §4.2.3): with 1F1B, pipeline
rank r holds min(pp - r, m) micro-batches; with the interleaved schedule it holds
min(2(pp - r - 1) + (vp - 1)·pp + 1, m·vp) model chunks of L/(pp·vp) layers (Megatron's warm-up
count + 1), i.e. pp·(1 + (pp-1)/(pp·vp)) micro-batches of L/pp layers on the first rank.
With the embedding and loss counted in the pipeline split (Megatron-core
account_for_embedding/loss_in_pipeline_split) the first rank's first chunk and the last rank's
last chunk hold one layer fewer; with the balanced layout (pipeline_model_parallel_layout) the
last rank's last chunk holds a·K - L fewer (`stage_layers`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scaleplan.specs.layout import RECOMPUTE_CODES
from scaleplan.specs.model import ModelSpec

from .batch import LayoutBatch
from .memory_params import padded_vocab
from .stage_layers import (
    chunk_layers,
    layers_on_rank,
    short_layers_in_flight,
    split_code,
    stage_layers,
)

BF16_BYTES = 2  # activations are kept in bf16/fp16 (Korthikanti §4.1 assumes 2 bytes)
MASK_BYTES = 1  # dropout masks, one byte per element (Korthikanti §4.1)
TOKEN_ID_BYTES = 8  # int64 token ids per token (Megatron theoretical_memory_usage: 8·s·b)
LSE_BYTES = 4  # FlashAttention: one fp32 softmax statistic (logsumexp) per query and head
LOGIT_BYTES = 4  # fp32 logits kept by the vocab-parallel cross entropy (Megatron: 4·s·b·V)

_NONE, _SELECTIVE, _FULL = (
    RECOMPUTE_CODES["none"],
    RECOMPUTE_CODES["selective"],
    RECOMPUTE_CODES["full"],
)


@dataclass(frozen=True)
class _Shape:
    """Per-rank tensor sizes shared by the terms below (float64 arrays)."""

    sb: np.ndarray  # local tokens of a micro-batch: (s / cp) * b
    s_full: float  # full sequence length (keys of the attention core)
    t: np.ndarray  # tensor-parallel size
    rep: np.ndarray  # divisor of the TP-replicated terms: t with sequence parallel, else 1


def _shape(seq_length: int, layouts: LayoutBatch) -> _Shape:
    t = layouts.tp.astype(np.float64)
    sb = seq_length / layouts.cp.astype(np.float64) * layouts.micro_batch
    rep = np.where(layouts.sequence_parallel != 0, t, 1.0)
    return _Shape(sb=sb, s_full=float(seq_length), t=t, rep=rep)


def _attention_terms(
    model: ModelSpec, g: _Shape, dropout: bool, flash_attention: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(stored bytes without the core, bytes of the a·s² core) of one attention block."""
    h, heads = model.hidden_size, model.num_heads
    if model.attention == "mla":
        m = model.mla
        assert m is not None
        qk, v, kv_heads = m.qk_nope_head_dim + m.qk_rope_head_dim, m.v_head_dim, heads
        latent = (m.q_lora_rank or 0) + m.kv_lora_rank + m.qk_rope_head_dim
    else:
        qk = v = model.head_size
        kv_heads, latent = model.kv_heads, 0
    kv_rank = np.maximum(kv_heads / g.t, 1.0)  # tp > kv_heads replicates one KV head per rank
    b = BF16_BYTES
    stored = 2 * b * g.sb * h / g.rep  # LayerNorm input and QKV input (Korthikanti: 2sbh + 2sbh)
    stored = stored + b * g.sb * (heads / g.t * qk + kv_rank * qk)  # Q and K (Korthikanti 4sbh/t)
    stored = stored + b * g.sb * kv_rank * v  # V (Korthikanti 2sbh/t)
    stored = stored + b * g.sb * latent / g.t  # MLA compressed latents (DeepSeek-V2 eq. 9, 12)
    stored = stored + b * g.sb * heads * v / g.t  # output-projection input (2sbh/t)
    if dropout:
        stored = stored + MASK_BYTES * g.sb * h / g.rep  # attention dropout mask (sbh)
    # softmax output 2as²b, its dropout mask as²b and dropout output 2as²b (Korthikanti: 5as²b/t);
    # without dropout only the softmax output is kept.
    core_per_elem = (2 * b + MASK_BYTES) if dropout else b
    core = core_per_elem * heads / g.t * g.sb * g.s_full
    if flash_attention:  # FlashAttention (Dao et al. 2022, §3.1) keeps only the fp32 logsumexp
        core = LSE_BYTES * heads / g.t * g.sb  # per query row; dropout masks are regenerated
    return stored, core


def _mlp_terms(model: ModelSpec, g: _Shape, dropout: bool) -> np.ndarray:
    """Stored bytes of one dense MLP block (Korthikanti: 19sbh with the GeLU 4h FFN)."""
    h, ffn, b = model.hidden_size, model.ffn_hidden_size, BF16_BYTES
    stored = 2 * b * g.sb * h / g.rep  # LayerNorm input and FC1 input (2sbh + 2sbh)
    fc1_width = 2 * ffn if model.activation == "swiglu" else ffn
    stored = stored + b * g.sb * (fc1_width + ffn) / g.t  # activation input and output (8+8 sbh)
    if dropout:
        stored = stored + MASK_BYTES * g.sb * h / g.rep  # MLP dropout mask (sbh)
    return stored


def _moe_terms(model: ModelSpec, g: _Shape, layouts: LayoutBatch, dropout: bool) -> np.ndarray:
    """Stored bytes of one MoE block: router, dispatched top-k token copies, shared experts."""
    assert model.moe is not None
    moe, h, b = model.moe, model.hidden_size, BF16_BYTES
    etp = layouts.etp.astype(np.float64)
    stored = 2 * b * g.sb * h / g.rep  # LayerNorm input and router/dispatch input
    stored = stored + 4 * g.sb * moe.num_experts / g.rep  # fp32 router logits for the softmax
    # Tokens each rank's experts process: top_k copies of the TP group's tokens (gathered over
    # expert-TP when sequence parallel splits them); EP all-to-all keeps the count on average.
    tokens = g.sb * moe.top_k * np.minimum(etp, g.rep) / g.rep
    ffn_e = moe.expert_ffn_hidden_size
    fc1_width = 2 * ffn_e if model.activation == "swiglu" else ffn_e
    # expert input and output (2h each) plus FC1 output and activation output, FFN split over etp
    stored = stored + b * tokens * (2 * h + (fc1_width + ffn_e) / etp)
    if moe.num_shared_experts:
        shared = moe.num_shared_experts * ffn_e
        shared_fc1 = 2 * shared if model.activation == "swiglu" else shared
        stored = stored + b * g.sb * (shared_fc1 + shared) / g.t
    if dropout:
        stored = stored + MASK_BYTES * g.sb * h / g.rep
    return stored


def layer_activation_bytes(
    model: ModelSpec,
    layouts: LayoutBatch,
    seq_length: int,
    recompute: str | None = None,
    moe_layer: bool = False,
    dropout: bool = False,
    flash_attention: bool = True,
) -> np.ndarray:
    """Bytes one transformer layer keeps for one micro-batch, per layout (Korthikanti Table 2).

    `recompute` overrides the layouts' own mode ("none", "selective", "full"); full recompute
    keeps only the layer input, as every layer of the stage were recomputed.
    `flash_attention=False` is Korthikanti's unfused attention, which stores the a·s² scores.
    """
    g = _shape(seq_length, layouts)
    attn, core = _attention_terms(model, g, dropout, flash_attention)
    ffn = _moe_terms(model, g, layouts, dropout) if moe_layer else _mlp_terms(model, g, dropout)
    code = (
        layouts.recompute
        if recompute is None
        else np.full(len(layouts), RECOMPUTE_CODES[recompute])
    )
    kept_input = BF16_BYTES * g.sb * model.hidden_size / g.rep  # Korthikanti: 2sbh (/t with SP)
    return np.where(
        code == _FULL, kept_input, np.where(code == _SELECTIVE, attn + ffn, attn + core + ffn)
    )


def in_flight_layer_microbatches(
    model: ModelSpec, layouts: LayoutBatch, rank: np.ndarray
) -> np.ndarray:
    """Layer-activations x micro-batches pipeline rank `rank` holds at its peak."""
    pp, vp = layouts.pp, layouts.vp
    split = split_code(layouts)
    m = np.maximum(layouts.num_microbatches, 1)
    plain = stage_layers(model.num_layers, pp, vp, split, rank) * np.minimum(pp - rank, m)
    chunks = np.minimum(2 * (pp - rank - 1) + (vp - 1) * pp + 1, m * vp)
    # the first chunk of rank 0 and the last of rank pp-1 may be short (embedding/loss split,
    # balanced layout): their runs among the in-flight chunks hold fewer layers
    interleaved = chunks * chunk_layers(model.num_layers, pp, vp, split) - short_layers_in_flight(
        model.num_layers, pp, vp, split, rank, chunks
    )
    return np.where(vp > 1, interleaved, plain).astype(np.float64)


@dataclass(frozen=True)
class ActivationBytes:
    layers: np.ndarray  # transformer layers, all in-flight micro-batches
    recompute_buffer: np.ndarray  # full recompute: one layer's activations, rebuilt in backward
    embedding: np.ndarray  # first stage: token ids (+ embedding dropout mask)
    logits: np.ndarray  # last stage: final-norm and LM-head inputs, fp32 logits

    @property
    def total(self) -> np.ndarray:
        return self.layers + self.recompute_buffer + self.embedding + self.logits


def stage_activation_bytes(
    model: ModelSpec,
    layouts: LayoutBatch,
    seq_length: int,
    rank: np.ndarray,
    dropout: bool = False,
    vocab_divisible_by: int = 1,
    flash_attention: bool = True,
) -> ActivationBytes:
    """Peak activation bytes on pipeline rank `rank`, per layout."""
    pp = layouts.pp
    n_dense, n_moe = layers_on_rank(model, pp, layouts.vp, rank, split_code(layouts))
    per_stage = np.maximum(n_dense + n_moe, 1.0)

    def per_layer(mode: str | None) -> np.ndarray:
        dense = layer_activation_bytes(
            model, layouts, seq_length, mode, False, dropout, flash_attention
        )
        if model.moe is None:
            return dense
        moe = layer_activation_bytes(
            model, layouts, seq_length, mode, True, dropout, flash_attention
        )
        return (n_dense * dense + n_moe * moe) / per_stage

    stored = per_layer(None)
    kept_none = per_layer("none")
    full = layouts.recompute == _FULL
    # partial full-recompute (Megatron --recompute-num-layers): the other layers keep everything
    recomputed = np.where(
        layouts.recompute_layers > 0, np.minimum(layouts.recompute_layers / per_stage, 1.0), 1.0
    )
    stored = np.where(full, recomputed * stored + (1 - recomputed) * kept_none, stored)
    layers = stored * in_flight_layer_microbatches(model, layouts, rank)
    buffer = np.where(full, kept_none, 0.0)

    g = _shape(seq_length, layouts)
    h = model.hidden_size
    first, last = rank == 0, rank == pp - 1
    m_first = np.minimum(pp, np.maximum(layouts.num_microbatches, 1))
    emb = TOKEN_ID_BYTES * g.sb + (MASK_BYTES * g.sb * h / g.rep if dropout else 0.0)
    embedding = np.where(first, emb * m_first, 0.0)
    vocab = padded_vocab(model.vocab_size, layouts.tp, vocab_divisible_by)
    # Megatron theoretical_memory_usage: 4·s·b·h·(1 + V/h) for the output layer and the loss
    head = 2 * BF16_BYTES * g.sb * h / g.rep + LOGIT_BYTES * g.sb * vocab / g.t
    logits = np.where(last, head, 0.0)
    return ActivationBytes(
        layers=layers, recompute_buffer=buffer, embedding=embedding, logits=logits
    )

"""Parameters held by one GPU of a pipeline stage, vectorized over a `LayoutBatch`.

Placement follows Megatron-Core 0.16 `GPTModel` with `get_gpt_layer_local_spec()`:
- Column-parallel linears (QKV, FC1, MLA up/down projections, LM head) split weight and bias over
  TP; row-parallel linears (attention output, FC2) split the weight and keep the full bias.
- LayerNorm/RMSNorm weights (and LayerNorm biases) and the MoE router are replicated over TP.
- The fused QKV weight, (heads + 2*kv_heads)*d rows, splits evenly over TP, also when
  tp > kv_heads (megatron-core 0.16.1 local spec; checked against GPTModel in the tests).
- Word embedding (`VocabParallelEmbedding`) on the first stage, vocab padded to a multiple of
  `vocab_divisible_by * tp` (Megatron `_vocab_size_with_padding`); learned positions (replicated)
  too. Final norm on the last stage. The LM head (`output_layer`) sits on the last stage unless
  embeddings are tied and pp == 1 (with tied embeddings and pp > 1 the last stage keeps a copy).
- Routed experts: num_experts/ep experts per rank, each FFN split over expert-TP (etp).
- Layer i lives on pipeline rank (i // (L/(pp·vp))) % pp (interleaved chunks; vp = 1 is plain),
  or with the embedding and loss counted in the split on ((i+1) // ((L+2)/(pp·vp))) % pp
  (`stage_layers`, the one definition).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scaleplan.specs.layout import LayoutSpec
from scaleplan.specs.model import ModelSpec

from .batch import LayoutBatch
from .stage_layers import layers_on_rank, split_code

STAGES: tuple[str, ...] = ("first", "middle", "last")


def stage_rank(stage: str, pp: np.ndarray) -> np.ndarray:
    """Pipeline rank of a named stage: first 0, last pp-1, middle pp//2."""
    if stage == "first":
        return np.zeros_like(pp)
    if stage == "last":
        return pp - 1
    if stage == "middle":
        return pp // 2
    raise ValueError(f"unknown stage {stage!r}; one of {(*STAGES, 'max')}")


def padded_vocab(vocab_size: int, tp: np.ndarray, vocab_divisible_by: int = 1) -> np.ndarray:
    """Megatron `_vocab_size_with_padding`: round V up to a multiple of divisible_by * tp."""
    multiple = np.asarray(tp, dtype=np.int64) * int(vocab_divisible_by)
    return -(-vocab_size // multiple) * multiple


def _mlp_params_rank(model: ModelSpec, ffn: float, shards: np.ndarray) -> np.ndarray:
    """One MLP's weights (+ biases) on one rank, FC1 column- and FC2 row-parallel over `shards`."""
    h = model.hidden_size
    mats = 3 if model.activation == "swiglu" else 2
    weight = mats * h * ffn / shards
    bias = ((mats - 1) * ffn / shards + h) if model.bias else 0.0
    return weight + bias


def attention_params_rank(model: ModelSpec, tp: np.ndarray) -> np.ndarray:
    """One layer's attention weights (+ biases, + MLA latent norms) on one TP rank."""
    h, heads = model.hidden_size, model.num_heads
    t = tp.astype(np.float64)
    if model.attention == "mla":
        m = model.mla
        assert m is not None
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        if m.q_lora_rank:  # local spec: down projections are column-parallel too; norms replicated
            q = h * m.q_lora_rank / t + m.q_lora_rank + m.q_lora_rank * heads * qk / t
        else:
            q = h * heads * qk / t
        kv = h * (m.kv_lora_rank + m.qk_rope_head_dim) / t + m.kv_lora_rank
        kv = kv + m.kv_lora_rank * heads * (m.qk_nope_head_dim + m.v_head_dim) / t
        return q + kv + heads * m.v_head_dim * h / t
    d = model.head_size
    # Megatron-core ColumnParallelLinear over the fused QKV: (heads + 2*kv)*d rows / tp per rank
    qkv_rows = (heads + 2 * model.kv_heads) * d / t
    params = qkv_rows * h + heads * d * h / t
    if model.bias:
        params = params + qkv_rows + h  # QKV bias split, output-projection bias replicated
    return params


@dataclass(frozen=True)
class RankParams:
    """Parameter counts (float64 arrays, exact integers) held by one GPU of one stage."""

    dense: np.ndarray  # transformer-layer parameters that are not routed experts (+ final norm)
    experts: np.ndarray  # routed-expert parameters
    embedding: np.ndarray  # word/position embedding and LM head held by this stage

    @property
    def total(self) -> np.ndarray:
        return self.dense + self.experts + self.embedding


def rank_params(
    model: ModelSpec, layouts: LayoutBatch, stage: str, vocab_divisible_by: int = 1
) -> RankParams:
    """Parameters on one GPU of `stage` ("first", "middle" or "last"), per layout."""
    tp, pp, vp = layouts.tp, layouts.pp, layouts.vp
    t = tp.astype(np.float64)
    rank = stage_rank(stage, pp)
    n_dense, n_moe = layers_on_rank(model, pp, vp, rank, split_code(layouts))
    per_layer = attention_params_rank(model, tp) + model.norm_params_per_layer
    dense = (n_dense + n_moe) * per_layer + n_dense * _mlp_params_rank(
        model, model.ffn_hidden_size, t
    )
    experts = np.zeros_like(dense)
    if model.moe is not None:
        moe = model.moe
        ffn_e = moe.expert_ffn_hidden_size
        router = model.hidden_size * moe.num_experts
        shared = moe.num_shared_experts * _mlp_params_rank(model, ffn_e, t)
        dense = dense + n_moe * (router + shared)
        local_experts = moe.num_experts / layouts.ep
        experts = (
            n_moe * local_experts * _mlp_params_rank(model, ffn_e, layouts.etp.astype(np.float64))
        )
    first, last = rank == 0, rank == pp - 1
    vocab = padded_vocab(model.vocab_size, tp, vocab_divisible_by).astype(np.float64)
    word = vocab * model.hidden_size / t
    pos = model.seq_length * model.hidden_size if model.position_embedding == "learned" else 0
    head_on_last = (not model.tied_embeddings) | (pp > 1)
    embedding = np.where(first, word + pos, 0.0) + np.where(last & head_on_last, word, 0.0)
    dense = dense + np.where(last, model.final_norm_params, 0.0)
    return RankParams(dense=dense, experts=experts, embedding=embedding)


def params_per_rank(
    model: ModelSpec, layout: LayoutSpec, stage: str, vocab_divisible_by: int = 1
) -> int:
    """Parameters held by one GPU of pipeline stage `stage` ("first", "middle", "last", or
    "max": the most loaded of the three)."""
    if stage == "max":
        return max(params_per_rank(model, layout, s, vocab_divisible_by) for s in STAGES)
    got = rank_params(model, LayoutBatch.from_specs([layout]), stage, vocab_divisible_by)
    return int(round(float(got.total[0])))

"""The one FLOP count: forward FLOPs per token, op by op, and the MFU/HFU numerators.

Conventions (Narayanan et al. 2021, SC'21, section 5.1 / appendix; Korthikanti et al. 2022):
- A matmul of (m x k) by (k x n) costs 2·m·n·k FLOPs; element-wise ops, norms, softmax and
  biases are not counted.
- Attention scores (Q·Kᵀ) and context (softmax·V) are counted over the *full* sequence for every
  query, i.e. without halving for the causal mask. This is the convention of Narayanan eq. 3,
  Korthikanti's MFU/HFU and Megatron-Core's reported TFLOP/s; sources that halve it say so in
  `shared/data/README.md`.
- Backward costs twice the forward (gradients with respect to inputs and to weights).
- Model FLOPs (MFU numerator) exclude recomputation; hardware FLOPs (HFU numerator) include it.
- The LM head is counted; the embedding lookup is not (it is a gather, not a matmul).

Every function is per token of a sequence of `seq_length` tokens, summed over all layers.
"""

from __future__ import annotations

from typing import Any, overload

import numpy as np

from scaleplan.specs.layout import RECOMPUTE_CODES
from scaleplan.specs.model import ModelSpec

from .stage_layers import full_stage_layers

# Ops of a transformer layer (everything but the LM head): what full recompute replays.
LAYER_OPS: tuple[str, ...] = (
    "qkv",
    "attn_scores",
    "attn_context",
    "attn_out",
    "mlp",
    "moe_router",
    "moe_experts",
)
# What Korthikanti's selective recompute replays (the attention core, Korthikanti 2022 §4.2).
SELECTIVE_OPS: tuple[str, ...] = ("attn_scores", "attn_context")
OPS: tuple[str, ...] = (*LAYER_OPS, "lm_head")

_FULL = RECOMPUTE_CODES["full"]
_SELECTIVE = RECOMPUTE_CODES["selective"]


def _attention_dims(model: ModelSpec) -> tuple[int, int]:
    """(query/key head dim, value head dim) used by the attention core."""
    if model.attention == "mla":
        m = model.mla
        assert m is not None
        return m.qk_nope_head_dim + m.qk_rope_head_dim, m.v_head_dim
    return model.head_size, model.head_size


def _qkv_flops(model: ModelSpec) -> float:
    """Forward FLOPs per token of one layer's query/key/value projections."""
    h, heads = model.hidden_size, model.num_heads
    if model.attention == "mla":
        m = model.mla
        assert m is not None
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        # DeepSeek-V2 eq. 9-13: W_DQ, W_UQ (or W_Q), W_DKV + W_KR, W_UK and W_UV.
        q = (
            2 * h * m.q_lora_rank + 2 * m.q_lora_rank * heads * qk
            if m.q_lora_rank
            else 2 * h * heads * qk
        )
        kv = 2 * h * (m.kv_lora_rank + m.qk_rope_head_dim)
        kv += 2 * m.kv_lora_rank * heads * (m.qk_nope_head_dim + m.v_head_dim)
        return float(q + kv)
    d = model.head_size
    # GQA: queries have `heads` heads, keys and values `kv_heads` each (Ainslie et al. 2023).
    return float(2 * h * d * (heads + 2 * model.kv_heads))


def _mlp_flops(model: ModelSpec, ffn: int) -> float:
    """Forward FLOPs per token of one MLP: SwiGLU has 3 matmuls (gate, up, down), GeLU 2."""
    mats = 3 if model.activation == "swiglu" else 2
    return float(2 * mats * model.hidden_size * ffn)


def forward_flops_per_token(model: ModelSpec, seq_length: int) -> dict[str, float]:
    """Forward FLOPs per token by op, summed over all layers (keys: `OPS`)."""
    h, heads, layers = model.hidden_size, model.num_heads, model.num_layers
    s = seq_length
    qk_dim, v_dim = _attention_dims(model)
    out: dict[str, float] = dict.fromkeys(OPS, 0.0)
    out["qkv"] = layers * _qkv_flops(model)
    # Narayanan 2021 eq. 3 derivation: Q·Kᵀ is 2·b·s²·h per layer -> 2·s·h per token, full s.
    out["attn_scores"] = float(layers * 2 * s * heads * qk_dim)
    out["attn_context"] = float(layers * 2 * s * heads * v_dim)
    out["attn_out"] = float(layers * 2 * heads * v_dim * h)
    out["mlp"] = model.num_dense_layers * _mlp_flops(model, model.ffn_hidden_size)
    if model.moe is not None:
        moe, n_moe = model.moe, model.num_moe_layers
        out["moe_router"] = float(n_moe * 2 * h * moe.num_experts)
        # Each token runs through its top-k routed experts and every shared expert.
        active = moe.top_k + moe.num_shared_experts
        out["moe_experts"] = n_moe * active * _mlp_flops(model, moe.expert_ffn_hidden_size)
    # Narayanan 2021 eq. 3: the logit layer is 2·b·s·h·V forward.
    out["lm_head"] = float(2 * h * model.vocab_size)
    return out


def forward_flops_per_token_total(model: ModelSpec, seq_length: int) -> float:
    return float(sum(forward_flops_per_token(model, seq_length).values()))


def layer_forward_flops_per_token(model: ModelSpec, seq_length: int) -> float:
    """Forward FLOPs per token of all transformer layers (no LM head): what full recompute replays."""
    ops = forward_flops_per_token(model, seq_length)
    return float(sum(ops[k] for k in LAYER_OPS))


def model_flops_per_token(model: ModelSpec, seq_length: int) -> float:
    """MFU numerator per token: forward + backward (= 3x forward), no recomputation."""
    return 3.0 * forward_flops_per_token_total(model, seq_length)


def model_flops_per_step(model: ModelSpec, seq_length: int, global_batch: int) -> float:
    """Model FLOPs of one optimizer step of `global_batch` sequences."""
    return model_flops_per_token(model, seq_length) * seq_length * global_batch


def recompute_flops_per_token(
    model: ModelSpec, seq_length: int, recompute: Any, recompute_layers_fraction: Any = 1.0
) -> Any:
    """Extra forward FLOPs per token replayed in the backward pass.

    full: one more forward of the recomputed transformer layers (Narayanan 2021 eq. 3's 4th pass;
    the LM head is not recomputed). selective: the attention core, Q·Kᵀ and softmax·V
    (Korthikanti 2022 §5, "the recompute overhead of selective activation recomputation").
    `recompute` is a mode name, or a numpy array of `RECOMPUTE_CODES` (then the result is an array).
    """
    ops = forward_flops_per_token(model, seq_length)
    layers_fwd = sum(ops[k] for k in LAYER_OPS)
    selective_fwd = sum(ops[k] for k in SELECTIVE_OPS)
    if isinstance(recompute, str):
        if recompute not in RECOMPUTE_CODES:
            raise ValueError(
                f"unknown recompute mode {recompute!r}; one of {sorted(RECOMPUTE_CODES)}"
            )
        code = RECOMPUTE_CODES[recompute]
        if code == _FULL:
            return float(layers_fwd * float(recompute_layers_fraction))
        return float(selective_fwd) if code == _SELECTIVE else 0.0
    codes = np.asarray(recompute)
    fraction = np.asarray(recompute_layers_fraction, dtype=np.float64)
    return np.where(
        codes == _FULL,
        layers_fwd * fraction,
        np.where(codes == _SELECTIVE, selective_fwd, 0.0),
    ).astype(np.float64)


@overload
def hardware_flops_per_token(
    model: ModelSpec, seq_length: int, recompute: str, recompute_layers_fraction: float = 1.0
) -> float: ...
@overload
def hardware_flops_per_token(
    model: ModelSpec, seq_length: int, recompute: np.ndarray, recompute_layers_fraction: Any = 1.0
) -> np.ndarray: ...
def hardware_flops_per_token(
    model: ModelSpec, seq_length: int, recompute: Any, recompute_layers_fraction: Any = 1.0
) -> Any:
    """HFU numerator per token: model FLOPs plus the recomputed forward work.

    With full recompute of every layer this is Narayanan 2021 eq. 3 divided by the tokens B·s:
    96·l·h²·(1 + s/(6h) + V/(16·l·h)) for GPT-shaped models (MHA, GeLU, FFN 4h).
    """
    extra = recompute_flops_per_token(model, seq_length, recompute, recompute_layers_fraction)
    return model_flops_per_token(model, seq_length) + extra


def recompute_layers_fraction(
    num_layers: int, pp: Any, recompute_layers: Any, split: Any = 0, vp: Any = 1
) -> Any:
    """Fraction of a stage's layers that full recompute replays (`recompute_layers` 0/None = all).

    `split`: the layouts' `stage_layers.split_code` (a full stage holds (L+2)/pp layers with
    the embedding/loss split, vp·ceil(L/(pp·vp)) with the balanced layout; `stage_layers`)."""
    if recompute_layers is None:
        return 1.0
    per_stage = np.floor(full_stage_layers(num_layers, pp, vp, split))
    layers = np.asarray(recompute_layers, dtype=np.float64)
    frac = np.where(layers <= 0, 1.0, np.minimum(layers / per_stage, 1.0))
    return float(frac) if frac.ndim == 0 else frac


def flops_report(
    model: ModelSpec, seq_length: int, recompute: str = "none", fraction: float = 1.0
) -> dict[str, Any]:
    """Everything a report shows about FLOPs: per-op forward, model and hardware per token."""
    fwd = forward_flops_per_token(model, seq_length)
    return {
        "forward_by_op": fwd,
        "forward": float(sum(fwd.values())),
        "model": model_flops_per_token(model, seq_length),
        "hardware": float(hardware_flops_per_token(model, seq_length, recompute, fraction)),
        "recompute": float(recompute_flops_per_token(model, seq_length, recompute, fraction)),
    }

"""Transformer architecture vocabulary: dense and MoE, GQA/MQA or MLA attention, and presets."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Literal

import yaml
from pydantic import Field, model_validator

from .base import Spec
from .errors import SpecError


class MLASpec(Spec):
    """Multi-head latent attention (DeepSeek-V2/V3): low-rank compressed Q and KV."""

    q_lora_rank: int | None = Field(default=None, gt=0)
    kv_lora_rank: int = Field(gt=0)
    qk_nope_head_dim: int = Field(gt=0)
    qk_rope_head_dim: int = Field(gt=0)
    v_head_dim: int = Field(gt=0)


class MoESpec(Spec):
    num_experts: int = Field(gt=1)
    top_k: int = Field(gt=0)
    expert_ffn_hidden_size: int = Field(gt=0)
    num_shared_experts: int = Field(default=0, ge=0)
    first_dense_layers: int = Field(default=0, ge=0, description="leading layers with a dense FFN")
    layer_freq: int = Field(
        default=1, gt=0, description="every k-th layer (after the dense ones) is MoE"
    )

    @model_validator(mode="after")
    def _check(self) -> MoESpec:
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k={self.top_k} exceeds num_experts={self.num_experts}")
        return self


class ModelSpec(Spec):
    name: str = "custom"
    num_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    num_kv_heads: int | None = Field(default=None, gt=0, description="GQA groups; None = MHA")
    head_dim: int | None = Field(default=None, gt=0, description="default hidden/heads")
    ffn_hidden_size: int = Field(gt=0, description="dense FFN width")
    activation: Literal["swiglu", "gelu"] = "swiglu"
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    bias: bool = False
    vocab_size: int = Field(gt=0)
    seq_length: int = Field(default=4096, gt=0)
    tied_embeddings: bool = False
    position_embedding: Literal["rope", "learned"] = "rope"
    rope_base: float = Field(default=10000.0, gt=0)
    attention: Literal["gqa", "mla"] = "gqa"
    mla: MLASpec | None = None
    moe: MoESpec | None = None

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        kv = self.kv_heads
        if self.num_heads % kv:
            raise ValueError(f"num_heads={self.num_heads} is not divisible by num_kv_heads={kv}")
        if self.head_dim is None and self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}"
            )
        if self.attention == "mla" and self.mla is None:
            raise ValueError("attention='mla' needs an 'mla' section")
        if self.moe is not None and self.moe.first_dense_layers > self.num_layers:
            raise ValueError("moe.first_dense_layers exceeds num_layers")
        return self

    # --- shape helpers -------------------------------------------------------------------
    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def is_moe(self) -> bool:
        return self.moe is not None

    @property
    def num_moe_layers(self) -> int:
        if self.moe is None:
            return 0
        rest = self.num_layers - self.moe.first_dense_layers
        return (rest + self.moe.layer_freq - 1) // self.moe.layer_freq

    @property
    def num_dense_layers(self) -> int:
        return self.num_layers - self.num_moe_layers

    # --- parameter counts (one definition, used everywhere) ---------------------------------
    @property
    def attention_params_per_layer(self) -> int:
        h, heads = self.hidden_size, self.num_heads
        if self.attention == "mla":
            m = self.mla
            assert m is not None
            qk = m.qk_nope_head_dim + m.qk_rope_head_dim
            if m.q_lora_rank:  # W_DQ, q norm, W_UQ (DeepSeek-V2 eq. 12-13)
                q = h * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * heads * qk
            else:
                q = h * heads * qk
            # W_DKV (+ decoupled RoPE key), kv norm, W_UK and W_UV (eq. 9-11), output W_O
            kv = h * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank
            kv += m.kv_lora_rank * heads * (m.qk_nope_head_dim + m.v_head_dim)
            out = heads * m.v_head_dim * h
            return q + kv + out
        d = self.head_size
        qkv = h * d * (heads + 2 * self.kv_heads)
        out = heads * d * h
        bias = (d * (heads + 2 * self.kv_heads) + h) if self.bias else 0
        return qkv + out + bias

    def mlp_params(self, ffn: int) -> int:
        h = self.hidden_size
        mats = 3 if self.activation == "swiglu" else 2
        bias = (ffn * (mats - 1) + h) if self.bias else 0
        return mats * h * ffn + bias

    @property
    def norm_params_per_layer(self) -> int:
        per_norm = self.hidden_size * (2 if self.norm == "layernorm" else 1)
        return 2 * per_norm

    @property
    def expert_params_per_moe_layer(self) -> int:
        """Routed experts of one MoE layer (all of them)."""
        assert self.moe is not None
        return self.moe.num_experts * self.mlp_params(self.moe.expert_ffn_hidden_size)

    @property
    def moe_layer_ffn_params(self) -> int:
        """FFN part of one MoE layer: router, routed and shared experts."""
        assert self.moe is not None
        router = self.hidden_size * self.moe.num_experts
        shared = self.moe.num_shared_experts * self.mlp_params(self.moe.expert_ffn_hidden_size)
        return router + self.expert_params_per_moe_layer + shared

    @property
    def embedding_params(self) -> int:
        """Input embedding, plus the LM head unless tied, plus learned positions."""
        word = self.vocab_size * self.hidden_size
        pos = self.seq_length * self.hidden_size if self.position_embedding == "learned" else 0
        return word * (1 if self.tied_embeddings else 2) + pos

    @property
    def final_norm_params(self) -> int:
        return self.hidden_size * (2 if self.norm == "layernorm" else 1)

    @property
    def non_embedding_params(self) -> int:
        per_layer = self.attention_params_per_layer + self.norm_params_per_layer
        total = self.num_layers * per_layer + self.num_dense_layers * self.mlp_params(
            self.ffn_hidden_size
        )
        if self.moe is not None:
            total += self.num_moe_layers * self.moe_layer_ffn_params
        return total + self.final_norm_params

    @property
    def params_total(self) -> int:
        return self.non_embedding_params + self.embedding_params

    @property
    def params_active(self) -> int:
        """Parameters touched per token: only top-k of the routed experts."""
        if self.moe is None:
            return self.params_total
        inactive_experts = self.moe.num_experts - self.moe.top_k
        unused = inactive_experts * self.mlp_params(self.moe.expert_ffn_hidden_size)
        return self.params_total - self.num_moe_layers * unused


@functools.cache
def model_presets() -> dict[str, ModelSpec]:
    text = resources.files("scaleplan.specs").joinpath("catalog/models.yaml").read_text()
    return {entry["name"]: ModelSpec.model_validate(entry) for entry in yaml.safe_load(text)}


def get_model(name: str, field: str = "model") -> ModelSpec:
    presets = model_presets()
    key = name.lower().replace("_", "-").replace(" ", "-")
    if key not in presets:
        raise SpecError(
            f"unknown model preset '{name}'; presets: {', '.join(sorted(presets))}", field=field
        )
    return presets[key]

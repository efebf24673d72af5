"""A plain-PyTorch decoder built from the same `ModelSpec`, for the DeepSpeed backend.

Why not megatron's GPTModel under DeepSpeed: ZeRO-3 partitions parameters into empty
placeholders outside their module's forward, and megatron modules read parameters and
parallel_state attributes directly (shared embeddings, rotary buffers, TP attributes), so the
two do not compose. This model has exactly the ModelSpec's parameters (pre-norm, RMSNorm or
LayerNorm, GQA attention with RoPE, SwiGLU or GELU MLP, untied or tied head; dense only) and
returns megatron's convention: the per-token cross-entropy [b, s] when given labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scaleplan.specs.errors import NotImplementedFeature
from scaleplan.specs.model import ModelSpec


def _norm(spec: ModelSpec) -> nn.Module:
    if spec.norm == "rmsnorm":
        return nn.RMSNorm(spec.hidden_size, eps=1e-5)
    return nn.LayerNorm(spec.hidden_size, eps=1e-5, bias=spec.bias)


def rope(x: torch.Tensor, base: float) -> torch.Tensor:
    """Rotary position embedding, Su et al. 2021 eq. 34 (rotate-half form). x: [b, h, s, d]."""
    d, s = x.shape[-1], x.shape[-2]
    inv = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.float32, device=x.device) / d))
    ang = torch.outer(torch.arange(s, dtype=torch.float32, device=x.device), inv)
    cos, sin = (
        torch.cat([ang, ang], -1).cos().to(x.dtype),
        torch.cat([ang, ang], -1).sin().to(x.dtype),
    )
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return x * cos + torch.cat([-x2, x1], -1) * sin


class Block(nn.Module):
    def __init__(self, spec: ModelSpec, rope_base: float) -> None:
        super().__init__()
        h, d = spec.hidden_size, spec.head_size
        self.heads, self.kv, self.d, self.rope_base = spec.num_heads, spec.kv_heads, d, rope_base
        self.norm1, self.norm2 = _norm(spec), _norm(spec)
        self.qkv = nn.Linear(h, d * (spec.num_heads + 2 * spec.kv_heads), bias=spec.bias)
        self.proj = nn.Linear(spec.num_heads * d, h, bias=spec.bias)
        self.gated = spec.activation == "swiglu"
        self.fc1 = nn.Linear(h, spec.ffn_hidden_size * (2 if self.gated else 1), bias=spec.bias)
        self.fc2 = nn.Linear(spec.ffn_hidden_size, h, bias=spec.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(
            [self.heads * self.d, self.kv * self.d, self.kv * self.d], dim=-1
        )
        q = rope(q.view(b, s, self.heads, self.d).transpose(1, 2), self.rope_base)
        k = rope(k.view(b, s, self.kv, self.d).transpose(1, 2), self.rope_base)
        v = v.view(b, s, self.kv, self.d).transpose(1, 2)
        att = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, enable_gqa=self.kv != self.heads
        )
        x = x + self.proj(att.transpose(1, 2).reshape(b, s, -1))
        hidden = self.fc1(self.norm2(x))
        if self.gated:
            gate, up = hidden.chunk(2, dim=-1)
            hidden = F.silu(gate) * up
        else:
            hidden = F.gelu(hidden)
        return x + self.fc2(hidden)


class TorchGPT(nn.Module):
    def __init__(self, spec: ModelSpec, vocab_size: int, rope_base: float) -> None:
        super().__init__()
        if spec.moe is not None or spec.attention == "mla" or spec.position_embedding != "rope":
            raise NotImplementedFeature(
                "the DeepSpeed backend builds dense RoPE GQA models only; use the megatron backend "
                "for MoE, MLA or learned positions",
                field="model",
            )
        self.embed = nn.Embedding(vocab_size, spec.hidden_size)
        self.blocks = nn.ModuleList(Block(spec, rope_base) for _ in range(spec.num_layers))
        self.norm = _norm(spec)
        self.head = nn.Linear(spec.hidden_size, vocab_size, bias=False)
        if spec.tied_embeddings:
            self.head.weight = self.embed.weight
        for name, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)
            elif "bias" in name:
                nn.init.zeros_(p)

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.norm(x)).float()
        if labels is None:
            return logits
        return F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")

"""The architecture for a parameter count: layers, hidden, heads, FFN and GQA from N.

Shape rules (each from a published model family):
- head_dim 128 and 8 KV heads (GQA), as in all three Llama-3 models (Dubey et al. 2024, Table 3);
  below hidden 2048 head_dim 64 (as in GPT-3 Small..XL, Brown et al. 2020, Table 2.1).
- hidden a multiple of 128 * 8 = 1024 from 2048 up, so that heads, KV heads and FFN split evenly
  for every TP degree in {1, 2, 4, 8}.
- FFN = multiple_of * ceil(multiplier * floor(8h/3) / multiple_of), the Llama reference code's
  SwiGLU rule (meta-llama/llama3 `model.py`, FeedForward), multiplier 1.3 (8B, 70B) or 1.2 (405B),
  multiple_of 1024.
- depth: the aspect ratio hidden/layers near 128 (Llama-3: 8B 128, 70B 102, 405B 130); Kaplan
  et al. 2020 (Fig. 5) find loss within a few percent over a wide range of aspect ratios, so the
  ratio is a soft preference and matching N comes first. Layer counts are rounded to a multiple
  of 16 from 96 layers (8 from 64, 4 from 32, else 2) so that pipeline stages divide them.
- MoE: experts of width dense_ffn / granularity (Krajewski et al. 2024, "Scaling laws for
  fine-grained MoE", granularity G = d_ff / d_expert), the first layer dense (DeepSeekMoE, Dai
  et al. 2024); N is matched against *active* parameters, the compute a token pays for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scaleplan.specs.budget import MoEBudget
from scaleplan.specs.errors import SpecError
from scaleplan.specs.model import ModelSpec, MoESpec

TP_DEGREES: tuple[int, ...] = (1, 2, 4, 8)
KV_HEADS = 8  # Llama-3 8B/70B/405B (Dubey et al. 2024, Table 3)
TARGET_ASPECT = 128.0  # hidden / layers, Llama-3 8B (4096/32) and 405B (16384/126)
ASPECT_WEIGHT = 0.1  # cost of a factor e off the aspect ratio, in units of log(params / N)
ROPE_BASE = 500_000.0  # Llama-3 (Dubey et al. 2024, section 3.2)
MAX_HIDDEN = 32768
ASPECT_RANGE = (32.0, 256.0)  # hard bounds on hidden / layers (Kaplan et al. 2020, Fig. 5 range)


@dataclass(frozen=True)
class ShapeRule:
    """The knobs of the shape rule, for users who want another family's proportions."""

    target_aspect: float = TARGET_ASPECT
    aspect_weight: float = ASPECT_WEIGHT
    kv_heads: int = KV_HEADS
    tp_degrees: tuple[int, ...] = TP_DEGREES


def head_dim_for(hidden: int) -> int:
    return 64 if hidden < 2048 else 128


def ffn_multiplier_for(hidden: int) -> float:
    # Llama-3 configs: ffn_dim_multiplier 1.3 for 8B and 70B, 1.2 for 405B (hidden 16384)
    return 1.2 if hidden >= 16384 else 1.3


def llama_ffn_size(hidden: int, multiplier: float | None = None, multiple_of: int = 1024) -> int:
    """Llama reference SwiGLU width: int(2*4h/3), times the multiplier, up to multiple_of."""
    mult = ffn_multiplier_for(hidden) if multiplier is None else multiplier
    base = int(2 * 4 * hidden / 3)
    return multiple_of * math.ceil(int(mult * base) / multiple_of)


def candidate_hidden_sizes(rule: ShapeRule = ShapeRule()) -> list[int]:
    """Hidden sizes whose heads, KV heads and FFN split for every TP degree of the rule."""
    sizes = [512, 1024, 1536, *range(2048, MAX_HIDDEN + 1, 1024)]
    tp_max = max(rule.tp_degrees)
    out = []
    for h in sizes:
        heads = h // head_dim_for(h)
        kv = min(rule.kv_heads, heads)
        ok = heads % kv == 0 and all(
            heads % tp == 0 and (kv % tp == 0 or tp % kv == 0) for tp in rule.tp_degrees
        )
        if ok and llama_ffn_size(h) % tp_max == 0:
            out.append(h)
    return out


def layer_multiple(layers: float) -> int:
    """Round depth so pipeline stages divide it: 16 from 96 layers, 8 from 64, 4 from 32,
    else 2."""
    return 16 if layers >= 96 else 8 if layers >= 64 else 4 if layers >= 32 else 2


def build_model(
    hidden: int,
    layers: int,
    *,
    vocab_size: int,
    seq_length: int,
    moe: MoEBudget | None = None,
    rule: ShapeRule = ShapeRule(),
    name: str | None = None,
) -> ModelSpec:
    """The ModelSpec for a hidden size and depth under the shape rule."""
    head_dim = head_dim_for(hidden)
    heads = hidden // head_dim
    ffn = llama_ffn_size(hidden)
    moe_spec = None
    if moe is not None:
        # expert width = dense width / granularity (Krajewski et al. 2024), a multiple of 128
        expert_ffn = max(128, 128 * round(ffn / moe.granularity / 128))
        moe_spec = MoESpec(
            num_experts=moe.num_experts,
            top_k=moe.top_k,
            expert_ffn_hidden_size=expert_ffn,
            num_shared_experts=moe.num_shared_experts,
            first_dense_layers=1 if layers > 2 else 0,
        )
    return ModelSpec(
        name=name or f"{'moe' if moe else 'dense'}-h{hidden}-l{layers}",
        num_layers=layers,
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=min(rule.kv_heads, heads),
        head_dim=head_dim,
        ffn_hidden_size=ffn,
        vocab_size=vocab_size,
        seq_length=seq_length,
        rope_base=ROPE_BASE,
        moe=moe_spec,
    )


def counted_params(model: ModelSpec, param_count: str = "total") -> int:
    """Parameters as a scaling law counts them: total (for MoE the active ones), or
    "non-embedding" (without the word and position embeddings and an untied LM head, Kaplan et
    al. 2020 Sec. 1.2)."""
    active = model.params_active if model.moe is not None else model.params_total
    return active - model.embedding_params if param_count == "non-embedding" else active


def architecture_for_params(
    n_params: float,
    *,
    vocab_size: int,
    seq_length: int,
    moe: MoEBudget | None = None,
    rule: ShapeRule = ShapeRule(),
    param_count: str = "total",
) -> ModelSpec:
    """The shape (hidden, layers) whose parameter count is closest to `n_params`, with a soft
    preference for the target aspect ratio. Dense: params_total; MoE: params_active; without
    the embeddings with param_count="non-embedding" (`counted_params`)."""
    if not math.isfinite(n_params) or n_params <= 0:
        raise SpecError(f"cannot shape a model of {n_params!r} parameters", field="target.params")
    best: tuple[float, ModelSpec] | None = None
    for hidden in candidate_hidden_sizes(rule):
        kw = {"vocab_size": vocab_size, "seq_length": seq_length, "moe": moe, "rule": rule}
        # parameters are affine in depth beyond the first layer: P(L) = P(3) + (L - 3) * per_layer
        p3 = counted_params(build_model(hidden, 3, **kw), param_count)
        per_layer = counted_params(build_model(hidden, 4, **kw), param_count) - p3
        exact = 3 + (n_params - p3) / per_layer
        if exact < 1.5:
            continue
        step = layer_multiple(exact)
        for layers in {
            max(2, step * math.floor(exact / step)),
            max(2, step * math.ceil(exact / step)),
        }:
            aspect = hidden / layers
            if not ASPECT_RANGE[0] <= aspect <= ASPECT_RANGE[1]:
                continue
            model = build_model(hidden, layers, **kw)
            err = abs(math.log(counted_params(model, param_count) / n_params))
            score = err + rule.aspect_weight * abs(math.log(aspect / rule.target_aspect))
            if best is None or score < best[0]:
                best = (score, model)
    if best is None:
        lo = counted_params(
            build_model(512, 2, vocab_size=vocab_size, seq_length=seq_length, moe=moe), param_count
        )
        raise SpecError(
            f"no architecture of about {n_params:.3g} parameters fits the shape rule (the smallest "
            f"is {lo:.3g} with vocab {vocab_size}); raise the budget (gpus, hours, dollars) or "
            "shrink the vocabulary (data.vocab_size)",
            field="target",
        )
    return best[1]


def divisible_tp_degrees(
    model: ModelSpec, degrees: tuple[int, ...] = (1, 2, 4, 8, 16)
) -> list[int]:
    """TP degrees that split this model's heads, KV heads and FFN."""
    kv = model.kv_heads
    return [
        tp
        for tp in degrees
        if model.num_heads % tp == 0
        and (kv % tp == 0 or tp % kv == 0)
        and model.ffn_hidden_size % tp == 0
    ]

"""FLOP model: Narayanan et al. 2021 eq. 3 exactly, the 6N + attention form, recompute variants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaleplan.costmodels import flops
from scaleplan.specs.model import ModelSpec, get_model


def gpt_shaped(
    layers: int, hidden: int, heads: int, vocab: int = 51200, seq: int = 2048
) -> ModelSpec:
    """MHA, GeLU, FFN 4h: the shape Narayanan's eq. 3 assumes."""
    return ModelSpec(
        num_layers=layers, hidden_size=hidden, num_heads=heads, ffn_hidden_size=4 * hidden,
        activation="gelu", norm="layernorm", bias=True, vocab_size=vocab, seq_length=seq,
        position_embedding="learned", tied_embeddings=True,
    )  # fmt: skip


def narayanan_eq3(batch: int, s: int, layers: int, h: int, vocab: int) -> float:
    """Narayanan et al. 2021 eq. 3: FLOPs per iteration with full activation recomputation."""
    return 96 * batch * s * layers * h**2 * (1 + s / (6 * h) + vocab / (16 * layers * h))


# Narayanan 2021 Table 1 shapes (1.7B ... 1T) and GPT-3 175B, at two sequence lengths.
SHAPES = [
    (24, 2304, 24, 51200, 2048),
    (40, 6144, 48, 51200, 2048),
    (80, 12288, 96, 51200, 2048),
    (128, 25600, 160, 51200, 2048),
    (96, 12288, 96, 50257, 2048),
    (32, 4096, 32, 50257, 8192),
]


@pytest.mark.parametrize(("layers", "h", "heads", "vocab", "s"), SHAPES)
def test_full_recompute_equals_narayanan_eq3_exactly(
    layers: int, h: int, heads: int, vocab: int, s: int
) -> None:
    model = gpt_shaped(layers, h, heads, vocab, s)
    batch = 1536
    ours = flops.hardware_flops_per_token(model, s, "full") * batch * s
    assert ours == pytest.approx(narayanan_eq3(batch, s, layers, h, vocab), rel=1e-12)


def test_gpt3_preset_equals_eq3() -> None:
    model = get_model("gpt3-175b")
    s = 2048
    ours = flops.hardware_flops_per_token(model, s, "full") * s
    assert ours == pytest.approx(narayanan_eq3(1, s, 96, 12288, 50257), rel=1e-12)


def test_model_flops_are_three_forwards_and_match_6n_plus_attention() -> None:
    """PaLM (Chowdhery et al. 2022, app. B): 6N + 12·L·H·Q·T per token, N = matmul weights."""
    for name in ("llama3-8b", "llama3-70b", "gpt3-175b"):
        model = get_model(name)
        s = model.seq_length
        fwd = flops.forward_flops_per_token(model, s)
        assert flops.model_flops_per_token(model, s) == pytest.approx(
            3 * sum(fwd.values()), rel=1e-15
        )
        h, layers = model.hidden_size, model.num_layers
        norms = layers * model.norm_params_per_layer + model.final_norm_params
        biases = 0
        if model.bias:
            biases = layers * (3 * h + h + 4 * h + h)
        # matmul weights: the layers' weights (no norms, no biases) plus the LM head (also tied)
        matmul = model.non_embedding_params - norms - biases + h * model.vocab_size
        attention = 12 * layers * model.num_heads * model.head_size * s
        assert flops.model_flops_per_token(model, s) == pytest.approx(
            6 * matmul + attention, rel=1e-12
        )


def test_ops_are_all_reported_and_positive() -> None:
    model = get_model("deepseek-v3")
    fwd = flops.forward_flops_per_token(model, 4096)
    assert tuple(fwd) == flops.OPS
    assert all(v > 0 for v in fwd.values())
    dense = flops.forward_flops_per_token(get_model("llama3-8b"), 8192)
    assert dense["moe_router"] == dense["moe_experts"] == 0.0


def test_moe_counts_only_active_experts() -> None:
    model = get_model("mixtral-8x7b")
    s = 4096
    fwd = flops.forward_flops_per_token(model, s)
    assert fwd["moe_experts"] == 32 * 2 * 3 * 2 * 4096 * 14336  # layers x top-2 x 3 matmuls x 2mnk
    assert fwd["moe_router"] == 32 * 2 * 4096 * 8
    # ~ 6 x active params (12.9B) plus attention
    assert flops.model_flops_per_token(model, s) == pytest.approx(6 * model.params_active, rel=0.15)
    v3 = get_model("deepseek-v3")
    assert flops.model_flops_per_token(v3, 4096) == pytest.approx(6 * v3.params_active, rel=0.25)


def test_gqa_and_swiglu_shapes() -> None:
    model = get_model("llama3-70b")
    fwd = flops.forward_flops_per_token(model, 8192)
    h, d = 8192, 128
    assert fwd["qkv"] == 80 * 2 * h * d * (64 + 2 * 8)
    assert fwd["mlp"] == 80 * 3 * 2 * h * 28672
    assert fwd["attn_scores"] == fwd["attn_context"] == 80 * 2 * 8192 * h
    assert fwd["lm_head"] == 2 * h * 128256


def test_selective_adds_the_attention_core_forward() -> None:
    model = get_model("llama3-8b")
    s = 8192
    fwd = flops.forward_flops_per_token(model, s)
    none = flops.hardware_flops_per_token(model, s, "none")
    assert none == flops.model_flops_per_token(model, s)
    sel = flops.hardware_flops_per_token(model, s, "selective")
    assert sel - none == pytest.approx(fwd["attn_scores"] + fwd["attn_context"], rel=1e-12)
    full = flops.hardware_flops_per_token(model, s, "full")
    assert full - none == pytest.approx(sum(fwd.values()) - fwd["lm_head"], rel=1e-12)
    half = flops.hardware_flops_per_token(model, s, "full", 0.5)
    assert half - none == pytest.approx((full - none) / 2, rel=1e-12)
    with pytest.raises(ValueError, match="recompute"):
        flops.hardware_flops_per_token(model, s, "sometimes")


def test_vectorized_recompute_matches_scalar() -> None:
    model = get_model("llama3-70b")
    codes = np.array([0, 1, 2, 2, 0])
    frac = np.array([1.0, 1.0, 1.0, 0.25, 0.5])
    got = flops.hardware_flops_per_token(model, 4096, codes, frac)
    names = ["none", "selective", "full", "full", "none"]
    want = [
        flops.hardware_flops_per_token(model, 4096, n, f) for n, f in zip(names, frac, strict=True)
    ]
    assert isinstance(got, np.ndarray) and got.shape == (5,)
    np.testing.assert_allclose(got, want, rtol=1e-15)


def test_recompute_layers_fraction() -> None:
    assert flops.recompute_layers_fraction(80, 4, None) == 1.0
    assert flops.recompute_layers_fraction(80, 4, 10) == 0.5
    np.testing.assert_allclose(
        flops.recompute_layers_fraction(80, np.array([4, 8]), np.array([0, 5])), [1.0, 0.5]
    )


@settings(max_examples=40, deadline=None)
@given(
    layers=st.integers(1, 64),
    heads=st.sampled_from([1, 2, 4, 8, 16]),
    head_dim=st.sampled_from([32, 64, 128]),
    vocab=st.integers(100, 200_000),
    s=st.integers(1, 32768),
)
def test_eq3_holds_for_any_gpt_shape(
    layers: int, heads: int, head_dim: int, vocab: int, s: int
) -> None:
    h = heads * head_dim
    model = gpt_shaped(layers, h, heads, vocab, s)
    ours = flops.hardware_flops_per_token(model, s, "full") * s
    assert ours == pytest.approx(narayanan_eq3(1, s, layers, h, vocab), rel=1e-12)
    # and hardware >= model, with the gap = one forward of the layers
    assert flops.hardware_flops_per_token(model, s, "none") == flops.model_flops_per_token(model, s)

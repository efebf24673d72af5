"""The shape rule: parameter count close to N, divisible for TP, Llama-3 shapes recovered."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaleplan.planner.architecture import (
    architecture_for_params,
    candidate_hidden_sizes,
    divisible_tp_degrees,
    llama_ffn_size,
)
from scaleplan.specs.budget import MoEBudget
from scaleplan.specs.errors import SpecError
from scaleplan.specs.layout import LayoutSpec, validate_layout
from scaleplan.specs.model import get_model


@pytest.mark.parametrize("preset", ["llama3-8b", "llama3-70b", "llama3-405b"])
def test_llama_ffn_rule_reproduces_published_widths(preset: str) -> None:
    model = get_model(preset)
    assert llama_ffn_size(model.hidden_size) == model.ffn_hidden_size


@pytest.mark.parametrize(
    ("preset", "exact"), [("llama3-8b", True), ("llama3-70b", True), ("llama3-405b", False)]
)
def test_llama3_parameter_counts_give_llama3_like_shapes(preset: str, exact: bool) -> None:
    ref = get_model(preset)
    got = architecture_for_params(ref.params_total, vocab_size=ref.vocab_size, seq_length=8192)
    assert abs(got.params_total / ref.params_total - 1) < 0.02
    assert got.head_size == 128 and got.kv_heads == 8
    if exact:  # 8B and 70B: the very same shape
        assert (got.num_layers, got.hidden_size, got.ffn_hidden_size) == (
            ref.num_layers,
            ref.hidden_size,
            ref.ffn_hidden_size,
        )
    else:  # 405B: 126 layers are not PP-friendly; the rule picks a depth divisible by 8
        assert got.num_layers % 8 == 0
        assert 0.7 < got.hidden_size / ref.hidden_size < 1.3


@settings(max_examples=40, deadline=None)
@given(st.floats(min_value=4e8, max_value=2e12))
def test_params_close_to_target_and_tp_divisible(n: float) -> None:
    model = architecture_for_params(n, vocab_size=128256, seq_length=4096)
    assert abs(math.log(model.params_total / n)) < 0.12
    assert divisible_tp_degrees(model, (1, 2, 4, 8)) == [1, 2, 4, 8]
    assert 32 <= model.hidden_size / model.num_layers <= 256
    for tp in (1, 2, 4, 8):  # the layout rules agree: TP up to 8 is valid for this shape
        validate_layout(LayoutSpec(tp=tp, global_batch=1), model)


def test_shapes_grow_monotonically_in_width() -> None:
    widths = [
        architecture_for_params(n, vocab_size=32000, seq_length=4096).hidden_size
        for n in (1e9, 1e10, 1e11, 1e12)
    ]
    assert widths == sorted(widths) and widths[0] < widths[-1]


def test_moe_matches_active_params_and_budget_knobs() -> None:
    moe = MoEBudget(num_experts=64, top_k=4, num_shared_experts=1, granularity=4)
    model = architecture_for_params(3e9, vocab_size=128256, seq_length=4096, moe=moe)
    assert model.moe is not None
    assert (model.moe.num_experts, model.moe.top_k, model.moe.num_shared_experts) == (64, 4, 1)
    assert model.moe.expert_ffn_hidden_size * 4 == pytest.approx(model.ffn_hidden_size, rel=0.1)
    assert abs(model.params_active / 3e9 - 1) < 0.1
    assert model.params_total > 5 * model.params_active


def test_too_small_for_the_vocabulary_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="shrink the vocabulary"):
        architecture_for_params(5e7, vocab_size=128256, seq_length=4096)


def test_candidate_widths_split_for_tp8() -> None:
    from scaleplan.planner.architecture import build_model

    for h in candidate_hidden_sizes():
        model = build_model(h, 8, vocab_size=1024, seq_length=1024)
        assert divisible_tp_degrees(model, (1, 2, 4, 8)) == [1, 2, 4, 8], h

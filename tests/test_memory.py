"""Memory model: Korthikanti et al. 2022 activations and Megatron-LM's theoretical memory formulas."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaleplan.costmodels.batch import LayoutBatch
from scaleplan.costmodels.memory import (
    COMPONENTS,
    GIB,
    memory_breakdown,
    memory_per_gpu,
    params_per_rank,
)
from scaleplan.costmodels.memory_activations import layer_activation_bytes, stage_activation_bytes
from scaleplan.costmodels.memory_params import padded_vocab
from scaleplan.specs.hardware import get_gpu
from scaleplan.specs.layout import LayoutSpec
from scaleplan.specs.model import ModelSpec, get_model


def gpt_shaped(layers: int, h: int, heads: int, vocab: int = 51200, seq: int = 2048) -> ModelSpec:
    return ModelSpec(
        num_layers=layers, hidden_size=h, num_heads=heads, ffn_hidden_size=4 * h, activation="gelu",
        norm="layernorm", bias=True, vocab_size=vocab, seq_length=seq, position_embedding="learned",
    )  # fmt: skip


# Korthikanti 2022 Table 3 models: 22B, 175B (GPT-3), 530B, 1T
KORTHIKANTI = [(48, 6144, 64), (96, 12288, 96), (105, 20480, 128), (128, 25600, 160)]


def _batch(**kw: object) -> LayoutBatch:
    return LayoutBatch.from_arrays(**kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("layers", "h", "a"), KORTHIKANTI)
@pytest.mark.parametrize("b", [1, 4])
def test_per_layer_activations_match_korthikanti_table2(
    layers: int, h: int, a: int, b: int
) -> None:
    s = 2048
    model = gpt_shaped(layers, h, a, seq=s)
    sbh = s * b * h
    core = 5 * a * s / h
    cases = [  # (tp, sp, recompute, Korthikanti Table 2 bytes)
        (1, 0, "none", sbh * (34 + core)),
        (8, 0, "none", sbh * (10 + 24 / 8 + core / 8)),
        (4, 0, "none", sbh * (10 + 24 / 4 + core / 4)),
        (8, 1, "none", sbh * (34 / 8 + core / 8)),
        (8, 1, "selective", sbh * 34 / 8),
        (8, 0, "selective", sbh * (10 + 24 / 8)),
        (8, 0, "full", 2 * sbh),
        (8, 1, "full", 2 * sbh / 8),
    ]
    for tp, sp, mode, expected in cases:
        lay = _batch(tp=tp, sequence_parallel=sp, micro_batch=b, global_batch=64 * b)
        got = layer_activation_bytes(model, lay, s, mode, dropout=True, flash_attention=False)
        assert got[0] == pytest.approx(expected, rel=1e-12), (tp, sp, mode)


def test_without_dropout_and_with_gqa_swiglu_cp() -> None:
    """Extensions of Table 2: no dropout masks; GQA K/V; SwiGLU's 2·ffn FC1; CP splits s."""
    model = get_model("llama3-70b")
    s, h, b, t = 8192, 8192, 1, 8
    sb = s * b
    lay = _batch(tp=t, sequence_parallel=1, global_batch=8)
    got = layer_activation_bytes(model, lay, s, recompute="selective")[0]
    kv = 8 * 128  # K (and V) width
    replicated = 8 * sb * h / t  # two norm inputs, QKV and FC1 inputs
    sharded = 2 * sb * (h + kv + kv + h) / t + 2 * sb * (2 * 28672 + 28672) / t
    assert got == pytest.approx(replicated + sharded, rel=1e-12)
    cp2 = layer_activation_bytes(
        model, _batch(tp=t, cp=2, sequence_parallel=1, global_batch=8), s, "selective"
    )[0]
    assert cp2 == pytest.approx(got / 2, rel=1e-12)
    # unfused attention keeps the softmax output: (s/cp) queries against all s keys
    unfused = layer_activation_bytes(model, lay, s, "none", flash_attention=False)[0] - got
    assert unfused == pytest.approx(2 * 64 / t * s * s * b, rel=1e-12)
    # FlashAttention keeps one fp32 logsumexp per query row and head
    fused = layer_activation_bytes(model, lay, s, "none")[0] - got
    assert fused == pytest.approx(4 * 64 / t * s * b, rel=1e-12)


@pytest.mark.parametrize(("pp", "m"), [(4, 64), (8, 8), (8, 3), (1, 16)])
def test_first_stage_holds_pp_microbatches(pp: int, m: int) -> None:
    """Korthikanti §4.2.3: 1F1B's first stage stores pp micro-batches of L/pp layers."""
    model = gpt_shaped(96, 12288, 96)
    s, t = 2048, 8
    lay = _batch(tp=t, pp=pp, sequence_parallel=1, recompute=1, global_batch=m)
    act = stage_activation_bytes(model, lay, s, np.zeros(1, dtype=np.int64), dropout=True)
    per_layer = s * 12288 * 34 / t
    assert act.layers[0] == pytest.approx(96 / pp * min(pp, m) * per_layer, rel=1e-12)
    last = stage_activation_bytes(model, lay, s, lay.pp - 1, dropout=True)
    assert last.layers[0] == pytest.approx(96 / pp * 1 * per_layer, rel=1e-12)


@pytest.mark.parametrize(("pp", "vp"), [(4, 2), (8, 3), (2, 6)])
def test_interleaved_first_stage_penalty(pp: int, vp: int) -> None:
    """Narayanan 2021 / Megatron: interleaving holds pp·(1 + (pp-1)/(pp·vp)) micro-batches."""
    layers = pp * vp * 4
    model = gpt_shaped(layers, 4096, 32)
    lay = _batch(tp=1, pp=pp, vp=vp, recompute=1, global_batch=64 * pp)
    act = stage_activation_bytes(model, lay, 2048, np.zeros(1, dtype=np.int64), dropout=True)
    per_layer = 2048 * 4096 * 34
    expected = layers / pp * pp * (1 + (pp - 1) / (pp * vp)) * per_layer
    assert act.layers[0] == pytest.approx(expected, rel=1e-12)


def megatron_activation_memory(
    s: int, b: int, h: int, ffn: int, layers: int, pp: int, tp: int, vpad: int
) -> float:
    """Megatron-LM theoretical_memory_usage.compute_activation_memory (SP + selective, pp=1)."""
    act = s * b * h * (18 + 4 * ffn / h) * layers
    act += 8 * s * b * pp + s * b * h * pp  # embedding input ids and dropout
    act += s * b * h * 4 * (1 + vpad / h)  # output layer and loss (pp == 1)
    return act / tp


@pytest.mark.parametrize(("layers", "h", "a"), KORTHIKANTI[:2])
@pytest.mark.parametrize("tp", [2, 8])
def test_activations_match_megatron_theoretical_formula(
    layers: int, h: int, a: int, tp: int
) -> None:
    model = gpt_shaped(layers, h, a)
    lay = _batch(tp=tp, sequence_parallel=1, recompute=1, micro_batch=2, global_batch=16)
    act = stage_activation_bytes(
        model, lay, 2048, np.zeros(1, dtype=np.int64), dropout=True, vocab_divisible_by=128
    )
    vpad = int(padded_vocab(51200, tp, 128))
    expected = megatron_activation_memory(2048, 2, h, 4 * h, layers, 1, tp, vpad)
    # identical but for the token ids, which Megatron's formula also divides by tp
    assert act.total[0] - act.recompute_buffer[0] == pytest.approx(expected, rel=1e-5)


def megatron_weight_and_optimizer_bytes(
    model: ModelSpec, tp: int, pp: int, dp: int, dist_opt: bool, vpad: int
) -> tuple[float, float]:
    """Megatron-LM theoretical_memory_usage.compute_weight_and_optimizer_memory: (params on the
    most loaded shard, bytes per parameter)."""
    h, layers, heads = model.hidden_size, model.num_layers, model.num_heads
    groups = model.kv_heads
    gated = 3 / 2 if model.activation == "swiglu" else 1
    q_ratio = heads * model.head_size / h
    transformer = (
        2
        * layers
        * h
        * h
        * (
            (1 + groups / heads) * q_ratio
            + model.ffn_hidden_size / h * gated
            + 2 / h
            + 1 / (layers * h)
        )
    )
    embedding = h * vpad
    shard = (transformer / pp + embedding) / tp
    if not model.tied_embeddings and pp == 1:
        shard += embedding / tp
    return shard, (18 if not dist_opt else 6 + 12 / dp)


@pytest.mark.parametrize("name", ["llama3-70b", "llama3-8b", "gpt3-175b"])
@pytest.mark.parametrize(
    ("tp", "pp", "dp", "dist_opt"),
    [(8, 4, 2, True), (8, 4, 2, False), (4, 1, 16, True), (1, 1, 1, False), (8, 8, 64, True)],
)
def test_weights_and_optimizer_match_megatron_formula(
    name: str, tp: int, pp: int, dp: int, dist_opt: bool
) -> None:
    model = get_model(name)
    layout = LayoutSpec(tp=tp, pp=pp, dp=dp, distributed_optimizer=dist_opt, global_batch=dp * 8)
    mem = memory_breakdown(model, layout, 2048, stage="first")
    states = (
        mem["weights"]
        + mem["gradients"]
        + mem["optimizer"]
        + mem["embeddings_extra"]
        + mem["moe_experts"]
    )
    vpad = int(padded_vocab(model.vocab_size, tp, 128))
    shard, bytes_per_param = megatron_weight_and_optimizer_bytes(model, tp, pp, dp, dist_opt, vpad)
    ours = params_per_rank(model, layout, "first", vocab_divisible_by=128)
    assert states == pytest.approx(bytes_per_param * ours, rel=1e-12)
    if model.position_embedding == "learned":  # the formula leaves out learned positions
        shard += model.seq_length * model.hidden_size
    # Megatron's formula splits norms over TP and skips biases: a fraction of a percent apart
    assert ours == pytest.approx(shard, rel=0.005)


def test_zero_stages_offload_and_moe_sharding() -> None:
    model = get_model("llama3-8b")
    b = _batch(dp=8, global_batch=64, zero_stage=[0, 1, 2, 3, 0, 0, 0], distributed_optimizer=[0, 0, 0, 0, 1, 0, 0],
               offload_optimizer=[0, 0, 0, 0, 0, 1, 0], offload_params=[0, 0, 0, 0, 0, 0, 1])  # fmt: skip
    mem = memory_per_gpu(model, b, 4096, "first")
    states = mem.weights + mem.gradients + mem.optimizer + mem.embeddings_extra
    n = model.params_total
    vpad_extra = (int(padded_vocab(128256, 1, 128)) - 128256) * 4096 * 2  # none: 128256 % 128 == 0
    assert vpad_extra == 0
    np.testing.assert_allclose(
        states[:4], [18 * n, (6 + 12 / 8) * n, (2 + 16 / 8) * n, 18 * n / 8], rtol=1e-12
    )
    assert states[4] == pytest.approx(states[1], rel=1e-12)  # distributed optimizer = ZeRO-1
    assert mem.optimizer[5] == 0 and mem.weights[6] == 0
    assert mem.comm_buffers[6] > mem.comm_buffers[0]  # gathered layers for offloaded params
    moe = get_model("mixtral-8x7b")
    m = memory_per_gpu(
        moe, _batch(dp=8, ep=[1, 8], global_batch=64, distributed_optimizer=1), 4096, "first"
    )
    experts = moe.num_moe_layers * 8 * moe.mlp_params(14336)
    # ep=1: all 8 experts, optimizer sharded over dp=8; ep=8: one expert, expert-DP of 1
    assert m.moe_experts[0] == pytest.approx((6 + 12 / 8) * experts, rel=1e-12)
    assert m.moe_experts[1] == pytest.approx(18 * experts / 8, rel=1e-12)


def test_parts_add_up_and_max_is_the_worst_stage() -> None:
    model = get_model("deepseek-v3")
    rng = np.random.default_rng(0)
    n = 64
    b = _batch(tp=rng.choice([1, 2, 4, 8], n), pp=rng.choice([1, 2, 4], n), dp=rng.choice([8, 16, 32], n),
               ep=rng.choice([1, 2, 8], n), global_batch=2048, recompute=rng.integers(0, 3, n),
               sequence_parallel=rng.integers(0, 2, n), zero_stage=rng.integers(0, 2, n))  # fmt: skip
    worst = memory_per_gpu(model, b, 4096)
    stages = [memory_per_gpu(model, b, 4096, s) for s in ("first", "middle", "last")]
    np.testing.assert_array_equal(worst.total, np.max([s.total for s in stages], axis=0))
    for i in range(n):
        parts = worst.component(i)
        assert list(parts) == [*COMPONENTS, "total"]
        assert sum(v for k, v in parts.items() if k != "total") == parts["total"] == worst.total[i]
        assert all(v >= 0 for v in parts.values())
    one = memory_breakdown(model, b.to_spec(5), 4096)
    assert one == worst.component(5)


def test_acceptance_llama3_70b_fits_on_h100() -> None:
    model = get_model("llama3-70b")
    layout = LayoutSpec(tp=8, pp=4, dp=2, micro_batch=1, global_batch=512, recompute="selective",
                        distributed_optimizer=True, sequence_parallel=True)  # fmt: skip
    mem = memory_breakdown(model, layout, 8192)
    assert mem["total"] < get_gpu("h100-sxm").hbm_bytes
    assert 30 * GIB < mem["total"] < 70 * GIB  # weights+states ~25 GiB, activations ~21 GiB
    no_sp = memory_breakdown(model, layout.model_copy(update={"sequence_parallel": False}), 8192)
    assert no_sp["activations"] > 2 * mem["activations"]


@settings(max_examples=30, deadline=None)
@given(
    tp=st.sampled_from([1, 2, 4, 8]),
    pp=st.sampled_from([1, 2, 4]),
    mb=st.integers(1, 4),
    rec=st.integers(0, 2),
)
def test_more_parallelism_never_needs_more_memory(tp: int, pp: int, mb: int, rec: int) -> None:
    model = get_model("llama3-8b")
    base = _batch(
        tp=tp,
        pp=pp,
        micro_batch=mb,
        global_batch=64 * mb,
        recompute=rec,
        sequence_parallel=int(tp > 1),
    )
    more_tp = _batch(
        tp=2 * tp, pp=pp, micro_batch=mb, global_batch=64 * mb, recompute=rec, sequence_parallel=1
    )
    a = memory_per_gpu(model, base, 4096)
    b = memory_per_gpu(model, more_tp, 4096)
    assert b.weights[0] < a.weights[0] and b.activations[0] <= a.activations[0]
    bigger_mb = _batch(
        tp=tp,
        pp=pp,
        micro_batch=2 * mb,
        global_batch=64 * mb,
        recompute=rec,
        sequence_parallel=int(tp > 1),
    )
    assert memory_per_gpu(model, bigger_mb, 4096).activations[0] > a.activations[0]


def test_fused_attention_makes_selective_recompute_nearly_free_in_memory() -> None:
    model = get_model("llama3-70b")
    base = dict(tp=8, pp=4, dp=2, global_batch=512, sequence_parallel=True)
    none = LayoutSpec(**base, recompute="none")
    sel = LayoutSpec(**base, recompute="selective")
    fused = memory_breakdown(model, none, 8192)["activations"]
    assert fused == pytest.approx(memory_breakdown(model, sel, 8192)["activations"], rel=0.01)
    unfused = memory_breakdown(model, none, 8192, flash_attention=False)["activations"]
    assert unfused > 4 * fused  # the 5as/h term dominates at s = 8192

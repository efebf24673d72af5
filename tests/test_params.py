"""Parameter counts: presets against published figures, and per-rank placement (Megatron-Core)."""

from __future__ import annotations

import pytest

from scaleplan.costmodels.memory import params_per_rank
from scaleplan.costmodels.memory_params import padded_vocab
from scaleplan.specs.layout import LayoutSpec
from scaleplan.specs.model import ModelSpec, MoESpec, get_model, model_presets

# Published totals (and active counts for MoE): Brown et al. 2020 Table 2.1; Dubey et al. 2024
# (Llama 3 Herd, HF model cards: 8.03B, 70.6B, 405.9B); Jiang et al. 2024 (Mixtral: 46.7B total,
# 12.9B active); DeepSeek-V3 report (671B total, 37B active, MTP excluded).
PUBLISHED = {
    "gpt3-175b": (175.0e9, None),
    "llama3-8b": (8.03e9, None),
    "llama3-70b": (70.6e9, None),
    "llama3-405b": (405.9e9, None),
    "mixtral-8x7b": (46.7e9, 12.9e9),
    "deepseek-v3": (671e9, 37e9),
}


def test_every_preset_has_a_published_count() -> None:
    assert set(model_presets()) >= set(PUBLISHED)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_params_match_published(name: str) -> None:
    model = get_model(name)
    total, active = PUBLISHED[name]
    assert model.params_total == pytest.approx(total, rel=0.01)
    if active is None:
        assert model.params_active == model.params_total
    elif name == "deepseek-v3":
        # "37B activated" is published to whole billions, truncated: the exact count (embedding,
        # 61 MLA layers, 3 dense FFNs, 58 x (8 routed + 1 shared) experts, head) is 37.55B.
        assert model.params_active // 1e9 == 37
    else:
        assert model.params_active == pytest.approx(active, rel=0.01)
    assert model.params_total == model.embedding_params + model.non_embedding_params


def _layout(**kw: object) -> LayoutSpec:
    return LayoutSpec(global_batch=1024, **kw)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_one_gpu_holds_every_parameter(name: str) -> None:
    model = get_model(name)
    assert params_per_rank(model, _layout(), "first") == model.params_total


@pytest.mark.parametrize(
    ("name", "pp", "vp"),
    [("llama3-70b", 4, 1), ("llama3-70b", 4, 5), ("deepseek-v3", 1, 1), ("mixtral-8x7b", 2, 2)],
)
def test_pipeline_ranks_partition_the_model(name: str, pp: int, vp: int) -> None:
    """With tp=1, untied embeddings: the ranks' parameters add up to the model's."""
    model = get_model(name)
    lay = _layout(pp=pp, vp=vp)
    stages = ["first", "last"] if pp == 2 else ["first", "middle", "last"]
    per = {s: params_per_rank(model, lay, s) for s in stages}
    if pp == 1:
        assert per["first"] == model.params_total
        return
    middle_ranks = pp - 2
    total = per["first"] + per["last"] + middle_ranks * per.get("middle", 0)
    if model.is_moe:  # layer types differ across ranks: only the dense part is symmetric
        assert total == pytest.approx(model.params_total, rel=0.02)
    else:
        assert total == model.params_total


def test_tensor_parallel_shards_all_but_norms() -> None:
    """Llama: 8 TP ranks hold the model once, plus 7 extra copies of the replicated norms."""
    model = get_model("llama3-8b")
    h, layers = model.hidden_size, model.num_layers
    replicated = layers * 2 * h + h  # two RMSNorms per layer + the final one
    per = params_per_rank(model, _layout(tp=8), "first")
    assert 8 * per - 7 * replicated == model.params_total


def test_gpt3_bias_layernorm_positions_and_tied_head() -> None:
    model = get_model("gpt3-175b")
    h, v, s, layers = 12288, 50257, 2048, 96
    t = 8
    vpad = padded_vocab(v, t, 128)
    assert int(vpad) % (128 * t) == 0 and vpad >= v
    one = params_per_rank(model, _layout(tp=t), "first", vocab_divisible_by=128)
    # column-parallel: QKV (w+b), FC1 (w+b); row-parallel: proj and FC2 weights split, biases full
    per_layer = (
        (3 * h * h + 3 * h) / t + h * h / t + h + (4 * h * h + 4 * h) / t + 4 * h * h / t + h
    )
    norms = 2 * 2 * h
    expected = layers * (per_layer + norms) + 2 * h + vpad * h / t + s * h
    assert one == expected
    # tied embeddings and pp > 1: the last stage holds its own copy of the output weight
    first = params_per_rank(model, _layout(pp=8), "first")
    last = params_per_rank(model, _layout(pp=8), "last")
    # first: embedding + positions; last: its copy of the (tied) output weight + final norm
    assert last - first == 2 * h - s * h


def test_gqa_splits_fused_qkv_evenly_when_tp_exceeds_kv_heads() -> None:
    model = ModelSpec(
        num_layers=1,
        hidden_size=64,
        num_heads=8,
        num_kv_heads=2,
        ffn_hidden_size=128,
        vocab_size=64,
    )
    d, h = 8, 64
    at4 = params_per_rank(model, _layout(tp=4), "first")
    # megatron-core splits the fused QKV weight, (8 + 2*2)*d rows, evenly over tp=4
    attn = (8 + 2 * 2) * d * h / 4 + 8 * d * h / 4
    mlp = 3 * h * 128 / 4
    assert at4 == attn + mlp + 2 * h + h + 2 * 64 * h / 4


def test_moe_experts_shard_over_ep_and_etp() -> None:
    model = get_model("mixtral-8x7b")
    full = params_per_rank(model, _layout(), "first")
    ep8 = params_per_rank(model, _layout(ep=8, dp=8), "first")
    expert = model.mlp_params(14336)
    assert full - ep8 == model.num_moe_layers * 7 * expert
    tp2 = params_per_rank(model, _layout(tp=2, ep=8, dp=8), "first")
    tp2_etp1 = params_per_rank(model, _layout(tp=2, etp=1, ep=8, dp=8), "first")
    assert tp2_etp1 - tp2 == model.num_moe_layers * expert / 2


def test_vocab_padding_follows_megatron() -> None:
    assert int(padded_vocab(50257, 1, 128)) == 50304  # Megatron GPT-2 vocab padding
    assert int(padded_vocab(50257, 8, 128)) == 51200
    assert int(padded_vocab(128256, 1, 128)) == 128256
    assert int(padded_vocab(128256, 8, 128)) == 129024  # 126 x 1024
    assert int(padded_vocab(32000, 1, 1)) == 32000


def test_mla_and_moe_router_are_counted() -> None:
    base = dict(num_layers=2, hidden_size=64, num_heads=4, ffn_hidden_size=128, vocab_size=100)
    moe = ModelSpec(
        **base, moe=MoESpec(num_experts=4, top_k=2, expert_ffn_hidden_size=32, num_shared_experts=1)
    )
    assert params_per_rank(moe, _layout(), "first") == moe.params_total
    router = 64 * 4  # per MoE layer, replicated over TP
    assert moe.params_total - moe.params_active == 2 * 2 * moe.mlp_params(32)
    assert moe.moe_layer_ffn_params == router + 5 * moe.mlp_params(32)


MCORE_SCRIPT = r"""
import json, os, sys
import torch
os.environ["MASTER_ADDR"] = "127.0.0.1"
os.environ["MASTER_PORT"] = sys.argv[1]
torch.distributed.init_process_group("gloo", rank=0, world_size=1)
from megatron.core import parallel_state
parallel_state.initialize_model_parallel(1, 1)
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.models.gpt.gpt_model import GPTModel
from megatron.core.transformer.transformer_config import TransformerConfig
counts = []
for m in json.loads(sys.stdin.read()):
    moe = m.get("moe") or {}
    shared = moe.get("num_shared_experts", 0) * moe.get("expert_ffn_hidden_size", 0)
    cfg = TransformerConfig(
        num_layers=m["num_layers"], hidden_size=m["hidden_size"], num_attention_heads=m["num_heads"],
        num_query_groups=m["num_kv_heads"] or m["num_heads"], ffn_hidden_size=m["ffn_hidden_size"],
        gated_linear_unit=m["activation"] == "swiglu", add_bias_linear=m["bias"],
        normalization="RMSNorm" if m["norm"] == "rmsnorm" else "LayerNorm", use_cpu_initialization=True,
        num_moe_experts=moe.get("num_experts"), moe_ffn_hidden_size=moe.get("expert_ffn_hidden_size"),
        moe_router_topk=moe.get("top_k", 2), moe_shared_expert_intermediate_size=shared or None,
    )
    spec = get_gpt_layer_local_spec(num_experts=cfg.num_moe_experts, normalization=cfg.normalization)
    model = GPTModel(
        cfg, spec, vocab_size=m["vocab_size"], max_sequence_length=m["seq_length"],
        position_embedding_type="rope" if m["position_embedding"] == "rope" else "learned_absolute",
        share_embeddings_and_output_weights=m["tied_embeddings"],
    )
    counts.append(sum(p.numel() for p in model.parameters()))
print(json.dumps(counts))
"""


@pytest.mark.slow
def test_counts_match_megatron_core_gpt_model() -> None:
    """Megatron-Core 0.16 GPTModel (local spec, CPU init, tp=pp=1) holds exactly our count."""
    import json
    import subprocess
    import sys

    pytest.importorskip("megatron.core")
    tiny = dict(
        num_layers=2,
        hidden_size=64,
        num_heads=4,
        ffn_hidden_size=128,
        vocab_size=512,
        seq_length=64,
    )
    models = [
        ModelSpec(**tiny, num_kv_heads=2),
        ModelSpec(
            **{**tiny, "vocab_size": 500},
            activation="gelu",
            norm="layernorm",
            bias=True,
            position_embedding="learned",
            tied_embeddings=True,
        ),  # fmt: skip
        ModelSpec(
            **tiny, num_kv_heads=2, moe=MoESpec(num_experts=4, top_k=2, expert_ffn_hidden_size=32)
        ),
        ModelSpec(
            **tiny,
            moe=MoESpec(num_experts=4, top_k=2, expert_ffn_hidden_size=32, num_shared_experts=1),
        ),
    ]
    payload = json.dumps([m.model_dump(mode="json") for m in models])
    done = subprocess.run(
        [sys.executable, "-c", MCORE_SCRIPT, "29617"],
        input=payload,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    for model, count in zip(models, counts, strict=True):
        assert params_per_rank(model, _layout(), "first") == count == model.params_total

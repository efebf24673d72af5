"""Every layout validation rule, triggered once with its field named; spec loading errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from scaleplan.costmodels.batch import LayoutBatch
from scaleplan.specs.efficiency import shipped_profiles
from scaleplan.specs.errors import SpecError
from scaleplan.specs.hardware import get_gpu, gpu_catalog, make_cluster
from scaleplan.specs.layout import LayoutSpec, layout_violations, validate_layout
from scaleplan.specs.loader import load_spec, validate
from scaleplan.specs.model import ModelSpec, MoESpec, get_model


def _model(**kw: object) -> ModelSpec:
    base: dict[str, object] = dict(
        num_layers=4, hidden_size=64, num_heads=8, num_kv_heads=2, ffn_hidden_size=128,
        vocab_size=512, seq_length=64,
    )  # fmt: skip
    base.update(kw)
    return ModelSpec.model_validate(base)


MOE = MoESpec(num_experts=4, top_k=1, expert_ffn_hidden_size=64)

# (id, model overrides, layout fields, num_gpus, seq_length, field, words in the reason)
RULES = [
    ("heads%tp", {}, dict(tp=3, global_batch=8), None, None, "tp", "num_heads=8"),
    ("kv_vs_tp", dict(num_heads=48, num_kv_heads=6, hidden_size=96, ffn_hidden_size=96), dict(tp=4, global_batch=8), None, None, "tp", "num_kv_heads=6"),
    ("ffn%tp", dict(ffn_hidden_size=100), dict(tp=8, global_batch=8), None, None, "tp", "ffn_hidden_size=100"),
    ("pp>layers", {}, dict(pp=8, global_batch=8), None, None, "pp", "num_layers=4"),
    ("layers%ppvp", {}, dict(pp=3, global_batch=8), None, None, "vp", "pp*vp"),
    ("layers+2%ppvp", {}, dict(pp=4, account_embedding_loss_in_pipeline_split=True, global_batch=8), None, None, "vp", "num_layers+2=6"),
    ("balanced_last<0", dict(num_layers=5), dict(pp=4, balanced_pipeline_layout=True, global_batch=8), None, None, "vp", "fewer than 0"),
    ("balanced+split", {}, dict(pp=2, balanced_pipeline_layout=True, account_embedding_loss_in_pipeline_split=True, global_batch=8), None, None, "balanced_pipeline_layout", "exclude"),
    ("vp_needs_pp", {}, dict(vp=2, global_batch=8), None, None, "vp", "need pp>1"),
    ("interleaved_m%pp", {}, dict(pp=2, vp=2, global_batch=3), None, None, "vp", "micro-batches"),
    ("mb>gb", {}, dict(micro_batch=4, global_batch=2), None, None, "micro_batch", "exceeds"),
    ("gb%dpmb", {}, dict(micro_batch=2, global_batch=3), None, None, "global_batch", "dp*micro_batch"),
    ("seq%2cp", {}, dict(cp=3, global_batch=8), None, None, "cp", "2*cp"),
    ("sp_needs_tp", {}, dict(sequence_parallel=True, global_batch=8), None, None, "sequence_parallel", "tp>1"),
    ("seq%tpcp", {}, dict(tp=4, sequence_parallel=True, global_batch=8), None, 66, "sequence_parallel", "tp*cp"),
    ("ep_needs_moe", {}, dict(ep=2, dp=2, global_batch=8), None, None, "ep", "MoE"),
    ("experts%ep", dict(moe=MOE), dict(ep=8, dp=8, global_batch=8), None, None, "ep", "num_experts=4"),
    ("tpcpdp%etp*ep", dict(moe=MOE), dict(ep=2, dp=1, global_batch=8), None, None, "ep", "tp*cp*dp"),
    ("tpcpdp%etp*ep folded", dict(moe=MOE), dict(tp=2, ep=4, dp=1, global_batch=8), None, None, "ep", "etp*ep"),
    ("etp|tp", dict(moe=MOE), dict(tp=2, etp=4, global_batch=8), None, None, "etp", "divide tp"),
    ("moe_tp_needs_sp", dict(moe=MOE), dict(tp=2, global_batch=8), None, None, "sequence_parallel", "MoE"),
    ("zero2+pp", {}, dict(pp=2, zero_stage=2, global_batch=8), None, None, "zero_stage", "pipeline"),
    ("distopt+zero2", {}, dict(distributed_optimizer=True, zero_stage=2, global_batch=8), None, None, "distributed_optimizer", "not both"),
    ("world", {}, dict(tp=2, dp=2, global_batch=8), 8, None, "dp", "8 GPUs"),
    ("recompute_layers_needs_full", {}, dict(recompute="selective", recompute_layers=1, global_batch=8), None, None, "recompute_layers", "full"),
    ("recompute_layers>stage", {}, dict(pp=2, recompute="full", recompute_layers=3, global_batch=8), None, None, "recompute_layers", "exceeds"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("model_kw", "layout_kw", "num_gpus", "seq", "field", "words"),
    [r[1:] for r in RULES],
    ids=[r[0] for r in RULES],
)
def test_each_layout_rule_names_its_field(
    model_kw: dict, layout_kw: dict, num_gpus: int | None, seq: int | None, field: str, words: str
) -> None:
    model = _model(**model_kw)
    layout = LayoutSpec(**layout_kw)
    with pytest.raises(SpecError) as info:
        validate_layout(layout, model, num_gpus=num_gpus, seq_length=seq)
    assert info.value.field == f"layout.{field}"
    assert words in info.value.reason


def test_every_vectorized_rule_is_covered() -> None:
    """Each (field, reason) rule of `layout_violations` fires for one of the cases above."""
    fired: set[int] = set()
    for _, model_kw, layout_kw, num_gpus, seq, _, _ in RULES:
        model, layout = _model(**model_kw), LayoutSpec(**layout_kw)
        batch = LayoutBatch.from_specs([layout])
        rules = layout_violations(
            batch.as_rule_dict(), num_layers=model.num_layers, num_heads=model.num_heads,
            num_kv_heads=model.kv_heads, num_experts=model.moe.num_experts if model.moe else 1,
            seq_length=seq or model.seq_length, vocab_size=model.vocab_size,
            ffn_hidden_size=model.ffn_hidden_size, num_gpus=num_gpus or batch.num_gpus,
        )  # fmt: skip
        fired |= {i for i, (_, mask, _) in enumerate(rules) if np.any(mask)}
    assert fired == set(range(len(rules))), (
        f"rules never triggered: {set(range(len(rules))) - fired}"
    )


def test_valid_layouts_pass_and_vectorized_rules_agree() -> None:
    model = get_model("llama3-70b")
    good = LayoutSpec(tp=8, pp=4, dp=2, global_batch=512, sequence_parallel=True)
    validate_layout(good, model, num_gpus=64, seq_length=8192)
    tps = np.array([1, 2, 3, 8, 16])
    batch = LayoutBatch.from_arrays(tp=tps, global_batch=8)
    rules = layout_violations(
        batch.as_rule_dict(), num_layers=80, num_heads=64, num_kv_heads=8, num_experts=1,
        seq_length=8192, vocab_size=128256, ffn_hidden_size=28672,
    )  # fmt: skip
    bad = np.zeros(len(tps), dtype=bool)
    for _, mask, _ in rules:
        bad |= np.asarray(mask, dtype=bool)
    for i, tp in enumerate(tps):
        try:
            validate_layout(LayoutSpec(tp=int(tp), global_batch=8), model, seq_length=8192)
            ok = True
        except SpecError:
            ok = False
        assert ok == (not bad[i]), tp


def test_layout_field_ranges_are_checked() -> None:
    with pytest.raises(SpecError) as info:
        validate(LayoutSpec, {"tp": 0, "global_batch": 8}, prefix="layout")
    assert info.value.field == "layout.tp"
    with pytest.raises(SpecError) as info:
        validate(LayoutSpec, {"global_batch": 8, "rank_order": "tp-dp"}, prefix="layout")
    assert "rank_order" in info.value.reason
    with pytest.raises(SpecError) as info:
        validate(LayoutSpec, {"global_batch": 8, "tpp": 2}, prefix="layout")
    assert info.value.field == "layout.tpp" and "unknown field" in info.value.reason


def test_model_validators() -> None:
    with pytest.raises(SpecError, match="num_kv_heads"):
        validate(
            ModelSpec,
            dict(
                num_layers=2,
                hidden_size=64,
                num_heads=8,
                num_kv_heads=3,
                ffn_hidden_size=64,
                vocab_size=10,
            ),
        )
    with pytest.raises(SpecError, match="hidden_size"):
        validate(
            ModelSpec,
            dict(num_layers=2, hidden_size=65, num_heads=8, ffn_hidden_size=64, vocab_size=10),
        )
    with pytest.raises(SpecError, match="top_k"):
        validate(MoESpec, dict(num_experts=4, top_k=5, expert_ffn_hidden_size=8))
    with pytest.raises(SpecError, match="mla"):
        validate(
            ModelSpec,
            dict(
                num_layers=2,
                hidden_size=64,
                num_heads=8,
                ffn_hidden_size=64,
                vocab_size=10,
                attention="mla",
            ),
        )
    with pytest.raises(SpecError) as info:
        get_model("llama9-1t")
    assert info.value.field == "model" and "llama3-70b" in info.value.reason


def test_gpu_catalog_aliases_and_errors() -> None:
    assert get_gpu("H100-SXM5-80GB").name == get_gpu("h100 sxm").name == get_gpu("h100-sxm").name
    assert get_gpu("A100-SXM4-80GB").hbm_gb == 80
    for name in ("A100-40GB", "H100-PCIe", "H100-NVL", "H800", "H200", "B200", "GB200", "MI300X"):
        assert get_gpu(name).peak_tflops.bf16 > 0
    # What vendors' tools print (nvidia-smi, rocm-smi) finds the same entries.
    for printed, name in (
        ("NVIDIA A100-SXM4-80GB", "A100-SXM4-80GB"),
        ("NVIDIA H100 80GB HBM3", "H100-SXM5-80GB"),
        ("NVIDIA A100-PCIE-40GB", "A100-PCIe-40GB"),
        ("AMD Instinct MI300X", "MI300X"),
        ("NVIDIA GH200 480GB", "GH200-96GB"),
        ("A800", "A800-SXM4-80GB"),
        ("NVIDIA GB300", "GB300-NVL72"),
        ("MI250X", "MI250X-GCD"),
        # parts in any order: family, memory, form factor
        ("A100 80GB SXM", "A100-SXM4-80GB"),
        ("A100 40GB SXM", "A100-SXM4-40GB"),
        ("V100 32GB SXM2", "V100-SXM2-32GB"),
        ("B200 192GB", "B200-SXM-180GB"),
        ("MI300X OAM", "MI300X"),
    ):
        assert get_gpu(printed).name == name, printed
    # Every catalog GPU has a shipped profile of its own family, and no alias names two GPUs.
    families = {g for p in shipped_profiles().values() for g in p.gpus}
    assert set(gpu_catalog()) <= families
    owners: dict[str, set[str]] = {}
    for gpu in gpu_catalog().values():
        for alias in (gpu.name, *gpu.aliases):
            owners.setdefault(re.sub(r"[^a-z0-9]", "", alias.lower()), set()).add(gpu.name)
    assert all(len(names) == 1 for names in owners.values())
    for other_form in ("NVIDIA H200 NVL", "Tesla V100-PCIE-16GB", "A800 80GB PCIe"):
        with pytest.raises(SpecError):  # no guess across form factors
            get_gpu(other_form)
    with pytest.raises(SpecError) as info:
        get_gpu("rtx-9090")
    assert info.value.field == "gpu"
    with pytest.raises(SpecError, match="fp8"):
        get_gpu("a100-80gb").peak_flops("fp8")
    with pytest.raises(Exception, match="whole number of nodes"):
        make_cluster("h100-sxm", 12)


def test_load_spec_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "layout.yaml"
    path.write_text("tp: 2\nglobal_batch: -4\n")
    with pytest.raises(SpecError) as info:
        load_spec(LayoutSpec, path)
    assert info.value.source == str(path) and info.value.field == "global_batch"
    assert str(path) in info.value.message
    path.write_text("tp: [1,\n")
    with pytest.raises(SpecError, match="malformed YAML"):
        load_spec(LayoutSpec, path)


def test_expert_parallelism_folds_over_tp_and_cp_ranks() -> None:
    """MoE parallel folding (Megatron-core >= 0.10): EP may span TP and CP ranks when etp*ep
    divides tp*cp*dp, e.g. Megatron-Bridge's Qwen3-235B recipe (tp 2, etp 1, ep 32, dp 16)."""
    model = _model(moe=MOE)
    folded = dict(tp=2, etp=1, sequence_parallel=True, global_batch=8)
    validate_layout(LayoutSpec(ep=2, dp=1, **folded), model)
    validate_layout(LayoutSpec(ep=4, dp=2, **folded), model)
    validate_layout(LayoutSpec(cp=2, ep=4, dp=2, global_batch=8), model, seq_length=64)
    with pytest.raises(SpecError, match="etp\\*ep"):  # etp defaults to tp: 2*4 > 2*2
        validate_layout(LayoutSpec(tp=2, ep=4, dp=2, sequence_parallel=True, global_batch=8), model)


def test_documents_with_a_byte_order_mark_load(tmp_path: Path) -> None:
    for suffix, text in (
        (".json", '{"tp": 2, "global_batch": 8}'),
        (".yaml", "tp: 2\nglobal_batch: 8\n"),
    ):
        path = tmp_path / f"layout{suffix}"
        path.write_text("\ufeff" + text, encoding="utf-8")
        assert load_spec(LayoutSpec, path).tp == 2

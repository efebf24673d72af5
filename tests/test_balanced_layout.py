"""The balanced uneven pipeline layout (Megatron-core pipeline_model_parallel_layout as
Megatron-Bridge's DeepSeek-V3 recipes build it): the layout rule, the one definition of the layers
on each chunk and rank (checked against megatron-core's own placement), what it does to
parameters, memory, step time and recompute, the search, compile, simulate and validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pipeline_helpers import layout_of, llama_with_layers, megatron_layers_held, needs_megatron

from scaleplan.costmodels.batch import LayoutBatch
from scaleplan.costmodels.flops import recompute_layers_fraction
from scaleplan.costmodels.memory import memory_breakdown, params_per_rank
from scaleplan.costmodels.memory_activations import stage_activation_bytes
from scaleplan.costmodels.pipeline import _op_order
from scaleplan.costmodels.stage_layers import (
    BALANCED,
    EMBEDDING_LOSS,
    EVEN,
    balanced_layout,
    chunk_layer_counts,
    layer_rank_mask,
    layers_on_rank,
    short_layers_in_flight,
    split_code,
    stage_layers,
)
from scaleplan.costmodels.step import estimate_step
from scaleplan.costmodels.step_parts import stage_parts
from scaleplan.specs.errors import NotImplementedFeature, SpecError
from scaleplan.specs.hardware import make_cluster
from scaleplan.specs.layout import LayoutSpec, layout_as_dict, layout_violations, validate_layout
from scaleplan.specs.model import get_model

BAL = "balanced_pipeline_layout"
CSV = Path(__file__).resolve().parent.parent / "specs" / "data" / "published_runs_dev.csv"


# --- the layout rule ---------------------------------------------------------------------------


def test_rule_needs_a_last_chunk_of_at_least_zero_layers() -> None:
    v3 = get_model("deepseek-v3")
    for pp, vp in ((2, 1), (4, 1), (8, 1), (16, 1), (4, 2), (8, 2), (4, 4)):
        validate_layout(layout_of(tp=1, pp=pp, vp=vp, dp=8, **{BAL: True}), v3)
        with pytest.raises(SpecError, match="num_layers=61 is not divisible"):
            validate_layout(layout_of(tp=1, pp=pp, vp=vp, dp=8), v3)
    # 32 chunks of ceil(61/32) = 2 layers would leave -1 for the last one
    with pytest.raises(SpecError, match="fewer than 0") as err:
        validate_layout(layout_of(tp=1, pp=8, vp=4, dp=8, **{BAL: True}), v3)
    assert err.value.field == "layout.vp"
    # one spec cannot ask for both uneven splits
    both = layout_of(**{BAL: True, "account_embedding_loss_in_pipeline_split": True}, pp=2)
    with pytest.raises(SpecError, match="exclude one another") as err:
        validate_layout(both, llama_with_layers(60))
    assert err.value.field == f"layout.{BAL}"


def test_rule_is_vectorized_over_a_batch() -> None:
    batch = LayoutBatch.from_arrays(
        tp=1, pp=[4, 8, 8, 4, 4], vp=[1, 4, 4, 1, 1], dp=8, global_batch=64,
        balanced_pipeline_layout=[1, 1, 0, 0, 1], account_embedding_loss_in_pipeline_split=[0, 0, 0, 0, 1],
    )  # fmt: skip
    rules = layout_violations(
        batch.as_rule_dict(), num_layers=61, num_heads=128, num_kv_heads=128, num_experts=256,
        seq_length=4096, vocab_size=129280, ffn_hidden_size=18432,
    )  # fmt: skip
    failed = np.stack([np.broadcast_to(m, (5,)) for _, m, _ in rules]).any(axis=0)
    np.testing.assert_array_equal(failed, [False, True, True, True, True])
    # LayoutSpec -> dict -> LayoutBatch keep the flag
    spec = layout_of(tp=1, pp=4, dp=8, **{BAL: True})
    assert layout_as_dict(spec)[BAL] == 1
    assert LayoutBatch.from_specs([spec]).to_spec(0) == spec
    assert split_code(spec) == BALANCED and split_code(LayoutBatch.from_specs([spec]))[0] == 2


# --- the one definition, against megatron-core's placement -------------------------------------


def test_chunks_follow_megatron_bridges_deepseek_v3_layouts() -> None:
    """The brief's table: L=61 on (pp, vp) -> decoder layers per virtual stage."""
    assert chunk_layer_counts(61, 4, 1, BALANCED) == [16, 16, 16, 13]
    assert chunk_layer_counts(61, 8, 1, BALANCED) == [8] * 7 + [5]
    assert chunk_layer_counts(61, 4, 2, BALANCED) == [8] * 7 + [5]
    for pp, vp in ((16, 1), (8, 2), (4, 4)):
        assert chunk_layer_counts(61, pp, vp, BALANCED) == [4] * 15 + [1]
    # the other two splits through the same function
    assert chunk_layer_counts(32, 4, 2, EVEN) == [4] * 8
    assert chunk_layer_counts(30, 4, 1, EMBEDDING_LOSS) == [7, 8, 8, 7]
    pp, vp = np.array([4, 4, 8, 4]), np.array([1, 1, 2, 4])
    rank = np.array([0, 3, 7, 3])
    np.testing.assert_array_equal(stage_layers(61, pp, vp, BALANCED, rank), [16, 13, 5, 13])


def test_search_offers_it_exactly_where_nothing_else_splits() -> None:
    pp = np.array([1, 2, 4, 8, 16, 32, 4, 8, 2, 4])
    vp = np.array([1, 1, 1, 1, 1, 1, 4, 4, 1, 1])
    np.testing.assert_array_equal(
        balanced_layout(61, pp, vp), [0, 1, 1, 1, 1, 0, 1, 0, 1, 1]
    )  # 32 chunks: last would be -1
    assert not balanced_layout(64, np.array([2, 4, 8]), 1).any()  # even
    assert not balanced_layout(62, np.array([4, 8]), 1).any()  # 62 + 2 divides


CASES = [(61, 4, 1), (61, 8, 1), (61, 4, 2), (61, 16, 1), (61, 8, 2), (61, 4, 4), (7, 4, 1),
         (6, 4, 1), (7, 2, 2), (10, 3, 2)]  # fmt: skip


@needs_megatron
@pytest.mark.parametrize(("layers", "pp", "vp"), CASES)
def test_layers_of_every_chunk_match_megatron_core(
    layers: int, pp: int, vp: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """get_num_layers_to_build / get_transformer_layer_offset (megatron-core 0.16.1) with the
    compiled pipeline_model_parallel_layout place the layers `stage_layers` says on each rank."""
    import torch
    from megatron.core import parallel_state
    from megatron.core.transformer import TransformerConfig

    from scaleplan.executor.compile.megatron_core import pipeline_layout

    lay = LayoutSpec(pp=pp, vp=vp, global_batch=pp, **{BAL: True})
    cfg = TransformerConfig(
        num_layers=layers, hidden_size=64, num_attention_heads=4, pipeline_model_parallel_size=pp,
        virtual_pipeline_model_parallel_size=vp if vp > 1 else None, pipeline_dtype=torch.float32,
        pipeline_model_parallel_layout=pipeline_layout(llama_with_layers(layers), lay),
    )  # fmt: skip
    # with a layout, megatron-core reads the pipeline rank from parallel_state
    monkeypatch.setattr(
        parallel_state,
        "get_virtual_pipeline_model_parallel_world_size",
        lambda: vp if vp > 1 else None,
    )
    ours = layer_rank_mask(
        layers, np.full(pp, pp), np.full(pp, vp), np.full(pp, BALANCED), np.arange(pp)
    )
    for r in range(pp):
        monkeypatch.setattr(parallel_state, "get_pipeline_model_parallel_rank", lambda r=r: r)
        held = megatron_layers_held(cfg, pp, vp, r)
        assert sorted(held) == list(np.flatnonzero(ours[:, r])), (r, held)
        assert stage_layers(layers, pp, vp, BALANCED, r) == len(held)


def test_deepseek_v3_dense_layers_sit_on_rank_zero() -> None:
    v3 = get_model("deepseek-v3")
    pp, vp = np.full(4, 4), np.full(4, 4)
    dense, moe = layers_on_rank(v3, pp, vp, np.arange(4), np.full(4, BALANCED))
    # rank 0 holds chunks 0, 4, 8, 12 (layers 0-3, 16-19, 32-35, 48-51); rank 3 ends with 60
    np.testing.assert_array_equal(dense, [3, 0, 0, 0])
    np.testing.assert_array_equal(dense + moe, [16, 16, 16, 13])


@pytest.mark.parametrize(("layers", "pp", "vp", "m"), [(61, 4, 2, 8), (61, 4, 4, 4), (7, 2, 2, 2)])
def test_short_chunk_in_flight_follows_megatrons_interleaved_order(
    layers: int, pp: int, vp: int, m: int
) -> None:
    counts = chunk_layer_counts(layers, pp, vp, BALANCED)
    for rank in range(pp):
        forwards = [c for kind, _, c in _op_order(rank, pp, m, vp) if kind == "forward"]
        for n in range(1, len(forwards) + 1):
            held = sum(counts[c * pp + rank] for c in forwards[:n])
            full = n * max(counts)
            got = short_layers_in_flight(layers, pp, vp, BALANCED, rank, n)
            assert full - got == held, (rank, n)


# --- parameters, memory, step time and recompute -----------------------------------------------


def test_params_and_memory_match_a_deeper_even_split_less_the_missing_layers() -> None:
    """61 layers balanced on pp=4 (16, 16, 16, 13) are 64 layers split evenly with 3 layers
    taken off the last stage."""
    short, full = llama_with_layers(61), llama_with_layers(64)
    bal, plain = layout_of(**{BAL: True}), layout_of()
    layer = params_per_rank(full, plain, "middle") - params_per_rank(
        llama_with_layers(60), plain, "middle"
    )
    assert layer > 0
    for stage in ("first", "middle"):
        assert params_per_rank(short, bal, stage) == params_per_rank(full, plain, stage)
    assert params_per_rank(short, bal, "last") == params_per_rank(full, plain, "last") - 3 * layer
    lo, hi = (memory_breakdown(m, lay, 4096, "last") for m, lay in ((short, bal), (full, plain)))
    assert lo["weights"] < hi["weights"] and lo["activations"] < hi["activations"]
    # 1F1B: the last rank keeps one micro-batch of its 13 layers instead of 16
    last = np.array([3])
    a = stage_activation_bytes(short, LayoutBatch.from_specs([bal]), 4096, last)
    b = stage_activation_bytes(full, LayoutBatch.from_specs([plain]), 4096, last)
    assert a.layers[0] == pytest.approx(b.layers[0] * 13 / 16, rel=1e-12)
    assert a.logits[0] == b.logits[0]


@pytest.mark.parametrize("vp", [1, 2])
def test_step_time_of_the_short_last_stage(vp: int) -> None:
    short, full = llama_with_layers(61), llama_with_layers(64)
    cluster = make_cluster("H100-SXM5-80GB", 64)
    bal, plain = layout_of(vp=vp, **{BAL: True}), layout_of(vp=vp)
    a = stage_parts(short, cluster, LayoutBatch.from_specs([bal]), 4096, cluster.profile)
    b = stage_parts(full, cluster, LayoutBatch.from_specs([plain]), 4096, cluster.profile)
    # first and middle stage: the same 16 layers; the last: 13 of them
    for i in (0, 1):
        assert a[i].compute_s[0] == pytest.approx(b[i].compute_s[0], rel=1e-9)
    one_layer = b[1].compute_s[0] / 16.0
    assert a[2].compute_s[0] == pytest.approx(b[2].compute_s[0] - 3 * one_layer, rel=1e-9)
    assert a[2].tp_s[0] == pytest.approx(b[2].tp_s[0] * 13 / 16, rel=1e-9)
    est = estimate_step(short, cluster, bal, 4096)
    parts = ("compute_s", "exposed_comm_s", "bubble_s", "optimizer_s", "overhead_s")
    assert sum(getattr(est, p) for p in parts) == pytest.approx(est.step_time_s)


def test_step_time_counts_each_stages_dense_and_moe_layers() -> None:
    """DeepSeek-V3 balanced on pp=4 (16, 16, 16, 13 layers): the first stage computes its 3
    dense and 13 MoE layers, the middle 16 MoE layers, the last 13 MoE layers and the head."""
    from scaleplan.costmodels.step_parts import _layer_times

    v3, cluster = get_model("deepseek-v3"), make_cluster("H100-SXM5-80GB", 256)
    lay = LayoutSpec(
        tp=1, pp=4, dp=64, ep=64, distributed_optimizer=True, global_batch=256, **{BAL: True}
    )
    batch = LayoutBatch.from_specs([lay])
    first, middle, last = stage_parts(v3, cluster, batch, 4096, cluster.profile)
    lt = _layer_times(v3, cluster.gpu, cluster.profile, 4096, batch)
    dense, moe = lt.dense_fwd_s + lt.dense_bwd_s, lt.moe_fwd_s + lt.moe_bwd_s
    embed, head = lt.embed_fwd_s + lt.embed_bwd_s, lt.head_fwd_s + lt.head_bwd_s
    assert dense[0] != moe[0]
    assert first.compute_s[0] == pytest.approx(3 * dense[0] + 13 * moe[0] + embed[0], rel=1e-12)
    assert middle.compute_s[0] == pytest.approx(16 * moe[0], rel=1e-12)
    assert last.compute_s[0] == pytest.approx(13 * moe[0] + head[0], rel=1e-12)
    assert middle.ep_s[0] == pytest.approx(last.ep_s[0] * 16 / 13, rel=1e-12)
    assert first.ep_s[0] == pytest.approx(last.ep_s[0], rel=1e-12)  # 13 MoE layers each


def test_recompute_fraction_counts_the_busiest_stages_layers() -> None:
    # 61 layers, pp 4 vp 2: a full stage holds 2 x 8 = 16 layers (the plain formula says 15.25)
    assert recompute_layers_fraction(61, 4, 8, BALANCED, 2) == 0.5
    assert recompute_layers_fraction(61, 16, 2, BALANCED, 1) == 0.5
    validate_layout(layout_of(tp=1, pp=4, vp=2, dp=8, recompute="full", recompute_layers=16, **{BAL: True}),
                    get_model("deepseek-v3"))  # fmt: skip
    with pytest.raises(SpecError, match="exceeds the 16 layers"):
        validate_layout(
            layout_of(tp=1, pp=4, vp=2, dp=8, recompute="full", recompute_layers=17, **{BAL: True}),
            get_model("deepseek-v3"),
        )


# --- search, compile, simulate, validate -------------------------------------------------------


def test_search_puts_deepseek_v3_on_pipelines() -> None:
    from scaleplan.planner.search import CostedLayouts, search_layouts

    costed: list[CostedLayouts] = []
    v3, cluster = get_model("deepseek-v3"), make_cluster("H100-SXM5-80GB", 1024)
    search_layouts(v3, cluster, 4096, 4096, on_costed=costed.append)
    (c,) = costed
    lay = c.candidates.select(c.feasible)
    deep = lay.pp > 1
    assert deep.sum() > 100  # none before: 61 and 63 split over no pp*vp > 1 but 3, 7, 9 ...
    assert lay.balanced_pipeline_layout[deep].all()
    fastest = np.flatnonzero(deep)[np.argmin(c.step.step_time_s[deep] / lay.global_batch[deep])]
    best_deep = lay.to_spec(int(fastest))
    validate_layout(best_deep, v3, num_gpus=1024, seq_length=4096)
    assert best_deep.pp >= 4


def _ctx(plan: object) -> object:
    from scaleplan.executor.compile.common import phase_contexts

    (ctx,) = phase_contexts(plan)  # type: ignore[arg-type]
    return ctx


def test_compile_emits_the_layout_for_megatron_and_refuses_deepspeed() -> None:
    from compile_cases import big_variants

    from scaleplan.executor.compile import compile_plan
    from scaleplan.executor.compile.megatron_core import megatron_core_document
    from scaleplan.executor.compile.megatron_lm import megatron_lm_args

    plan = big_variants()["deepseek_v3_pp4vp4_balanced"]
    ctx = _ctx(plan)
    tc = megatron_core_document(ctx)["transformer_config"]  # type: ignore[arg-type]
    layout = tc["pipeline_model_parallel_layout"]
    assert [c.count("decoder") for c in layout] == [4] * 15 + [1]
    assert layout[0][0] == "embedding" and layout[-1][-1] == "loss"
    assert not any(k.startswith("account_for") for k in tc)
    args = megatron_lm_args(ctx).args  # type: ignore[arg-type]
    text = args[args.index("--pipeline-model-parallel-layout") + 1]
    assert text == "Et*4|" + "t*4|" * 14 + "t*1L"
    assert "--num-layers-per-virtual-pipeline-stage" not in args
    assert not any(a.startswith("--account-for") for a in args)
    # DeepSpeed's PipelineModule cannot place layers this way (a dense pp-only plan, so no
    # other refusal comes first)
    from factories import tiny_plan

    dense = tiny_plan(
        pp=4, num_layers=7, phases=("pretrain",), phase_layouts={"pretrain": {BAL: True}}
    )
    with pytest.raises(NotImplementedFeature, match="pipeline_model_parallel_layout") as err:
        compile_plan(dense, "deepspeed")
    assert err.value.field is not None and err.value.field.endswith(BAL)
    compile_plan(dense, "megatron")


@needs_megatron
def test_megatron_lm_string_parses_to_the_document_layout() -> None:
    from megatron.core.transformer.enums import LayerType
    from megatron.core.transformer.pipeline_parallel_layer_layout import (
        PipelineParallelLayerLayout as Layout,
    )

    from scaleplan.executor.compile.megatron_core import pipeline_layout, pipeline_layout_string

    for layers, pp, vp in CASES:
        lay = LayoutSpec(pp=pp, vp=vp, global_batch=pp, **{BAL: True})
        model = llama_with_layers(layers)
        parsed = Layout.parse_str_to_list(pipeline_layout_string(model, lay))
        expect = [[LayerType[x] for x in chunk] for chunk in pipeline_layout(model, lay)]
        assert parsed == expect, (layers, pp, vp)


@needs_megatron
def test_cpu_training_path_builds_the_balanced_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    from factories import tiny_plan
    from megatron.core import parallel_state
    from megatron.core.transformer.transformer_block import get_num_layers_to_build

    from scaleplan.executor.mcore_build import megatron_configs, phase_document

    plan = tiny_plan(
        pp=4, num_layers=7, phases=("pretrain",), phase_layouts={"pretrain": {BAL: True}}
    )
    config = megatron_configs(phase_document(plan, plan.phases[0]), "cpu")["transformer"]
    assert not config.account_for_embedding_in_pipeline_split
    built = []
    for r in range(4):
        monkeypatch.setattr(parallel_state, "get_pipeline_model_parallel_rank", lambda r=r: r)
        built.append(get_num_layers_to_build(config, pp_rank=r))
    assert built == [int(stage_layers(7, 4, 1, BALANCED, r)) for r in range(4)] == [2, 2, 2, 1]


def test_simulate_flag_turns_the_layout_on(capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import run_cli

    args = [
        "simulate", "--json", "--model", "deepseek-v3", "--gpu", "h100-sxm", "--tp", "1",
        "--pp", "16", "--dp", "64", "--ep", "64", "--micro-batch", "1", "--global-batch", "1024",
        "--distributed-optimizer", "--recompute", "full",
    ]  # fmt: skip
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "num_layers=61 is not divisible by pp*vp" in err
    code, out, err = run_cli([*args, "--balanced-pp"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["layout"][BAL] is True
    # 4 layers on the middle stages, 1 (and the final norm's 7168 bf16 weights) on the last
    by_stage = result["memory_bytes_by_stage"]
    last, middle = by_stage["last"]["weights"], by_stage["middle"]["weights"]
    assert last == middle / 4 + 2 * 7168


def test_validation_rows_of_deepseek_v3() -> None:
    from scaleplan.planner.validation import read_rows, row_to_case
    from scaleplan.planner.validation_score import predict_cases

    rows = read_rows(CSV)
    case = row_to_case(55, rows[55])  # GB200, pp4 vp4: 4 layers per chunk, 1 on the last
    assert not hasattr(case, "reason"), case
    assert case.layout.balanced_pipeline_layout  # type: ignore[union-attr]
    assert case.model.name == "deepseek-v3" and case.model.attention == "mla"  # type: ignore[union-attr]
    notes = " ".join(case.assumptions)  # type: ignore[union-attr]
    assert "catalog preset deepseek-v3" in notes and "balanced pipeline layout" in notes
    (pred,) = predict_cases([case])  # type: ignore[list-item]
    assert pred.predicted > 0
    # pp8 vp4 = 32 chunks: ceil(61/32) = 2 per chunk leaves -1 for the last
    skipped = row_to_case(56, rows[56])
    assert "nor balanced (2 per chunk leave -1 for the last)" in skipped.reason  # type: ignore[union-attr]
    mtp = row_to_case(62, rows[62])
    assert "multi-token prediction" in mtp.reason  # type: ignore[union-attr]
    # a row whose layers do split evenly keeps the plain split
    even = row_to_case(55, {**rows[55], "pp": "1", "vp": "", "dp": "256", "ep": "64"})
    assert not even.layout.balanced_pipeline_layout  # type: ignore[union-attr]


@needs_megatron
@pytest.mark.slow
def test_a_balanced_pipeline_trains_on_cpu(engine_env: dict[str, str], tmp_path: Path) -> None:
    """3 layers on pp=2 (2 + 1: neither 3 nor 5 divides by 2) train through the executor's
    megatron-core loop on 2 CPU processes, and the loss falls."""
    from factories import tiny_plan

    from scaleplan.executor.run import run_plan

    plan = tiny_plan(
        pp=2, num_layers=3, steps=8, phases=("pretrain",),
        phase_layouts={"pretrain": {BAL: True}},
        phase_overrides={"pretrain": {"checkpoint_every_steps": 1000}},
    )  # fmt: skip
    path = tmp_path / "plan.json"
    path.write_text(plan.model_dump_json(indent=1))
    (result,) = run_plan(path, "all", tmp_path / "run", nproc=2, env=engine_env, log=False)
    assert result.status == "trained"
    lines = (tmp_path / "run" / "metrics" / "pretrain.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in lines]
    assert records[0]["layout"][BAL] is True
    steps = [r for r in records if r["event"] == "step"]
    assert len(steps) == 8 and steps[-1]["loss"] < steps[0]["loss"]

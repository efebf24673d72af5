"""Embedding and loss counted as pipeline layers (Megatron-core account_for_embedding_in_pipeline_
split + account_for_loss_in_pipeline_split): the layout rule, the one definition of the layers on
each stage (checked against megatron-core's own placement), and what it does to parameters,
memory, step time, validation rows and the layout search."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pipeline_helpers import layout_of, llama_with_layers, megatron_layers_held, needs_megatron

from scaleplan.costmodels.batch import LayoutBatch
from scaleplan.costmodels.memory import WEIGHT_BYTES, memory_breakdown, params_per_rank
from scaleplan.costmodels.pipeline import _op_order
from scaleplan.costmodels.stage_layers import (
    layer_rank_mask,
    layers_on_rank,
    short_layers_in_flight,
    stage_layers,
)
from scaleplan.costmodels.step import estimate_step, estimate_step_batch
from scaleplan.costmodels.step_parts import stage_parts
from scaleplan.planner.search import SearchSpace, candidate_grid, search_layouts
from scaleplan.planner.validation import row_to_case
from scaleplan.specs.errors import SpecError
from scaleplan.specs.hardware import make_cluster
from scaleplan.specs.layout import validate_layout
from scaleplan.specs.model import MoESpec, get_model

SPLIT = "account_embedding_loss_in_pipeline_split"


# --- the layout rule ---------------------------------------------------------------------------


def test_rule_wants_layers_plus_two_divisible_by_pp_vp() -> None:
    model = llama_with_layers(126)
    validate_layout(layout_of(pp=8, vp=8, **{SPLIT: True}), model)  # 128 = 8 x 8 x 2
    validate_layout(layout_of(pp=2, vp=1, **{SPLIT: True}), model)  # 128 / 2
    with pytest.raises(SpecError, match="num_layers=126 is not divisible") as plain:
        validate_layout(layout_of(pp=8, vp=8), model)
    assert plain.value.field == "layout.vp" and SPLIT in plain.value.reason
    with pytest.raises(SpecError, match=r"num_layers\+2=128") as split:
        validate_layout(layout_of(pp=3, vp=1, **{SPLIT: True}), model)
    assert split.value.field == "layout.vp"


# --- the one definition, against megatron-core's placement -------------------------------------


@needs_megatron
@pytest.mark.parametrize(
    ("layers", "pp", "vp"), [(6, 4, 1), (6, 2, 2), (14, 4, 2), (30, 8, 1), (126, 8, 8), (2, 4, 1)]
)
def test_layers_of_every_chunk_match_megatron_core(layers: int, pp: int, vp: int) -> None:
    """get_num_layers_to_build / get_transformer_layer_offset (megatron-core 0.16.1) place the
    same transformer layers on each (pipeline rank, virtual stage) as `stage_layers`."""
    from megatron.core.transformer import TransformerConfig

    cfg = TransformerConfig(
        num_layers=layers, hidden_size=64, num_attention_heads=4,
        pipeline_model_parallel_size=pp, virtual_pipeline_model_parallel_size=vp if vp > 1 else None,
        account_for_embedding_in_pipeline_split=True, account_for_loss_in_pipeline_split=True,
        pipeline_dtype=__import__("torch").float32,
    )  # fmt: skip
    ranks = np.arange(pp)
    ours = layer_rank_mask(layers, np.full(pp, pp), np.full(pp, vp), np.ones(pp), ranks)
    for r in range(pp):
        held = megatron_layers_held(cfg, pp, vp, r)
        assert sorted(held) == list(np.flatnonzero(ours[:, r])), (r, held)
        assert stage_layers(layers, pp, vp, 1, r) == len(held)


def test_first_and_last_stage_hold_one_layer_fewer() -> None:
    pp = np.array([4, 4, 4, 8, 1])
    vp = np.array([1, 1, 1, 2, 1])
    rank = np.array([0, 1, 3, 7, 0])
    np.testing.assert_array_equal(stage_layers(30, pp, vp, 1, rank), [7, 8, 7, 3, 30])
    np.testing.assert_array_equal(stage_layers(32, pp, vp, 0, rank), [8, 8, 8, 4, 32])
    # MoE counting (per layer index) agrees with the dense count, and splits dense/MoE layers
    moe = llama_with_layers(30).model_copy(
        update={
            "moe": MoESpec(num_experts=8, top_k=2, expert_ffn_hidden_size=64, first_dense_layers=3)
        }
    )
    dense, n_moe = layers_on_rank(moe, pp, vp, rank, np.ones(5, dtype=np.int64))
    np.testing.assert_array_equal(dense + n_moe, [7, 8, 7, 3, 30])
    assert dense[0] == 3 and n_moe[0] == 4  # layers 0-6 on rank 0: the 3 dense ones first


@pytest.mark.parametrize(("pp", "vp", "m"), [(4, 2, 8), (4, 3, 4), (8, 2, 16), (2, 4, 2)])
def test_light_chunk_count_follows_megatrons_interleaved_order(pp: int, vp: int, m: int) -> None:
    """Of the forwards a rank runs first, as many run its one-layer-short chunk as the schedule
    order of `pipeline._op_order` says."""
    for rank in (0, pp - 1):
        forwards = [c for kind, _, c in _op_order(rank, pp, m, vp) if kind == "forward"]
        short = 0 if rank == 0 else vp - 1
        for n in range(1, len(forwards) + 1):
            got = short_layers_in_flight(30, pp, vp, 1, rank, n)
            assert got == sum(c == short for c in forwards[:n]), (rank, n)
        assert short_layers_in_flight(30, pp, vp, 0, rank, len(forwards)) == 0


# --- parameters, memory and step time ----------------------------------------------------------


def test_params_and_memory_lose_one_layer_on_the_end_stages() -> None:
    """A 30-layer model split with the embedding and loss counted is a 32-layer plain split with
    one layer removed from the first and the last stage: parameters, weights and activations."""
    short, full = llama_with_layers(30), llama_with_layers(32)
    split, plain = layout_of(**{SPLIT: True}), layout_of()
    layer = params_per_rank(full, plain, "middle") - params_per_rank(
        llama_with_layers(28), plain, "middle"
    )
    assert layer > 0
    assert params_per_rank(short, split, "middle") == params_per_rank(full, plain, "middle")
    for stage in ("first", "last"):
        assert params_per_rank(short, split, stage) == params_per_rank(full, plain, stage) - layer
        lo, hi = (
            memory_breakdown(m, lay, 4096, stage) for m, lay in ((short, split), (full, plain))
        )
        assert lo["weights"] == pytest.approx(hi["weights"] - WEIGHT_BYTES * layer)
        assert lo["activations"] < hi["activations"] and lo["total"] < hi["total"]
    # the first rank keeps its 7 layers' activations for pp micro-batches instead of 8 layers'
    lo = memory_breakdown(short, split, 4096, "first")["activations"]
    hi = memory_breakdown(full, plain, 4096, "first")["activations"]
    assert hi - lo == pytest.approx(hi / 8.0, rel=0.01)


@pytest.mark.parametrize("vp", [1, 2])
def test_step_time_drops_with_the_lighter_end_stages(vp: int) -> None:
    short, full = llama_with_layers(30), llama_with_layers(32)
    cluster = make_cluster("H100-SXM5-80GB", 64)
    split, plain = layout_of(vp=vp, **{SPLIT: True}), layout_of(vp=vp)
    a = stage_parts(short, cluster, LayoutBatch.from_specs([split]), 4096, cluster.profile)
    b = stage_parts(full, cluster, LayoutBatch.from_specs([plain]), 4096, cluster.profile)
    # middle stage: the same 8 layers; first and last: one layer's compute (and comm) less
    assert a[1].total_s[0] == pytest.approx(b[1].total_s[0], rel=1e-12)
    one_layer = b[1].compute_s[0] / 8.0  # the middle stage computes 8 layers, nothing else
    for i in (0, 2):
        assert a[i].compute_s[0] == pytest.approx(b[i].compute_s[0] - one_layer, rel=1e-9)
        assert a[i].tp_s[0] == pytest.approx(b[i].tp_s[0] * 7 / 8, rel=1e-12)
        assert a[i].forward_s[0] < b[i].forward_s[0]
    est_short, est_full = (
        estimate_step(m, cluster, lay, 4096) for m, lay in ((short, split), (full, plain))
    )
    assert est_short.step_time_s < est_full.step_time_s
    # the breakdown still adds up to the step time on the critical stage
    parts = ("compute_s", "exposed_comm_s", "bubble_s", "optimizer_s", "overhead_s")
    assert sum(getattr(est_short, p) for p in parts) == pytest.approx(est_short.step_time_s)


def test_option_off_is_the_plain_split_bit_for_bit() -> None:
    model, cluster = llama_with_layers(32), make_cluster("H100-SXM5-80GB", 64)
    lays = [
        layout_of(pp=pp, vp=vp, dp=64 // (8 * pp)) for pp, vp in ((1, 1), (2, 1), (4, 2), (8, 1))
    ]
    batch = LayoutBatch.from_specs(lays)
    a = estimate_step_batch(model, cluster, batch, 4096)
    flipped = LayoutBatch.from_arrays(
        **{**batch.as_rule_dict(), SPLIT: np.zeros(len(lays), dtype=np.int64)}
    )
    b = estimate_step_batch(model, cluster, flipped, 4096)
    np.testing.assert_array_equal(a.step_time_s, b.step_time_s)
    np.testing.assert_array_equal(a.memory_bytes, b.memory_bytes)


# --- validation rows and search ----------------------------------------------------------------

ROW_405B = {
    "source": "NVIDIA-NeMo/Megatron-Bridge docs/performance-summary-archive.md", "model_name": "LLAMA3.1_405B",
    "params_billion": "405", "layers": "126", "hidden": "16384", "ffn_hidden": "53248", "heads": "128",
    "kv_heads": "8", "vocab": "128256", "seq_len": "8192", "gpu_type": "H100-SXM5-80GB", "num_gpus": "1024",
    "gpus_per_node": "8", "interconnect": "DGX-H100", "tp": "8", "pp": "8", "vp": "8", "cp": "2", "dp": "8",
    "ep": "1", "micro_batch": "1", "global_batch": "512", "precision": "fp8-cs",
    "measured_tokens_per_sec_per_gpu": "292",
}  # fmt: skip


def test_validation_predicts_the_row_with_the_split_and_says_so() -> None:
    case = row_to_case(68, ROW_405B)
    assert not hasattr(case, "reason"), case
    assert case.layout.account_embedding_loss_in_pipeline_split  # type: ignore[union-attr]
    assert any("embedding and loss counted" in a for a in case.assumptions)  # type: ignore[union-attr]
    even = row_to_case(0, {**ROW_405B, "layers": "128", "params_billion": "411"})
    assert not even.layout.account_embedding_loss_in_pipeline_split  # type: ignore[union-attr]
    skipped = row_to_case(1, {**ROW_405B, "vp": "3"})  # neither 126 nor 128 splits into 24
    assert "layers=126 split over pp*vp=24 model chunks neither" in skipped.reason  # type: ignore[union-attr]


def test_search_counts_embedding_and_loss_where_only_that_splits() -> None:
    space = SearchSpace(tp=(8,), pp=(1, 2, 4, 8, 16), vp=(1, 2, 4), cp=(1,), micro_batch=(1,))
    cand, _ = candidate_grid(space, (512,), 512.0, num_layers=126)
    chunks = cand.pp * cand.vp
    expect = (126 % chunks != 0) & (128 % chunks == 0)
    np.testing.assert_array_equal(cand.account_embedding_loss_in_pipeline_split, expect)
    plain, _ = candidate_grid(space, (512,), 512.0)
    assert not plain.account_embedding_loss_in_pipeline_split.any()
    # Llama 3.1 405B on 1,024 H100: only pp <= 2 split 126 layers evenly; the search now finds
    # deeper pipelines, and the winner's layers really are what Megatron places
    result = search_layouts(
        get_model("llama3-405b"), make_cluster("H100-SXM5-80GB", 1024), 8192, 512
    )
    best = result.best
    assert best.pp > 2 and best.account_embedding_loss_in_pipeline_split
    validate_layout(best, get_model("llama3-405b"), num_gpus=1024, seq_length=8192)


@needs_megatron
def test_cpu_training_path_builds_the_split_the_plan_asks_for() -> None:
    """executor.mcore_build turns the compiled document into megatron-core configs: the option
    reaches TransformerConfig, so each pipeline rank builds the layers `stage_layers` counts."""
    from factories import tiny_plan
    from megatron.core.transformer.transformer_block import get_num_layers_to_build

    from scaleplan.executor.mcore_build import megatron_configs, phase_document

    plan = tiny_plan(
        pp=4, num_layers=6, phases=("pretrain",), phase_layouts={"pretrain": {SPLIT: True}}
    )
    config = megatron_configs(phase_document(plan, plan.phases[0]), "cpu")["transformer"]
    assert config.account_for_embedding_in_pipeline_split
    assert config.account_for_loss_in_pipeline_split
    built = [get_num_layers_to_build(config, pp_rank=r) for r in range(4)]
    assert built == [int(stage_layers(6, 4, 1, 1, r)) for r in range(4)] == [1, 2, 2, 1]


def test_simulate_flag_turns_the_split_on(capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import run_cli

    args = [
        "simulate", "--json", "--model", "llama3-405b", "--gpu", "h100-sxm", "--tp", "8",
        "--pp", "8", "--vp", "8", "--cp", "2", "--dp", "8", "--micro-batch", "1",
        "--global-batch", "512", "--distributed-optimizer",
    ]  # fmt: skip
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "num_layers=126 is not divisible by pp*vp" in err
    code, out, err = run_cli([*args, "--embedding-loss-in-pp"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["layout"][SPLIT] is True
    by_stage = result["memory_bytes_by_stage"]
    assert by_stage["first"]["weights"] < by_stage["middle"]["weights"]

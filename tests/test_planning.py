"""The planning loop: fixed point, law allocation under caps, budgets, phases, LR and batch."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from scaleplan.planner.laws import load_law
from scaleplan.planner.laws.hyperparams import deepseek_lr_batch
from scaleplan.planner.planning import law_allocation, plan
from scaleplan.specs.budget import BudgetSpec
from scaleplan.specs.errors import SpecError
from scaleplan.specs.loader import load_spec
from scaleplan.specs.plan import PHASE_ORDER, Plan

EXAMPLES = Path(__file__).resolve().parents[1] / "specs" / "examples"


def _budget(**kw: object) -> BudgetSpec:
    base: dict[str, object] = {
        "gpu": "H100",
        "gpus": 8,
        "hours": 24,
        "data": {"seq_length": 2048, "vocab_size": 32000},
    }
    base.update(kw)
    return BudgetSpec.model_validate(base)


@pytest.fixture(scope="module")
def llama3_scale() -> tuple[Plan, float, float]:
    budget = load_spec(BudgetSpec, EXAMPLES / "h100x16384-54d-15T.yaml")
    plan(budget)  # warm the process-wide caches (catalog, topology graph) once
    wall = cpu = math.inf
    for _ in range(3):  # best of three: the test machine is shared
        start, start_cpu = time.perf_counter(), time.process_time()
        result = plan(budget)
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return result, wall, cpu


def test_llama3_scale_example_meets_the_acceptance(llama3_scale: tuple[Plan, float, float]) -> None:
    result, wall, cpu = llama3_scale
    assert 405e9 / 2 <= result.model.params_total <= 405e9 * 2
    assert result.tokens <= 15e12
    assert sum(p.tokens for p in result.phases if p.name in ("pretrain", "anneal")) <= 15e12
    assert result.search["layouts_evaluated"] > 10_000
    # the full search in under 2 s of this process's time (wall time on a machine shared with
    # other jobs is inflated by them; it is checked loosely)
    assert cpu < 2.0, f"planning took {cpu:.2f} s of CPU ({wall:.2f} s wall)"
    assert wall < 10.0


def test_fixed_point_is_recorded_and_reached(llama3_scale: tuple[Plan, float, float]) -> None:
    result, _, _ = llama3_scale
    iters = result.fixed_point["iterations"]
    assert result.fixed_point["converged"] and len(iters) >= 2
    last = iters[-1]
    assert (last["layers"], last["hidden"]) == (result.model.num_layers, result.model.hidden_size)
    # achievable FLOP/s is the chosen layout's MFU times peak, not a constant
    pre = result.phase("pretrain")
    assert result.fixed_point["achievable_flops_per_gpu"] == pytest.approx(pre.mfu * 989.4e12)


def test_wall_clock_and_phase_chain(llama3_scale: tuple[Plan, float, float]) -> None:
    result, _, _ = llama3_scale
    budget = result.budget
    assert budget is not None and budget.hours is not None
    wall = sum(p.time_s for p in result.phases) / budget.goodput
    assert wall <= budget.hours * 3600 * 1.0001
    names = [p.name for p in result.phases]
    assert names == [n for n in PHASE_ORDER if n in names]
    for prev, cur in zip(result.phases, result.phases[1:], strict=False):
        assert cur.init_from == prev.name
    post = [p for p in result.phases if p.name in ("sft", "dpo", "grpo")]
    # post-training on the 2,048-GPU slice, or a halving of it that is at most 10 % slower
    assert post and all(p.num_gpus <= 2048 and 2048 % p.num_gpus == 0 for p in post)
    lc = result.phase("long_context")
    assert lc.seq_length == 131072 and lc.rope_base and lc.rope_base > result.model.rope_base
    assert lc.layout.cp > 1  # 128K tokens need context parallelism
    for p in result.phases:
        assert p.cost_usd == pytest.approx(p.time_s * p.num_gpus * 2.49 / 3600)
        assert p.estimate is not None
        assert p.time_s == pytest.approx(p.steps * p.estimate.step_time_s)


def test_lr_is_rescaled_by_sqrt_of_the_rounded_batch(
    llama3_scale: tuple[Plan, float, float],
) -> None:
    result, _, _ = llama3_scale
    pre, ann = result.phase("pretrain"), result.phase("anneal")
    law = result.law
    batch_tokens = pre.layout.global_batch * pre.seq_length
    assert pre.schedule.peak_lr == pytest.approx(
        law["peak_lr_law"] * math.sqrt(batch_tokens / law["batch_tokens_law"])
    )
    assert pre.layout.global_batch % (pre.layout.dp * pre.layout.micro_batch) == 0
    # WSD: pretrain is warmup + stable, the anneal is the decay
    assert (
        pre.schedule.style == "wsd"
        and pre.schedule.decay_steps == 0
        and pre.schedule.warmup_steps > 0
    )
    assert ann.schedule.decay_steps == ann.steps and ann.schedule.start_lr == pre.schedule.peak_lr
    assert ann.tokens == pytest.approx(0.05 * result.tokens, rel=0.01)


def test_law_allocation_respects_cap_and_target() -> None:
    law = load_law("chinchilla")
    free = law_allocation(_budget(), law, 1e24)
    capped = law_allocation(_budget(data={"max_unique_tokens": 1e11, "max_epochs": 1.0}), law, 1e24)
    assert capped[1] == pytest.approx(1e11) and capped[0] > free[0]
    assert capped[0] * capped[1] * 6 == pytest.approx(1e24)
    fixed = law_allocation(_budget(target={"kind": "fixed-size", "params": 1e9}), law, 6e20)
    assert fixed[:2] == pytest.approx((1e9, 1e11))
    infer = law_allocation(
        _budget(target={"kind": "inference-aware", "inference_tokens": 1e13}), law, 1e22
    )
    assert infer[0] < law_allocation(_budget(), law, 1e22)[0]  # smaller model, more tokens


def test_dollars_become_hours_and_the_gpu_count_is_chosen_by_loss() -> None:
    budget = _budget(
        gpus=(8, 16),
        hours=None,
        dollars=2000.0,
        usd_per_gpu_hour=2.0,
        phases={"anneal": {"fraction": 0.1}},
    )
    result = plan(budget)
    spent = sum(p.cost_usd for p in result.phases) / budget.goodput
    assert spent <= 2000.0 * 1.0001 and spent > 0.9 * 2000.0
    assert result.cluster.num_gpus in (8, 16)
    assert any("lowest predicted loss" in n for n in result.notes)


def test_more_compute_gives_a_larger_model_and_more_tokens() -> None:
    small = plan(_budget(hours=12))
    large = plan(_budget(hours=96))
    assert large.model.params_total > small.model.params_total
    assert large.tokens > small.tokens


def test_post_training_phases_cost_what_they_do() -> None:
    budget = _budget(
        hours=48,
        phases={
            "sft": {"examples": 20000, "tokens_per_example": 1024},
            "dpo": {"pairs": 5000, "tokens_per_pair": 2048},
            "grpo": {
                "prompts": 1000,
                "group_size": 8,
                "max_response_tokens": 512,
                "prompt_tokens": 128,
            },
        },
    )
    result = plan(budget)
    dpo, grpo = result.phase("dpo"), result.phase("grpo")
    assert dpo.estimate and dpo.estimate.reference_s > 0
    assert grpo.estimate and grpo.estimate.rollout_s > 0 and grpo.estimate.reference_s > 0
    assert grpo.objective.group_size == 8 and grpo.steps == math.ceil(1000 / 64)
    sft = result.phase("sft")
    assert sft.schedule.peak_lr == pytest.approx(result.phase("pretrain").schedule.peak_lr / 10)
    assert sft.tokens >= 20000 * 1024 * 2


def test_law_inputs_are_used() -> None:
    lr, batch = deepseek_lr_batch(1e21)
    assert lr > 0 and batch > 0
    result = plan(_budget())
    assert result.law["batch_tokens_law"] > 0 and "predicted_loss" in result.law


def test_a_law_on_non_embedding_params_shapes_the_model_by_them() -> None:
    """Kaplan's preset counts N without embeddings: the planner shapes the model so that its
    non-embedding count is the law's N, and C = 6·N·D counts the same parameters."""
    assert load_law("kaplan").param_count == "non-embedding"
    result = plan(_budget(hours=48, law={"preset": "kaplan"}))
    model = result.model
    non_embedding = model.params_total - model.embedding_params
    last = result.fixed_point["iterations"][-1]
    assert last["n_model"] == non_embedding
    assert result.law["n_params"] == non_embedding
    assert result.law["param_count"] == "non-embedding"
    assert abs(math.log(non_embedding / result.law["n_law"])) < 0.25
    assert last["compute_6nd"] == pytest.approx(6.0 * non_embedding * last["tokens_time"])
    total = plan(_budget(hours=48, law={"preset": "chinchilla"}))
    assert total.fixed_point["iterations"][-1]["n_model"] == total.model.params_total


def test_fixed_size_too_large_for_the_gpus_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="no parallel layout"):
        plan(_budget(target={"kind": "fixed-size", "params": 4e11}))


def test_data_cap_too_small_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="max_unique_tokens") as info:
        plan(_budget(gpus=64, hours=200, data={"max_unique_tokens": 1e8, "seq_length": 2048}))
    assert info.value.field == "data.max_unique_tokens"


@pytest.mark.parametrize("name", ["h100x8-week", "h100x1024-30d", "h200-100k-usd", "moe"])
def test_every_example_plans_within_its_budget(name: str) -> None:
    budget = load_spec(BudgetSpec, EXAMPLES / f"{name}.yaml")
    result = plan(budget)
    wall = sum(p.time_s for p in result.phases) / budget.goodput
    if budget.hours is not None:
        assert wall <= budget.hours * 3600 * 1.0001
    if budget.dollars is not None:
        assert sum(p.cost_usd for p in result.phases) / budget.goodput <= budget.dollars * 1.0001
    assert result.tokens > 20 * 0.5 * (result.model.params_active if result.model.moe else 0)
    if budget.architecture == "moe":
        assert (
            result.model.moe is not None
            and result.model.params_total > 3 * result.model.params_active
        )
    wanted = {
        "sft": budget.phases.sft,
        "dpo": budget.phases.dpo,
        "grpo": budget.phases.grpo,
        "long_context": budget.phases.long_context,
    }
    names = {p.name for p in result.phases}
    assert {k for k, v in wanted.items() if v is not None} <= names


def test_fixed_size_with_a_non_embedding_law_records_d_on_the_laws_count() -> None:
    """C = 6·N_ne·D for a non-embedding law, so the law's D for the fixed model is the tokens
    the time allows (dividing by the total size instead would under-count them)."""
    result = plan(
        _budget(hours=48, law={"preset": "kaplan"}, target={"kind": "fixed-size", "params": 1e9})
    )
    assert abs(math.log(result.model.params_total / 1e9)) < 0.25
    last = result.fixed_point["iterations"][-1]
    assert result.law["n_law"] == pytest.approx(result.model.non_embedding_params)
    assert result.law["d_law"] == pytest.approx(last["tokens_time"], rel=1e-9)

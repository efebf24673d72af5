"""Layout search: returned layouts are valid and fit; the vectorized best equals brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaleplan.costmodels.memory import memory_breakdown
from scaleplan.costmodels.step import estimate_step
from scaleplan.planner.architecture import build_model
from scaleplan.planner.search import (
    MAX_BATCH_FACTOR,
    OPTIMIZER_MODES,
    NoLayoutFits,
    SearchSpace,
    candidate_grid,
    round_global_batch,
    search_layouts,
)
from scaleplan.specs.budget import MoEBudget
from scaleplan.specs.errors import SpecError
from scaleplan.specs.hardware import make_cluster
from scaleplan.specs.layout import LayoutSpec, validate_layout
from scaleplan.specs.model import ModelSpec, get_model


def _brute_force(
    model: ModelSpec, cluster, seq: int, target: float, space: SearchSpace
) -> tuple[float, LayoutSpec | None]:
    """Plain loop over LayoutSpec: rules, planner policies, memory, then `estimate_step`.
    Returns the best seconds per token and its layout."""
    best: tuple[float, LayoutSpec | None] = (math.inf, None)
    gpus = cluster.num_gpus
    for tp, pp, vp, cp, ep, etp, sp, opt, mb, rc in itertools.product(
        space.tp,
        space.pp,
        space.vp,
        space.cp,
        space.ep,
        space.etp,
        space.sequence_parallel,
        space.optimizer,
        space.micro_batch,
        space.recompute,
    ):
        if gpus % (tp * pp * cp) or (tp == 1 and etp == 1 and 0 in space.etp):
            continue  # (the second: the same layout as etp = tp = 1)
        dp = gpus // (tp * pp * cp)
        gb = round_global_batch(target, dp, mb, pp, vp)
        zero, dist = OPTIMIZER_MODES[opt]
        layout = LayoutSpec(
            tp=tp,
            pp=pp,
            vp=vp,
            cp=cp,
            dp=dp,
            ep=ep,
            etp=etp or None,  # 0 = same as tp
            sequence_parallel=bool(sp),
            zero_stage=zero,
            distributed_optimizer=bool(dist),
            micro_batch=mb,
            global_batch=gb,
            recompute=rc,
        )
        try:
            validate_layout(layout, model, num_gpus=gpus, seq_length=seq)
        except SpecError:
            continue
        if tp > cluster.nvlink_domain_size or gb > MAX_BATCH_FACTOR * target:
            continue
        if memory_breakdown(model, layout, seq)["total"] > cluster.gpu.hbm_bytes:
            continue
        step = estimate_step(model, cluster, layout, seq)
        sec_per_token = step.step_time_s / (gb * seq)
        if sec_per_token < best[0]:
            best = (sec_per_token, layout)
    return best


MODELS = [
    build_model(1024, 8, vocab_size=32000, seq_length=2048),
    build_model(2048, 16, vocab_size=32000, seq_length=2048),
    build_model(4096, 32, vocab_size=128256, seq_length=4096),
]


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model_i=st.integers(0, len(MODELS) - 1),
    gpus=st.sampled_from([8, 16, 32, 64]),
    target=st.sampled_from([16.0, 64.0, 256.0]),
    tp=st.sets(st.sampled_from([1, 2, 4, 8, 16]), min_size=1),
    pp=st.sets(st.sampled_from([1, 2, 4]), min_size=1),
    micro=st.sets(st.sampled_from([1, 2, 4]), min_size=1),
    rec=st.sets(st.sampled_from(["none", "selective", "full"]), min_size=1),
)
def test_vectorized_best_equals_brute_force(model_i, gpus, target, tp, pp, micro, rec) -> None:
    model = MODELS[model_i]
    seq = model.seq_length
    cluster = make_cluster("H100", gpus)
    space = SearchSpace(
        tp=tuple(sorted(tp)),
        pp=tuple(sorted(pp)),
        vp=(1, 2),
        cp=(1, 2),
        micro_batch=tuple(sorted(micro)),
        recompute=tuple(sorted(rec)),
    )
    expected, layout = _brute_force(model, cluster, seq, target, space)
    if layout is None:
        with pytest.raises(NoLayoutFits):
            search_layouts(model, cluster, seq, target, space=space)
        return
    result = search_layouts(model, cluster, seq, target, space=space)
    got = result.step["step_time_s"] / (result.best.global_batch * seq)
    assert got == pytest.approx(expected, rel=1e-9)
    # and the returned layout obeys every rule and fits by the memory model
    validate_layout(result.best, model, num_gpus=gpus, seq_length=seq)
    assert memory_breakdown(model, result.best, seq)["total"] <= cluster.gpu.hbm_bytes
    assert result.layouts_evaluated == space.size((gpus,))


def test_moe_search_folds_expert_parallelism_like_brute_force() -> None:
    """MoE: the search also tries etp = 1 with EP folded over the TP ranks (ep > dp·cp), and
    its best equals a plain loop over the same space."""
    model = build_model(
        2048, 16, vocab_size=32000, seq_length=2048,
        moe=MoEBudget(num_experts=16, top_k=2),
    )  # fmt: skip
    cluster = make_cluster("H100", 16)
    space = SearchSpace(
        tp=(1, 2, 4), pp=(1, 2), vp=(1,), cp=(1,), ep=(1, 2, 4, 8, 16), etp=(0, 1),
        micro_batch=(1, 2), recompute=("none", "full"),
    )  # fmt: skip
    expected, layout = _brute_force(model, cluster, 2048, 256.0, space)
    result = search_layouts(model, cluster, 2048, 256.0, space=space)
    got = result.step["step_time_s"] / (result.best.global_batch * 2048)
    assert got == pytest.approx(expected, rel=1e-9)
    assert result.layouts_evaluated == space.size((16,))
    # folded layouts are among the feasible ones: tp 4, etp 1, ep 16 on dp 4
    folded = LayoutSpec(tp=4, etp=1, ep=16, dp=4, sequence_parallel=True, global_batch=256)
    validate_layout(folded, model, num_gpus=16, seq_length=2048)
    assert SearchSpace.default(model, cluster, 2048).etp == (0, 1)


@settings(max_examples=8, deadline=None)
@given(
    gpus=st.sampled_from([8, 64, 512, 4096]),
    n_i=st.integers(0, 2),
    target=st.floats(min_value=32, max_value=4096),
)
def test_every_returned_layout_is_valid_and_fits(gpus: int, n_i: int, target: float) -> None:
    model = [get_model("llama3-8b"), get_model("llama3-70b"), MODELS[1]][n_i]
    cluster = make_cluster("H100", gpus)
    try:
        result = search_layouts(model, cluster, 8192, target)
    except NoLayoutFits as err:
        assert err.rejected  # a no-fit always explains itself
        return
    validate_layout(result.best, model, num_gpus=gpus, seq_length=8192)
    assert result.memory_bytes <= cluster.gpu.hbm_bytes
    assert memory_breakdown(model, result.best, 8192)["total"] == pytest.approx(result.memory_bytes)
    assert result.best.global_batch <= MAX_BATCH_FACTOR * target
    for entry in result.pareto:  # every Pareto layout fits too
        assert entry["headroom_gib"] >= 0


def test_pareto_front_is_non_dominated_and_contains_the_best() -> None:
    model = get_model("llama3-8b")
    result = search_layouts(model, make_cluster("H100", 64), 8192, 512, gpu_counts=(32, 64))
    front = result.pareto
    assert front and front[0]["tokens_per_s"] == pytest.approx(
        result.best.global_batch * 8192 / result.step["step_time_s"]
    )
    for a in front:
        for b in front:
            # headroom_gib is rounded to 0.01 GiB: b's true headroom is surely >= a's only when
            # the rounded values differ by >= 0.01 (equal rounded values can hide either order).
            dominated = (
                b["tokens_per_s"] >= a["tokens_per_s"]
                and b["usd_per_million_tokens"] <= a["usd_per_million_tokens"]
                and b["headroom_gib"] - a["headroom_gib"] >= 0.01 - 1e-9
                and a is not b
            )
            assert not dominated, (a, b)
    assert {e["num_gpus"] for e in front} <= {32, 64}


def test_rejected_families_name_nvlink_and_memory_with_numbers() -> None:
    model = get_model("llama3-70b")
    result = search_layouts(model, make_cluster("H100", 32), 8192, 256)
    reasons = {r["family"]: r for r in result.rejected}
    assert "crosses the NVLink domain of 8 GPUs" in reasons["TP=16"]["reason"]
    assert (
        sum(result.rejected_by_rule.values()) + result.layouts_feasible == result.layouts_evaluated
    )
    # replicated Adam states of 70B over TP=8 alone are 18 B x 70.6e9 / 8 = 159 GB > 80 GB:
    # the whole PP=1 family is out of memory, PP=8 is not
    space = SearchSpace(tp=(8,), pp=(1, 8), cp=(1,), optimizer=("replicated",))
    result = search_layouts(model, make_cluster("H100", 64), 8192, 256, space=space)
    oom = {r["family"]: r for r in result.rejected if r["rule"] == "out of memory"}
    assert set(oom) == {"PP=1"} and result.best.pp == 8
    assert oom["PP=1"]["closest_miss_gib"] > 70
    assert oom["PP=1"]["reason"].startswith("PP=1 out of memory by ")


def test_no_layout_fits_explains_itself() -> None:
    with pytest.raises(NoLayoutFits) as info:
        search_layouts(get_model("llama3-405b"), make_cluster("H100", 8), 8192, 64)
    assert "out of memory by" in str(info.value)


def test_round_global_batch_vectorized_matches_scalar() -> None:
    dp = np.array([1, 8, 64, 3])
    mb = np.array([1, 2, 4, 1])
    pp = np.array([1, 4, 2, 2])
    vp = np.array([1, 2, 1, 2])
    vec = round_global_batch(100.0, dp, mb, pp, vp)
    for i in range(4):
        assert vec[i] == round_global_batch(100.0, int(dp[i]), int(mb[i]), int(pp[i]), int(vp[i]))
        assert vec[i] % (dp[i] * mb[i]) == 0
    assert (vec[vp > 1] // (dp * mb)[vp > 1] % pp[vp > 1] == 0).all()


def test_candidate_grid_covers_the_space() -> None:
    space = SearchSpace(tp=(1, 2), pp=(1, 2), vp=(1,), cp=(1,), micro_batch=(1, 2))
    cand, gpus = candidate_grid(space, (8, 16), 64.0)
    assert len(cand) == space.size((8, 16)) == len(gpus)
    assert set(np.unique(cand.tp)) == {1, 2} and set(np.unique(gpus)) == {8, 16}


def test_time_tolerance_picks_the_cheapest_near_fastest() -> None:
    model = MODELS[1]
    cluster = make_cluster("H100", 64)
    fastest = search_layouts(model, cluster, 2048, 64, gpu_counts=(16, 32, 64))
    thrifty = search_layouts(model, cluster, 2048, 64, gpu_counts=(16, 32, 64), time_tolerance=0.1)

    def per_token(r) -> float:
        return r.step["step_time_s"] / (r.best.global_batch * 2048)

    assert per_token(thrifty) <= 1.1 * per_token(fastest) * (1 + 1e-9)
    assert per_token(thrifty) * thrifty.num_gpus <= per_token(fastest) * fastest.num_gpus * (
        1 + 1e-9
    )


def test_volta_plans_fp16() -> None:
    """A GPU without bf16 tensor cores (V100) is searched, costed and rated against its fp16 peak;
    a bf16 layout on it is refused with the reason."""
    cluster = make_cluster("V100", 16)
    model = get_model("llama3-8b").model_copy(update={"num_layers": 8})
    space = SearchSpace.default(model, cluster, 2048)
    assert (
        space.precision == "fp16"
        and SearchSpace.default(model, make_cluster("A100", 16), 2048).precision == "bf16"
    )
    result = search_layouts(model, cluster, 2048, 64)
    assert result.best.precision == "fp16"
    step = estimate_step(model, cluster, result.best, 2048)
    assert cluster.gpu.dense16_flops == 125e12 and 0.0 < step.mfu < 1.0
    with pytest.raises(SpecError, match="no bf16"):
        estimate_step(model, cluster, result.best.model_copy(update={"precision": "bf16"}), 2048)

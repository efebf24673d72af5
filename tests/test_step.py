"""Step-time composition: vectorized vs scalar, breakdown sums, physics directions, calibration."""

from __future__ import annotations

import numpy as np
import pytest

from scaleplan.costmodels import flops
from scaleplan.costmodels.batch import LayoutBatch
from scaleplan.costmodels.calibration import (
    MeasuredRun,
    calibrate,
    predict_step_times,
    start_points,
)
from scaleplan.costmodels.compute import layer_times, peak_flops_for
from scaleplan.costmodels.step import StepBatch, estimate_step, estimate_step_batch
from scaleplan.specs.efficiency import EfficiencyProfile
from scaleplan.specs.hardware import make_cluster
from scaleplan.specs.layout import LayoutSpec
from scaleplan.specs.model import ModelSpec, get_model

GPT = ModelSpec(
    name="gpt-3.6b", num_layers=30, hidden_size=3072, num_heads=32, ffn_hidden_size=12288,
    activation="gelu", norm="layernorm", bias=True, vocab_size=51200, seq_length=2048,
    position_embedding="learned",
)  # fmt: skip
PROFILE = EfficiencyProfile(name="test")


def _batch(**kw: object) -> LayoutBatch:
    return LayoutBatch.from_arrays(**kw)  # type: ignore[arg-type]


def test_batch_matches_scalar_and_breakdown_adds_up() -> None:
    cluster = make_cluster("A100-SXM4-80GB", 64)
    layouts = [
        LayoutSpec(tp=1, pp=1, dp=64, micro_batch=4, global_batch=512, recompute="full"),
        LayoutSpec(tp=8, pp=2, dp=4, micro_batch=2, global_batch=512, sequence_parallel=True),
        LayoutSpec(
            tp=2, pp=4, vp=3, dp=8, micro_batch=1, global_batch=256, distributed_optimizer=True
        ),
        LayoutSpec(tp=4, pp=1, cp=2, dp=8, micro_batch=1, global_batch=64, zero_stage=3),
    ]
    batch = estimate_step_batch(GPT, cluster, LayoutBatch.from_specs(layouts), 2048, PROFILE)
    assert isinstance(batch, StepBatch) and len(batch) == 4
    parts = (
        batch.compute_s
        + batch.exposed_comm_s
        + batch.bubble_s
        + batch.optimizer_s
        + batch.overhead_s
    )
    np.testing.assert_allclose(parts, batch.step_time_s, rtol=1e-9)
    comm = batch.tp_s + batch.cp_s + batch.pp_s + batch.dp_s + batch.ep_s
    np.testing.assert_allclose(comm, batch.exposed_comm_s, rtol=1e-12)
    for i, lay in enumerate(layouts):
        one = estimate_step(GPT, cluster, lay, 2048, PROFILE)
        assert one.step_time_s == pytest.approx(float(batch.step_time_s[i]), rel=1e-12)
        assert one.memory_bytes == pytest.approx(float(batch.memory_bytes[i]))
        assert {t[0] for t in one.terms} >= {"compute_s", "tp_s", "dp_s", "bubble_s"}
        assert all(t[2] and t[3] for t in one.terms)  # every term has a formula and a source


def test_mfu_and_throughput_follow_the_flop_count() -> None:
    cluster = make_cluster("H100", 16)
    lay = LayoutSpec(tp=2, pp=2, dp=4, micro_batch=1, global_batch=64, recompute="selective")
    est = estimate_step(GPT, cluster, lay, 2048, PROFILE)
    tokens = 64 * 2048
    assert est.tokens_per_s_per_gpu == pytest.approx(tokens / est.step_time_s / 16)
    mfu = flops.model_flops_per_token(GPT, 2048) * est.tokens_per_s_per_gpu / 989.4e12
    assert est.mfu == pytest.approx(mfu)
    assert est.hfu > est.mfu  # selective recompute replays the attention core
    assert est.time_to_train_s(1e9) == pytest.approx(1e9 / (est.tokens_per_s_per_gpu * 16))
    assert est.cost_usd(1e9) == pytest.approx(est.time_to_train_s(1e9) / 3600 * 16 * 2.49)


def test_compute_time_is_flops_over_peak_with_ideal_kernels() -> None:
    # With no per-call overhead, fused attention and no memory-bound terms, a layer's forward
    # time is exactly its FLOPs (flops.py, attention causal-halved) over peak x efficiency.
    ideal = EfficiencyProfile(
        gemm_max=0.5, gemm_half_flops=0.0, attention_eff=0.5, attention_score_passes=0.0,
        elementwise_bytes_per_hidden=0.0, hbm_eff=1.0,
    )  # fmt: skip
    cluster = make_cluster("H100", 8)
    one = np.array([1])
    lt = layer_times(
        GPT, cluster.gpu, ideal, 2048, one * 2, one, one, one * 2, one * 4, one * 0, one * 0
    )
    ops = flops.forward_flops_per_token(GPT, 2048)
    attn = ops["attn_scores"] + ops["attn_context"]
    per_layer = (sum(ops[k] for k in flops.LAYER_OPS) - 0.5 * attn) / GPT.num_layers
    tokens = 4 * 2048
    peak = float(peak_flops_for(cluster.gpu, np.array([0]))[0])
    assert float(lt.dense_fwd_s[0]) == pytest.approx(
        per_layer * tokens / 2 / (peak * 0.5), rel=1e-9
    )
    head = ops["lm_head"] * tokens / 2 / (peak * 0.5)
    assert float(lt.head_fwd_s[0]) >= head


def test_tp_across_nodes_is_slower_than_inside() -> None:
    cluster = make_cluster("A100-SXM4-80GB", 64, nic_gbps_per_gpu=100)
    b = estimate_step_batch(
        GPT,
        cluster,
        _batch(tp=[8, 16], dp=[8, 4], micro_batch=8, global_batch=512, recompute=2),
        2048,
        PROFILE,
    )
    assert b.tp_s[1] > 2 * b.tp_s[0]
    assert b.step_time_s[1] > b.step_time_s[0]


def test_more_microbatches_shrink_the_bubble() -> None:
    cluster = make_cluster("A100-SXM4-80GB", 64)
    b = estimate_step_batch(
        GPT,
        cluster,
        _batch(tp=4, pp=4, dp=4, micro_batch=[8, 2, 1], global_batch=512),
        2048,
        PROFILE,
    )
    frac = b.bubble_s / b.step_time_s
    assert frac[0] > frac[1] > frac[2] > 0
    inter = estimate_step_batch(
        GPT,
        cluster,
        _batch(tp=4, pp=4, vp=[1, 3], dp=4, micro_batch=2, global_batch=512),
        2048,
        PROFILE,
    )
    assert inter.bubble_s[1] < inter.bubble_s[0]


def test_memory_and_fits_come_from_the_memory_model() -> None:
    cluster = make_cluster("A100-SXM4-40GB", 8)
    b = estimate_step_batch(
        GPT, cluster, _batch(tp=[1, 8], dp=[8, 1], global_batch=64), 2048, PROFILE
    )
    assert b.memory_bytes[0] > b.memory_bytes[1]
    assert not b.fits[0] and b.fits[1]  # 3.6B with unsharded Adam does not fit in 40 GB


def test_moe_model_has_expert_parallel_comm() -> None:
    model = get_model("mixtral-8x7b")
    cluster = make_cluster("H100", 64)
    b = estimate_step_batch(
        model, cluster, _batch(tp=2, dp=32, ep=[1, 8], global_batch=256), 4096, PROFILE
    )
    assert b.ep_s[0] == 0 and b.ep_s[1] > 0


def test_calibration_recovers_a_known_profile() -> None:
    cluster = make_cluster("A100-SXM4-80GB", 64, nic_gbps_per_gpu=100)
    truth = PROFILE.model_copy(update={"gemm_max": 0.62, "network_eff": 0.55})
    layouts = [
        LayoutSpec(
            tp=tp, pp=pp, dp=64 // (tp * pp), micro_batch=mb, global_batch=512, recompute="full"
        )
        for tp, pp, mb in [(1, 1, 4), (8, 1, 4), (16, 1, 8), (4, 2, 2), (2, 4, 8), (8, 2, 1)]
    ]
    runs = [MeasuredRun(GPT, cluster, lay, 2048, 1.0) for lay in layouts]
    measured = predict_step_times(runs, truth)
    runs = [
        MeasuredRun(GPT, cluster, lay, 2048, float(t))
        for lay, t in zip(layouts, measured, strict=True)
    ]
    fitted = calibrate(runs, base=PROFILE, fit=("gemm_max", "network_eff"), prior_weight=0.0)
    assert fitted.gemm_max == pytest.approx(0.62, rel=0.02)
    assert fitted.network_eff == pytest.approx(0.55, rel=0.05)
    with pytest.raises(ValueError):
        calibrate(runs, fit=("not_a_parameter",))


def test_multi_start_calibration_finds_a_host_bound_optimum() -> None:
    # layer_host_s acts through max(host - gpu_time, 0): from the default 0.3 ms no layer is
    # host-bound, its gradient is zero, and a single local fit never moves it.
    cluster = make_cluster("A100-SXM4-80GB", 8)
    truth = PROFILE.model_copy(update={"layer_host_s": 3.0e-3})
    layouts = [
        LayoutSpec(tp=tp, dp=8 // tp, micro_batch=mb, global_batch=64) for tp, mb in
        [(8, 1), (8, 2), (4, 1), (2, 1)]
    ]  # fmt: skip
    runs = [MeasuredRun(GPT, cluster, lay, 512, 1.0) for lay in layouts]
    measured = predict_step_times(runs, truth)
    assert np.all(measured > predict_step_times(runs, PROFILE) * 1.05)  # host-bound at 3 ms
    runs = [
        MeasuredRun(GPT, cluster, lay, 512, float(t))
        for lay, t in zip(layouts, measured, strict=True)
    ]
    one = calibrate(runs, base=PROFILE, fit=("layer_host_s",), prior_weight=0.0, starts=1)
    assert one.layer_host_s == pytest.approx(PROFILE.layer_host_s)  # stuck at the start
    multi = calibrate(runs, base=PROFILE, fit=("layer_host_s",), prior_weight=0.0, starts=4)
    assert multi.layer_host_s == pytest.approx(3.0e-3, rel=0.02)
    starts = start_points(np.array([0.2, 0.7]), 5)
    assert len(starts) == 5 and np.allclose(starts[0], [0.2, 0.7])
    assert all(np.all((x >= 0) & (x <= 1)) for x in starts)
    assert np.allclose(np.vstack(starts), np.vstack(start_points(np.array([0.2, 0.7]), 5)))
    with pytest.raises(ValueError):
        start_points(np.array([0.5]), 0)


def test_speed_of_vectorized_evaluation() -> None:
    n = 20_000
    rng = np.random.default_rng(0)
    batch = _batch(
        tp=rng.choice([1, 2, 4, 8], n), pp=rng.choice([1, 2, 4], n), dp=8,
        micro_batch=rng.choice([1, 2, 4], n), global_batch=512,
    )  # fmt: skip
    import time

    cluster = make_cluster("H100", 256)
    t0 = time.perf_counter()
    out = estimate_step_batch(GPT, cluster, batch, 2048, PROFILE)
    assert len(out) == n and np.all(np.isfinite(out.step_time_s))
    assert time.perf_counter() - t0 < 5.0


def test_simulate_reports_the_step_breakdown(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from scaleplan.planner.cli import main

    args = ["simulate", "--model", "llama3-8b", "--gpu", "h100", "--gpus", "16", "--tp", "2",
            "--global-batch", "128", "--micro-batch", "1", "--tokens", "1e12"]  # fmt: skip
    main([*args, "--json"])
    step = json.loads(capsys.readouterr().out)["step"]
    parts = ("compute_s", "exposed_comm_s", "bubble_s", "optimizer_s", "overhead_s")
    assert sum(step[k] for k in parts) == pytest.approx(step["step_time_s"])
    assert step["time_to_train_s"] == pytest.approx(1e12 / (step["tokens_per_s_per_gpu"] * 16))
    assert step["cost_usd"] > 0 and 0 < step["mfu"] < 1
    assert {t["name"] for t in step["terms"]} >= {"compute_s", "tp_s", "bubble_s"}
    main([*args, "--explain"])
    out = capsys.readouterr().out
    assert (
        "Step time" in out and "formula" in out and "Narayanan" in out and "days on 16 GPUs" in out
    )


def test_expert_gradients_reduce_over_the_expert_dp_group_and_its_links() -> None:
    # 16 GPUs in 2 nodes, EP 8 inside a node: each expert's data-parallel group is 2 ranks, one
    # per node, so its gradients cross the network on one NIC (not the DP group's 8 NICs).
    from scaleplan.costmodels import comm
    from scaleplan.costmodels.memory_params import rank_params

    model = get_model("mixtral-8x7b")
    cluster = make_cluster("H100", 16)
    prof = EfficiencyProfile(name="no-overlap", dp_overlap=0.0)
    layouts = _batch(tp=1, dp=16, ep=[8, 16], global_batch=64)
    b = estimate_step_batch(model, cluster, layouts, 4096, prof)
    experts = float(rank_params(model, layouts, "first").experts[0])
    nic = cluster.nic_bytes_per_s * prof.network_eff
    expected = 2.0 * comm.reduce_scatter_s(experts * 4.0, 2, nic, prof.collective_latency_s)
    assert b.dp_s[0] - b.dp_s[1] == pytest.approx(float(expected), rel=1e-6)


def test_interleaved_p2p_beyond_the_chunks_compute_is_exposed() -> None:
    # Interleaving sends at every virtual-stage boundary (Narayanan 2021, section 2.2.2); the
    # sends between a stage's own chunks hide under compute only while they are shorter.
    cluster = make_cluster("A100-SXM4-80GB", 64, nic_gbps_per_gpu=1)  # a very slow network
    b = estimate_step_batch(
        GPT,
        cluster,
        _batch(tp=8, pp=4, vp=[1, 5], dp=2, micro_batch=1, global_batch=64),
        2048,
        PROFILE,
    )
    assert b.pp_s[1] > 2.0 * b.pp_s[0]
    fast = make_cluster("A100-SXM4-80GB", 64, nic_gbps_per_gpu=400)
    f = estimate_step_batch(
        GPT, fast, _batch(tp=8, pp=4, vp=[1, 5], dp=2, micro_batch=1, global_batch=64), 2048,
        PROFILE,
    )  # fmt: skip
    assert f.pp_s[1] == pytest.approx(float(f.pp_s[0]))  # hidden under the chunks' compute


def test_moe_forward_host_time_is_serialized_after_the_dispatch_sync() -> None:
    # The dropless all-to-all dispatcher waits for per-expert token counts on the host, so each
    # MoE layer's forward adds moe_layer_host_s even when the GPU work is long (not host-bound).
    model = get_model("mixtral-8x7b")
    cluster = make_cluster("H100", 64)
    layouts = _batch(tp=2, dp=32, ep=8, micro_batch=8, global_batch=512)
    slow = EfficiencyProfile(name="slow-host", moe_layer_host_s=5e-3)
    fast = EfficiencyProfile(name="no-host", moe_layer_host_s=0.0)
    a = estimate_step_batch(model, cluster, layouts, 4096, slow, with_memory=False)
    b = estimate_step_batch(model, cluster, layouts, 4096, fast, with_memory=False)
    m = 512 // (32 * 8)
    expected = m * model.num_moe_layers * 5e-3
    assert a.overhead_s[0] - b.overhead_s[0] == pytest.approx(expected, rel=1e-9)
    assert a.step_time_s[0] - b.step_time_s[0] == pytest.approx(expected, rel=1e-9)

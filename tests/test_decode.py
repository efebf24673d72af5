"""Rollout generation cost (costmodels/decode.py): memory-bound decode, KV cache, MoE reads."""

from __future__ import annotations

import numpy as np
import pytest

from scaleplan.costmodels.batch import LayoutBatch
from scaleplan.costmodels.decode import (
    frozen_weight_bytes,
    kv_cache_bytes_per_token,
    rollout_time,
    weight_bytes_read,
)
from scaleplan.costmodels.memory_params import params_per_rank
from scaleplan.specs.hardware import make_cluster
from scaleplan.specs.layout import LayoutSpec
from scaleplan.specs.model import get_model


def test_kv_cache_per_token_llama3_8b_is_128_kib() -> None:
    # 32 layers x 8 KV heads x 128 dims x (K and V) x 2 bytes = 131,072 bytes per token
    assert kv_cache_bytes_per_token(get_model("llama3-8b")) == 131072


def test_mla_caches_the_latent_only() -> None:
    v3 = get_model("deepseek-v3")
    assert kv_cache_bytes_per_token(v3) == 61 * (512 + 64) * 2


def test_single_sequence_decode_is_weight_bandwidth_bound() -> None:
    model = get_model("llama3-8b")
    cluster = make_cluster("H100", 8)
    est = rollout_time(model, cluster, [1], sequences=8, prompt_tokens=16, response_tokens=256)
    per_step = est.decode_s[0] / 256
    weights_s = model.params_total * 2 / (cluster.gpu.hbm_bytes_per_s * cluster.profile.hbm_eff)
    assert est.memory_bound_fraction[0] == 1.0
    assert per_step == pytest.approx(weights_s, rel=0.05)


def test_faster_hbm_decodes_faster_and_longer_responses_cost_more() -> None:
    model = get_model("llama3-8b")
    h100 = rollout_time(model, make_cluster("H100", 8), [1], 64, 256, 512)
    h200 = rollout_time(model, make_cluster("H200", 8), [1], 64, 256, 512)
    assert h200.decode_s[0] < h100.decode_s[0]
    longer = rollout_time(model, make_cluster("H100", 8), [1], 64, 256, 1024)
    assert longer.decode_s[0] > 1.9 * h100.decode_s[0]


def test_too_many_sequences_run_in_waves() -> None:
    model = get_model("llama3-70b")
    cluster = make_cluster("H100", 8)
    est = rollout_time(model, cluster, [4, 8], 4096, 1024, 4096)
    assert (est.waves > 1).all()
    assert (
        est.batch_per_replica * est.kv_bytes_per_sequence_per_gpu + est.weight_bytes_per_gpu
        <= 0.9 * cluster.gpu.hbm_bytes + 1
    ).all()
    assert not rollout_time(model, cluster, [1], 8, 16, 16).fits[0]  # 141 GB of weights


def test_moe_reads_more_experts_as_the_batch_grows() -> None:
    model = get_model("mixtral-8x7b")
    reads = weight_bytes_read(model, np.array([1.0, 4.0, 64.0]))
    assert reads[0] < reads[1] < reads[2] <= model.params_total * 2 + 1
    assert reads[0] > model.params_active * 2 * 0.99


def test_frozen_reference_is_bf16_weights_of_the_worst_stage() -> None:
    model = get_model("llama3-8b")
    lay = LayoutSpec(tp=2, pp=2, dp=2, global_batch=8)
    got = frozen_weight_bytes(model, LayoutBatch.from_specs([lay]))[0]
    worst = max(params_per_rank(model, lay, s) for s in ("first", "middle", "last"))
    assert got == pytest.approx(2 * worst)

"""Fitting the shipped profiles: per-stack pooled fits and the fallback of families without runs."""

from __future__ import annotations

import pytest

from scaleplan.planner.profile_fit import fallback_profile, pooled_priors, prior_profile
from scaleplan.planner.validation import RunCase, row_to_case
from scaleplan.planner.validation_score import predict_cases, summarize
from scaleplan.specs.efficiency import EfficiencyProfile

ROW = {
    "source": "Someone et al. 2024 'A paper' Table 2", "model_name": "GPT 3.6B",
    "params_billion": "3.6", "layers": "30", "hidden": "3072", "ffn_hidden": "12288",
    "heads": "32", "kv_heads": "32", "vocab": "51200", "seq_len": "2048", "num_gpus": "64",
    "gpus_per_node": "8", "interconnect": "8x200Gb/s HDR InfiniBand", "pp": "1",
    "micro_batch": "4", "global_batch": "512", "recompute": "full", "precision": "bf16",
}  # fmt: skip


def _case(i: int, gpu: str, tp: int, tokens_per_s: float) -> RunCase:
    row = {**ROW, "gpu_type": gpu, "tp": str(tp), "dp": str(64 // tp)}
    row["measured_tokens_per_sec_per_gpu"] = str(tokens_per_s)
    case = row_to_case(i, row)
    assert isinstance(case, RunCase), case
    return case


def test_fallback_profile_is_the_stack_pooled_fit_with_the_family_identity() -> None:
    pooled = {"default": EfficiencyProfile(name="pooled", gemm_max=0.6, attention_eff=0.3)}
    got = fallback_profile("H100-PCIe", pooled)
    prior = prior_profile("H100-PCIe")
    assert (got.name, got.gpus, got.stack) == (prior.name, prior.gpus, prior.stack)
    assert (got.gemm_max, got.attention_eff) == (0.6, 0.3)
    # a stack without a pooled fit keeps its documented priors
    assert fallback_profile("A100/megatron-legacy", pooled) == prior_profile("A100/megatron-legacy")


def test_pooled_priors_fit_a_stack_across_families_only() -> None:
    a100 = [_case(0, "A100-SXM4-80GB", 1, 2500.0), _case(1, "A100-SXM4-80GB", 2, 2300.0)]
    h100 = [_case(2, "H100-SXM5-80GB", 1, 6000.0), _case(3, "H100-SXM5-80GB", 2, 5600.0)]
    assert pooled_priors(a100, max_nfev=5) == {}  # one family: nothing to pool
    pooled = pooled_priors(a100 + h100, max_nfev=20)
    assert set(pooled) == {"default"}
    cases = a100 + h100
    names = {c.cluster.profile.name for c in cases}
    before = summarize(predict_cases(cases, {n: prior_profile(n) for n in names})).mape_pct
    after = summarize(predict_cases(cases, {n: fallback_profile(n, pooled) for n in names}))
    assert after.mape_pct < before


def test_hopper_pytorch_profile_is_derived_from_the_ampere_fit() -> None:
    """H100/pytorch has no dev-file runs: it is the A100 fit (llm-foundry, torchtitan) moved to Hopper (GEMM
    half-efficiency size x peak ratio, attention x FlashAttention-2's utilisation ratio), and
    the shipped file holds exactly that derivation."""
    from scaleplan.planner.profile_fit import DERIVED, derived_profile
    from scaleplan.specs.efficiency import FLASH_ATTENTION_2_UTIL, shipped_profiles

    shipped = shipped_profiles()
    a100 = shipped["A100"]
    derived = derived_profile("H100/pytorch", a100)
    assert DERIVED["H100/pytorch"][0] == "A100"
    assert derived.stack == "pytorch" and "H100-SXM5-80GB" in derived.gpus
    ratio = FLASH_ATTENTION_2_UTIL["H100"] / FLASH_ATTENTION_2_UTIL["A100"]
    assert derived.attention_eff == a100.attention_eff * ratio
    assert derived.gemm_half_flops == a100.gemm_half_flops * 989.4 / 312.0
    assert derived.gemm_max == a100.gemm_max and derived.network_eff == a100.network_eff
    assert derived.tp_overlap == 0.0 < a100.tp_overlap  # DTensor TP runs in line (no async TP)
    assert "derived from A100" in derived.fitted_on
    h100 = shipped["H100/pytorch"]
    # the shipped file was derived from the unrounded fit, then rounded to 4 figures
    assert h100.attention_eff == pytest.approx(derived.attention_eff, rel=1e-3)
    assert h100.gemm_half_flops == pytest.approx(derived.gemm_half_flops, rel=1e-3)


def test_a_stack_without_its_own_pool_keeps_its_priors() -> None:
    """H100/pytorch falling back to the default stack's pooled fit keeps the pytorch priors
    (TP collectives in line) instead of taking the default stack's overlap."""
    from scaleplan.planner.profile_fit import STACK_PRIORS
    from scaleplan.specs.efficiency import shipped_profiles

    pooled = {"default": shipped_profiles()["H100"]}
    prof = fallback_profile("H100/pytorch", pooled)
    assert prof.stack == "pytorch" and prof.tp_overlap == STACK_PRIORS["pytorch"]["tp_overlap"]
    assert prof.gemm_max == pooled["default"].gemm_max

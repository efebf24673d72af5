"""Hardware efficiency profiles: the achieved fraction of peak, as parameters of the hardware.

The curves' shapes live in `scaleplan.costmodels.compute` and `scaleplan.costmodels.comm`; their
parameters live here, per GPU type and software stack, so a user's own measurements give a user's
own profile (`scaleplan.costmodels.calibration`). Defaults ship in `catalog/profiles.yaml`, fitted
on the published-runs set (`scaleplan validate` shows how well).
"""

from __future__ import annotations

import functools
from importlib import resources

import yaml
from pydantic import Field

from .base import Spec

# The parameters `scaleplan.costmodels.calibration.calibrate` fits by default, with their bounds.
FITTABLE_BOUNDS: dict[str, tuple[float, float]] = {
    "gemm_max": (0.30, 0.98),
    "gemm_half_flops": (0.0, 2.0e11),
    "attention_eff": (0.03, 0.95),
    "attention_score_passes": (0.0, 24.0),
    "elementwise_bytes_per_hidden": (0.0, 400.0),
    "hbm_eff": (0.30, 0.98),
    "optimizer_eff": (0.02, 0.98),
    "nvlink_eff": (0.20, 1.0),
    "network_eff": (0.10, 1.0),
    "collective_latency_s": (0.0, 2.0e-4),
    "dp_overlap": (0.0, 1.0),
    "tp_overlap": (0.0, 1.0),
    "layer_host_s": (0.0, 5.0e-3),
    "moe_layer_host_s": (0.0, 2.0e-2),
    "microbatch_overhead_s": (0.0, 0.05),
    # Per-step work outside the micro-batches and the optimizer step (grad-buffer zeroing, the
    # loss-scale and grad-norm reductions with their host syncs, timers) is milliseconds to tens
    # of milliseconds in Megatron-LM/DeepSpeed. A wider range lets a fit on long steps only use it
    # as an intercept: on vTrain alone it took 1.08 s, and predicted Korthikanti's 1.4 s steps
    # 67-85 % too slow (bench/RESULTS.md, leave-one-source-out).
    "step_overhead_s": (0.0, 0.1),
}


STACKS: tuple[str, ...] = ("default", "megatron-legacy", "pytorch")
"""Software stacks with their own profiles. `default`: current Megatron engines (Megatron-core
with Transformer Engine, NeMo, Megatron-Bridge; cuDNN/FlashAttention-3-class fused attention on
Hopper, overlapped gradient reduction). `megatron-legacy`: Megatron-LM 2021-2022 and
Megatron-DeepSpeed (fp16 mixed precision, unfused softmax attention, gradient all-reduce after
the backward pass). `pytorch`: PyTorch-native trainers (MosaicML llm-foundry/Composer,
torchtitan): eager or compiled PyTorch with FSDP and FlashAttention-2 kernels, which reach a far
smaller share of peak on Hopper than on Ampere (Shah et al. 2024, FlashAttention-3, abstract: 35 %
of H100 peak, against up to 73 % of A100 peak in Dao 2023, FlashAttention-2, abstract)."""

# Forward-pass FlashAttention-2 utilisation per GPU generation (fraction of dense bf16 peak):
# Dao 2023 (FlashAttention-2) abstract, up to 73 % on A100; Shah et al. 2024 (FlashAttention-3)
# abstract, 35 % on H100. A `pytorch`-stack profile without runs of its own is derived from a
# fitted one of another generation by the ratio (`scaleplan.planner.profile_fit`).
FLASH_ATTENTION_2_UTIL: dict[str, float] = {"A100": 0.73, "H100": 0.35}

# The parameters in the order they matter for step time across the published runs. A fit on n
# runs takes the first n // 3 that its runs can inform (`scaleplan.costmodels.calibration`).
FIT_PRIORITY: tuple[str, ...] = (
    "gemm_max",
    "attention_eff",
    "moe_layer_host_s",
    "gemm_half_flops",
    "tp_overlap",
    "network_eff",
    "elementwise_bytes_per_hidden",
    "layer_host_s",
    "optimizer_eff",
    "dp_overlap",
    "nvlink_eff",
    "microbatch_overhead_s",
    "attention_score_passes",
    "hbm_eff",
    "collective_latency_s",
    "step_overhead_s",
)


class EfficiencyProfile(Spec):
    """Achieved fractions of peak and fixed overheads of one GPU type on one software stack."""

    name: str = "default"
    gpus: tuple[str, ...] = Field(default=(), description="catalog GPU names it applies to")
    stack: str = Field(default="default", description="software stack, one of STACKS")
    # GEMM: eff(F) = gemm_max * F / (F + gemm_half_flops), F = the GEMM's FLOPs per call, and the
    # GEMM is never faster than moving its operands through HBM (roofline, Williams et al. 2009).
    gemm_max: float = Field(default=0.80, gt=0, le=1.0)
    gemm_half_flops: float = Field(default=2.0e9, ge=0)
    # Core attention (QK^T, softmax, AV) FLOPs run at this fraction of peak (FlashAttention-like).
    attention_eff: float = Field(default=0.55, gt=0, le=1.0)
    # Unfused attention reads and writes the (b, heads, s, s) score matrix this many times
    # (softmax, mask, dropout: Korthikanti et al. 2022, the 5as/h activation term); 0 = fused.
    attention_score_passes: float = Field(default=0.0, ge=0)
    # Memory-bound element-wise ops (norms, residual adds, activations, dropout) per layer and
    # token move this many bytes per hidden unit in the forward pass.
    elementwise_bytes_per_hidden: float = Field(default=40.0, ge=0)
    # Memory-bound ops (element-wise, optimizer step) reach this fraction of HBM bandwidth.
    hbm_eff: float = Field(default=0.70, gt=0, le=1.0)
    # The optimizer step (Adam over fp32 master weights, gradient norm, clipping, fp16 loss-scale
    # checks) reaches this fraction of HBM bandwidth; unfused multi-tensor kernels reach less.
    optimizer_eff: float = Field(default=0.5, gt=0, le=1.0)
    # Collectives reach these fractions of link bandwidth, plus a latency per ring step.
    nvlink_eff: float = Field(default=0.75, gt=0, le=1.0)
    network_eff: float = Field(default=0.80, gt=0, le=1.0)
    collective_latency_s: float = Field(default=20e-6, ge=0)
    # Fraction of DP gradient communication hidden behind the backward pass when overlapped.
    dp_overlap: float = Field(default=0.8, ge=0, le=1.0)
    # Fraction of TP communication hidden behind GEMMs (Megatron-core --tp-comm-overlap).
    tp_overlap: float = Field(default=0.0, ge=0, le=1.0)
    # Host (Python + kernel launch) time of one layer's forward; backward launches twice as many
    # kernels. A layer pass whose GPU work is shorter waits for the host (host-bound).
    layer_host_s: float = Field(default=0.3e-3, ge=0)
    # Host time of an MoE layer's forward after its dispatcher's device-to-host sync (the
    # dropless all-to-all needs the per-expert token counts on the host): the launches of the
    # permutation, dispatch/combine and per-expert GEMMs run while the GPU idles (serialized);
    # in the backward they count towards the host-bound rule with layer_host_s.
    moe_layer_host_s: float = Field(default=1.0e-3, ge=0)
    # Fixed per-micro-batch overhead (kernel launches, framework), seconds.
    microbatch_overhead_s: float = Field(default=0.0, ge=0)
    # Fixed per-step overhead (data loading, logging, launches of the optimizer), seconds.
    step_overhead_s: float = Field(default=0.0, ge=0)
    # Where the defaults came from (a fit's data set and residual), for `--explain`.
    fitted_on: str = ""


@functools.cache
def _profiles() -> dict[str, EfficiencyProfile]:
    path = resources.files("scaleplan.specs").joinpath("catalog/profiles.yaml")
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    return {
        name: EfficiencyProfile.model_validate({"name": name, **values})
        for name, values in data.items()
    }


def shipped_profiles() -> dict[str, EfficiencyProfile]:
    """Every profile of the shipped catalog, by name (a GPU family, `/stack` for other stacks)."""
    return dict(_profiles())


def profile_name_for(gpu_name: str, stack: str = "default") -> str:
    """Name of the shipped profile a GPU and stack use (the key of `shipped_profiles`): the GPU's
    profile for that stack, else its default-stack one, else any that lists it (V100: legacy)."""
    profiles = _profiles()
    for want in (stack, "default", None):  # None: a GPU only one stack runs on (V100: legacy)
        for name, prof in profiles.items():
            if gpu_name in prof.gpus and want in (prof.stack, None):
                return name
    return "default"


def default_profile_for(gpu_name: str, stack: str = "default") -> EfficiencyProfile:
    """The shipped profile for a catalog GPU and software stack; the GPU's default-stack profile
    when its stack has none; else the profile named `default`."""
    return _profiles().get(profile_name_for(gpu_name, stack)) or EfficiencyProfile()

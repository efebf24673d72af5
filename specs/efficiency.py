"""Hardware efficiency profiles: the achieved fraction of peak, as parameters of the hardware.

The curves' shapes live in `scaleplan.costmodels.compute`; their parameters live here, per GPU
type and software stack, so a user's own measurements give a user's own profile
(`scaleplan.costmodels.calibration`). Defaults ship in `catalog/profiles.yaml`, fitted on the
published-runs set.
"""

from __future__ import annotations

import functools
from importlib import resources

import yaml
from pydantic import Field

from .base import Spec


class EfficiencyProfile(Spec):
    name: str = "default"
    # GEMM: eff = gemm_max * size / (size + gemm_half_size), size = the GEMM's FLOPs per call.
    gemm_max: float = Field(default=0.80, gt=0, le=1.0)
    gemm_half_flops: float = Field(default=2.0e9, ge=0)
    # Fused attention kernels (FlashAttention) reach their own fraction of peak.
    attention_eff: float = Field(default=0.55, gt=0, le=1.0)
    # Memory-bound ops (norms, activations, optimizer) reach this fraction of HBM bandwidth.
    hbm_eff: float = Field(default=0.70, gt=0, le=1.0)
    # Collectives reach these fractions of link bandwidth, plus a fixed latency per call.
    nvlink_eff: float = Field(default=0.75, gt=0, le=1.0)
    network_eff: float = Field(default=0.80, gt=0, le=1.0)
    collective_latency_s: float = Field(default=20e-6, ge=0)
    # Fraction of DP gradient communication hidden behind the backward pass when overlapped.
    dp_overlap: float = Field(default=0.8, ge=0, le=1.0)
    # Fixed per-micro-batch overhead (kernel launches, framework), seconds.
    microbatch_overhead_s: float = Field(default=0.0, ge=0)


@functools.cache
def _profiles() -> dict[str, EfficiencyProfile]:
    path = resources.files("scaleplan.specs").joinpath("catalog/profiles.yaml")
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    return {name: EfficiencyProfile.model_validate({"name": name, **values})
            for name, values in data.items()}


def default_profile_for(gpu_name: str) -> EfficiencyProfile:
    """The shipped profile for a catalog GPU, else the profile named `default`."""
    profiles = _profiles()
    return profiles.get(gpu_name) or profiles.get("default") or EfficiencyProfile()

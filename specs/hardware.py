"""Hardware vocabulary: GPUs (from the shipped catalog), efficiency profiles, clusters."""

from __future__ import annotations

import functools
import math
import os
import re
from importlib import resources
from typing import Literal

import yaml
from pydantic import Field, model_validator

from .base import Spec
from .efficiency import EfficiencyProfile, default_profile_for
from .errors import SpecError

Precision = Literal["tf32", "bf16", "fp16", "fp8"]


class PeakTflops(Spec):
    """Dense (no sparsity) peak tensor throughput per GPU, TFLOP/s. `None`: not supported."""

    tf32: float | None = Field(default=None, gt=0)
    bf16: float | None = Field(default=None, gt=0)  # None on Volta (V100): fp16 only
    fp16: float = Field(gt=0)
    fp8: float | None = Field(default=None, gt=0)


class GPUSpec(Spec):
    name: str
    aliases: tuple[str, ...] = ()
    peak_tflops: PeakTflops
    hbm_gb: float = Field(gt=0, description="HBM capacity, 1e9 bytes")
    hbm_gbps: float = Field(gt=0, description="HBM bandwidth, GB/s")
    nvlink_gbps: float = Field(gt=0, description="per-GPU NVLink/xGMI bandwidth, both directions")
    nvlink_domain: int = Field(gt=0, description="GPUs reachable over NVLink/xGMI")
    gpus_per_node: int = Field(default=8, gt=0)
    interconnect: Literal["nvlink", "xgmi"] = "nvlink"
    nic_gbps_per_gpu: float = Field(gt=0, description="network bandwidth per GPU, Gbit/s")
    tdp_w: float = Field(gt=0)
    usd_per_gpu_hour: float = Field(gt=0)

    @property
    def hbm_bytes(self) -> float:
        return self.hbm_gb * 1e9

    @property
    def hbm_bytes_per_s(self) -> float:
        return self.hbm_gbps * 1e9

    @property
    def nvlink_bytes_per_s_per_direction(self) -> float:
        return self.nvlink_gbps * 1e9 / 2

    @property
    def nic_bytes_per_s(self) -> float:
        return self.nic_gbps_per_gpu * 1e9 / 8

    @property
    def half_precision(self) -> str:
        """The 16-bit format its tensor cores run: bf16, or fp16 where there is no bf16 (V100)."""
        return "bf16" if self.peak_tflops.bf16 else "fp16"

    @property
    def dense16_flops(self) -> float:
        """Dense 16-bit tensor peak, FLOP/s: the denominator of MFU and HFU (bf16; fp16 on V100)."""
        return self.peak_flops(self.half_precision)

    def peak_flops(self, precision: str) -> float:
        """Dense peak FLOP/s for a compute precision (`bf16`, `fp8`, ...)."""
        value = getattr(self.peak_tflops, precision, None)
        if value is None:
            raise SpecError(f"{self.name} has no {precision} tensor cores", field="precision")
        return value * 1e12


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


# Words that vendors' tools put around a GPU's name (nvidia-smi's "NVIDIA H100 80GB HBM3",
# rocm-smi's "AMD Instinct MI300X") and that no catalog name needs to tell GPUs apart.
_DECORATION = re.compile(
    r"\b(nvidia|amd|tesla|instinct|tensor core|gpu|accelerator|hbm\d?e?|gddr\d?x?)\b", re.I
)


def _undecorated(name: str) -> str:
    return _normalise(_DECORATION.sub(" ", name))


_FAMILY = re.compile(
    r"gb300|gb200|gh200|b300|b200|h200|h800|h100|a800|a100|v100|mi325x|mi300x|mi250x"
)


def _family(name: str) -> str | None:
    """'a100', 'gb200', ... of a GPU name, or None."""
    found = _FAMILY.search(name.lower().replace(" ", "").replace("-", ""))
    return found.group(0) if found else None


def _form_factor(name: str) -> str:
    """'pcie', 'nvl' (the NVL PCIe cards, not an NVL72 rack) or 'sxm'."""
    t = name.lower()
    return "pcie" if "pcie" in t else "nvl" if re.search(r"nvl(?!\d)", t) else "sxm"


def _by_parts(name: str) -> str | None:
    """A catalog GPU from a name's parts in any order ('A100 80GB SXM', 'V100 32GB SXM2'): its
    family, memory (GB, when given) and form factor (PCIe / NVL / SXM, when given), if exactly
    one entry has them all. No guess across form factors: 'H200 NVL' finds nothing."""
    family = _family(name)
    if family is None:
        return None
    mem = re.search(r"(\d+)\s*g(?:i?b)?\b", name.lower().replace(family, " "))
    form = _form_factor(name)
    out = [
        gpu.name
        for gpu in gpu_catalog().values()
        if _family(gpu.name) == family
        and _form_factor(gpu.name) == form
        and not (mem and abs(gpu.hbm_gb - float(mem.group(1))) > 0.1 * gpu.hbm_gb)
    ]
    if len(out) > 1 and not mem:  # 'A100 SXM': the larger part, as the bare family name does
        out = [max(out, key=lambda n: gpu_catalog()[n].hbm_gb)]
    return out[0] if len(out) == 1 else None


# A YAML file of the user's own GPUs, `gpus:` and a list of entries in the shipped catalog's schema
# (specs/catalog/gpus.yaml), that extends the catalog for every command: GPUs it does not ship.
USER_GPUS_ENV = "SCALEPLAN_GPUS"


@functools.cache
def _shipped_catalog() -> dict[str, GPUSpec]:
    text = resources.files("scaleplan.specs").joinpath("catalog/gpus.yaml").read_text()
    return {entry["name"]: GPUSpec.model_validate(entry) for entry in yaml.safe_load(text)}


def _user_gpus(path: str, taken: dict[str, str]) -> dict[str, GPUSpec]:
    """The entries of the user's GPU file; one SpecError naming the file, the entry and the
    field for a malformed one, or for a name or alias the catalog already has."""
    from pydantic import ValidationError

    from .loader import read_document, spec_error_from_validation

    source = f"{path} ({USER_GPUS_ENV})"
    try:
        data = read_document(path)
    except SpecError as err:
        raise SpecError(err.reason, err.field, source) from None
    data = data.get("gpus") if isinstance(data, dict) else None
    if not isinstance(data, list) or not data:
        raise SpecError(
            "expected a list of GPU entries in the shipped catalog's schema (name, "
            "peak_tflops, hbm_gb, hbm_gbps, nvlink_gbps, nvlink_domain, nic_gbps_per_gpu, tdp_w, "
            "usd_per_gpu_hour)",
            field="gpus",
            source=source,
        )
    out: dict[str, GPUSpec] = {}
    for i, entry in enumerate(data):
        try:
            gpu = GPUSpec.model_validate(entry)
        except ValidationError as err:
            raise spec_error_from_validation(err, f"gpus[{i}]", source) from None
        for alias in (gpu.name, *gpu.aliases):
            for key in {_normalise(alias), _undecorated(alias)}:
                owner = taken.setdefault(key, gpu.name)
                if owner != gpu.name or (alias == gpu.name and gpu.name in out):  # or repeated
                    raise SpecError(
                        f"{alias!r} already names the catalog's {owner}; give the GPU another name",
                        field=f"gpus[{i}].name",
                        source=source,
                    )
        out[gpu.name] = gpu
    return out


@functools.cache
def _catalog(user_path: str | None) -> tuple[dict[str, GPUSpec], dict[str, str]]:
    catalog = dict(_shipped_catalog())
    index: dict[str, str] = {}
    for gpu in catalog.values():
        for alias in (gpu.name, *gpu.aliases):
            index.setdefault(_normalise(alias), gpu.name)
            index.setdefault(_undecorated(alias), gpu.name)
    if user_path:
        catalog.update(_user_gpus(user_path, index))
    return catalog, index


def gpu_catalog() -> dict[str, GPUSpec]:
    """Every GPU of the shipped catalog, plus the user's own (`SCALEPLAN_GPUS`), by name."""
    return _catalog(os.environ.get(USER_GPUS_ENV) or None)[0]


def _alias_index() -> dict[str, str]:
    return _catalog(os.environ.get(USER_GPUS_ENV) or None)[1]


def get_gpu(name: str, field: str = "gpu") -> GPUSpec:
    """Look a GPU up by name or alias (`H100-SXM5-80GB`, `h100`, `A100 80GB` ...)."""
    index = _alias_index()
    canonical = (
        index.get(_normalise(str(name)))
        or index.get(_undecorated(str(name)))
        or _by_parts(str(name))
    )
    if canonical is None:
        family = _family(str(name))
        same = sorted(n for n in gpu_catalog() if family and _family(n) == family)
        if same:
            raise SpecError(
                f"GPU '{name}' is not one catalog entry; the catalog's {family.upper()} parts are "
                f"{', '.join(same)}: name one of them (form factor SXM/PCIe/NVL and memory tell "
                "them apart)",
                field=field,
            )
        known = ", ".join(sorted(gpu_catalog()))
        raise SpecError(f"unknown GPU '{name}'; known GPUs: {known}", field=field)
    return gpu_catalog()[canonical]


class ClusterSpec(Spec):
    """The machines: how many GPUs, of which kind, and how they are wired."""

    gpu: GPUSpec
    # 2^20: beyond every cluster built so far (~100k-GPU sites); the topology holds a group per rank
    num_gpus: int = Field(gt=0, le=1_048_576)
    gpus_per_node: int = Field(default=8, gt=0)
    nvlink_domain: int | None = Field(
        default=None, gt=0, description="GPUs per NVLink domain; default: the GPU's own"
    )
    inter_node_topology: Literal["rail-optimized", "fat-tree"] = "rail-optimized"
    oversubscription: float = Field(default=1.0, ge=1.0, description="spine oversubscription")
    nic_gbps_per_gpu: float | None = Field(default=None, gt=0)
    usd_per_gpu_hour: float | None = Field(default=None, gt=0)
    efficiency: EfficiencyProfile | None = None

    @model_validator(mode="after")
    def _check(self) -> ClusterSpec:
        if self.num_gpus > self.gpus_per_node and self.num_gpus % self.gpus_per_node:
            raise ValueError(
                f"num_gpus={self.num_gpus} is not a whole number of nodes of "
                f"{self.gpus_per_node} GPUs"
            )
        return self

    @property
    def num_nodes(self) -> int:
        return max(1, math.ceil(self.num_gpus / self.gpus_per_node))

    @property
    def nvlink_domain_size(self) -> int:
        domain = self.nvlink_domain or self.gpu.nvlink_domain
        return min(domain, self.num_gpus)

    @property
    def nic_bytes_per_s(self) -> float:
        gbps = self.nic_gbps_per_gpu or self.gpu.nic_gbps_per_gpu
        return gbps * 1e9 / 8

    @property
    def price_usd_per_gpu_hour(self) -> float:
        return self.usd_per_gpu_hour or self.gpu.usd_per_gpu_hour

    @property
    def profile(self) -> EfficiencyProfile:
        return self.efficiency or default_profile_for(self.gpu.name)


def make_cluster(gpu: str | GPUSpec, num_gpus: int, **overrides: object) -> ClusterSpec:
    """A cluster of `num_gpus` catalog GPUs with the GPU's default node size and fabric."""
    spec = gpu if isinstance(gpu, GPUSpec) else get_gpu(gpu)
    fields: dict[str, object] = {"gpu": spec, "num_gpus": num_gpus}
    fields["gpus_per_node"] = min(spec.gpus_per_node, num_gpus) if num_gpus > 0 else 1
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return ClusterSpec.model_validate(fields)

"""Reading a published-runs CSV: its rows and numeric cells, parsers for the free-text cells (recompute, sharding, precision,
interconnect) and each source's FLOP convention, as shared/data/README.md documents them."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

from scaleplan.costmodels import flops
from scaleplan.costmodels.stage_layers import split_code
from scaleplan.specs.efficiency import STACKS
from scaleplan.specs.errors import SpecError
from scaleplan.specs.files import read_csv
from scaleplan.specs.layout import LayoutSpec
from scaleplan.specs.model import ModelSpec

# Sources whose TFLOP/s count recomputation (shared/data/README.md, "What TFLOP/s and MFU mean"):
# Narayanan 2021 counts four passes (eq. 3) whatever the run did; BLOOM's Megatron-DeepSpeed log
# and MT-NLG count hardware FLOPs, recompute included. Everyone else reports model FLOPs.
_NARAYANAN = re.compile(r"narayanan", re.I)
_HARDWARE = re.compile(r"bigscience|bloom|smith et al|turing nlg|zhang et al\. 2022", re.I)


def flop_convention(source: str) -> str:
    """'narayanan' (4-pass eq. 3), 'hardware' (recompute included) or 'model' (no recompute)."""
    if _NARAYANAN.search(source):
        return "narayanan"
    if _HARDWARE.search(source):
        return "hardware"
    return "model"


def flops_per_token_for(convention: str, model: ModelSpec, layout: LayoutSpec, seq: int) -> float:
    """FLOPs per token under a source's convention, from the project's one FLOP count."""
    if convention == "narayanan":
        return float(flops.hardware_flops_per_token(model, seq, "full"))
    if convention == "hardware":
        frac = flops.recompute_layers_fraction(
            model.num_layers, layout.pp, layout.recompute_layers, split_code(layout), layout.vp
        )
        return float(flops.hardware_flops_per_token(model, seq, layout.recompute, frac))
    return float(flops.model_flops_per_token(model, seq))


def source_label(source: str) -> str:
    """A short label for a source citation: 'Narayanan et al. 2021', 'NeMo performance_summary'."""
    text = source.strip()
    paper = re.match(r"([A-Z][\w-]+ et al\.? \d{4})", text)
    if paper:
        return paper.group(1)
    repo = re.match(r"([\w.-]+)/([\w.-]+)\s+([\w./-]+)", text)
    if repo:
        stem = repo.group(3).rsplit("/", 1)[-1].rsplit(".", 1)[0]
        return f"{repo.group(2)} {stem}"
    return text.split(" (")[0][:40] or "unknown"


_NO = ("none", "no", "off", "false", "0", "disabled", "n/a", "-", "—", "–", "n")
_YES = ("yes", "true", "on", "1", "enabled", "y", "✓")
# what a table prints in a number column it does not state
_UNSTATED = ("n/a", "na", "-", "—", "–", "?", "unknown", "not stated", "none", "tbd")


def parse_yes_no(text: str, field: str) -> bool | None:
    """A yes/no cell ('yes (SP)', 'enabled', 'n/a' ...): True, False, or None when empty."""
    t = text.strip().lower()
    if not t:
        return None
    head = re.split(r"[\s(,;]", t, maxsplit=1)[0]
    if head in _YES:
        return True
    if head in _NO or t in _UNSTATED:
        return False
    raise SpecError(f"cannot read {field}={text.strip()!r} (yes/no)", field=field)


def parse_recompute(text: str) -> tuple[str, float]:
    """(mode, fraction of layers) from cells like 'full', 'selective (per-op)', 'none', 'yes',
    'full (4 of 12 layers)'. A cell it cannot read raises `SpecError` (the row is listed as not
    predicted) rather than being taken as 'none'.

    torchtitan's 'selective (per-layer)' checkpoints every second layer in full (its default
    `selective_ac_option = 2`), i.e. full recompute of half the layers.
    """
    t = text.strip().lower()
    if (
        not t
        or t.split(" (")[0] in _NO
        or t.startswith("none")
        or re.match(r"(no|without|disabled)\b", t)  # 'no activation checkpointing'
    ):
        return "none", 1.0
    if "per-layer" in t:
        return "full", 0.5
    # 'selective', torchtitan's 'per-op SAC' (selective activation checkpointing), 'op-level'
    if "selective" in t or re.search(r"\bsac\b|per-op|op-level", t):
        return "selective", 1.0
    if m := re.search(r"(\d+)\s*(?:of|/)\s*(\d+)", t):
        done, total = int(m.group(1)), int(m.group(2))
        if 0 < done <= total:
            return "full", done / total
    if (
        t.startswith(("full", "partial"))
        or "checkpoint" in t
        or re.search(r"\bac\b|recompute|remat", t)
        or t.split(" (")[0] in _YES
    ):
        return "full", 1.0
    raise SpecError(
        f"cannot read recompute={text.strip()!r} (none, selective, full, 'full (K of L layers)')",
        field="recompute",
    )


def parse_sharding(text: str) -> tuple[int, bool]:
    """(zero_stage, distributed_optimizer) from cells like 'FSDP FULL_SHARD', 'ZeRO-1', 'ZeRO
    stage 2', 'SHARD_GRAD_OP', 'HYBRID_SHARD' (sharded within a group: ZeRO-3 there)."""
    t = text.strip().lower()
    if not t:
        return 0, False
    head = t.split("(")[0]
    stage = re.search(r"zero[-_ ]?(?:stage[-_ ]?)?([0-3])\b|\bstage[-_ ]?([0-3])\b", t)
    if stage:
        n = int(stage.group(1) or stage.group(2))
        return (0, True) if n == 1 else (n, False)
    # SHARD_GRAD_OP, or FSDP that keeps the gathered weights for the step (no reshard after the
    # forward: reshard_after_forward=False), shards gradients and optimizer states only
    if re.search(r"shard_grad_op|grad[_ ]op|no reshard|reshard_after_forward\s*=\s*false", t):
        return 2, False
    if "no_shard" in t or "fsdp=0" in head:
        return (0, True) if re.search(r"distributed optimizer|dist-opt", t) else (0, False)
    if re.search(
        r"zero-?3|full[_ ]shard|hybrid[_ ]shard|\bhsdp\b|megatron-fsdp|fsdp2|^fsdp|fully sharded", t
    ):
        return 3, False
    if re.search(r"distributed optimizer|distributed_fused_adam|dist-opt", t):
        return 0, True
    if (
        t.split(" (")[0] in _NO
        or t in _UNSTATED
        or re.search(
            r"\bddp\b|distributeddataparallel|data[- _]parallel|\bdp\b|no[- ]shard|replicated|"
            r"zero[-_ ]?0\b|\bnone\b",
            t,
        )
    ):
        return 0, False
    raise SpecError(
        f"cannot read zero_stage_or_fsdp={text.strip()!r} (ZeRO-1/2/3, FSDP FULL_SHARD / "
        "SHARD_GRAD_OP / HYBRID_SHARD, distributed optimizer, DDP, none)",
        field="zero_stage_or_fsdp",
    )


_LEGACY = re.compile(r"deepspeed", re.I)
# Megatron-LM itself (not Megatron-core with Transformer Engine, NeMo or Megatron-Bridge) ...
_MEGATRON_LM = re.compile(r"megatron[- ]?lm", re.I)
_MODERN_MEGATRON = re.compile(
    r"megatron[- ]?core|\bmcore\b|transformer[- ]engine|\bTE\b|\bnemo\b|megatron[- ]bridge", re.I
)
# ... on GPUs before Hopper: no TP communication overlap there (TE's userbuffers overlap came in
# 2023 and hung on A100, TransformerEngine PR #1311; MegaScale, Jiang et al. 2024 sec. 3.2, adds
# it to its Megatron-LM baseline), so these runs are the legacy stack's regime.
_PRE_HOPPER = re.compile(r"a100|a800|a30\b|a40\b|v100|ampere|volta", re.I)
_PYTORCH = re.compile(
    r"llm-foundry|\bcomposer\b|mosaicml|torchtitan|pytorch[ -]fsdp|\bfsdp2\b", re.I
)


def parse_stack(row: dict[str, str] | object) -> str:
    """The row's software stack (`scaleplan.specs.efficiency.STACKS`).

    An explicit `software_stack` column wins. Otherwise: runs on Megatron-DeepSpeed, in fp16
    mixed precision (what Megatron-LM used before bf16 and fused attention, 2021-2022), or of
    Megatron-LM (not Megatron-core/Transformer Engine/NeMo) on a GPU before Hopper ran the
    `megatron-legacy` stack; runs of the PyTorch-native trainers (MosaicML llm-foundry/Composer,
    torchtitan) the `pytorch` one; everything else the `default` one.
    """
    get = row.get  # type: ignore[attr-defined]
    explicit = (get("software_stack") or "").strip()
    if explicit.lower() in STACKS:
        return explicit.lower()
    # a named trainer ('torchtitan', 'Megatron-DeepSpeed') is read like the other cells
    text = " ".join(
        get(k) or "" for k in ("software_stack", "source", "notes", "zero_stage_or_fsdp")
    )
    if _LEGACY.search(text) or (get("precision") or "").strip().lower().startswith("fp16"):
        return "megatron-legacy"
    if (
        _MEGATRON_LM.search(text)
        and not _MODERN_MEGATRON.search(text)
        and _PRE_HOPPER.search(get("gpu_type") or "")
    ):
        return "megatron-legacy"
    if _PYTORCH.search(text):
        return "pytorch"
    return "default"


def parse_precision(text: str) -> str:
    """'fp8', 'fp16' or 'bf16' from cells like 'fp8-cs', 'MXFP8', 'mixed fp16', 'AMP bf16'; the
    compute format wins over the master weights' (an 'fp8, bf16 params' run computes in fp8)."""
    t = text.strip().lower()
    if re.search(r"fp8|float8|\bf8\b|e4m3", t):  # 'MXFP8', torchtitan/torchao's 'Float8'
        return "fp8"
    if "bf16" in t or "bfloat16" in t:
        return "bf16"
    if re.search(r"fp16|float16|\bhalf\b", t):
        return "fp16"
    if not t:
        return "bf16"
    if "fp4" in t:
        raise SpecError(
            f"precision={text.strip()!r}: fp4 compute is not modelled", field="precision"
        )
    raise SpecError(f"cannot read precision={text.strip()!r} (bf16, fp16, fp8)", field="precision")


def parse_nic_gbps_per_gpu(text: str, gpus_per_node: int) -> float | None:
    """Network Gbit/s per GPU from an interconnect description, when it states one.

    Recognises '8x200Gb/s' (per node), '1600 Gb/s node-node', '4x Omni-Path' (100 Gb/s links)
    and vTrain's 'inter_node_bandwidth=800' (Gbit/s per node). Returns None when unstated.
    """
    t = text.lower()
    gbit = r"g(?:b(?:it)?)?(?:/s|ps)?\b"  # 400G, 400 Gb/s, 400Gbps, 400 Gbit/s
    per_node: float | None = None
    if m := re.search(r"(\d+(?:\.\d+)?)\s*" + gbit + r"\s*(?:per|/)\s*gpu", t):
        return float(m.group(1))
    if m := re.search(r"(\d+)\s*x\s*(\d+)\s*" + gbit, t):
        per_node = float(m.group(1)) * float(m.group(2))
    elif m := re.search(r"(\d+(?:\.\d+)?)\s*tb(?:it)?(?:/s|ps)", t):
        per_node = 1000.0 * float(m.group(1))
    elif m := re.search(r"(\d+)\s*" + gbit + r"\s*(?:node-node|per node|/node)", t):
        per_node = float(m.group(1))
    elif m := re.search(r"\befa\D{0,8}(\d+)\s*" + gbit, t):  # AWS EFA: the instance's total
        per_node = float(m.group(1))
    elif m := re.search(r"inter_node_bandwidth\s*=\s*(\d+)", t):
        per_node = float(m.group(1))
    elif m := re.search(r"(\d+)\s*x\s*omni-?path", t):
        per_node = 100.0 * float(m.group(1))
    if per_node is None:
        return None
    return per_node / max(1, gpus_per_node)


# (metric, column), in the order a row's first measured value is taken
MEASURED = (
    ("step_time_s", "measured_step_time_s"),
    ("tokens_per_s_per_gpu", "measured_tokens_per_sec_per_gpu"),
    ("tflops_per_gpu", "measured_tflops_per_gpu"),
    ("mfu", "measured_mfu"),
    ("hfu", "measured_hfu"),
)
MEASURED_COLUMNS = tuple(column for _, column in MEASURED)


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """The rows of a published-runs CSV (a spreadsheet's byte-order mark and stray spaces in
    the header are fine). The architecture columns may be absent when rows name catalog models."""
    raw, rows = read_csv(path)
    header = [(name or "").strip() for name in raw]
    missing = sorted({"source", "gpu_type", "num_gpus"} - set(header))
    if not missing and not set(MEASURED_COLUMNS) & set(header):
        missing = [" or ".join(MEASURED_COLUMNS)]
    if missing:
        raise SpecError(
            f"not a published-runs CSV: missing columns {missing}",
            field="columns",
            source=str(path),
        )
    return [{h: (r.get(k) or "") for h, k in zip(header, raw, strict=True)} for r in rows]


def cell_float(row: Mapping[str, str], key: str) -> float | None:
    """A number cell: None when empty. Thousands separators ('1,234'), a trailing '%' (the
    schema's MFU/HFU columns are in percent) and a leading '~' are read; any other text is an
    error naming the column, so a value is never dropped silently."""
    text = (row.get(key) or "").strip()
    if not text or text.lower() in _UNSTATED:
        return None
    clean = text.lstrip("~≈").rstrip("%").strip()
    if re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?", clean):
        clean = clean.replace(",", "")
    try:
        value = float(clean)
    except ValueError:
        raise SpecError(f"cannot read {key}={text!r} as a number", field=key) from None
    if not math.isfinite(value):
        raise SpecError(f"{key}={text!r} is not a finite number", field=key)
    return value


def cell_int(row: Mapping[str, str], key: str) -> int | None:
    """A count cell (layers, GPUs, batch): None when empty; a count beyond 2^31 is refused."""
    value = cell_float(row, key)
    if value is None:
        return None
    if abs(value) >= 2**31:
        raise SpecError(f"{key}={row.get(key)!r} is out of range for a count", field=key)
    return int(round(value))


def measured_metric(row: Mapping[str, str]) -> tuple[str, float] | None:
    """The first measured value a row gives, as (metric, value). MFU and HFU are in percent; a
    value <= 1 is taken as a fraction (0.48 for 48 %)."""
    for metric, column in MEASURED:
        value = cell_float(row, column)
        if value is not None and value <= 0:
            raise SpecError(f"must be positive (got {row.get(column)!r})", field=column)
        if value is not None:
            if metric in ("mfu", "hfu") and value <= 1.0:
                value *= 100.0
            return metric, value
    return None

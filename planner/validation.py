"""Map rows of a published-runs CSV to specs, predict them, and score the predictions.

The CSV schema is `specs/data/published_runs_dev.csv`'s (see shared/data/README.md). Each row
becomes a `RunCase` (model, cluster, layout, the measured metric) or a `SkippedRow` with the reason
it cannot be predicted; no row is dropped silently. What a row leaves unstated and the mapping
assumes (vocabulary, activation, micro-batch ...) is listed in `RunCase.assumptions`.

Measured metrics, first available wins: step time, tokens/s per GPU, TFLOP/s per GPU (converted
with the source's own FLOP convention, shared/data/README.md), MFU or HFU (as a percentage of the
bf16 dense peak).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import ValidationError

from scaleplan.costmodels.stage_layers import (
    BALANCED,
    EMBEDDING_LOSS,
    EVEN,
    balanced_layout,
    chunk_layer_counts,
    embedding_loss_split,
    full_stage_layers,
)
from scaleplan.specs.efficiency import default_profile_for
from scaleplan.specs.errors import SpecError
from scaleplan.specs.hardware import ClusterSpec, get_gpu, make_cluster
from scaleplan.specs.layout import LayoutSpec, validate_layout
from scaleplan.specs.loader import spec_error_from_validation
from scaleplan.specs.model import ModelSpec

from .validation_model import model_from_row
from .validation_rows import (
    cell_float,
    cell_int,
    flop_convention,
    measured_metric,
    parse_nic_gbps_per_gpu,
    parse_precision,
    parse_recompute,
    parse_sharding,
    parse_stack,
    parse_yes_no,
    read_rows,
    source_label,
)


@dataclass(frozen=True)
class RunCase:
    index: int  # 0-based data row
    source: str
    label: str
    model: ModelSpec
    cluster: ClusterSpec
    layout: LayoutSpec
    seq_length: int
    metric: str
    measured: float
    convention: str  # FLOP convention used when metric is tflops/mfu/hfu
    stack: str = "default"  # software stack (its profile is the cluster's)
    assumptions: tuple[str, ...] = ()

    @property
    def tokens_per_step(self) -> float:
        return float(self.layout.global_batch * self.seq_length)

    def measured_step_time_s(self, flops_per_token: float) -> float:
        """The measurement as a step time (tokens/s and TFLOP/s are per GPU)."""
        return step_time_from_metric(self, self.measured, flops_per_token)


@dataclass(frozen=True)
class SkippedRow:
    index: int
    source: str
    label: str
    reason: str


def step_time_from_metric(case: RunCase, value: float, flops_per_token: float) -> float:
    gpus = case.layout.num_gpus
    if case.metric == "step_time_s":
        return value
    if case.metric == "tokens_per_s_per_gpu":
        return case.tokens_per_step / (value * gpus)
    peak = case.cluster.gpu.dense16_flops
    per_gpu_flops = value * 1e12 if case.metric == "tflops_per_gpu" else value / 100.0 * peak
    return case.tokens_per_step * flops_per_token / (per_gpu_flops * gpus)


def metric_from_step_time(case: RunCase, step_s: float, flops_per_token: float) -> float:
    """Inverse of `step_time_from_metric`: the metric a predicted step time implies."""
    gpus = case.layout.num_gpus
    if case.metric == "step_time_s":
        return step_s
    if case.metric == "tokens_per_s_per_gpu":
        return case.tokens_per_step / (step_s * gpus)
    per_gpu_flops = case.tokens_per_step * flops_per_token / (step_s * gpus)
    if case.metric == "tflops_per_gpu":
        return per_gpu_flops / 1e12
    return per_gpu_flops / case.cluster.gpu.dense16_flops * 100.0


# --- reading rows ---------------------------------------------------------------------------


def _cluster(
    row: Mapping[str, str], num_gpus: int, stack: str, assumptions: list[str]
) -> ClusterSpec:
    gpu = get_gpu((row.get("gpu_type") or "").strip(), field="gpu_type")
    per_node = cell_int(row, "gpus_per_node") or min(gpu.gpus_per_node, num_gpus)
    nic = parse_nic_gbps_per_gpu(row.get("interconnect") or "", per_node)
    if nic is None:
        assumptions.append(f"network {gpu.nic_gbps_per_gpu:g} Gb/s per GPU (catalog default)")
    return make_cluster(
        gpu, num_gpus, gpus_per_node=min(per_node, num_gpus), nic_gbps_per_gpu=nic,
        efficiency=default_profile_for(gpu.name, stack),
    )  # fmt: skip


_NEMO = re.compile(r"\bNeMo\b|Megatron-Bridge", re.IGNORECASE)


def _layout(
    row: Mapping[str, str], num_gpus: int, stack: str, layers: int, assumptions: list[str]
) -> LayoutSpec:
    """The row's layout; `layers` is the model's depth (its column, or the named preset's)."""
    tp, pp = cell_int(row, "tp"), cell_int(row, "pp")
    sharding = row.get("zero_stage_or_fsdp") or ""
    zero, dist_opt = parse_sharding(sharding)
    sharded_dp = (zero, dist_opt) != (0, False) and not re.search(
        r"tensor|pipeline|\btp\b|\bpp\b", sharding, re.IGNORECASE
    )  # 'FSDP + Megatron-LM tensor parallelism' names model parallelism it does not size
    if tp is None and pp is None and sharded_dp:
        tp = pp = 1  # an FSDP/ZeRO run that names no model parallelism is data parallel
        assumptions.append("tp=pp=1 (not stated; a sharded data-parallel run)")
    elif (tp is None) != (pp is None):
        assumptions.append(f"{'pp' if pp is None else 'tp'}=1 (not stated; the other is)")
        tp, pp = tp or 1, pp or 1
    if tp is None or pp is None:
        raise SpecError("tensor/pipeline split (tp, pp) not given", field="tp")
    if zero >= 3 and pp > 1 and stack == "pytorch":
        # FSDP2 inside torch.distributed.pipelining stages neither reshards nor syncs gradients
        # until the last micro-batch's backward (stage.py backward_maybe_with_nosync), and
        # torchtitan keeps the weights unsharded after the forward when PP is on
        # (distributed/fsdp.py, reshard_after_forward 'default'): one weight all-gather and one
        # gradient reduce-scatter per step, full weights and gradients held, as ZeRO-1.
        zero = 1
        assumptions.append(
            f"FSDP with pp={pp} costed as ZeRO-1: weights gathered once per step and gradients "
            "reduce-scattered after the last micro-batch (PyTorch pipelining's no-sync backward; "
            "torchtitan's reshard_after_forward=False with PP)"
        )
    cp = cell_int(row, "cp") or 1
    vp = cell_int(row, "vp") or 1
    ep = cell_int(row, "ep") or 1
    dp = cell_int(row, "dp")
    if dp is None:
        if num_gpus % (tp * pp * cp):
            raise SpecError("num_gpus is not a multiple of tp*pp*cp", field="dp")
        dp = num_gpus // (tp * pp * cp)
    gb = cell_int(row, "global_batch")
    if gb is None:
        raise SpecError("global_batch not given", field="global_batch")
    mb = cell_int(row, "micro_batch")
    if mb is None:
        raise SpecError("micro_batch not given", field="micro_batch")
    recompute, layers_fraction = parse_recompute(row.get("recompute") or "")
    if not (row.get("recompute") or "").strip():
        assumptions.append("recompute=none (not stated)")
    notes = row.get("notes") or ""
    if not sharding.strip() and re.search(
        r"--overlap-param-gather|--use-distributed-optimizer", notes
    ):
        # Megatron-LM refuses --overlap-param-gather without the distributed optimizer
        # (megatron/training/arguments.py, validate_args: "--overlap-param-gather only
        # supported with distributed optimizer or megatron fsdp").
        dist_opt = True
        assumptions.append("distributed optimizer (the notes list Megatron flags that need it)")
    elif not sharding.strip() and _NEMO.search(row.get("source") or ""):
        # NeMo's launcher configs train with optim.name=distributed_fused_adam (ZeRO-1-like
        # sharded optimizer state, overlapped grad/param sync), e.g.
        # NeMo-Framework-Launcher launcher_scripts/conf/training/gpt3/5b.yaml.
        dist_opt = True
        assumptions.append("distributed optimizer (not stated; NeMo's distributed_fused_adam)")
    sp_stated = parse_yes_no(row.get("sequence_parallel") or "", "sequence_parallel")
    sp = bool(sp_stated)
    if sp_stated is None and tp > 1:
        # Megatron-core/NeMo recipes turn sequence parallelism on with TP; the 2021-2022 stack
        # predates it (Korthikanti et al. 2022 introduced it).
        sp = stack != "megatron-legacy"
        assumptions.append(f"sequence_parallel={'yes' if sp else 'no'} (not stated; stack default)")
    precision = parse_precision(row.get("precision") or "")
    if not (row.get("precision") or "").strip() and stack == "megatron-legacy":
        precision = "fp16"  # what Megatron-DeepSpeed's GPT recipes ran (--fp16)
        assumptions.append("precision=fp16 (not stated; the legacy stack's default)")
    # Megatron-LM's 2021-2022 local DDP and Megatron-DeepSpeed's engine (ZeRO 0 and its pipeline
    # engine) all-reduce the gradients after the backward pass, not in buckets during it
    # (vTrain's validation configs: use_gradient_bucket=false).
    overlap_grad = stack != "megatron-legacy"
    if not overlap_grad and dp * cp > 1:
        assumptions.append("gradient all-reduce after the backward (the legacy stack's default)")
    chunks = pp * vp
    # Layers that do not split evenly over the pp*vp model chunks, while layers + 2 do: the run
    # counted the embedding and the loss as one layer each (Megatron-core
    # account_for_embedding_in_pipeline_split + account_for_loss_in_pipeline_split, as NeMo /
    # Megatron-Bridge recipes set them; Megatron-DeepSpeed's 'type:transformer|embedding'
    # partition gives the same split). A row whose layers + 2 do not divide stays refused.
    split = bool(embedding_loss_split(layers, pp, vp))
    if split:
        assumptions.append(
            f"embedding and loss counted as pipeline layers (layers={layers} does not divide "
            f"by pp*vp={chunks}, layers+2 does; account_for_embedding/loss_in_pipeline_split)"
        )
    # Neither splits evenly: Megatron-Bridge's recipes for such depths (DeepSeek-V3, 61 layers)
    # set an uneven pipeline_model_parallel_layout; the balanced one where it is valid.
    balanced = bool(balanced_layout(layers, pp, vp))
    if balanced:
        counts = chunk_layer_counts(layers, pp, vp, BALANCED)
        assumptions.append(
            f"balanced pipeline layout (layers={layers} splits over pp*vp={chunks} neither "
            f"evenly nor with embedding and loss counted; {counts[0]} layers per model chunk, "
            f"{counts[-1]} on the last: pipeline_model_parallel_layout as Megatron-Bridge's "
            "DeepSeek-V3 recipes)"
        )
    code = BALANCED if balanced else EMBEDDING_LOSS if split else EVEN
    if code == EVEN and layers % chunks:
        a = -(-layers // chunks)
        raise SpecError(
            f"layers={layers} split over pp*vp={chunks} model chunks neither evenly, nor with "
            f"the embedding and loss counted (layers+2={layers + 2}), nor balanced ({a} per "
            f"chunk leave {layers - a * (chunks - 1)} for the last); the run's own "
            "pipeline_model_parallel_layout is not in the row",
            field="vp",
        )
    recompute_layers = None
    if recompute == "full" and layers_fraction < 1.0:
        per_stage = max(1, int(full_stage_layers(layers, pp, vp, code)))
        recompute_layers = max(1, int(round(per_stage * layers_fraction)))
    etp = cell_int(row, "etp")  # an optional column beyond the published-runs schema
    if etp is None and tp > 1 and (tp * cp * dp) % (tp * ep) != 0 and (tp * cp * dp) % ep == 0:
        # The schema has no expert-TP column. Expert TP defaults to tp, which leaves no room
        # for this ep; the run folded EP over the TP ranks with unsplit experts (Megatron-core
        # expert_tensor_parallel_size=1, as Megatron-Bridge's MoE recipes set it).
        etp = 1
        assumptions.append(
            f"expert_tensor_parallel=1 (not stated; ep={ep} exceeds dp*cp={dp * cp}, so EP "
            "is folded over the TP ranks)"
        )
    return LayoutSpec(
        tp=tp, pp=pp, vp=vp, cp=cp, dp=dp, ep=ep, etp=etp, sequence_parallel=sp and tp > 1,
        zero_stage=zero, distributed_optimizer=dist_opt, micro_batch=mb, global_batch=gb,
        recompute=recompute, recompute_layers=recompute_layers, precision=precision,
        account_embedding_loss_in_pipeline_split=split, balanced_pipeline_layout=balanced,
        overlap_grad_reduce=overlap_grad,
    )  # fmt: skip


def row_to_case(index: int, row: Mapping[str, str]) -> RunCase | SkippedRow:
    """One CSV row as a predictable case, or the reason it is not predictable."""
    source = (row.get("source") or "").strip()
    label = source_label(source)
    name = (row.get("model_name") or "").strip()
    assumptions: list[str] = []
    try:
        measured = measured_metric(row)
        if measured is None:
            raise SpecError("no measured value", field="measured")
        if measured[0] in ("mfu", "hfu") and measured[1] != cell_float(
            row, f"measured_{measured[0]}"
        ):
            assumptions.append(
                f"measured_{measured[0]}={row.get(f'measured_{measured[0]}', '').strip()} read as a "
                f"fraction ({measured[1]:.1f} %)"
            )
        num_gpus = cell_int(row, "num_gpus")
        if num_gpus is None:
            raise SpecError("num_gpus not given", field="num_gpus")
        if num_gpus < 1:
            raise SpecError(f"must be >= 1 (got {num_gpus})", field="num_gpus")
        model = model_from_row(row, assumptions)
        stack = parse_stack(row)
        layout = _layout(row, num_gpus, stack, model.num_layers, assumptions)
        if layout.num_gpus != num_gpus:
            raise SpecError(
                f"tp*pp*cp*dp={layout.num_gpus} differs from num_gpus={num_gpus}", field="dp"
            )
        # measured runs of FSDP/ZeRO trainers may pipeline too (Llama 3, torchtitan, MegaScale)
        validate_layout(
            layout, model, num_gpus=num_gpus, seq_length=model.seq_length, engines=False
        )
        if layout.zero_stage >= 3 and layout.pp > 1:
            assumptions.append(
                f"ZeRO-{layout.zero_stage} with pp={layout.pp}: weights gathered per micro-batch "
                "on each stage (not compilable for the engines)"
            )
        elif layout.zero_stage == 2 and layout.pp > 1:
            assumptions.append(
                f"ZeRO-2 with pp={layout.pp}: gradients reduce-scattered and weights gathered "
                "once per step (not compilable for the engines)"
            )
        cluster = _cluster(row, num_gpus, stack, assumptions)
        if layout.precision == "bf16" and cluster.gpu.peak_tflops.bf16 is None:
            if (row.get("precision") or "").strip():
                raise SpecError(f"{cluster.gpu.name} has no bf16 tensor cores", field="precision")
            layout = layout.model_copy(update={"precision": "fp16"})
            assumptions.append(f"precision=fp16 (not stated; {cluster.gpu.name} has no bf16)")
    except SpecError as err:
        return SkippedRow(index, label, name, err.message)
    except ValidationError as err:  # pydantic validation of a spec built from the row
        return SkippedRow(index, label, name, spec_error_from_validation(err).message)
    except (OverflowError, ValueError) as err:  # a cell too large to compute with
        return SkippedRow(index, label, name, f"a value is out of range ({err})")
    metric, value = measured
    return RunCase(
        index=index, source=label, label=name, model=model, cluster=cluster, layout=layout,
        seq_length=model.seq_length, metric=metric, measured=value,
        convention=flop_convention(source), stack=stack, assumptions=tuple(assumptions),
    )  # fmt: skip


ASSUMABLE = (
    "micro_batch", "global_batch", "tp", "pp", "vp", "cp", "dp", "ep", "vocab", "seq_len",
    "kv_heads", "ffn_hidden", "gpus_per_node", "recompute", "sequence_parallel", "precision",
    "zero_stage_or_fsdp", "etp",
)  # fmt: skip


def parse_assumptions(items: Sequence[str]) -> dict[str, str]:
    """`COLUMN=VALUE` items (validate --assume) as a dict; unknown columns are an error."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise SpecError(f"expected COLUMN=VALUE, got {item!r}", field="--assume")
        if key not in ASSUMABLE:
            raise SpecError(
                f"{key!r} cannot be assumed; one of {', '.join(ASSUMABLE)}", field="--assume"
            )
        if key in _ASSUMABLE_COUNTS:
            try:
                number = float(value)
            except ValueError:
                number = 0.0
            if not (number >= 1 and number == int(number)):
                raise SpecError(
                    f"{key}={value!r}: must be a whole number >= 1", field=f"--assume {key}"
                )
        elif key == "recompute":
            parse_recompute(value)
        elif key == "precision":
            parse_precision(value)
        out[key] = value
    return out


_ASSUMABLE_COUNTS = (
    "micro_batch", "global_batch", "tp", "pp", "vp", "cp", "dp", "ep", "vocab", "seq_len",
    "kv_heads", "ffn_hidden", "gpus_per_node", "etp",
)  # fmt: skip


def load_cases(
    path: str | Path, assume: Mapping[str, str] | None = None, source: str | None = None
) -> tuple[list[RunCase], list[SkippedRow]]:
    """Every row of a published-runs CSV as a case or a skip reason. `assume` fills columns a
    row leaves empty (each use is recorded in that row's assumptions); `source` keeps the rows
    whose source contains it (case-insensitive)."""
    cases: list[RunCase] = []
    skipped: list[SkippedRow] = []
    rows = read_rows(path)
    if not rows:
        raise SpecError("no data rows", source=str(path))
    if source and not any(source.lower() in (r.get("source") or "").lower() for r in rows):
        raise SpecError(f"no row's source contains {source!r}", field="--source")
    for i, row in enumerate(rows):
        if source and source.lower() not in (row.get("source") or "").lower():
            continue
        filled = [k for k, v in (assume or {}).items() if not (row.get(k) or "").strip()]
        got = row_to_case(i, {**row, **{k: assume[k] for k in filled}} if filled else row)
        if filled and isinstance(got, RunCase):
            notes = tuple(f"{k}={assume[k]} (--assume; not stated)" for k in filled)  # type: ignore[index]
            got = replace(got, assumptions=got.assumptions + notes)
        (cases if isinstance(got, RunCase) else skipped).append(got)  # type: ignore[arg-type]
    return cases, skipped

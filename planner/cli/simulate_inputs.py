"""Inputs of `scaleplan simulate`: flags, a YAML/JSON run file, or a plan file, each turned into
validated `SimulationInput`s. Every bad input raises a `SpecError` naming its field."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from scaleplan.specs.errors import SpecError
from scaleplan.specs.hardware import ClusterSpec, get_gpu, make_cluster
from scaleplan.specs.layout import LayoutSpec, validate_layout
from scaleplan.specs.loader import read_document, spec_error_from_validation, validate
from scaleplan.specs.model import ModelSpec, get_model

RUN_FILE_KEYS = ("name", "model", "gpu", "gpus", "seq_length", "layout")

RUN_FILE_HELP = """\b
Run file (YAML or JSON), every key but `model`, `gpu` and `layout` optional:
  name: llama3-70b-on-64          # a label for the report
  model: llama3-70b               # a preset, or a ModelSpec mapping; a mapping with
                                  #   `preset:` starts from that preset and overrides keys
  gpu: h100-sxm                   # catalog name or alias
  gpus: 64                        # default: tp*pp*cp*dp
  seq_length: 8192                # default: the model's
  layout:                         # LayoutSpec fields; dp default gpus/(tp*pp*cp);
    tp: 8                         #   sequence_parallel default: on when tp > 1
    pp: 4
    micro_batch: 1
    global_batch: 512
    recompute: selective
    distributed_optimizer: true
A plan file (JSON with `phases`, as `scaleplan plan` writes) simulates every phase."""


@dataclass(frozen=True)
class SimulationInput:
    """One thing to simulate: a model on a cluster with a layout and a sequence length."""

    name: str
    model: ModelSpec
    cluster: ClusterSpec
    layout: LayoutSpec
    seq_length: int
    phase: str | None = None  # the plan phase this input comes from


def resolve_model(value: Any, field: str = "model", source: str | None = None) -> ModelSpec:
    """A preset name, a full ModelSpec mapping, or a mapping with `preset:` and overrides."""
    if isinstance(value, str):
        return get_model(value, field=field)
    if isinstance(value, dict):
        data = dict(value)
        if "preset" in data:
            preset = data.pop("preset")
            if not isinstance(preset, str):
                raise SpecError("preset must be a model preset name", field=f"{field}.preset")
            base = get_model(preset, field=f"{field}.preset").model_dump()
            base.update(data)
            data = base
        return validate(ModelSpec, data, prefix=field, source=source)
    raise SpecError("expected a preset name or a mapping of model fields", field=field)


def resolve_cluster(gpu: Any, num_gpus: int, field: str = "gpus") -> ClusterSpec:
    if not isinstance(gpu, str):
        raise SpecError("expected a GPU name from the catalog", field="gpu")
    spec = get_gpu(gpu, field="gpu")
    try:
        return make_cluster(spec, num_gpus)
    except ValidationError as err:
        raise SpecError(spec_error_from_validation(err).reason, field=field) from None


def _int_field(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"expected a whole number (got {value!r})", field=field)
    if value < 1:
        raise SpecError(f"must be at least 1 (got {value})", field=field)
    return value


def complete_layout(
    layout: dict[str, Any], gpus: int | None, gpus_field: str = "gpus"
) -> tuple[dict[str, Any], int]:
    """Derive dp from the GPU count (or the GPU count from dp), and default SP on when tp > 1."""
    out = dict(layout)
    tp, pp, cp = (out.get(k, 1) for k in ("tp", "pp", "cp"))
    for key, value in (("tp", tp), ("pp", pp), ("cp", cp)):
        _int_field(value, f"layout.{key}")
    model_par = tp * pp * cp
    if out.get("dp") is None:
        out.pop("dp", None)
        if gpus is None:
            raise SpecError("give the number of GPUs, or layout.dp", field=gpus_field)
        if gpus % model_par:
            raise SpecError(
                f"gpus={gpus} is not divisible by tp*pp*cp={model_par}; cannot derive dp",
                field="layout.dp",
            )
        out["dp"] = gpus // model_par
    elif gpus is None:
        gpus = model_par * _int_field(out["dp"], "layout.dp")
    if out.get("sequence_parallel") is None:
        out.pop("sequence_parallel", None)
        out["sequence_parallel"] = tp > 1  # Megatron practice: SP whenever TP > 1
    return out, gpus


def build_input(
    name: str,
    model: ModelSpec,
    gpu: Any,
    gpus: int | None,
    layout: dict[str, Any],
    seq_length: int | None,
    source: str | None = None,
) -> SimulationInput:
    """Validate everything (specs, `validate_layout`, GPU precision) into one input."""
    try:
        if gpus is not None:
            _int_field(gpus, "gpus")
        if seq_length is not None:
            _int_field(seq_length, "seq_length")
        seq = seq_length or model.seq_length
        full, num_gpus = complete_layout(layout, gpus)
        cluster = resolve_cluster(gpu, num_gpus)
        if full.get("precision") is None:
            full = {**full, "precision": cluster.gpu.half_precision}  # fp16 on V100, else bf16
        lay = validate(LayoutSpec, full, prefix="layout", source=source)
        validate_layout(lay, model, num_gpus=num_gpus, seq_length=seq)
        if lay.precision == "fp8" and cluster.gpu.peak_tflops.fp8 is None:
            raise SpecError(f"{cluster.gpu.name} has no fp8 tensor cores", field="layout.precision")
        if lay.precision == "bf16" and cluster.gpu.peak_tflops.bf16 is None:
            raise SpecError(
                f"{cluster.gpu.name} has no bf16 tensor cores; use fp16", field="layout.precision"
            )
    except SpecError as err:
        raise err.with_source(source) if source else err from None
    return SimulationInput(name=name, model=model, cluster=cluster, layout=lay, seq_length=seq)


def inputs_from_file(path: str, overrides: dict[str, Any] | None = None) -> list[SimulationInput]:
    """A run file (one input) or a plan file (one input per phase).

    `overrides` (flags) replace a run file's top-level keys (`model`, `gpu`, `gpus`,
    `seq_length`) and its `layout` keys; dp is re-derived when tp/pp/cp or gpus change.
    """
    data = read_document(path)
    if "phases" in data:
        if overrides:
            raise SpecError("flags cannot override a plan file; edit the plan", source=path)
        return inputs_from_plan(data, path)
    unknown = sorted(set(data) - set(RUN_FILE_KEYS))
    if unknown:
        raise SpecError(
            f"unknown field (known: {', '.join(RUN_FILE_KEYS)})", field=unknown[0], source=path
        )
    if overrides:
        data = _apply_overrides(data, overrides)
    for key in ("model", "gpu", "layout"):
        if key not in data:
            raise SpecError("required field is missing", field=key, source=path)
    layout = data["layout"]
    if not isinstance(layout, dict):
        raise SpecError("expected a mapping of layout fields", field="layout", source=path)
    try:
        model = resolve_model(data["model"], source=path)
    except SpecError as err:
        raise err.with_source(path) from None
    name = str(data.get("name") or Path(path).stem)
    gpus, seq = data.get("gpus"), data.get("seq_length")
    return [build_input(name, model, data["gpu"], gpus, layout, seq, path)]


def _apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(data)
    layout_over = dict(overrides.get("layout") or {})
    for key in ("model", "gpu", "gpus", "seq_length"):
        if overrides.get(key) is not None:
            out[key] = overrides[key]
    layout = dict(out.get("layout") or {}) if isinstance(out.get("layout"), dict) else {}
    reshaped = bool({"tp", "pp", "cp"} & set(layout_over)) and out.get("gpus") is not None
    if "dp" not in layout_over and (reshaped or overrides.get("gpus") is not None):
        layout.pop("dp", None)  # re-derive dp from the GPU count
    layout.update(layout_over)
    out["layout"] = layout
    return out


def inputs_from_plan(data: dict[str, Any], path: str) -> list[SimulationInput]:
    from scaleplan.specs.plan import Plan

    plan = validate(Plan, data, source=path)
    out: list[SimulationInput] = []
    for i, phase in enumerate(plan.phases):
        try:
            validate_layout(
                phase.layout,
                plan.model,
                num_gpus=phase.num_gpus,
                seq_length=phase.seq_length,
                field_prefix=f"phases[{i}].layout",
            )
        except SpecError as err:
            raise err.with_source(path) from None
        cluster = plan.cluster
        if cluster.num_gpus != phase.num_gpus:
            cluster = cluster.model_copy(update={"num_gpus": phase.num_gpus})
        out.append(
            SimulationInput(
                name=f"{plan.name}/{phase.name}",
                model=plan.model,
                cluster=cluster,
                layout=phase.layout,
                seq_length=phase.seq_length,
                phase=phase.name,
            )
        )
    return out

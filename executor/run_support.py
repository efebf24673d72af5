"""What `scaleplan run` can train, and with which backend: one torch-free definition.

The entry point (`train.py`) trains zero_stage >= 2 layouts through the DeepSpeed backend
(`ds_backend.py`: data-parallel ZeRO, next-token and SFT objectives) and every other layout
through megatron-core. Without a GPU the megatron-core path cannot run sequence or context
parallelism, fp8, Megatron-FSDP or optimizer offload (shared/notes/engines-on-cpu.md). The
entry point refuses such a phase when it starts; `run_plan` asks the same questions of every
selected phase before it launches the first, so a chain of phases does not stop at its fourth
after the first three have trained, and `compile` notes the phases `scaleplan run` cannot train.
"""

from __future__ import annotations

from typing import Any

from scaleplan.specs.errors import NotImplementedFeature
from scaleplan.specs.layout import LayoutSpec
from scaleplan.specs.plan import PhaseSpec, Plan

DEEPSPEED_OBJECTIVES = ("lm", "sft")


def default_backend(layout: LayoutSpec) -> str:
    """DeepSpeed for ZeRO-2/3 layouts, megatron-core for the rest (`train.py --backend`)."""
    return "deepspeed" if layout.zero_stage >= 2 else "megatron"


def cpu_refusals(doc: dict[str, Any]) -> list[str]:
    """What a compiled megatron-core document asks for that the CPU adapter cannot run."""
    tc, ddp = doc["transformer_config"], doc["ddp_config"]
    wanted = {
        "sequence parallel": tc["sequence_parallel"],
        "context parallel": tc["context_parallel_size"] > 1,
        "fp8": tc.get("fp8") is not None,
        "Megatron-FSDP (zero_stage >= 2)": ddp.get("use_megatron_fsdp", False),
        "optimizer CPU offload": doc["optimizer_config"]["optimizer_cpu_offload"],
    }
    return [name for name, on in wanted.items() if on]


def megatron_refusal(doc: dict[str, Any], device: str) -> NotImplementedFeature | None:
    """Why the megatron-core entry point cannot train this compiled document on `device`."""
    field = f"phases.{doc['training']['phase']}.layout"
    if device == "cuda" and doc["ddp_config"].get("use_megatron_fsdp"):
        return NotImplementedFeature(
            "the entry point trains zero_stage >= 2 through DeepSpeed (--backend deepspeed, the "
            "default); the compiled Megatron-FSDP wrapper is not run by scaleplan run",
            field=f"{field}.zero_stage",
        )
    if device != "cuda" and (missing := cpu_refusals(doc)):
        return NotImplementedFeature(
            f"{', '.join(missing)} need a GPU (TransformerEngine / CUDA kernels); this machine "
            "has none (see shared/notes/engines-on-cpu.md)",
            field=field,
        )
    return None


def deepspeed_refusal(phase: PhaseSpec) -> NotImplementedFeature | None:
    """Why the DeepSpeed backend cannot train this phase (on any device)."""
    if phase.objective.kind not in DEEPSPEED_OBJECTIVES:
        return NotImplementedFeature(
            f"the DeepSpeed backend trains next-token and SFT phases; phase '{phase.name}' is "
            f"{phase.objective.kind}: use a megatron layout (zero_stage <= 1)",
            field=f"phases.{phase.name}.objective",
        )
    lay = phase.layout
    if lay.tp * lay.pp * lay.cp * lay.ep != 1:
        return NotImplementedFeature(
            "the DeepSpeed backend is data-parallel (ZeRO) only: tp=pp=cp=ep=1 (got "
            f"tp={lay.tp} pp={lay.pp} cp={lay.cp} ep={lay.ep})",
            field=f"phases.{phase.name}.layout",
        )
    return None


def run_refusal(
    plan: Plan, phase: PhaseSpec, device: str, backend: str | None = None
) -> NotImplementedFeature | None:
    """Why `scaleplan run` cannot train `phase` on `device` ("cuda" or "cpu"), or None."""
    chosen = backend or default_backend(phase.layout)
    if chosen == "deepspeed":
        return deepspeed_refusal(phase)
    from scaleplan.executor.compile.common import phase_contexts
    from scaleplan.executor.compile.megatron_core import megatron_core_document

    ctx = next(c for c in phase_contexts(plan) if c.name == phase.name)
    return megatron_refusal(megatron_core_document(ctx), device)

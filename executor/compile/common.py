"""What every engine back end needs from a phase: validation, checkpoint lineage, batch arithmetic.

Nothing here imports torch, megatron or deepspeed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scaleplan.specs.errors import SpecError
from scaleplan.specs.layout import validate_layout
from scaleplan.specs.plan import PhaseSpec, Plan

CHECKPOINTS_DIR = "checkpoints"
METRICS_DIR = "metrics"
ENGINES: tuple[str, ...] = ("megatron", "megatron-lm", "deepspeed")


@dataclass(frozen=True)
class PhaseContext:
    """A validated phase with its place in the plan (index, checkpoint lineage)."""

    plan: Plan
    phase: PhaseSpec
    index: int

    @property
    def name(self) -> str:
        return self.phase.name

    @property
    def field(self) -> str:
        return f"phases[{self.index}]"

    @property
    def save_dir(self) -> str:
        """Checkpoint folder of this phase, relative to RUN_DIR (the entry point's contract)."""
        return f"{CHECKPOINTS_DIR}/{self.phase.name}"

    @property
    def init_dir(self) -> str | None:
        if self.phase.init_from is None:
            return None
        return f"{CHECKPOINTS_DIR}/{self.phase.init_from}"

    @property
    def metrics_file(self) -> str:
        return f"{METRICS_DIR}/{self.phase.name}.jsonl"

    @property
    def rope_base(self) -> float:
        return effective_rope_base(self.plan, self.phase)

    @property
    def vocab_size(self) -> int:
        return embedding_vocab_size(self.plan)

    @property
    def nodes(self) -> int:
        per_node = self.plan.cluster.gpus_per_node
        return max(1, -(-self.phase.num_gpus // per_node))

    @property
    def gpus_per_node(self) -> int:
        return min(self.plan.cluster.gpus_per_node, self.phase.num_gpus)


def effective_rope_base(plan: Plan, phase: PhaseSpec) -> float:
    """A phase's RoPE base: its own, else inherited along `init_from` (a long-context extension
    keeps its base in the phases that follow it), else the model's."""
    if phase.rope_base is not None:
        return phase.rope_base
    if phase.init_from is not None:
        return effective_rope_base(plan, plan.phase(phase.init_from))
    return plan.model.rope_base


VOCAB_DIVISIBLE_BY = 128  # Megatron-LM's default --make-vocab-size-divisible-by


def embedding_vocab_size(plan: Plan) -> int:
    """Rows of the embedding/output layer: the vocabulary padded to a multiple of 128 that every
    phase's TP size divides (Megatron-LM pads the same way, `_vocab_size_with_padding`). One size
    for the whole plan, so checkpoints reshard across phases whose TP sizes differ."""
    multiple = math.lcm(VOCAB_DIVISIBLE_BY, *(p.layout.tp for p in plan.phases))
    return -(-plan.model.vocab_size // multiple) * multiple


def phase_contexts(plan: Plan) -> list[PhaseContext]:
    """Every phase, validated against the model (layout rules, batch arithmetic, lineage order)."""
    out: list[PhaseContext] = []
    seen: set[str] = set()
    for i, phase in enumerate(plan.phases):
        field = f"phases[{i}]"
        validate_layout(
            phase.layout,
            plan.model,
            num_gpus=phase.num_gpus,
            seq_length=phase.seq_length,
            field_prefix=f"{field}.layout",
        )
        if phase.init_from is not None and phase.init_from not in seen:
            raise SpecError(
                f"phase {phase.name} starts from {phase.init_from}, which does not run before it",
                field=f"{field}.init_from",
            )
        if phase.steps < 1:
            raise SpecError(
                "a phase to compile needs at least one optimizer step", field=f"{field}.steps"
            )
        per_node = plan.cluster.gpus_per_node
        if phase.num_gpus > per_node and phase.num_gpus % per_node:
            raise SpecError(
                f"num_gpus={phase.num_gpus} is not a whole number of {per_node}-GPU nodes",
                field=f"{field}.num_gpus",
            )
        seen.add(phase.name)
        out.append(PhaseContext(plan=plan, phase=phase, index=i))
    return out


def data_blend(ctx: PhaseContext) -> list[tuple[float, str, str | None]]:
    """(normalised weight, source name, path or None) for the phase's data mix."""
    total = sum(src.weight for src in ctx.phase.data)
    return [(src.weight / total, src.name, src.path) for src in ctx.phase.data]

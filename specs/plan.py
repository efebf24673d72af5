"""The plan file: the one contract between the planner and the executor.

Versioned (`schema_version`), self-contained, and it round-trips through JSON unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from .base import Spec
from .budget import BudgetSpec, DataSource
from .hardware import ClusterSpec
from .layout import LayoutSpec
from .model import ModelSpec

SCHEMA_VERSION = "1.0"
PhaseName = Literal["pretrain", "anneal", "long_context", "sft", "dpo", "grpo"]
PHASE_ORDER: tuple[str, ...] = ("pretrain", "anneal", "long_context", "sft", "dpo", "grpo")


class ScheduleSpec(Spec):
    """LR schedule of one phase, in optimizer steps of that phase.

    wsd: linear warmup, constant at peak, then decay over the last `decay_steps` to min_lr.
    cosine: warmup then cosine to min_lr over the remaining steps. constant: warmup then flat.
    """

    style: Literal["wsd", "cosine", "constant", "linear"] = "wsd"
    peak_lr: float = Field(gt=0)
    min_lr: float = Field(default=0.0, ge=0)
    warmup_steps: int = Field(default=0, ge=0)
    decay_steps: int = Field(default=0, ge=0, description="wsd: steps of the final decay")
    decay_shape: Literal["linear", "cosine", "sqrt", "exponential"] = "linear"
    start_lr: float | None = Field(
        default=None, ge=0, description="lr at step 0 after warmup; anneal starts at the stable lr"
    )
    weight_decay: float = Field(default=0.1, ge=0)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    grad_clip: float = Field(default=1.0, ge=0)


class ObjectiveSpec(Spec):
    kind: Literal["lm", "sft", "dpo", "grpo"] = "lm"
    dpo_beta: float | None = Field(default=None, gt=0)
    group_size: int | None = Field(default=None, gt=1)
    clip_eps: float | None = Field(default=None, gt=0)
    kl_beta: float | None = Field(default=None, ge=0)
    max_response_tokens: int | None = Field(default=None, gt=0)
    prompt_tokens: int | None = Field(default=None, gt=0)
    temperature: float = Field(default=1.0, gt=0)


class PhaseEstimate(Spec):
    """What the cost model predicts for one phase (see `scaleplan simulate --explain`)."""

    step_time_s: float = Field(ge=0)
    compute_s: float = Field(default=0.0, ge=0)
    exposed_comm_s: float = Field(default=0.0, ge=0)
    bubble_s: float = Field(default=0.0, ge=0)
    optimizer_s: float = Field(default=0.0, ge=0)
    rollout_s: float = Field(default=0.0, ge=0, description="GRPO: generation time per step")
    reference_s: float = Field(
        default=0.0, ge=0, description="DPO/GRPO: reference (and old-policy) forwards per step"
    )
    hfu: float = Field(default=0.0, ge=0)
    tokens_per_s_per_gpu: float = Field(default=0.0, ge=0)
    memory_gib: float = Field(default=0.0, ge=0, description="peak memory per GPU")


class PhaseSpec(Spec):
    name: PhaseName
    num_gpus: int = Field(gt=0)
    layout: LayoutSpec
    seq_length: int = Field(gt=0)
    tokens: float = Field(ge=0, description="tokens processed by this phase")
    steps: int = Field(ge=0, description="optimizer steps")
    schedule: ScheduleSpec
    objective: ObjectiveSpec = ObjectiveSpec()
    data: tuple[DataSource, ...] = (DataSource(name="web", weight=1.0),)
    init_from: PhaseName | None = Field(
        default=None, description="phase whose checkpoint starts this one"
    )
    rope_base: float | None = Field(default=None, gt=0, description="overrides the model's")
    checkpoint_every_steps: int = Field(default=1000, gt=0)
    time_s: float = Field(ge=0)
    cost_usd: float = Field(ge=0)
    mfu: float = Field(ge=0)
    estimate: PhaseEstimate | None = None

    @model_validator(mode="after")
    def _check(self) -> PhaseSpec:
        if self.layout.num_gpus != self.num_gpus:
            raise ValueError(
                f"layout uses tp*pp*cp*dp={self.layout.num_gpus} GPUs but num_gpus={self.num_gpus}"
            )
        return self


class Plan(Spec):
    schema_version: str = SCHEMA_VERSION
    name: str = "plan"
    scaleplan_version: str | None = None
    budget: BudgetSpec | None = None
    cluster: ClusterSpec
    model: ModelSpec
    tokens: float = Field(ge=0, description="pretraining tokens (pretrain + anneal)")
    compute_flops: float = Field(default=0.0, ge=0, description="model FLOPs of pretraining")
    law: dict[str, Any] = Field(default_factory=dict, description="the law used and its params")
    fixed_point: dict[str, Any] = Field(default_factory=dict, description="N/D/layout iterations")
    search: dict[str, Any] = Field(
        default_factory=dict, description="layouts_evaluated, seconds, pareto, rejected"
    )
    phases: tuple[PhaseSpec, ...] = Field(min_length=1)
    notes: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> Plan:
        if self.schema_version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
            raise ValueError(
                f"schema_version {self.schema_version} is not readable by this scaleplan "
                f"(reads {SCHEMA_VERSION.split('.')[0]}.x)"
            )
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ValueError(f"phase names repeat: {names}")
        for phase in self.phases:
            if phase.init_from is not None and phase.init_from not in names:
                raise ValueError(f"phase {phase.name} starts from unknown phase {phase.init_from}")
        return self

    def phase(self, name: str) -> PhaseSpec:
        for p in self.phases:
            if p.name == name:
                return p
        raise KeyError(name)

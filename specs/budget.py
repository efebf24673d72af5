"""The budget a user writes down: hardware, time or money, data, target, phases, law."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import Spec
from .efficiency import EfficiencyProfile


class ClusterOptions(Spec):
    gpus_per_node: int | None = Field(default=None, gt=0)
    nvlink_domain: int | None = Field(default=None, gt=0)
    inter_node_topology: Literal["rail-optimized", "fat-tree"] = "rail-optimized"
    oversubscription: float = Field(default=1.0, ge=1.0)
    nic_gbps_per_gpu: float | None = Field(default=None, gt=0)
    # A fitted efficiency profile (`scaleplan calibrate --out FILE`), read next to the budget by
    # `scaleplan plan`, which puts it into `efficiency`; or `efficiency` given inline.
    profile: str | None = Field(default=None, min_length=1)
    efficiency: EfficiencyProfile | None = None


class DataSource(Spec):
    """One entry of a data mix. Without `path`, the executor uses its built-in offline corpus
    of that name (`web`, `hq`, `code`, `sft`, `dpo`, `rlvr`)."""

    name: str = Field(min_length=1)
    weight: float = Field(gt=0)
    path: str | None = None


class DataBudget(Spec):
    max_unique_tokens: float | None = Field(
        default=None, gt=0, description="unique tokens available"
    )
    seq_length: int = Field(
        default=4096,
        ge=16,
        description="pretraining sequence length in tokens; at least 16, below which per-sequence "
        "overheads, not the model, decide the plan",
    )
    vocab_size: int = Field(default=128256, gt=0)
    max_epochs: float = Field(
        default=4.0,
        ge=1.0,
        description="repetitions of the unique tokens allowed; up to ~4 cost almost nothing "
        "(Muennighoff et al. 2023, section 5)",
    )
    mix: tuple[DataSource, ...] = Field(default=(DataSource(name="web", weight=1.0),), min_length=1)


class MoEBudget(Spec):
    num_experts: int = Field(default=64, gt=1)
    top_k: int = Field(default=8, gt=0)
    num_shared_experts: int = Field(default=1, ge=0)
    granularity: int = Field(default=4, gt=0, description="dense FFN width / expert FFN width")

    @model_validator(mode="after")
    def _check(self) -> MoEBudget:
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k={self.top_k} exceeds num_experts={self.num_experts}")
        return self


class Target(Spec):
    kind: Literal["compute-optimal", "inference-aware", "fixed-size"] = "compute-optimal"
    inference_tokens: float | None = Field(default=None, ge=0)
    params: float | None = Field(default=None, gt=0, description="fixed-size: parameters")

    @model_validator(mode="after")
    def _check(self) -> Target:
        if self.kind == "inference-aware" and not self.inference_tokens:
            raise ValueError("target 'inference-aware' needs inference_tokens > 0")
        if self.kind == "fixed-size" and not self.params:
            raise ValueError("target 'fixed-size' needs params")
        if self.params is not None and self.kind != "fixed-size":
            raise ValueError(f"params applies to kind 'fixed-size', not {self.kind!r}")
        if self.inference_tokens and self.kind != "inference-aware":
            raise ValueError(
                f"inference_tokens applies to kind 'inference-aware', not {self.kind!r}"
            )
        return self


class LawChoice(Spec):
    preset: str | None = Field(default="chinchilla", description="chinchilla | epoch | kaplan ...")
    fit: str | None = Field(default=None, description="a FIT.json written by `scaleplan fit`")
    schedule_fit: str | None = Field(default=None, description="a loss-through-schedule fit")

    @model_validator(mode="after")
    def _check(self) -> LawChoice:
        if not self.preset and not self.fit:
            raise ValueError("give law.preset (chinchilla, epoch, kaplan, ...) or law.fit")
        return self


class AnnealPhase(Spec):
    fraction: float = Field(
        default=0.1, gt=0, lt=1, description="of pretraining tokens (WSD decay)"
    )
    mix: tuple[DataSource, ...] = Field(
        default=(DataSource(name="hq", weight=0.7), DataSource(name="web", weight=0.3)),
        min_length=1,
    )


class LongContextPhase(Spec):
    target_length: int = Field(gt=0)
    tokens_per_stage: float = Field(default=1e9, gt=0)
    rope_base: float | None = Field(default=None, gt=0)


class SFTPhase(Spec):
    examples: int = Field(gt=0)
    tokens_per_example: int = Field(default=1024, gt=0)
    epochs: float = Field(default=2.0, gt=0)
    batch_examples: int = Field(default=128, gt=0, description="examples per step (Tulu 3: 128)")


class DPOPhase(Spec):
    pairs: int = Field(gt=0)
    tokens_per_pair: int = Field(default=2048, gt=0)
    beta: float = Field(default=0.1, gt=0)
    epochs: float = Field(default=1.0, gt=0)
    batch_pairs: int = Field(default=128, gt=0, description="pairs per step (Tulu 3: 128)")


class GRPOPhase(Spec):
    prompts: int = Field(gt=0)
    group_size: int = Field(default=8, gt=1)
    max_response_tokens: int = Field(default=1024, gt=0)
    prompt_tokens: int = Field(default=256, gt=0)
    clip_eps: float = Field(default=0.2, gt=0)
    kl_beta: float = Field(default=0.04, ge=0)
    epochs: float = Field(default=1.0, gt=0)
    prompts_per_step: int = Field(default=64, gt=0, description="prompts per policy update")


class PhasesWanted(Spec):
    anneal: AnnealPhase | None = AnnealPhase()
    long_context: LongContextPhase | None = None
    sft: SFTPhase | None = None
    dpo: DPOPhase | None = None
    grpo: GRPOPhase | None = None
    post_training_gpus: int | None = Field(default=None, gt=0, description="slice for SFT/DPO/GRPO")


class BudgetSpec(Spec):
    name: str = "plan"
    gpu: str
    gpus: int | tuple[int, ...] = Field(description="a GPU count, or counts to choose from")
    hours: float | None = Field(default=None, gt=0, description="wall-clock hours")
    dollars: float | None = Field(default=None, gt=0)
    usd_per_gpu_hour: float | None = Field(default=None, gt=0)
    cluster: ClusterOptions = ClusterOptions()
    data: DataBudget = DataBudget()
    architecture: Literal["dense", "moe"] = "dense"
    moe: MoEBudget | None = None
    target: Target = Target()
    law: LawChoice = LawChoice()
    phases: PhasesWanted = PhasesWanted()
    goodput: float = Field(default=0.9, gt=0, le=1, description="fraction of wall time training")

    @field_validator("gpus", mode="before")
    @classmethod
    def _no_booleans(cls, value: Any) -> Any:
        items = value if isinstance(value, list | tuple) else [value]
        if any(isinstance(v, bool) for v in items):  # YAML 'true' would read as 1 GPU
            raise ValueError("must be a positive GPU count, or a list of them (e.g. 8 or [8, 16])")
        return value

    @field_validator("gpus")
    @classmethod
    def _positive_counts(cls, value: int | tuple[int, ...]) -> int | tuple[int, ...]:
        counts = value if isinstance(value, tuple) else (value,)
        if not counts or any(c <= 0 for c in counts):
            raise ValueError("must be a positive GPU count, or a list of them (e.g. 8 or [8, 16])")
        return value

    @model_validator(mode="after")
    def _check(self) -> BudgetSpec:
        if self.hours is None and self.dollars is None:
            raise ValueError("give hours, dollars, or both")
        if self.moe is not None and self.architecture != "moe":
            raise ValueError("a 'moe' section needs architecture: moe (or remove the section)")
        lc = self.phases.long_context
        if lc is not None and lc.target_length <= self.data.seq_length:
            raise ValueError(
                f"phases.long_context.target_length={lc.target_length} must exceed "
                f"data.seq_length={self.data.seq_length} (the pretraining length)"
            )
        return self

    @property
    def gpu_counts(self) -> tuple[int, ...]:
        return self.gpus if isinstance(self.gpus, tuple) else (self.gpus,)

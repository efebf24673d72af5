"""Per-objective runners: a phase's data, its micro-batches per step, its loss and its evaluations.

A runner is backend-agnostic about the model: it gets `run_schedule(model_chunks, batches,
loss_fn, forward_only, with_labels, non_loss)` from the training entry point (megatron's
forward-backward schedules, pipeline included) and returns, per step, the micro-batches of this
data-parallel rank and the loss function. Reports come back as {name: [sum, count]} from the
last pipeline stage and are reduced over every rank (`reduce`).

The GRPO runner is in `grpo_runner.py`.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from scaleplan.executor import objectives as obj
from scaleplan.executor.data import tasks
from scaleplan.executor.data.packing import MixedData, PackedSource, token_stream
from scaleplan.executor.data.tokenizer import load_or_train, special_ids
from scaleplan.specs.errors import SpecError
from scaleplan.specs.plan import PhaseSpec, Plan

HELDOUT_PROMPTS = 32
HELDOUT_SAMPLES = 4
GENERATION_MICRO_BATCH = 64


def comm(t: torch.Tensor) -> torch.Tensor:
    """A tensor for a collective: NCCL needs it on the GPU, gloo on the CPU."""
    return t.cuda() if torch.cuda.is_available() else t


def cache_dir(run_dir: Path) -> Path:
    """Tokenizer and token caches: $SCALEPLAN_DATA_CACHE, else RUN_DIR/cache."""
    return Path(os.environ.get("SCALEPLAN_DATA_CACHE") or run_dir / "cache")


def build_on_rank0(fn: Any) -> Any:
    """Run `fn` on rank 0 first (it fills caches), then on every other rank."""
    if dist.get_rank() == 0:
        out = fn()
        dist.barrier()
        return out
    dist.barrier()
    return fn()


class Runner:
    report_keys: tuple[str, ...] = ("loss",)

    def __init__(
        self,
        plan: Plan,
        phase: PhaseSpec,
        run_dir: Path,
        seed: int,
        chunks: list[Any],
        reference: list[Any] | None,
        run_schedule: Any,
    ) -> None:
        from megatron.core import parallel_state as ps

        self.plan, self.phase, self.seed = plan, phase, seed
        self.chunks, self.reference, self.run_schedule = chunks, reference, run_schedule
        self.ps = ps
        self.dp_rank, self.dp = ps.get_data_parallel_rank(), ps.get_data_parallel_world_size()
        self.mb, self.n_micro, self.seq = (
            phase.layout.micro_batch,
            phase.layout.num_microbatches,
            phase.seq_length,
        )
        self.cache = cache_dir(run_dir)
        self.tok = build_on_rank0(lambda: load_or_train(self.cache, plan.model.vocab_size))
        self.eos, self.pad = special_ids(self.tok)
        self.kinds: dict[str, float] = {}
        if phase.objective.kind != "lm":
            try:
                self.kinds = tasks.kind_weights([(d.name, d.weight) for d in phase.data])
            except ValueError as err:
                raise SpecError(str(err), field=f"phases.{phase.name}.data") from None

    def reduce(
        self, reports: list[dict[str, torch.Tensor]], keys: tuple[str, ...] | None = None
    ) -> dict[str, float]:
        """Sum [sum, count] pairs over micro-batches and ranks; report sum/count."""
        keys = keys or self.report_keys
        ps = self.ps
        vec = torch.zeros(2 * len(keys))
        contributes = (
            ps.is_pipeline_last_stage()
            and ps.get_tensor_model_parallel_rank() == 0
            and ps.get_context_parallel_rank() == 0
        )
        if contributes:
            for r in reports:
                vec += torch.cat([r[k].cpu() for k in keys])
        vec = comm(vec)
        dist.all_reduce(vec)
        return {k: float(vec[2 * i] / vec[2 * i + 1].clamp(min=1)) for i, k in enumerate(keys)}

    def evaluate(self) -> dict[str, float]:
        return {}


class LMRunner(Runner):
    """pretrain, anneal, long_context: packed text windows from the phase's mix."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        sources = []
        for src in self.phase.data:
            if src.name in ("sft", "dpo", "rlvr"):
                raise SpecError(
                    f"'{src.name}' is a task source; a next-token phase needs text",
                    field=f"phases.{self.phase.name}.data",
                )
            tokens = build_on_rank0(
                lambda s=src: token_stream(self.tok, self.cache, s.name, s.path)
            )
            sources.append((PackedSource(src.name, tokens, self.seq), src.weight))
        self.data = MixedData(sources, self.seed)

    def train_batches(
        self, step: int, consumed: int
    ) -> tuple[list[obj.MicroBatch], Any, dict[str, float]]:
        return (
            obj.lm_batches(self.data, consumed, self.dp_rank, self.dp, self.mb, self.n_micro),
            obj.lm_loss,
            {},
        )

    def evaluate(self) -> dict[str, float]:
        """Held-out loss of every source of the mix (plus `hq` / `web` when available)."""
        out = {}
        for source in self.data.sources:
            windows = source.eval_windows()
            per_rank = (len(windows) // (self.dp * self.mb)) * self.mb
            if per_rank == 0:
                continue
            mine = windows[self.dp_rank * per_rank : (self.dp_rank + 1) * per_rank]
            batches = [
                obj.lm_microbatch(mine[i : i + self.mb].astype(np.int64))
                for i in range(0, per_rank, self.mb)
            ]
            reports = self.run_schedule(self.chunks, batches, obj.lm_loss, forward_only=True)
            out[f"eval_loss_{source.name}"] = self.reduce(reports)["loss"]
        return out


class SFTRunner(Runner):
    def train_batches(
        self, step: int, consumed: int
    ) -> tuple[list[obj.MicroBatch], Any, dict[str, float]]:
        return (
            obj.sft_batches(
                self.tok,
                self.seed,
                self.kinds,
                self.seq,
                consumed,
                self.dp_rank,
                self.dp,
                self.mb,
                self.n_micro,
            ),
            obj.sft_loss,
            {},
        )

    def evaluate(self) -> dict[str, float]:
        per = HELDOUT_PROMPTS // self.dp // self.mb * self.mb
        ts = obj.heldout_prompts(self.seed, self.kinds, self.dp_rank, self.dp, per * self.dp)
        batches = [
            obj.response_microbatch(
                self.tok, [(t.prompt, t.answer) for t in ts[i : i + self.mb]], self.seq
            )
            for i in range(0, len(ts), self.mb)
        ]
        reports = self.run_schedule(self.chunks, batches, obj.sft_loss, forward_only=True)
        return {"eval_response_loss": self.reduce(reports)["loss"]}


def _ref_logp(
    per_token_out: bool, batch: obj.MicroBatch, per_token: torch.Tensor
) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
    value = -per_token.float() if per_token_out else obj.sequence_logp(batch, per_token)
    return torch.zeros(()), torch.tensor(1), {"logp": value.detach()}


class DPORunner(Runner):
    report_keys = ("loss", "reward_margin", "reward_accuracy", "chosen_logp")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.beta = self.phase.objective.dpo_beta or 0.1

    def _with_reference(self, batches: list[obj.MicroBatch]) -> list[obj.MicroBatch]:
        assert self.reference is not None
        outs = self.run_schedule(
            self.reference, batches, partial(_ref_logp, False), forward_only=True
        )
        for b, o in zip(batches, outs or [None] * len(batches), strict=True):
            b.extra["ref_logp"] = o["logp"] if o is not None else torch.zeros(b.tokens.shape[0])
        return batches

    def train_batches(
        self, step: int, consumed: int
    ) -> tuple[list[obj.MicroBatch], Any, dict[str, float]]:
        batches = obj.dpo_batches(
            self.tok,
            self.seed,
            self.kinds,
            self.seq,
            consumed,
            self.dp_rank,
            self.dp,
            self.mb,
            self.n_micro,
        )
        return self._with_reference(batches), partial(obj.dpo_loss, self.beta), {}

    def evaluate(self) -> dict[str, float]:
        """Reward margin on held-out pairs."""
        batches = obj.dpo_batches(
            self.tok,
            self.seed,
            self.kinds,
            self.seq,
            0,
            self.dp_rank,
            self.dp,
            self.mb,
            2,
            held_out=True,
        )
        reports = self.run_schedule(
            self.chunks,
            self._with_reference(batches),
            partial(obj.dpo_loss, self.beta),
            forward_only=True,
        )
        values = self.reduce(reports)
        return {
            "eval_reward_margin": values["reward_margin"],
            "eval_reward_accuracy": values["reward_accuracy"],
        }


def make_runner(
    plan: Plan,
    phase: PhaseSpec,
    run_dir: Path,
    seed: int,
    chunks: list[Any],
    reference: list[Any] | None,
    run_schedule: Any,
) -> Runner:
    from .grpo_runner import GRPORunner  # it subclasses Runner, defined here

    cls = {"lm": LMRunner, "sft": SFTRunner, "dpo": DPORunner, "grpo": GRPORunner}[
        phase.objective.kind
    ]
    return cls(plan, phase, run_dir, seed, chunks, reference, run_schedule)

"""GRPO/RLVR runner (DeepSeekMath 2024, section 4.1): sampled groups, verifiable rewards, the
clipped group-relative objective, and held-out accuracy.

Generation runs the training schedule forward-only, one new token per pass over the full
right-padded window (causal attention makes the padding inert; no KV cache, which is fine at
these sizes). The last pipeline stage samples; the new tokens are broadcast over the pipeline
group; TP ranks sample identically (same gathered logits, same generator seed).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.distributed as dist

from scaleplan.executor import objectives as obj
from scaleplan.executor.data import tasks
from scaleplan.specs.errors import SpecError

from .runners import (
    GENERATION_MICRO_BATCH,
    HELDOUT_PROMPTS,
    HELDOUT_SAMPLES,
    Runner,
    _ref_logp,
    comm,
)


class GRPORunner(Runner):
    report_keys = ("loss", "kl", "reward")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        o = self.phase.objective
        self.group = o.group_size or 4
        self.clip, self.kl_beta, self.temperature = (
            o.clip_eps or 0.2,
            o.kl_beta or 0.0,
            o.temperature,
        )
        self.max_new = o.max_response_tokens or 16
        self.max_prompt = min(o.prompt_tokens or self.seq // 2, self.seq - self.max_new)
        rows = self.phase.layout.global_batch // self.dp
        if rows % self.group:
            raise SpecError(
                f"global_batch/dp={rows} rows is not a whole number of groups of {self.group}",
                field=f"phases.{self.phase.name}.objective.group_size",
            )
        self.prompts_per_rank = rows // self.group

    def _logits_at(
        self, batch: obj.MicroBatch, logits: torch.Tensor, non_loss_data: bool = True
    ) -> torch.Tensor:
        from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

        rows = torch.arange(logits.shape[0], device=logits.device)
        picked = gather_from_tensor_model_parallel_region(
            logits[rows, batch.extra["pos"]].contiguous()
        )
        picked = picked.float()
        picked[:, self.plan.model.vocab_size :] = float("-inf")
        picked[:, self.pad] = float("-inf")
        return picked.detach()

    @torch.no_grad()
    def generate(
        self, prompts: list[tasks.Task], seed: int, greedy: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sampled completions: tokens [n, seq], prompt lengths and end positions."""
        tokens, lengths = obj.completion_rows(self.tok, prompts, self.seq, self.max_prompt)
        cur, done = lengths.clone(), torch.zeros(len(prompts), dtype=torch.bool)
        gen = torch.Generator().manual_seed(seed)
        ps = self.ps
        gmb = next(
            m
            for m in range(min(len(prompts), GENERATION_MICRO_BATCH), 0, -1)
            if len(prompts) % m == 0
        )
        for _ in range(self.max_new):
            batches = [  # forward-only passes may use larger micro-batches than training
                obj.MicroBatch(
                    tokens[i : i + gmb],
                    tokens[i : i + gmb],
                    torch.zeros(0),
                    extra={"pos": cur[i : i + gmb] - 1},
                )
                for i in range(0, len(prompts), gmb)
            ]
            outs = self.run_schedule(
                self.chunks,
                batches,
                self._logits_at,
                forward_only=True,
                with_labels=False,
                non_loss=True,
            )
            nxt = torch.zeros(len(prompts), dtype=torch.int64)
            if ps.is_pipeline_last_stage():
                logits = torch.cat(outs).cpu() / self.temperature
                nxt = (
                    logits.argmax(-1)
                    if greedy
                    else torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)[:, 0]
                )
            if ps.get_pipeline_model_parallel_world_size() > 1:
                nxt = comm(nxt)
                dist.broadcast(
                    nxt,
                    src=ps.get_pipeline_model_parallel_last_rank(),
                    group=ps.get_pipeline_model_parallel_group(),
                )
            nxt = nxt.cpu()
            live = ~done & (cur < self.seq)
            tokens[live, cur[live]] = nxt[live]
            done |= live & (nxt == self.eos)
            cur += live.long()
            if bool(done.all()):
                break
        return tokens, lengths, cur

    def rewards(
        self,
        prompts: list[tasks.Task],
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        cur: torch.Tensor,
    ) -> torch.Tensor:
        return torch.tensor(
            [
                tasks.reward(
                    t, obj.decode_completion(self.tok, tokens[i, lengths[i] : cur[i]].tolist())
                )
                for i, t in enumerate(prompts)
            ]
        )

    def train_batches(
        self, step: int, consumed: int
    ) -> tuple[list[obj.MicroBatch], Any, dict[str, float]]:
        base = consumed // self.group + self.dp_rank * self.prompts_per_rank
        prompts = [
            tasks.task(base + k, self.seed + 1, kinds=self.kinds)
            for k in range(self.prompts_per_rank)
        ]
        rows = [t for t in prompts for _ in range(self.group)]
        tokens, lengths, cur = self.generate(
            rows, seed=self.seed * 1_000_003 + step * 1_009 + self.dp_rank, greedy=False
        )
        rewards = self.rewards(rows, tokens, lengths, cur)
        advantages = obj.group_advantages(rewards, self.group)
        full = torch.cat([tokens, torch.full((len(rows), 1), self.pad)], dim=1)
        mask = torch.zeros(len(rows), self.seq)
        for i in range(len(rows)):
            mask[i, lengths[i] - 1 : cur[i] - 1] = 1.0
        batches = []
        for i in range(0, len(rows), self.mb):
            sl = slice(i, i + self.mb)
            batches.append(
                obj.MicroBatch(
                    full[sl, :-1].contiguous(),
                    full[sl, 1:].contiguous(),
                    mask[sl],
                    extra={"advantages": advantages[sl], "rewards": rewards[sl]},
                )
            )
        assert self.reference is not None
        outs = self.run_schedule(
            self.reference, batches, partial(_ref_logp, True), forward_only=True
        )
        for b, o in zip(batches, outs or [None] * len(batches), strict=True):
            b.extra["ref_logp_tokens"] = (
                o["logp"] if o is not None else torch.zeros_like(b.loss_mask)
            )
        return batches, partial(obj.grpo_loss, self.clip, self.kl_beta), {}

    def evaluate(self) -> dict[str, Any]:
        """Mean exact-match reward on held-out prompts: sampled (at the phase temperature) and greedy."""
        per = max(self.mb, HELDOUT_PROMPTS // self.dp // self.mb * self.mb)
        prompts = obj.heldout_prompts(self.seed, self.kinds, self.dp_rank, self.dp, per * self.dp)
        sampled = [t for t in prompts for _ in range(HELDOUT_SAMPLES)]
        out: dict[str, Any] = {}
        for name, rows, greedy in (
            ("heldout_reward", sampled, False),
            ("heldout_greedy_reward", prompts, True),
        ):
            tokens, lengths, cur = self.generate(
                rows, seed=self.seed + 17 + self.dp_rank, greedy=greedy
            )
            r = self.rewards(rows, tokens, lengths, cur)
            vec = torch.stack([r.sum(), torch.tensor(float(len(rows)))])
            if not (
                self.ps.get_tensor_model_parallel_rank() == 0 and self.ps.is_pipeline_last_stage()
            ):
                vec.zero_()
            vec = comm(vec)
            dist.all_reduce(vec)
            out[name] = float(vec[0] / vec[1])
        out["examples"] = [  # greedy completions of this rank's first held-out prompts
            [
                t.prompt,
                obj.decode_completion(self.tok, tokens[i, lengths[i] : cur[i]].tolist()),
                t.answer,
            ]
            for i, t in enumerate(prompts[:4])
        ]
        return out

"""The phase objectives: micro-batch builders and loss functions over megatron's per-token loss.

`GPTModel(tokens, ..., labels=labels)` returns the per-token cross-entropy [b, s] (vocab-parallel
under TP), i.e. minus the per-token log-probability of the label. Every loss here is built on it:

- pretrain / anneal / long_context (`lm`): mean next-token loss over the packed window.
- sft: the same loss on response tokens only (prompt tokens masked out).
- dpo: -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))), Rafailov et al. 2023 eq. 7; rows
  of a micro-batch are [chosen..., rejected...]; the logged reward margin is
  beta * (chosen log-ratio - rejected log-ratio) (their sec. 5 implicit reward).
- grpo: Shao et al. 2024 (DeepSeekMath) eq. 3 with group-normalised advantages (eq. 4 outcome
  supervision): per token -min(r*A, clip(r, 1-eps, 1+eps)*A) + beta * KL, KL by the unbiased k3
  estimator exp(ref-logp) - (ref-logp) - 1 (Schulman 2020), averaged over each completion's
  tokens. One optimizer step per rollout batch, so the sampling policy equals the current one
  and r = exp(logp - logp.detach()) (= 1 with the right gradient); the clip becomes active only
  with several updates per rollout, which the plan does not ask for.

Every loss function returns (loss_sum, count, report) for megatron's schedules; `report` maps a
name to a tensor [sum, count], reduced over micro-batches and ranks by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tokenizers import Tokenizer

from .data import tasks
from .data.packing import MixedData
from .data.tokenizer import special_ids


@dataclass
class MicroBatch:
    tokens: torch.Tensor  # [b, s] int64
    labels: torch.Tensor  # [b, s] int64 (next tokens)
    loss_mask: torch.Tensor  # [b, s] float
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: list[tasks.Task] = field(default_factory=list)


def _pair(sum_: torch.Tensor, count: float | torch.Tensor) -> torch.Tensor:
    return torch.stack(
        [sum_.detach().float().cpu(), torch.as_tensor(count, dtype=torch.float32).cpu()]
    )


def sample_indices(step_base: int, micro: int, dp_rank: int, dp: int, mb: int) -> range:
    """Global sample numbers of one micro-batch: the order does not depend on the layout."""
    start = step_base + micro * dp * mb + dp_rank * mb
    return range(start, start + mb)


# ---- pretrain / anneal / long_context ---------------------------------------------------------
def lm_microbatch(windows: np.ndarray) -> MicroBatch:
    t = torch.from_numpy(windows)
    return MicroBatch(
        t[:, :-1].contiguous(), t[:, 1:].contiguous(), torch.ones(t.shape[0], t.shape[1] - 1)
    )


def lm_batches(
    data: MixedData, step_base: int, dp_rank: int, dp: int, mb: int, n_micro: int
) -> list[MicroBatch]:
    return [
        lm_microbatch(data.samples(sample_indices(step_base, m, dp_rank, dp, mb)))
        for m in range(n_micro)
    ]


def lm_loss(
    batch: MicroBatch, per_token: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    mask = batch.loss_mask
    total = (per_token.float() * mask).sum()
    count = mask.sum()
    return total, count.int(), {"loss": _pair(total, count)}


# ---- SFT -----------------------------------------------------------------------------------
def encode_example(
    tok: Tokenizer, prompt: str, response: str, seq_length: int
) -> tuple[list[int], int]:
    """ids of prompt+response+EOS (prompt and response tokenized apart), and the prompt length."""
    eos, _ = special_ids(tok)
    p = tok.encode(prompt).ids
    r = tok.encode(response).ids + [eos]
    ids = (p + r)[: seq_length + 1]
    return ids, len(p)


def response_microbatch(tok: Tokenizer, rows: list[tuple[str, str]], seq_length: int) -> MicroBatch:
    """Right-padded rows with a loss mask on the response tokens (and the final EOS)."""
    _, pad = special_ids(tok)
    tokens = torch.full((len(rows), seq_length + 1), pad, dtype=torch.int64)
    mask = torch.zeros(len(rows), seq_length)
    for i, (prompt, response) in enumerate(rows):
        ids, plen = encode_example(tok, prompt, response, seq_length)
        tokens[i, : len(ids)] = torch.tensor(ids)
        mask[i, plen - 1 : len(ids) - 1] = 1.0  # label positions that predict response tokens
    return MicroBatch(tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous(), mask)


def sft_batches(
    tok: Tokenizer,
    seed: int,
    kinds: dict[str, float],
    seq: int,
    step_base: int,
    dp_rank: int,
    dp: int,
    mb: int,
    n_micro: int,
) -> list[MicroBatch]:
    out = []
    for m in range(n_micro):
        ts = [
            tasks.task(i, seed, kinds=kinds) for i in sample_indices(step_base, m, dp_rank, dp, mb)
        ]
        out.append(response_microbatch(tok, [(t.prompt, t.answer) for t in ts], seq))
        out[-1].meta = ts
    return out


sft_loss = lm_loss


# ---- DPO -----------------------------------------------------------------------------------
def dpo_batches(
    tok: Tokenizer,
    seed: int,
    kinds: dict[str, float],
    seq: int,
    step_base: int,
    dp_rank: int,
    dp: int,
    mb: int,
    n_micro: int,
    held_out: bool = False,
) -> list[MicroBatch]:
    """Each micro-batch holds mb pairs as 2*mb rows: chosen rows first, then rejected rows."""
    out = []
    for m in range(n_micro):
        idx = sample_indices(step_base, m, dp_rank, dp, mb)
        ts = [tasks.task(i, seed, held_out=held_out, kinds=kinds) for i in idx]
        rejected = [
            tasks.corrupt(t, np.random.default_rng((seed, 11, i)))
            for t, i in zip(ts, idx, strict=True)
        ]
        rows = [(t.prompt, t.answer) for t in ts] + [
            (t.prompt, r) for t, r in zip(ts, rejected, strict=True)
        ]
        out.append(response_microbatch(tok, rows, seq))
        out[-1].meta = ts
    return out


def sequence_logp(batch: MicroBatch, per_token: torch.Tensor) -> torch.Tensor:
    return -(per_token.float() * batch.loss_mask).sum(dim=1)


def dpo_loss(
    beta: float, batch: MicroBatch, per_token: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    logp = sequence_logp(batch, per_token)
    ref = batch.extra["ref_logp"]
    n = logp.shape[0] // 2
    ratio_c, ratio_r = logp[:n] - ref[:n], logp[n:] - ref[n:]
    margin = beta * (ratio_c - ratio_r)
    losses = -torch.nn.functional.logsigmoid(margin)
    total = losses.sum()
    return (
        total,
        torch.tensor(n, dtype=torch.int),
        {
            "loss": _pair(total, n),
            "reward_margin": _pair(margin.sum(), n),
            "reward_accuracy": _pair((margin > 0).float().sum(), n),
            "chosen_logp": _pair(logp[:n].sum(), n),
        },
    )


# ---- GRPO ----------------------------------------------------------------------------------
def heldout_prompts(
    seed: int, kinds: dict[str, float], dp_rank: int, dp: int, total: int
) -> list[tasks.Task]:
    """This DP rank's share of a fixed set of held-out tasks (never trained on)."""
    per = total // dp
    return [tasks.task(dp_rank * per + k, seed, held_out=True, kinds=kinds) for k in range(per)]


def group_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(r - mean_group) / (std_group + 1e-4): DeepSeekMath sec. 4.1.2, outcome supervision."""
    g = rewards.view(-1, group_size)
    return ((g - g.mean(dim=1, keepdim=True)) / (g.std(dim=1, keepdim=True) + 1e-4)).view(-1)


def grpo_loss(
    clip_eps: float, kl_beta: float, batch: MicroBatch, per_token: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    logp = -per_token.float()
    mask = batch.loss_mask
    adv = batch.extra["advantages"][:, None]
    ratio = torch.exp(logp - logp.detach())
    surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
    delta = batch.extra["ref_logp_tokens"] - logp
    kl = torch.exp(delta) - delta - 1.0
    per_seq = ((-(surrogate - kl_beta * kl)) * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    kl_seq = (kl * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    n = per_seq.shape[0]
    total = per_seq.sum()
    return (
        total,
        torch.tensor(n, dtype=torch.int),
        {
            "loss": _pair(total, n),
            "kl": _pair(kl_seq.sum(), n),
            "reward": _pair(batch.extra["rewards"].sum(), n),
        },
    )


def completion_rows(
    tok: Tokenizer, prompts: list[tasks.Task], seq: int, max_prompt: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded prompt tokens [n, seq] and prompt lengths [n]."""
    _, pad = special_ids(tok)
    tokens = torch.full((len(prompts), seq), pad, dtype=torch.int64)
    lengths = torch.zeros(len(prompts), dtype=torch.int64)
    for i, t in enumerate(prompts):
        ids = tok.encode(t.prompt).ids[-max_prompt:]
        tokens[i, : len(ids)] = torch.tensor(ids)
        lengths[i] = len(ids)
    return tokens, lengths


def decode_completion(tok: Tokenizer, ids: list[int]) -> str:
    eos, pad = special_ids(tok)
    out = []
    for i in ids:
        if i in (eos, pad):
            break
        out.append(i)
    return tok.decode(out)

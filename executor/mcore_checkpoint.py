"""Phase checkpoints of the megatron-core path: megatron's dist_checkpointing, which reshards
across layouts (a phase may load its parent's weights into another TP/PP/DP layout), written
into the run's atomic folder layout (`checkpoints.py`: tmp folder, rename, `latest`/`final`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from scaleplan.executor import checkpoints as ckpt
from scaleplan.specs.plan import PhaseSpec

# The distributed optimizer's state is saved per DP shard, in parallel ("dp_reshardable"): a
# resume uses the same layout; a new phase loads weights only, so any layout may follow.
OPTIMIZER_CKPT_FORMAT = {"distrib_optim_sharding_type": "dp_reshardable"}


def _unwrap(chunk: Any) -> Any:
    """The GPTModel inside a DDP wrapper (same keys for the policy and the frozen reference)."""
    return getattr(chunk, "module", chunk)


def model_state(chunks: list[Any]) -> dict[str, Any]:
    if len(chunks) == 1:
        return {"model": _unwrap(chunks[0]).sharded_state_dict()}
    return {f"model{i}": _unwrap(c).sharded_state_dict() for i, c in enumerate(chunks)}


def load_model_state(chunks: list[Any], state: dict[str, Any]) -> None:
    if len(chunks) == 1:
        _unwrap(chunks[0]).load_state_dict(state["model"])
    else:
        for i, c in enumerate(chunks):
            _unwrap(c).load_state_dict(state[f"model{i}"])


def save_checkpoint(
    run_dir: Path,
    phase: PhaseSpec,
    step: int,
    chunks: list[Any],
    optimizer: Any,
    scheduler: Any,
    extra: dict[str, Any],
    final: bool,
) -> None:
    from megatron.core import dist_checkpointing

    if dist.get_rank() == 0:
        ckpt.prepare_tmp(run_dir, phase.name, step)
    dist.barrier()
    state = model_state(chunks)
    state["optimizer"] = optimizer.sharded_state_dict(state, metadata=OPTIMIZER_CKPT_FORMAT)
    state["scheduler"] = scheduler.state_dict()
    state["train"] = extra
    dist_checkpointing.save(state, str(ckpt.tmp_dir(run_dir, phase.name, step)))
    dist.barrier()
    if dist.get_rank() == 0:
        ckpt.commit(run_dir, phase.name, step, final=final)
    dist.barrier()


def load_checkpoint(
    path: Path, chunks: list[Any], optimizer: Any | None, scheduler: Any | None
) -> dict[str, Any]:
    """Full resume (model, optimizer, schedule, data position), or weights only (optimizer None)."""
    from megatron.core import dist_checkpointing

    state = model_state(chunks)
    if optimizer is not None:
        # megatron 0.16.1's distributed optimizer (torch Adam, no Apex/TE) needs allocated Adam
        # state to describe itself for loading; its own dummy step allocates it (the weights
        # and states are then overwritten by the checkpoint)
        for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
            if hasattr(opt, "_init_optimizer_states_with_dummy_values") and not opt.optimizer.state:
                opt._init_optimizer_states_with_dummy_values()
        state["optimizer"] = optimizer.sharded_state_dict(
            state, is_loading=True, metadata=OPTIMIZER_CKPT_FORMAT
        )
        state["scheduler"] = None
        state["train"] = None
    loaded = dist_checkpointing.load(state, str(path))
    load_model_state(chunks, loaded)
    if optimizer is not None:
        with torch.no_grad():  # copies into the (leaf) fp32 main-parameter shards
            optimizer.load_state_dict(loaded["optimizer"])
        scheduler.load_state_dict(loaded["scheduler"])
        return loaded["train"]
    return {}

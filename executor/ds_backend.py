"""DeepSpeed backend for ZeRO layouts (zero_stage 1-3): pretrain/anneal/long_context and SFT.

Called by `train.py` (`--backend deepspeed`, the default for zero_stage >= 2). The model is
`torch_gpt.TorchGPT`, built from the same ModelSpec (see its docstring for why not megatron's
GPTModel); data order, micro-batches and losses are the megatron path's (`objectives`), so a
ZeRO run sees the same samples as a megatron run of the same plan. The LR follows the plan's
schedule through megatron-core's OptimizerParamScheduler applied to DeepSpeed's optimizer.

DeepSpeed notes (shared/notes/engines-on-cpu.md): `"torch_adam": true` avoids the ~50 s FusedAdam
JIT build; the CPU accelerator's shared-memory op is compiled once into TORCH_EXTENSIONS_DIR
(default: `torch_extensions_dir()`, prebuilt by `make setup-engines`) and reused.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from scaleplan.executor import checkpoints as ckpt
from scaleplan.executor.metrics import MetricsWriter
from scaleplan.executor.run_support import deepspeed_refusal
from scaleplan.specs.errors import NotImplementedFeature, SpecError
from scaleplan.specs.plan import PhaseSpec, Plan

TAG = "ds"


def torch_extensions_dir() -> Path:
    """Where DeepSpeed's JIT-built ops are cached: one folder per Python environment and torch
    version (torch rebuilds an op whose build flags changed, so two environments sharing one
    folder would rebuild it back and forth, ~1-2 min each time on a small CPU)."""
    import hashlib
    import sys

    key = hashlib.sha256(sys.prefix.encode()).hexdigest()[:10]
    return (
        Path.home()
        / ".cache"
        / "scaleplan"
        / "torch_extensions"
        / f"torch{torch.__version__}-{key}"
    )


STALE_BUILD_LOCK_S = (
    900.0  # a JIT build of the op takes 1-2 min; a lock this old is a killed build's
)


def clear_stale_build_locks(root: Path, older_than_s: float = STALE_BUILD_LOCK_S) -> list[Path]:
    """Remove torch cpp_extension `lock` files left by a killed build. torch's FileBaton holds no
    PID and waits for such a lock forever, so an interrupted `make setup-engines` would hang every
    later build."""
    import time

    removed = []
    for lock in root.glob("*/lock"):
        if time.time() - lock.stat().st_mtime > older_than_s:
            lock.unlink(missing_ok=True)
            removed.append(lock)
    return removed


def prebuild_cpu_ops() -> None:
    """Build DeepSpeed's CPU shared-memory collective op into `torch_extensions_dir()` now
    (`make setup-engines`), so that the first ZeRO run does not pay the JIT build."""
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(torch_extensions_dir()))
    if torch.cuda.is_available():
        return  # GPU machines use NCCL; the op is CPU-only
    for lock in clear_stale_build_locks(Path(os.environ["TORCH_EXTENSIONS_DIR"])):
        print(f"removed a stale build lock: {lock}")
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is not None:
        builder.load()
        print(f"DeepSpeed CPU op cached in {os.environ['TORCH_EXTENSIONS_DIR']}")


def ds_config(plan: Plan, phase: PhaseSpec, on_gpu: bool) -> dict[str, Any]:
    """The phase's compiled DeepSpeed config (`scaleplan compile --engine deepspeed` emits the
    same), with the entry point's documented changes:

    - no `scheduler`: the LR follows the plan's exact schedule through megatron-core's
      OptimizerParamScheduler, as on the megatron path (DeepSpeed has no WSD);
    - `steps_per_print` off: the entry point writes its own metrics;
    - without a GPU: fp32 (no bf16/fp16 section), torch's Adam instead of the FusedAdam CUDA op,
      and unpinned offload buffers (pinning needs CUDA).
    """
    from scaleplan.executor.compile.common import phase_contexts
    from scaleplan.executor.compile.deepspeed import deepspeed_config

    ctx = next(c for c in phase_contexts(plan) if c.name == phase.name)
    cfg = deepspeed_config(ctx)
    cfg.pop("scheduler", None)
    cfg["steps_per_print"] = 10**9
    if not on_gpu:
        cfg.pop("bf16", None)
        cfg.pop("fp16", None)
        cfg["optimizer"]["params"]["torch_adam"] = True
        for key in ("offload_optimizer", "offload_param"):
            if key in cfg["zero_optimization"]:
                cfg["zero_optimization"][key]["pin_memory"] = False
    return cfg


def train_deepspeed(plan: Plan, phase: PhaseSpec, run_dir: Path, args: argparse.Namespace) -> None:
    refusal = deepspeed_refusal(phase)
    if refusal is not None:
        raise refusal
    lay = phase.layout
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(torch_extensions_dir()))
    import deepspeed

    from scaleplan.executor import objectives as obj
    from scaleplan.executor.compile.common import effective_rope_base, embedding_vocab_size
    from scaleplan.executor.data.packing import MixedData, PackedSource, token_stream
    from scaleplan.executor.data.tasks import kind_weights
    from scaleplan.executor.data.tokenizer import load_or_train
    from scaleplan.executor.mcore_build import build_scheduler
    from scaleplan.executor.runners import build_on_rank0, cache_dir
    from scaleplan.executor.torch_gpt import TorchGPT

    on_gpu = torch.cuda.is_available()
    if on_gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if world != lay.num_gpus:
        raise SpecError(
            f"the layout needs {lay.num_gpus} processes but {world} were launched",
            field=f"phases.{phase.name}.layout",
        )

    cache = cache_dir(run_dir)
    tok = build_on_rank0(lambda: load_or_train(cache, plan.model.vocab_size))
    seq, mb = phase.seq_length, lay.micro_batch
    if phase.objective.kind == "lm":
        sources = [
            (
                PackedSource(
                    d.name,
                    build_on_rank0(lambda d=d: token_stream(tok, cache, d.name, d.path)),
                    seq,
                ),
                d.weight,
            )
            for d in phase.data
        ]
        data = MixedData(sources, args.seed)

        def micro_batches(consumed: int) -> list[obj.MicroBatch]:
            return obj.lm_batches(data, consumed, rank, world, mb, lay.num_microbatches)
    else:
        kinds = kind_weights([(d.name, d.weight) for d in phase.data])

        def micro_batches(consumed: int) -> list[obj.MicroBatch]:
            return obj.sft_batches(
                tok, args.seed, kinds, seq, consumed, rank, world, mb, lay.num_microbatches
            )

    torch.manual_seed(args.seed)
    model = TorchGPT(plan.model, embedding_vocab_size(plan), effective_rope_base(plan, phase))
    engine, optimizer, _, _ = deepspeed.initialize(
        model=model, model_parameters=model.parameters(), config=ds_config(plan, phase, on_gpu)
    )
    scheduler = build_scheduler(optimizer, phase)

    start_step, consumed, init_path = 0, 0, ""
    resume_from = ckpt.latest(run_dir, phase.name) if args.resume else None
    if resume_from is not None:
        _, client = engine.load_checkpoint(str(resume_from), tag=TAG)
        start_step, consumed = int(client["step"]), int(client["consumed"])
        scheduler.load_state_dict(client["scheduler"])
    elif phase.init_from is not None:
        parent = ckpt.require_final(run_dir, phase.init_from, f"phases.{phase.name}.init_from")
        if not (parent / TAG).is_dir():
            raise NotImplementedFeature(
                f"phase '{phase.init_from}' was trained by megatron; loading megatron checkpoints into the "
                "DeepSpeed backend is not implemented",
                field=f"phases.{phase.name}.init_from",
            )
        loaded, _ = engine.load_checkpoint(
            str(parent),
            tag=TAG,
            load_optimizer_states=False,
            load_lr_scheduler_states=False,
            load_module_only=True,
        )
        if loaded is None:
            raise RuntimeError(f"DeepSpeed could not load the weights of {parent}")
        init_path = str(parent)

    metrics = MetricsWriter.for_phase(
        run_dir, plan, phase, "cuda" if on_gpu else "cpu", rank, resume_from, start_step
    )
    metrics.start(
        start_step, world_size=world, layout=lay, backend="deepspeed", init_from=init_path,
        resumed_from=resume_from, seq_length=seq,
    )  # fmt: skip

    def save(step: int, final: bool) -> None:
        if rank == 0:
            ckpt.prepare_tmp(run_dir, phase.name, step)
        dist.barrier()
        engine.save_checkpoint(
            str(ckpt.tmp_dir(run_dir, phase.name, step)),
            tag=TAG,
            client_state={"step": step, "consumed": consumed, "scheduler": scheduler.state_dict()},
        )
        dist.barrier()
        if rank == 0:
            ckpt.commit(run_dir, phase.name, step, final=final)
        dist.barrier()

    last_step = min(phase.steps, args.max_steps or phase.steps)
    step = start_step
    for step in range(start_step + 1, last_step + 1):
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        sums = torch.zeros(2)
        for b in micro_batches(consumed):  # DeepSpeed accumulates and steps on the last one
            per_token = engine(b.tokens.to(engine.device), b.labels.to(engine.device))
            mask = b.loss_mask.to(per_token.device)
            loss_sum, count = (per_token * mask).sum(), mask.sum()
            engine.backward(loss_sum / count.clamp(min=1))
            engine.step()
            sums += torch.stack([loss_sum.detach().float(), count.float()]).cpu()
        scheduler.step(increment=1)
        consumed += lay.global_batch
        dist.all_reduce(sums)
        grad_norm = engine.get_global_grad_norm()
        metrics.step(
            step,
            float(sums[0] / sums[1]),
            lr,
            float(grad_norm) if grad_norm is not None else None,
            time.perf_counter() - t0,
            lay.global_batch * seq,
            {},
        )
        if step % phase.checkpoint_every_steps == 0 and step < last_step:
            save(step, final=False)
    save(step, final=last_step == phase.steps)
    metrics.close({"step": step, "finished": last_step == phase.steps})
    dist.barrier()
    dist.destroy_process_group()

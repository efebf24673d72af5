"""The training entry point for one phase of a plan, built on megatron-core.

    torchrun --nproc-per-node G -m scaleplan.executor.train --plan PLAN.json --phase NAME \
        --run-dir RUN_DIR [--resume] [--backend megatron|deepspeed] [--max-steps N]

Read top to bottom (`main`): arguments -> plan and phase -> the phase's compiled megatron-core
document (the same `scaleplan compile` emits; `mcore_build.py` turns it into megatron's config
objects, with documented CPU overrides) -> device and process groups -> GPTModel chunks -> DDP ->
megatron optimizer (distributed when the layout asks) -> LR schedule -> reference model (DPO,
GRPO) -> restore (resume, or `init_from` weights, `mcore_checkpoint.py`) -> the step loop
(megatron's forward-backward schedules, pipeline included) with metrics and atomic checkpoints
-> final checkpoint.

Layouts with zero_stage >= 2 train through DeepSpeed (`ds_backend.py`). Without a GPU, the
CPU device adapter (`cpu_adapter.py`) is installed first; with one it is never imported.
"""

from __future__ import annotations

import argparse
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from scaleplan.executor import checkpoints as ckpt
from scaleplan.executor import mcore_build as mb
from scaleplan.executor.mcore_checkpoint import load_checkpoint, save_checkpoint
from scaleplan.executor.metrics import MetricsWriter
from scaleplan.executor.run_support import default_backend
from scaleplan.specs.errors import SpecError
from scaleplan.specs.loader import load_spec
from scaleplan.specs.plan import PhaseSpec, Plan

SEED = 1234
build_scheduler = mb.build_scheduler  # re-exported: the DeepSpeed path uses the same LR schedule


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plan", required=True)
    p.add_argument("--phase", required=True)
    p.add_argument("--run-dir", required=True)
    p.add_argument(
        "--resume", action="store_true", help="continue from the phase's latest checkpoint"
    )
    p.add_argument(
        "--backend",
        choices=["megatron", "deepspeed"],
        default=None,
        help="default: deepspeed for zero_stage>=2 layouts, else megatron",
    )
    p.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="stop after this step (smoke runs); the phase stays unfinished, so phases that "
        "start from it refuse until it is finished with --resume",
    )
    p.add_argument("--seed", type=int, default=SEED)
    return p.parse_args(argv)


def init_distributed(phase: PhaseSpec) -> str:
    """gloo + the CPU adapter without a GPU, nccl with one. Returns the device kind."""
    if torch.cuda.is_available():
        device, backend = "cuda", "nccl"
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    else:
        from scaleplan.executor import cpu_adapter  # CPU only: never imported on a GPU machine

        cpu_adapter.install()
        device, backend = "cpu", "gloo"
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    world = int(os.environ.get("WORLD_SIZE", 1))
    dist.init_process_group(backend, rank=int(os.environ.get("RANK", 0)), world_size=world)
    if world != phase.layout.num_gpus:
        raise SpecError(
            f"the layout needs {phase.layout.num_gpus} processes (tp*pp*cp*dp) but "
            f"{world} were launched",
            field=f"phases.{phase.name}.layout",
        )
    return device


# ---- the run ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    plan = load_spec(Plan, args.plan)
    try:
        phase = plan.phase(args.phase)
    except KeyError:
        raise SpecError(
            f"phase '{args.phase}' is not in the plan", field="phase", source=args.plan
        ) from None
    run_dir = Path(args.run_dir)
    backend = args.backend or default_backend(phase.layout)
    if backend == "deepspeed":
        from scaleplan.executor.ds_backend import train_deepspeed

        return train_deepspeed(plan, phase, run_dir, args)

    from megatron.core.pipeline_parallel import get_forward_backward_func

    from scaleplan.executor.runners import make_runner

    # the compiled document and its megatron config objects (refused here, before any process
    # group exists, when this machine cannot train what the plan asks)
    doc = mb.phase_document(plan, phase)
    mb.check_supported(doc, "cuda" if torch.cuda.is_available() else "cpu")
    device = init_distributed(phase)
    configs = mb.megatron_configs(doc, device)
    config = configs["transformer"]
    mb.init_parallel_state(doc, args.seed)
    lay = phase.layout
    rank = dist.get_rank()

    rope_base = doc["gpt_model"]["rotary_base"]
    torch.manual_seed(args.seed)  # megatron's DDP does not broadcast weights: same init everywhere
    chunks = mb.wrap_ddp(mb.build_model(doc, config, device), config, configs["ddp"])
    optimizer = mb.build_optimizer(chunks, configs["optimizer"])
    scheduler = mb.build_scheduler(optimizer, phase)
    mb.wire_schedule_hooks(config, chunks, optimizer)

    reference: list[Any] | None = None
    if phase.objective.kind in ("dpo", "grpo"):  # frozen copy of the starting policy
        reference = mb.build_model(doc, config, device)
        for p in (p for c in reference for p in c.parameters()):
            p.requires_grad_(False)

    start_step, consumed, init_path = 0, 0, None
    resume_from = ckpt.latest(run_dir, phase.name) if args.resume else None
    if resume_from is not None:
        train_state = load_checkpoint(resume_from, chunks, optimizer, scheduler)
        start_step, consumed = int(train_state["step"]), int(train_state["consumed"])
    elif phase.init_from is not None:
        init_path = ckpt.require_final(run_dir, phase.init_from, f"phases.{phase.name}.init_from")
        load_checkpoint(init_path, chunks, None, None)
    if reference is not None:
        init = ckpt.final(run_dir, phase.init_from) if phase.init_from else None
        if init is not None:
            load_checkpoint(init, reference, None, None)
        else:  # no parent phase: the reference is the (identically seeded) initial policy
            for r, c in zip(reference, chunks, strict=True):
                r.load_state_dict(c.module.state_dict())

    forward_backward = get_forward_backward_func()
    seq = phase.seq_length
    step_kwargs = dict(
        num_microbatches=lay.num_microbatches, seq_length=seq, micro_batch_size=lay.micro_batch
    )
    causal = torch.triu(torch.ones(seq, seq, dtype=torch.bool), diagonal=1)[None, None]
    positions = torch.arange(seq)[None, :]
    if device == "cuda":
        causal, positions = causal.cuda(), positions.cuda()

    def forward_step(
        loss_fn: Any, with_labels: bool, data_iterator: Any, model: Any
    ) -> tuple[Any, Any]:
        b = next(data_iterator)
        if device == "cuda":  # batches are built on the CPU
            b = obj_to_cuda(b)
        out = model(
            b.tokens,
            positions.expand_as(b.tokens),
            causal,
            labels=b.labels if with_labels else None,
        )
        return out, partial(loss_fn, b)

    def run_schedule(
        model: list[Any],
        batches: list[Any],
        loss_fn: Any,
        forward_only: bool,
        with_labels: bool = True,
        non_loss: bool = False,
    ) -> list[Any]:
        its: Any = [iter(batches) for _ in model] if len(model) > 1 else iter(batches)
        kw = dict(
            step_kwargs, num_microbatches=len(batches), micro_batch_size=batches[0].tokens.shape[0]
        )
        return forward_backward(
            forward_step_func=partial(forward_step, loss_fn, with_labels),
            data_iterator=its,
            model=model if len(model) > 1 else model[0],
            forward_only=forward_only,
            collect_non_loss_data=non_loss,
            **kw,
        )

    metrics = MetricsWriter.for_phase(run_dir, plan, phase, device, rank, resume_from, start_step)
    metrics.start(
        start_step, world_size=dist.get_world_size(), layout=lay, backend="megatron",
        init_from=init_path, resumed_from=resume_from, seq_length=phase.seq_length,
        rope_base=rope_base,
    )  # fmt: skip
    # the phase objective: its data (tokenizer, corpora or tasks), batches, losses and evaluations
    runner = make_runner(plan, phase, run_dir, args.seed, chunks, reference, run_schedule)
    if start_step == 0:
        metrics.write({"event": "eval", "step": 0, **runner.evaluate()})

    last_step = min(phase.steps, args.max_steps or phase.steps)
    step = start_step
    for step in range(start_step + 1, last_step + 1):
        t0 = time.perf_counter()
        for c in chunks:
            c.zero_grad_buffer()
        optimizer.zero_grad()
        batches, loss_fn, extra = runner.train_batches(step, consumed)
        reports = run_schedule(chunks, batches, loss_fn, forward_only=False)
        lr = optimizer.param_groups[0]["lr"]  # the LR this update uses
        ok, grad_norm, _ = optimizer.step()
        scheduler.step(increment=1)
        consumed += lay.global_batch
        values = runner.reduce(reports)
        step_time_s = time.perf_counter() - t0
        metrics.step(
            step,
            values.pop("loss"),
            lr,
            float(grad_norm) if grad_norm is not None else None,
            step_time_s,
            lay.global_batch * seq,
            {**values, **extra, "update_ok": bool(ok)},
        )
        fault_injection(step)
        if step % phase.checkpoint_every_steps == 0 and step < last_step:
            save_checkpoint(
                run_dir,
                phase,
                step,
                chunks,
                optimizer,
                scheduler,
                {"step": step, "consumed": consumed},
                final=False,
            )
    metrics.write({"event": "eval", "step": step, **runner.evaluate()})
    done = last_step == phase.steps
    save_checkpoint(
        run_dir,
        phase,
        step,
        chunks,
        optimizer,
        scheduler,
        {"step": step, "consumed": consumed},
        final=done,
    )
    metrics.close({"step": step, "finished": done})
    if not done and rank == 0:
        print(
            f"{phase.name}: stopped at step {step} of {phase.steps} (--max-steps); the phase is "
            "unfinished, so phases that start from it refuse until it is finished with --resume",
            flush=True,
        )
    dist.barrier()
    dist.destroy_process_group()


def obj_to_cuda(b: Any) -> Any:
    """A micro-batch with its tensors on the current GPU."""
    from dataclasses import replace

    return replace(
        b,
        tokens=b.tokens.cuda(non_blocking=True),
        labels=b.labels.cuda(non_blocking=True),
        loss_mask=b.loss_mask.cuda(non_blocking=True),
        extra={k: v.cuda(non_blocking=True) for k, v in b.extra.items()},
    )


def fault_injection(step: int) -> None:
    """Tests only: SCALEPLAN_KILL_AT_STEP=N[:RANK] SIGKILLs that rank (default 0) after step N."""
    spec = os.environ.get("SCALEPLAN_KILL_AT_STEP")
    if not spec:
        return
    at, _, who = spec.partition(":")
    if step == int(at) and dist.get_rank() == int(who or 0):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":  # dist_checkpointing starts helper processes: keep this guard
    try:
        main()
    except SpecError as exc:
        import sys

        print(f"error: {exc.message}", file=sys.stderr)
        sys.exit(2)

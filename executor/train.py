"""The training entry point for one phase of a plan, built on megatron-core.

    torchrun --nproc-per-node G -m scaleplan.executor.train --plan PLAN.json --phase NAME \
        --run-dir RUN_DIR [--resume] [--backend megatron|deepspeed] [--max-steps N]

Read top to bottom: arguments -> plan and phase -> device and process groups (`parallel_state`
with the phase layout) -> tokenizer and data -> GPTModel chunks with the layout -> DDP ->
megatron optimizer (distributed when the layout asks) -> LR schedule -> reference model (DPO,
GRPO) -> restore (resume, or `init_from` weights) -> the step loop (megatron's forward-backward
schedules, pipeline included) with metrics and atomic checkpoints -> final checkpoint.

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
from scaleplan.executor.metrics import MetricsWriter
from scaleplan.specs.errors import NotImplementedFeature, SpecError
from scaleplan.specs.loader import load_spec
from scaleplan.specs.plan import PhaseSpec, Plan

SEED = 1234


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
    p.add_argument("--max-steps", type=int, default=None, help="stop after this step (smoke runs)")
    p.add_argument("--seed", type=int, default=SEED)
    return p.parse_args(argv)


def effective_rope_base(plan: Plan, phase: PhaseSpec) -> float:
    """A phase's RoPE base: its own, else inherited along `init_from` (long-context extension)."""
    if phase.rope_base is not None:
        return phase.rope_base
    if phase.init_from is not None:
        return effective_rope_base(plan, plan.phase(phase.init_from))
    return plan.model.rope_base


def padded_vocab(vocab_size: int) -> int:
    """Megatron pads the embedding to a multiple of 128 (x tp); 128 keeps it layout-independent."""
    return -(-vocab_size // 128) * 128


# ---- device and process groups ----------------------------------------------------------------
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


def gpu_only_features(phase: PhaseSpec) -> list[str]:
    """Layout features megatron-core runs only with TransformerEngine (not on the CPU adapter)."""
    lay = phase.layout
    wanted = {
        "sequence parallel": lay.sequence_parallel,
        "context parallel": lay.cp > 1,
        "fp8": lay.precision == "fp8",
    }
    return [name for name, on in wanted.items() if on]


def init_parallel_state(phase: PhaseSpec, seed: int) -> None:
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    lay = phase.layout
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=lay.tp,
        pipeline_model_parallel_size=lay.pp,
        virtual_pipeline_model_parallel_size=lay.vp if lay.vp > 1 else None,
        context_parallel_size=lay.cp,
        expert_model_parallel_size=lay.ep,
        expert_tensor_parallel_size=lay.expert_tp,
        order=lay.rank_order,
    )
    model_parallel_cuda_manual_seed(seed)


# ---- model ------------------------------------------------------------------------------------
def transformer_config(plan: Plan, phase: PhaseSpec, device: str) -> Any:
    """ModelSpec x LayoutSpec -> megatron TransformerConfig (fp32 on CPU, the plan's on GPU)."""
    import torch.nn.functional as F
    from megatron.core.transformer import TransformerConfig

    m, lay = plan.model, phase.layout
    on_gpu = device == "cuda"
    bf16 = on_gpu and lay.precision in ("bf16", "fp8")
    moe: dict[str, Any] = {}
    if m.moe is not None:
        pattern = [0] * m.moe.first_dense_layers + [
            int(i % m.moe.layer_freq == 0) for i in range(m.num_layers - m.moe.first_dense_layers)
        ]
        moe = dict(
            num_moe_experts=m.moe.num_experts,
            moe_router_topk=m.moe.top_k,
            moe_ffn_hidden_size=m.moe.expert_ffn_hidden_size,
            moe_layer_freq=pattern,
            moe_shared_expert_intermediate_size=(
                m.moe.num_shared_experts * m.moe.expert_ffn_hidden_size
            )
            or None,
            moe_token_dispatcher_type="alltoall",
            moe_router_load_balancing_type="aux_loss",
            moe_aux_loss_coeff=1e-2,
            moe_router_pre_softmax=m.moe.top_k == 1,  # megatron requires it for top-1 routing
            moe_grouped_gemm=False,
        )
    recompute: dict[str, Any] = {}
    if lay.recompute == "full":
        recompute = dict(
            recompute_granularity="full",
            recompute_method="uniform",
            recompute_num_layers=lay.recompute_layers or 1,
        )
    elif lay.recompute == "selective":
        recompute = dict(recompute_granularity="selective")
    return TransformerConfig(
        num_layers=m.num_layers,
        hidden_size=m.hidden_size,
        num_attention_heads=m.num_heads,
        num_query_groups=m.kv_heads,
        kv_channels=m.head_size,
        ffn_hidden_size=m.ffn_hidden_size,
        gated_linear_unit=m.activation == "swiglu",
        activation_func=F.silu if m.activation == "swiglu" else F.gelu,
        normalization="RMSNorm" if m.norm == "rmsnorm" else "LayerNorm",
        add_bias_linear=m.bias,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=0.02,
        tensor_model_parallel_size=lay.tp,
        pipeline_model_parallel_size=lay.pp,
        virtual_pipeline_model_parallel_size=lay.vp if lay.vp > 1 else None,
        context_parallel_size=lay.cp,
        expert_model_parallel_size=lay.ep,
        expert_tensor_parallel_size=lay.expert_tp,
        sequence_parallel=lay.sequence_parallel,
        bf16=bf16,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        pipeline_dtype=torch.bfloat16 if bf16 else torch.float32,
        use_cpu_initialization=not on_gpu,
        perform_initialization=True,
        gradient_accumulation_fusion=False,
        masked_softmax_fusion=on_gpu,
        bias_activation_fusion=on_gpu and m.bias,
        bias_dropout_fusion=on_gpu,
        apply_rope_fusion=False,
        persist_layer_norm=False,
        fp8="hybrid" if lay.precision == "fp8" else None,
        **moe,
        **recompute,
    )


def build_model(
    plan: Plan, phase: PhaseSpec, config: Any, device: str, rope_base: float
) -> list[Any]:
    """One GPTModel per virtual pipeline stage of this rank (the TE spec on GPU when present)."""
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    m, lay = plan.model, phase.layout
    n_experts = m.moe.num_experts if m.moe else None
    spec = get_gpt_layer_local_spec(
        num_experts=n_experts, moe_grouped_gemm=False, normalization=config.normalization
    )
    if device == "cuda":
        try:
            from megatron.core.models.gpt.gpt_layer_specs import (
                get_gpt_layer_with_transformer_engine_spec,
            )

            spec = get_gpt_layer_with_transformer_engine_spec(
                num_experts=n_experts, moe_grouped_gemm=bool(n_experts)
            )
        except (ImportError, AssertionError):  # no TransformerEngine: keep the local spec
            pass
    chunks = []
    vp = lay.vp if lay.vp > 1 else None
    for i in range(lay.vp):
        vp_stage = i if vp else None
        chunk = GPTModel(
            config=config,
            transformer_layer_spec=spec,
            vocab_size=padded_vocab(m.vocab_size),
            max_sequence_length=phase.seq_length,
            pre_process=parallel_state.is_pipeline_first_stage(
                ignore_virtual=vp is None, vp_stage=vp_stage
            ),
            post_process=parallel_state.is_pipeline_last_stage(
                ignore_virtual=vp is None, vp_stage=vp_stage
            ),
            share_embeddings_and_output_weights=m.tied_embeddings,
            position_embedding_type="rope"
            if m.position_embedding == "rope"
            else "learned_absolute",
            rotary_base=int(rope_base),
            vp_stage=vp_stage,
        )
        chunks.append(chunk.cuda() if device == "cuda" else chunk)
    return chunks


def wrap_ddp(chunks: list[Any], config: Any, phase: PhaseSpec) -> list[Any]:
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig

    lay = phase.layout
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=lay.overlap_grad_reduce and lay.dp > 1,
        use_distributed_optimizer=lay.distributed_optimizer or lay.zero_stage == 1,
        overlap_param_gather=lay.overlap_param_gather and lay.distributed_optimizer,
    )
    return [
        DistributedDataParallel(config, ddp_config, c, disable_bucketing=i > 0)
        for i, c in enumerate(chunks)
    ]


def wire_schedule_hooks(config: Any, chunks: list[Any], optimizer: Any) -> None:
    """What megatron's schedules call: DP grad sync (finalize), no_sync across micro-batches,
    loss scaling, and the overlapped grad reduce / param gather of the DDP buckets."""
    from megatron.core.distributed import finalize_model_grads

    def one_or_list(fns: list[Any]) -> Any:
        return fns[0] if len(fns) == 1 else fns

    config.finalize_model_grads_func = finalize_model_grads
    config.grad_scale_func = optimizer.scale_loss
    config.no_sync_func = one_or_list([c.no_sync for c in chunks])
    if chunks[0].ddp_config.overlap_grad_reduce:
        config.grad_sync_func = one_or_list([c.start_grad_sync for c in chunks])
    if chunks[0].ddp_config.overlap_param_gather:
        config.param_sync_func = one_or_list([c.start_param_sync for c in chunks])


# ---- optimizer and LR schedule ------------------------------------------------------------------
def build_optimizer(chunks: list[Any], config: Any, phase: PhaseSpec) -> Any:
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    s, lay = phase.schedule, phase.layout
    opt_config = OptimizerConfig(
        optimizer="adam",
        lr=s.peak_lr,
        min_lr=s.min_lr,
        weight_decay=s.weight_decay,
        adam_beta1=s.adam_beta1,
        adam_beta2=s.adam_beta2,
        clip_grad=s.grad_clip,
        bf16=config.bf16,
        params_dtype=config.params_dtype,
        use_distributed_optimizer=lay.distributed_optimizer or lay.zero_stage == 1,
        overlap_param_gather=lay.overlap_param_gather and lay.distributed_optimizer,
    )
    return get_megatron_optimizer(opt_config, chunks)


def build_scheduler(optimizer: Any, phase: PhaseSpec) -> Any:
    """The plan's ScheduleSpec on megatron's OptimizerParamScheduler.

    wsd -> 'WSD' (decay over the last decay_steps; shape linear/cosine/exponential/minus_sqrt),
    cosine/linear/constant -> the same styles. `start_lr` is the warmup's first LR, or without
    warmup the LR the decay starts from (an anneal that starts at the stable LR).
    """
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    s = phase.schedule
    total = max(phase.steps, s.warmup_steps + 1)
    max_lr = s.start_lr if (s.start_lr is not None and s.warmup_steps == 0) else s.peak_lr
    style = {"wsd": "WSD", "cosine": "cosine", "linear": "linear", "constant": "constant"}[s.style]
    shape = {
        "linear": "linear",
        "cosine": "cosine",
        "sqrt": "minus_sqrt",
        "exponential": "exponential",
    }
    return OptimizerParamScheduler(
        optimizer,
        init_lr=(s.start_lr or 0.0) if s.warmup_steps else max_lr,
        max_lr=max_lr,
        min_lr=min(s.min_lr, max_lr),
        lr_warmup_steps=s.warmup_steps,
        lr_decay_steps=total,
        lr_decay_style=style,
        start_wd=s.weight_decay,
        end_wd=s.weight_decay,
        wd_incr_steps=total,
        wd_incr_style="constant",
        wsd_decay_steps=min(s.decay_steps, total) if style == "WSD" else None,
        lr_wsd_decay_style=shape[s.decay_shape] if style == "WSD" else None,
    )


# ---- checkpoints (megatron dist_checkpointing: resharding across layouts) -------------------------
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
    backend = args.backend or ("deepspeed" if phase.layout.zero_stage >= 2 else "megatron")
    if backend == "deepspeed":
        from scaleplan.executor.ds_backend import train_deepspeed

        return train_deepspeed(plan, phase, run_dir, args)

    from megatron.core.pipeline_parallel import get_forward_backward_func

    from scaleplan.executor.runners import make_runner

    if not torch.cuda.is_available() and (lay_needs_gpu := gpu_only_features(phase)):
        raise NotImplementedFeature(
            f"{', '.join(lay_needs_gpu)} need TransformerEngine on a GPU; this machine has none "
            "(see shared/notes/engines-on-cpu.md)",
            field=f"phases.{phase.name}.layout",
        )
    device = init_distributed(phase)
    init_parallel_state(phase, args.seed)
    lay = phase.layout
    rank = dist.get_rank()

    config = transformer_config(plan, phase, device)
    rope_base = effective_rope_base(plan, phase)
    torch.manual_seed(args.seed)  # megatron's DDP does not broadcast weights: same init everywhere
    chunks = wrap_ddp(build_model(plan, phase, config, device, rope_base), config, phase)
    optimizer = build_optimizer(chunks, config, phase)
    scheduler = build_scheduler(optimizer, phase)
    wire_schedule_hooks(config, chunks, optimizer)

    reference: list[Any] | None = None
    if phase.objective.kind in ("dpo", "grpo"):  # frozen copy of the starting policy
        reference = build_model(plan, phase, config, device, rope_base)
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
    mb = lay.micro_batch
    step_kwargs = dict(num_microbatches=lay.num_microbatches, seq_length=seq, micro_batch_size=mb)
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

    metrics = MetricsWriter(
        run_dir / "metrics" / f"{phase.name}.jsonl",
        plan,
        phase,
        device,
        enabled=rank == 0,
        append=resume_from is not None,
        start_step=start_step,
    )
    metrics.write(
        {
            "event": "start",
            "step": start_step,
            "device": device,
            "world_size": dist.get_world_size(),
            "layout": lay.model_dump(),
            "backend": "megatron",
            "init_from": str(init_path or ""),
            "resumed_from": str(resume_from or ""),
            "rope_base": rope_base,
            "seq_length": phase.seq_length,
            "model": plan.model.model_dump(mode="json"),
            "cluster": plan.cluster.model_dump(mode="json"),
            "model_flops_per_token": metrics.model_flops_per_token,
        }
    )
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

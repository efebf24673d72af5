"""Plan phase -> DeepSpeed JSON configuration (DeepSpeed 0.19.8 key names).

Only layouts that DeepSpeed itself can run are emitted: data parallel with ZeRO 0-3 (and offload),
AutoTP tensor parallelism, and `PipelineModule` pipelines with ZeRO 0/1. Everything else is refused
with the reason. DeepSpeed silently ignores unknown top-level keys, so every emitted config is
checked against `KNOWN_TOP_LEVEL_KEYS` (tests check that list against DeepSpeed's own constants).
"""

from __future__ import annotations

from typing import Any

from scaleplan.specs.errors import NotImplementedFeature, SpecError

from .common import PhaseContext

DEEPSPEED_VERSION = "0.19.8"

# Top-level keys of a DeepSpeed config (deepspeed/runtime/constants.py and the config docs).
KNOWN_TOP_LEVEL_KEYS: frozenset[str] = frozenset(
    {
        "train_batch_size",
        "train_micro_batch_size_per_gpu",
        "gradient_accumulation_steps",
        "optimizer",
        "scheduler",
        "fp16",
        "bf16",
        "zero_optimization",
        "gradient_clipping",
        "steps_per_print",
        "wall_clock_breakdown",
        "activation_checkpointing",
        "tensor_parallel",
        "pipeline",
        "communication_data_type",
        "prescale_gradients",
        "gradient_predivide_factor",
        "zero_allow_untested_optimizer",
        "checkpoint",
        "data_types",
        "seed",
    }
)

# keys this module emits inside "zero_optimization"
KNOWN_ZERO_KEYS: frozenset[str] = frozenset(
    {
        "stage",
        "overlap_comm",
        "contiguous_gradients",
        "reduce_scatter",
        "reduce_bucket_size",
        "allgather_bucket_size",
        "offload_optimizer",
        "offload_param",
        "stage3_prefetch_bucket_size",
        "stage3_param_persistence_threshold",
        "stage3_gather_16bit_weights_on_model_save",
    }
)


def _refuse(ctx: PhaseContext) -> None:
    lay, f = ctx.phase.layout, f"{ctx.field}.layout"
    if lay.pp > 1 and lay.zero_stage >= 2:
        raise SpecError(
            f"DeepSpeed cannot combine pipeline parallelism (pp={lay.pp}) with ZeRO-{lay.zero_stage}: "
            "its PipelineEngine supports ZeRO stage 0 or 1 only",
            field=f"{f}.zero_stage",
        )
    unsupported = [
        (
            lay.cp > 1,
            "cp",
            "context parallelism (ring attention) is a Megatron-core feature; DeepSpeed's Ulysses is a different layout",
        ),
        (
            lay.ep > 1,
            "ep",
            "expert parallelism needs deepspeed.moe layers inside the model, which a JSON config cannot express",
        ),
        (lay.vp > 1, "vp", "DeepSpeed's PipelineEngine has no interleaved (virtual) stages"),
        (
            lay.account_embedding_loss_in_pipeline_split and lay.pp > 1,
            "account_embedding_loss_in_pipeline_split",
            "the embedding/loss-aware layer split is Megatron-core's; the PipelineModule here "
            "partitions stages by parameter count",
        ),
        (
            lay.balanced_pipeline_layout and lay.pp > 1,
            "balanced_pipeline_layout",
            "the balanced uneven layer layout is Megatron-core's pipeline_model_parallel_layout; "
            "the PipelineModule here partitions stages by parameter count",
        ),
        (
            lay.sequence_parallel,
            "sequence_parallel",
            "Megatron sequence parallelism has no DeepSpeed config equivalent",
        ),
        (
            lay.recompute == "selective",
            "recompute",
            "selective recompute is Megatron-only; DeepSpeed checkpoints whole layers",
        ),
        (
            lay.precision == "fp8",
            "precision",
            "DeepSpeed has no fp8 training config (fp8 needs TransformerEngine)",
        ),
        (lay.tp > 1 and lay.pp > 1, "tp", "AutoTP together with a PipelineModule is not supported"),
        (lay.tp > 1 and lay.zero_stage >= 3, "tp", "AutoTP is not combined with ZeRO-3 here"),
    ]
    for bad, name, reason in unsupported:
        if bad:
            raise NotImplementedFeature(f"DeepSpeed: {reason}", field=f"{f}.{name}")
    if lay.offload_params and lay.zero_stage < 3:
        raise SpecError(
            "DeepSpeed offloads parameters only with ZeRO-3", field=f"{f}.offload_params"
        )
    if lay.offload_optimizer and lay.zero_stage < 1 and not lay.distributed_optimizer:
        raise SpecError(
            "DeepSpeed offloads the optimizer only with ZeRO 1-3", field=f"{f}.offload_optimizer"
        )


def _scheduler(ctx: PhaseContext) -> dict[str, Any] | None:
    """The DeepSpeed built-in that is *exactly* the phase's schedule, or None (entry point drives it)."""
    s, steps = ctx.phase.schedule, ctx.phase.steps
    warm = s.warmup_steps
    if s.style == "constant" or (s.style == "wsd" and s.decay_steps == 0):
        return {
            "type": "WarmupLR",
            "params": {
                "warmup_min_lr": 0.0,
                "warmup_max_lr": s.peak_lr,
                "warmup_num_steps": warm,
                "warmup_type": "linear",
            },
        }
    if s.style == "cosine" and warm > 0:
        # WarmupCosineLR: lr = peak * ratio; decays to cos_min_ratio * peak at total_num_steps
        return {
            "type": "WarmupCosineLR",
            "params": {
                "total_num_steps": steps,
                "warmup_min_ratio": 0.0,
                "warmup_num_steps": warm,
                "cos_min_ratio": s.min_lr / s.peak_lr,
                "warmup_type": "linear",
            },
        }
    linear_to_zero = s.min_lr == 0.0 and (
        s.style == "linear"
        or (s.style == "wsd" and s.decay_shape == "linear" and s.decay_steps == steps - warm)
    )
    if linear_to_zero:
        return {
            "type": "WarmupDecayLR",
            "params": {
                "total_num_steps": steps,
                "warmup_min_lr": 0.0,
                "warmup_max_lr": s.peak_lr,
                "warmup_num_steps": warm,
                "warmup_type": "linear",
            },
        }
    return None


def deepspeed_config(ctx: PhaseContext) -> dict[str, Any]:
    _refuse(ctx)
    lay, s = ctx.phase.layout, ctx.phase.schedule
    dp = lay.dp  # DeepSpeed's data-parallel world (AutoTP and pipeline ranks excluded)
    stage = max(lay.zero_stage, 1 if lay.distributed_optimizer else 0)
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": lay.overlap_grad_reduce,
        "contiguous_gradients": True,
        "reduce_bucket_size": 500_000_000,
        "allgather_bucket_size": 500_000_000,
    }
    if lay.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if lay.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    cfg: dict[str, Any] = {
        # DeepSpeed checks train_batch_size == micro * accumulation * data-parallel world size
        "train_batch_size": lay.global_batch,
        "train_micro_batch_size_per_gpu": lay.micro_batch,
        "gradient_accumulation_steps": lay.global_batch // (lay.micro_batch * dp),
        "gradient_clipping": s.grad_clip,
        "steps_per_print": max(1, min(100, ctx.phase.steps)),
        "wall_clock_breakdown": False,
        "zero_optimization": zero,
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": s.peak_lr,
                "betas": [s.adam_beta1, s.adam_beta2],
                "eps": 1e-8,
                "weight_decay": s.weight_decay,
            },
        },
        "seed": 1234,
    }
    if lay.precision == "bf16":
        cfg["bf16"] = {"enabled": True}
    else:
        cfg["fp16"] = {
            "enabled": True,
            "loss_scale": 0,
            "initial_scale_power": 16,
            "loss_scale_window": 1000,
            "hysteresis": 2,
            "min_loss_scale": 1,
        }
    sched = _scheduler(ctx)
    if sched is not None:
        cfg["scheduler"] = sched
    if lay.tp > 1:
        cfg["tensor_parallel"] = {"autotp_size": lay.tp}
    if lay.pp > 1:
        cfg["pipeline"] = {
            "stages": lay.pp,
            "partition": "parameters",
            "activation_checkpoint_interval": 1 if lay.recompute == "full" else 0,
        }
    if lay.recompute == "full":
        cfg["activation_checkpointing"] = {
            "partition_activations": False,
            "contiguous_memory_optimization": False,
            "cpu_checkpointing": False,
        }
    check_known_keys(cfg)
    return cfg


def check_known_keys(cfg: dict[str, Any]) -> None:
    """Raise if a config has a key DeepSpeed would silently ignore (a misspelling)."""
    unknown = sorted(set(cfg) - KNOWN_TOP_LEVEL_KEYS)
    if unknown:
        raise SpecError(
            f"unknown DeepSpeed top-level keys {unknown} (DeepSpeed would ignore them silently)"
        )
    zero_unknown = sorted(set(cfg.get("zero_optimization", {})) - KNOWN_ZERO_KEYS)
    if zero_unknown:
        raise SpecError(f"unknown zero_optimization keys {zero_unknown}")


def schedule_note(ctx: PhaseContext, cfg: dict[str, Any]) -> str | None:
    if "scheduler" in cfg:
        return None
    s = ctx.phase.schedule
    return (
        f"phase {ctx.name}: DeepSpeed has no built-in equal to the '{s.style}' schedule "
        f"(warmup {s.warmup_steps}, decay {s.decay_steps} {s.decay_shape} to {s.min_lr}); "
        "scaleplan.executor.train drives the learning rate itself"
    )

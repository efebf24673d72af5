"""megatron-core objects of one phase, built from the compiler's document (one definition).

`scaleplan compile --engine megatron` emits `megatron_core_document(ctx)`; the entry point
(`train.py`) builds its TransformerConfig / OptimizerConfig / DistributedDataParallelConfig,
process groups and GPTModel arguments from that same document through `build_configs`, so what
is compiled is what is trained. The only changes are the documented CPU overrides below (fp32, no
fused kernels, CPU initialization); where the plan asks for what the CPU cannot do, the phase is
refused with NotImplementedFeature instead of being trained differently.
"""

from __future__ import annotations

from typing import Any

import torch

from scaleplan.executor.compile.common import phase_contexts
from scaleplan.executor.compile.megatron_core import build_configs, megatron_core_document
from scaleplan.executor.run_support import megatron_refusal
from scaleplan.specs.plan import PhaseSpec, Plan

# Without a GPU: fp32 everywhere (the CPU adapter has no bf16 GEMM path worth testing numerics
# on), parameters initialised on the CPU, and none of the CUDA/Apex/TE fused kernels.
CPU_TRANSFORMER_OVERRIDES: dict[str, Any] = {
    "bf16": False,
    "fp16": False,
    "params_dtype": torch.float32,
    "use_cpu_initialization": True,
    "gradient_accumulation_fusion": False,
    "masked_softmax_fusion": False,
    "bias_activation_fusion": False,
    "bias_dropout_fusion": False,
    "apply_rope_fusion": False,
    "persist_layer_norm": False,
}
CPU_OPTIMIZER_OVERRIDES: dict[str, Any] = {
    "bf16": False,
    "fp16": False,
    "params_dtype": torch.float32,
}


def phase_document(plan: Plan, phase: PhaseSpec) -> dict[str, Any]:
    """The phase's compiled megatron-core document (the plan validated as `compile` does)."""
    ctx = next(c for c in phase_contexts(plan) if c.name == phase.name)
    return megatron_core_document(ctx)


def check_supported(doc: dict[str, Any], device: str) -> None:
    """Refuse (NotImplementedFeature) what the entry point cannot train on this device
    (`run_support.megatron_refusal`, the one definition `run_plan` checks up front)."""
    refusal = megatron_refusal(doc, device)
    if refusal is not None:
        raise refusal


def megatron_configs(doc: dict[str, Any], device: str) -> dict[str, Any]:
    """{"transformer", "optimizer", "ddp"} config objects: the document's, CPU overrides on CPU."""
    check_supported(doc, device)
    if device == "cuda":
        return build_configs(doc)
    overrides = dict(CPU_TRANSFORMER_OVERRIDES)
    if doc["transformer_config"].get("pipeline_dtype") is not None:
        overrides["pipeline_dtype"] = torch.float32
    return build_configs(doc, optimizer_overrides=CPU_OPTIMIZER_OVERRIDES, **overrides)


def init_parallel_state(doc: dict[str, Any], seed: int) -> None:
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    parallel_state.initialize_model_parallel(**doc["parallel"])
    model_parallel_cuda_manual_seed(seed)


def build_model(doc: dict[str, Any], config: Any, device: str) -> list[Any]:
    """One GPTModel per virtual pipeline stage of this rank, with the document's layer spec."""
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import (
        get_gpt_layer_local_spec,
        get_gpt_layer_with_transformer_engine_spec,
    )

    gm = doc["gpt_model"]
    n_experts = config.num_moe_experts
    if gm["layer_spec"] == "transformer_engine":
        spec = get_gpt_layer_with_transformer_engine_spec(
            num_experts=n_experts, moe_grouped_gemm=bool(n_experts)
        )
    else:
        spec = get_gpt_layer_local_spec(
            num_experts=n_experts, moe_grouped_gemm=False, normalization=config.normalization
        )
    vp = doc["parallel"]["virtual_pipeline_model_parallel_size"]
    chunks = []
    for i in range(vp or 1):
        vp_stage = i if vp else None
        chunk = GPTModel(
            config=config,
            transformer_layer_spec=spec,
            vocab_size=gm["vocab_size"],
            max_sequence_length=gm["max_sequence_length"],
            pre_process=parallel_state.is_pipeline_first_stage(
                ignore_virtual=vp is None, vp_stage=vp_stage
            ),
            post_process=parallel_state.is_pipeline_last_stage(
                ignore_virtual=vp is None, vp_stage=vp_stage
            ),
            share_embeddings_and_output_weights=gm["share_embeddings_and_output_weights"],
            position_embedding_type=gm["position_embedding_type"],
            rotary_base=gm["rotary_base"],
            vp_stage=vp_stage,
        )
        chunks.append(chunk.cuda() if device == "cuda" else chunk)
    return chunks


def wrap_ddp(chunks: list[Any], config: Any, ddp_config: Any) -> list[Any]:
    from megatron.core.distributed import DistributedDataParallel

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


def build_optimizer(chunks: list[Any], optimizer_config: Any) -> Any:
    from megatron.core.optimizer import get_megatron_optimizer

    return get_megatron_optimizer(optimizer_config, chunks)


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

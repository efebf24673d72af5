"""Plan phase -> Megatron-core configuration (megatron-core 0.16.1 field names).

The emitted document is plain JSON: `transformer_config`, `optimizer_config` and `ddp_config` are
the keyword arguments of megatron.core's `TransformerConfig` (or `MLATransformerConfig`),
`OptimizerConfig` and `DistributedDataParallelConfig`; torch objects (dtypes, the activation
function) are written as names and turned back into objects by `build_configs`, the one place
that imports megatron. `parallel` holds `initialize_model_parallel`'s arguments, `gpt_model` the
`GPTModel` arguments, and `training` our entry point's data, schedule and checkpoint settings.
"""

from __future__ import annotations

from typing import Any

from scaleplan.costmodels.stage_layers import chunk_layer_counts, split_code
from scaleplan.specs.errors import NotImplementedFeature, SpecError
from scaleplan.specs.layout import LayoutSpec
from scaleplan.specs.model import ModelSpec

from .common import PhaseContext, data_blend

MEGATRON_CORE_VERSION = "0.16.1"
_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp8": "bfloat16"}


def moe_layer_freq(model: ModelSpec) -> int | list[int]:
    """Megatron's `moe_layer_freq`: an int k (every k-th layer), or a 0/1 pattern per layer."""
    assert model.moe is not None
    moe = model.moe
    if moe.first_dense_layers == 0:
        return moe.layer_freq
    rest = model.num_layers - moe.first_dense_layers
    return [0] * moe.first_dense_layers + [1 if i % moe.layer_freq == 0 else 0 for i in range(rest)]


def _recompute(ctx: PhaseContext) -> dict[str, Any]:
    lay = ctx.phase.layout
    if lay.recompute == "none":
        return {}
    if lay.recompute == "selective":
        # Korthikanti et al. 2022 sec. 5: recompute only the attention core (softmax, dropout, QK^T V)
        return {"recompute_granularity": "selective", "recompute_modules": ["core_attn"]}
    if lay.recompute_layers is None:
        # every layer recomputed, one at a time (uniform, 1 layer per checkpointed chunk)
        return {
            "recompute_granularity": "full",
            "recompute_method": "uniform",
            "recompute_num_layers": 1,
        }
    if lay.recompute_layers % lay.vp:
        raise SpecError(
            f"recompute_layers={lay.recompute_layers} must be divisible by vp={lay.vp}: "
            "Megatron's 'block' method counts layers per virtual stage",
            field=f"{ctx.field}.layout.recompute_layers",
        )
    return {
        "recompute_granularity": "full",
        "recompute_method": "block",
        "recompute_num_layers": lay.recompute_layers // lay.vp,
    }


def pipeline_layout(model: ModelSpec, lay: LayoutSpec) -> list[list[str]]:
    """Megatron-core `pipeline_model_parallel_layout` (core v0.16.1, PipelineParallelLayerLayout)
    of the layout's split, one list per virtual stage k (rank k % pp, model chunk k // pp): the
    embedding first, the decoder layers `stage_layers.chunk_layer_counts` places, the loss last."""
    counts = chunk_layer_counts(model.num_layers, lay.pp, lay.vp, int(split_code(lay)))
    chunks = [["decoder"] * n for n in counts]
    chunks[0].insert(0, "embedding")
    chunks[-1].append("loss")
    return chunks


def pipeline_layout_string(model: ModelSpec, lay: LayoutSpec) -> str:
    """The same layout in the string form of Megatron-LM's --pipeline-model-parallel-layout
    (PipelineParallelLayerLayout.parse_str_to_list: E embedding, t decoder, L loss, | between
    virtual stages, x*n repeats x), e.g. 61 layers on pp 8: 'Et*8|t*8|t*8|...|t*5L'."""
    counts = chunk_layer_counts(model.num_layers, lay.pp, lay.vp, int(split_code(lay)))
    stages = [f"t*{n}" if n else "" for n in counts]
    stages[0] = "E" + stages[0]
    stages[-1] += "L"
    return "|".join(stages)


def transformer_config(ctx: PhaseContext) -> tuple[str, dict[str, Any]]:
    """(config class name, keyword arguments) of the phase's TransformerConfig."""
    model, lay = ctx.plan.model, ctx.phase.layout
    dtype = _DTYPES[lay.precision]
    kw: dict[str, Any] = {
        # layout
        "tensor_model_parallel_size": lay.tp,
        "pipeline_model_parallel_size": lay.pp,
        "virtual_pipeline_model_parallel_size": lay.vp if lay.vp > 1 else None,
        "context_parallel_size": lay.cp,
        "expert_model_parallel_size": lay.ep,
        "expert_tensor_parallel_size": lay.expert_tp,
        "sequence_parallel": lay.sequence_parallel,
        # shape
        "num_layers": model.num_layers,
        "hidden_size": model.hidden_size,
        "num_attention_heads": model.num_heads,
        "num_query_groups": model.kv_heads,
        "kv_channels": model.head_size,
        "ffn_hidden_size": model.ffn_hidden_size,
        "normalization": "RMSNorm" if model.norm == "rmsnorm" else "LayerNorm",
        "layernorm_epsilon": 1e-5,
        "add_bias_linear": model.bias,
        "add_qkv_bias": model.bias,
        "gated_linear_unit": model.activation == "swiglu",
        "activation_func": "silu" if model.activation == "swiglu" else "gelu",
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "init_method_std": 0.02,
        # precision
        "bf16": lay.precision in ("bf16", "fp8"),
        "fp16": lay.precision == "fp16",
        "params_dtype": dtype,
        "pipeline_dtype": dtype if lay.pp > 1 else None,
    }
    if lay.account_embedding_loss_in_pipeline_split:
        # Megatron-core TransformerConfig (core v0.16): the embedding and the loss take one layer
        # slot each in the pipeline split, (num_layers + 2) / (pp*vp) slots per model chunk
        kw["account_for_embedding_in_pipeline_split"] = True
        kw["account_for_loss_in_pipeline_split"] = True
    if lay.balanced_pipeline_layout:
        # Megatron-core TransformerConfig.pipeline_model_parallel_layout (core v0.16.1): the
        # balanced uneven split, as Megatron-Bridge's DeepSeek-V3 recipes set it
        kw["pipeline_model_parallel_layout"] = pipeline_layout(model, lay)
    if lay.precision == "fp8":
        # Micikevicius et al. 2022 (FP8 formats): E4M3 forward, E5M2 gradients = "hybrid"
        kw.update(
            {
                "fp8": "hybrid",
                "fp8_recipe": "delayed",
                "fp8_amax_history_len": 1024,
                "fp8_amax_compute_algo": "max",
            }
        )
    kw.update(_recompute(ctx))
    if model.moe is not None:
        moe = model.moe
        kw.update(
            {
                "num_moe_experts": moe.num_experts,
                "moe_router_topk": moe.top_k,
                "moe_ffn_hidden_size": moe.expert_ffn_hidden_size,
                "moe_layer_freq": moe_layer_freq(model),
                "moe_token_dispatcher_type": "alltoall",
                "moe_router_load_balancing_type": "aux_loss",
                "moe_aux_loss_coeff": 1e-2,
                # router logits and top-k in fp32, as Megatron-core advises for many experts
                # (DeepSeek-V3 report section 3.3.2 keeps gating in higher precision too)
                "moe_router_dtype": "fp32",
            }
        )
        if moe.top_k == 1:  # Megatron refuses softmax-after-top-1 (every weight would be 1)
            kw["moe_router_pre_softmax"] = True
        if moe.num_shared_experts:
            kw["moe_shared_expert_intermediate_size"] = (
                moe.num_shared_experts * moe.expert_ffn_hidden_size
            )
    cls = "TransformerConfig"
    if model.attention == "mla":
        mla = model.mla
        assert mla is not None
        cls = "MLATransformerConfig"
        kw.update(
            {
                "multi_latent_attention": True,
                "q_lora_rank": mla.q_lora_rank,
                "kv_lora_rank": mla.kv_lora_rank,
                "qk_head_dim": mla.qk_nope_head_dim,
                "qk_pos_emb_head_dim": mla.qk_rope_head_dim,
                "v_head_dim": mla.v_head_dim,
                "rotary_base": ctx.rope_base,
            }
        )
        kw.pop("kv_channels")
        kw.pop("num_query_groups")
    return cls, kw


def optimizer_config(ctx: PhaseContext) -> dict[str, Any]:
    lay, sched = ctx.phase.layout, ctx.phase.schedule
    return {
        "optimizer": "adam",
        "lr": sched.peak_lr,
        "min_lr": sched.min_lr,
        "weight_decay": sched.weight_decay,
        "adam_beta1": sched.adam_beta1,
        "adam_beta2": sched.adam_beta2,
        "adam_eps": 1e-8,
        "clip_grad": sched.grad_clip,
        "bf16": lay.precision in ("bf16", "fp8"),
        "fp16": lay.precision == "fp16",
        "params_dtype": _DTYPES[lay.precision],
        "use_distributed_optimizer": _distributed_optimizer(ctx),
        "overlap_param_gather": _overlap_param_gather(ctx),
        "optimizer_cpu_offload": lay.offload_optimizer,
    }


def _distributed_optimizer(ctx: PhaseContext) -> bool:
    lay = ctx.phase.layout
    return lay.distributed_optimizer or lay.zero_stage >= 1


def _overlap_param_gather(ctx: PhaseContext) -> bool:
    # Megatron gathers parameters only when they are sharded (distributed optimizer / FSDP)
    return ctx.phase.layout.overlap_param_gather and _distributed_optimizer(ctx)


def ddp_config(ctx: PhaseContext) -> dict[str, Any]:
    lay = ctx.phase.layout
    kw: dict[str, Any] = {
        "grad_reduce_in_fp32": True,
        "overlap_grad_reduce": lay.overlap_grad_reduce,
        "overlap_param_gather": _overlap_param_gather(ctx),
        "use_distributed_optimizer": _distributed_optimizer(ctx),
        "check_for_nan_in_grad": True,
    }
    if lay.zero_stage >= 2:
        # Megatron-FSDP: ZeRO-2 shards optimizer state and gradients, ZeRO-3 also the parameters
        # (Rajbhandari et al. 2020, sec. 5); it rides on the distributed optimizer
        kw["use_megatron_fsdp"] = True
        kw["data_parallel_sharding_strategy"] = fsdp_strategy(lay.zero_stage)
    return kw


def fsdp_strategy(zero_stage: int) -> str:
    return {2: "optim_grads", 3: "optim_grads_params"}[zero_stage]


def parallel_state_kwargs(ctx: PhaseContext) -> dict[str, Any]:
    """Arguments of `megatron.core.parallel_state.initialize_model_parallel`."""
    lay = ctx.phase.layout
    return {
        "tensor_model_parallel_size": lay.tp,
        "pipeline_model_parallel_size": lay.pp,
        "virtual_pipeline_model_parallel_size": lay.vp if lay.vp > 1 else None,
        "context_parallel_size": lay.cp,
        "expert_model_parallel_size": lay.ep,
        "expert_tensor_parallel_size": lay.expert_tp,
        "order": lay.rank_order,
    }


def training_settings(ctx: PhaseContext) -> dict[str, Any]:
    """Our entry point's settings (scaleplan.executor.train): batch, data, schedule, checkpoints."""
    phase, lay = ctx.phase, ctx.phase.layout
    return {
        "phase": phase.name,
        "objective": phase.objective.model_dump(mode="json"),
        "seq_length": phase.seq_length,
        "micro_batch_size": lay.micro_batch,
        "global_batch_size": lay.global_batch,
        "num_microbatches": lay.num_microbatches,
        "data_parallel_size": lay.dp,
        "world_size": phase.num_gpus,
        "train_steps": phase.steps,
        "tokens": phase.tokens,
        "schedule": phase.schedule.model_dump(mode="json"),
        "data": [{"weight": w, "name": n, "path": p} for w, n, p in data_blend(ctx)],
        "checkpoint": {
            "save_dir": ctx.save_dir,
            "init_from_dir": ctx.init_dir,
            "every_steps": phase.checkpoint_every_steps,
        },
        "metrics_file": ctx.metrics_file,
        "seed": 1234,
    }


def megatron_core_document(ctx: PhaseContext) -> dict[str, Any]:
    lay, model = ctx.phase.layout, ctx.plan.model
    if lay.offload_params:
        raise NotImplementedFeature(
            "parameter offload is a DeepSpeed ZeRO-3 feature; Megatron-core has none "
            "(compile with --engine deepspeed)",
            field=f"{ctx.field}.layout.offload_params",
        )
    if lay.offload_optimizer and not _distributed_optimizer(ctx):
        raise SpecError(
            "Megatron-core offloads the optimizer only with the distributed optimizer",
            field=f"{ctx.field}.layout.offload_optimizer",
        )
    cls, tc = transformer_config(ctx)
    needs_te = lay.precision == "fp8" or lay.sequence_parallel or lay.cp > 1
    return {
        "engine": "megatron-core",
        "megatron_core_version": MEGATRON_CORE_VERSION,
        "transformer_config_class": cls,
        "transformer_config": tc,
        "optimizer_config": optimizer_config(ctx),
        "ddp_config": ddp_config(ctx),
        "parallel": parallel_state_kwargs(ctx),
        "gpt_model": {
            "vocab_size": ctx.vocab_size,  # padded (GPTModel does not pad)
            "tokenizer_vocab_size": model.vocab_size,
            "max_sequence_length": ctx.phase.seq_length,
            "position_embedding_type": "rope"
            if model.position_embedding == "rope"
            else "learned_absolute",
            "rotary_base": ctx.rope_base,
            "share_embeddings_and_output_weights": model.tied_embeddings,
            # fp8, sequence and context parallelism need TransformerEngine's layers; otherwise the
            # local (pure megatron-core) spec runs anywhere, CPU included
            "layer_spec": "transformer_engine" if needs_te else "local",
        },
        "training": training_settings(ctx),
    }


def build_configs(
    doc: dict[str, Any], optimizer_overrides: dict[str, Any] | None = None, **overrides: Any
) -> dict[str, Any]:
    """Construct megatron.core's config objects from an emitted document (imports megatron).

    `overrides` go to TransformerConfig (e.g. `use_cpu_initialization=True`), `optimizer_overrides`
    to OptimizerConfig (the training entry point's CPU precision, `executor/mcore_build.py`). Returns
    {"transformer": ..., "optimizer": ..., "ddp": ...}; each constructor runs its own validation.
    """
    import torch
    import torch.nn.functional as F
    from megatron.core.distributed import DistributedDataParallelConfig
    from megatron.core.optimizer import OptimizerConfig
    from megatron.core.transformer import MLATransformerConfig, TransformerConfig

    dtypes = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    acts = {"silu": F.silu, "gelu": F.gelu}
    tc = dict(doc["transformer_config"])
    tc["params_dtype"] = dtypes[tc["params_dtype"]]
    if tc.get("pipeline_dtype") is not None:
        tc["pipeline_dtype"] = dtypes[tc["pipeline_dtype"]]
    tc["activation_func"] = acts[tc["activation_func"]]
    tc.update(overrides)
    cls = (
        MLATransformerConfig
        if doc["transformer_config_class"] == "MLATransformerConfig"
        else TransformerConfig
    )
    oc = dict(doc["optimizer_config"])
    oc["params_dtype"] = dtypes[oc["params_dtype"]]
    oc.update(optimizer_overrides or {})
    return {
        "transformer": cls(**tc),
        "optimizer": OptimizerConfig(**oc),
        "ddp": DistributedDataParallelConfig(**doc["ddp_config"]),
    }

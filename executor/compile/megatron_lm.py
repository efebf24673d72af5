"""Plan phase -> Megatron-LM `pretrain_gpt.py` arguments.

Flag names are those of Megatron-LM **core_v0.16.1** (the git tag matching megatron-core 0.16.1),
checked against that tag's `megatron/training/arguments.py` parser (tests/test_compile_engines.py
re-checks them when MEGATRON_LM_DIR points at a checkout).

Checkpoint lineage: `--save` is RUN_DIR/checkpoints/PHASE. A phase with `init_from` loads the
parent's checkpoint on its first start and its own on a restart (the launch script chooses, see
scripts.py). A WSD anneal that is a pure decay (no warmup) *continues* the parent run: optimizer
state and iteration count are kept, `--train-iters` counts from the parent's last iteration and the
WSD decay covers exactly this phase's steps. Every other derived phase (long context, SFT) starts a
fresh optimizer and schedule with `--finetune`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scaleplan.specs.errors import NotImplementedFeature

from .common import PhaseContext, data_blend, phase_contexts
from .megatron_core import fsdp_strategy, moe_layer_freq, pipeline_layout_string

MEGATRON_LM_VERSION = "core_v0.16.1"
_WSD_SHAPES = {
    "linear": "linear",
    "cosine": "cosine",
    "exponential": "exponential",
    "sqrt": "minus_sqrt",
}
_DECAY_STYLES = {"cosine": "cosine", "constant": "constant", "linear": "linear"}


@dataclass(frozen=True)
class MegatronLMArgs:
    """pretrain_gpt.py arguments of one phase. `args` are literal strings; `data_prefixes` and the
    checkpoint folders are relative to $DATA_DIR / $RUN_DIR and expanded by the launch script."""

    args: list[str]
    data: list[tuple[float, str]]  # (weight, dataset prefix: absolute path or name under $DATA_DIR)
    save_dir: str
    init_dir: str | None
    first_start_flags: list[str] = field(default_factory=list)  # only when loading init_dir
    vocab_size: int = 0
    sft: bool = False

    def tokenizer_args(self, tokenizer_model: str | None) -> list[str]:
        """SFT needs a chat-template tokenizer (SFTTokenizer over a Hugging Face model); pretraining
        takes a Hugging Face tokenizer, or NullTokenizer over pre-tokenized data (EOD = vocab - 1)."""
        if self.sft:
            return ["--tokenizer-type", "SFTTokenizer", "--tokenizer-model", tokenizer_model or ""]
        if tokenizer_model:
            return [
                "--tokenizer-type",
                "HuggingFaceTokenizer",
                "--tokenizer-model",
                tokenizer_model,
            ]
        return ["--tokenizer-type", "NullTokenizer", "--vocab-size", str(self.vocab_size - 1)]


def _num(x: float) -> str:
    return f"{x:.10g}"


def _continues_parent(ctx: PhaseContext) -> bool:
    s = ctx.phase.schedule
    return (
        ctx.phase.init_from is not None
        and ctx.phase.objective.kind == "lm"
        and s.style == "wsd"
        and s.warmup_steps == 0
        and s.decay_steps == ctx.phase.steps
    )


def iteration_offset(ctx: PhaseContext) -> int:
    """Optimizer steps already done when this phase starts (kept across continued phases)."""
    if not _continues_parent(ctx):
        return 0
    parents = {c.name: c for c in phase_contexts(ctx.plan)}
    parent = parents[ctx.phase.init_from]  # type: ignore[index]
    return iteration_offset(parent) + parent.phase.steps


def _schedule_args(ctx: PhaseContext) -> list[str]:
    s, steps = ctx.phase.schedule, ctx.phase.steps
    total = iteration_offset(ctx) + steps
    out = ["--train-iters", str(total), "--lr", _num(s.peak_lr), "--min-lr", _num(s.min_lr)]
    out += ["--lr-warmup-iters", str(s.warmup_steps), "--lr-decay-iters", str(total)]
    if s.style == "wsd":
        # Hu et al. 2024 (MiniCPM) WSD: constant after warmup, decay over the last decay_steps
        out += ["--lr-decay-style", "WSD", "--lr-wsd-decay-style", _WSD_SHAPES[s.decay_shape]]
        out += ["--lr-wsd-decay-iters", str(s.decay_steps)]
    else:
        out += ["--lr-decay-style", _DECAY_STYLES[s.style]]
    out += ["--weight-decay", _num(s.weight_decay), "--adam-beta1", _num(s.adam_beta1)]
    out += ["--adam-beta2", _num(s.adam_beta2), "--clip-grad", _num(s.grad_clip)]
    return out


def _model_args(ctx: PhaseContext) -> list[str]:
    m = ctx.plan.model
    out = ["--num-layers", str(m.num_layers), "--hidden-size", str(m.hidden_size)]
    out += ["--ffn-hidden-size", str(m.ffn_hidden_size), "--num-attention-heads", str(m.num_heads)]
    out += [
        "--seq-length",
        str(ctx.phase.seq_length),
        "--max-position-embeddings",
        str(ctx.phase.seq_length),
    ]
    if m.attention == "mla":
        mla = m.mla
        assert mla is not None
        out += ["--multi-latent-attention", "--kv-lora-rank", str(mla.kv_lora_rank)]
        out += [
            "--qk-head-dim",
            str(mla.qk_nope_head_dim),
            "--qk-pos-emb-head-dim",
            str(mla.qk_rope_head_dim),
        ]
        out += ["--v-head-dim", str(mla.v_head_dim)]
        if mla.q_lora_rank:
            out += ["--q-lora-rank", str(mla.q_lora_rank)]
    else:
        out += ["--kv-channels", str(m.head_size)]
        if m.kv_heads != m.num_heads:
            out += ["--group-query-attention", "--num-query-groups", str(m.kv_heads)]
    if m.activation == "swiglu":
        out += ["--swiglu"]
    out += ["--normalization", "RMSNorm" if m.norm == "rmsnorm" else "LayerNorm"]
    if not m.bias:
        out += ["--disable-bias-linear"]
    if m.position_embedding == "rope":
        out += ["--position-embedding-type", "rope", "--rotary-base", str(int(ctx.rope_base))]
    else:
        out += ["--position-embedding-type", "learned_absolute"]
    if not m.tied_embeddings:
        out += ["--untie-embeddings-and-output-weights"]
    out += ["--attention-dropout", "0.0", "--hidden-dropout", "0.0", "--init-method-std", "0.02"]
    if m.moe is not None:
        moe = m.moe
        freq = moe_layer_freq(m)
        if isinstance(freq, int):
            freq_arg = str(freq)
        elif moe.layer_freq == 1:  # Megatron-LM's pattern syntax, e.g. DeepSeek-V3 "([0]*3+[1]*58)"
            freq_arg = f"([0]*{moe.first_dense_layers}+[1]*{m.num_layers - moe.first_dense_layers})"
        else:
            freq_arg = "[" + ",".join(map(str, freq)) + "]"
        out += ["--num-experts", str(moe.num_experts), "--moe-router-topk", str(moe.top_k)]
        out += [
            "--moe-ffn-hidden-size",
            str(moe.expert_ffn_hidden_size),
            "--moe-layer-freq",
            freq_arg,
        ]
        out += [
            "--moe-token-dispatcher-type",
            "alltoall",
            "--moe-router-load-balancing-type",
            "aux_loss",
        ]
        out += ["--moe-aux-loss-coeff", "1e-2", "--moe-router-dtype", "fp32"]
        if moe.top_k == 1:
            out += ["--moe-router-pre-softmax"]
        if moe.num_shared_experts:
            size = moe.num_shared_experts * moe.expert_ffn_hidden_size
            out += ["--moe-shared-expert-intermediate-size", str(size)]
    return out


def _layout_args(ctx: PhaseContext) -> list[str]:
    lay = ctx.phase.layout
    out = [
        "--tensor-model-parallel-size",
        str(lay.tp),
        "--pipeline-model-parallel-size",
        str(lay.pp),
    ]
    split = lay.account_embedding_loss_in_pipeline_split
    if split:
        # embedding and loss count as one layer each in the pipeline split (core_v0.16.1)
        out += ["--account-for-embedding-in-pipeline-split", "--account-for-loss-in-pipeline-split"]
    if lay.balanced_pipeline_layout:
        # core_v0.16.1 arguments: the layout string fixes every stage's layers; Megatron-LM
        # derives vp from its number of stages (pp*vp), so no per-virtual-stage layer count
        out += ["--pipeline-model-parallel-layout", pipeline_layout_string(ctx.plan.model, lay)]
    elif lay.vp > 1:
        # Megatron-LM derives vp = (num_layers [+2 with the flags above]) / pp / this
        slots = ctx.plan.model.num_layers + (2 if split else 0)
        out += ["--num-layers-per-virtual-pipeline-stage", str(slots // (lay.pp * lay.vp))]
    out += ["--context-parallel-size", str(lay.cp)]
    if ctx.plan.model.is_moe:
        out += [
            "--expert-model-parallel-size",
            str(lay.ep),
            "--expert-tensor-parallel-size",
            str(lay.expert_tp),
        ]
    if lay.sequence_parallel:
        out += ["--sequence-parallel"]
    if lay.zero_stage >= 2:
        # the flag set Megatron-LM's Megatron-FSDP guide requires (docs, core_v0.16.1)
        out += [
            "--use-megatron-fsdp",
            "--data-parallel-sharding-strategy",
            fsdp_strategy(lay.zero_stage),
        ]
        out += [
            "--no-gradient-accumulation-fusion",
            "--use-distributed-optimizer",
            "--ckpt-format",
            "fsdp_dtensor",
        ]
    elif lay.distributed_optimizer or lay.zero_stage == 1:
        out += ["--use-distributed-optimizer"]
    if lay.offload_optimizer:
        out += ["--optimizer-cpu-offload"]
    if lay.recompute == "selective":
        out += ["--recompute-granularity", "selective"]
    elif lay.recompute == "full":
        if lay.recompute_layers is None:
            out += [
                "--recompute-granularity",
                "full",
                "--recompute-method",
                "uniform",
                "--recompute-num-layers",
                "1",
            ]
        else:
            per_chunk = lay.recompute_layers // lay.vp
            out += [
                "--recompute-granularity",
                "full",
                "--recompute-method",
                "block",
                "--recompute-num-layers",
                str(per_chunk),
            ]
    out += [
        "--micro-batch-size",
        str(lay.micro_batch),
        "--global-batch-size",
        str(lay.global_batch),
    ]
    if lay.precision == "bf16":
        out += ["--bf16"]
    elif lay.precision == "fp16":
        out += ["--fp16"]
    else:
        out += [
            "--bf16",
            "--fp8-format",
            "hybrid",
            "--fp8-recipe",
            "delayed",
            "--fp8-amax-history-len",
            "1024",
        ]
        out += ["--fp8-amax-compute-algo", "max", "--transformer-impl", "transformer_engine"]
    if lay.overlap_grad_reduce:
        out += ["--overlap-grad-reduce"]
    if lay.overlap_param_gather and (lay.distributed_optimizer or lay.zero_stage >= 1):
        out += ["--overlap-param-gather"]
    return out


def megatron_lm_args(ctx: PhaseContext) -> MegatronLMArgs:
    kind = ctx.phase.objective.kind
    if kind in ("dpo", "grpo"):
        raise NotImplementedFeature(
            f"phase {ctx.name}: Megatron-LM's pretrain_gpt.py has no {kind.upper()} objective; "
            "compile this phase with --engine megatron (scaleplan's entry point)",
            field=f"{ctx.field}.objective.kind",
        )
    if ctx.phase.layout.offload_params:
        raise NotImplementedFeature(
            "parameter offload is a DeepSpeed ZeRO-3 feature; Megatron-LM has none",
            field=f"{ctx.field}.layout.offload_params",
        )
    args = _layout_args(ctx) + _model_args(ctx) + _schedule_args(ctx)
    if kind == "sft":
        args += ["--sft"]
    args += ["--split", "100,0,0", "--eval-iters", "0", "--eval-interval", str(ctx.phase.steps + 1)]
    args += [
        "--save-interval",
        str(ctx.phase.checkpoint_every_steps),
        "--log-interval",
        "1",
        "--seed",
        "1234",
    ]
    first: list[str] = []
    if ctx.phase.init_from is not None:
        first = ["--override-opt_param-scheduler"] if _continues_parent(ctx) else ["--finetune"]
    return MegatronLMArgs(
        args=args,
        data=[(w, p or n) for w, n, p in data_blend(ctx)],
        save_dir=ctx.save_dir,
        init_dir=ctx.init_dir,
        first_start_flags=first,
        vocab_size=ctx.plan.model.vocab_size,
        sft=kind == "sft",
    )

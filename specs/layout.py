"""Parallel layout vocabulary and its validation rules.

The rules are written once, with arithmetic and `&`/`|` only, so the same function checks one
`LayoutSpec` (Python ints) and a whole numpy batch of candidate layouts (arrays) in the
planner's search. `layout_violations` is that one definition.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from .base import Spec
from .errors import SpecError
from .model import ModelSpec

Recompute = Literal["none", "selective", "full"]
RECOMPUTE_CODES: dict[str, int] = {"none": 0, "selective": 1, "full": 2}
PRECISION_CODES: dict[str, int] = {"bf16": 0, "fp16": 1, "fp8": 2}


class LayoutSpec(Spec):
    tp: int = Field(default=1, ge=1, description="tensor parallel")
    pp: int = Field(default=1, ge=1, description="pipeline parallel")
    vp: int = Field(default=1, ge=1, description="virtual pipeline stages per PP rank")
    cp: int = Field(default=1, ge=1, description="context parallel")
    dp: int = Field(default=1, ge=1, description="data parallel (includes EP ranks)")
    ep: int = Field(
        default=1, ge=1, description="expert parallel (folded over a stage's TP x CP x DP ranks)"
    )
    etp: int | None = Field(default=None, ge=1, description="expert tensor parallel; default tp")
    sequence_parallel: bool = False
    zero_stage: int = Field(default=0, ge=0, le=3, description="ZeRO stage / FSDP (3)")
    distributed_optimizer: bool = Field(default=False, description="Megatron's, = ZeRO-1")
    micro_batch: int = Field(default=1, ge=1, description="sequences per micro-batch")
    global_batch: int = Field(ge=1, description="sequences per optimizer step")
    recompute: Recompute = "none"
    recompute_layers: int | None = Field(
        default=None, ge=1, description="full recompute: layers per stage recomputed; None = all"
    )
    offload_optimizer: bool = False
    offload_params: bool = False
    precision: Literal["bf16", "fp16", "fp8"] = "bf16"
    overlap_grad_reduce: bool = True
    overlap_param_gather: bool = True
    rank_order: str = Field(default="tp-cp-ep-dp-pp", description="innermost first")
    account_embedding_loss_in_pipeline_split: bool = Field(
        default=False,
        description=(
            "count the embedding and the loss (LM head) as one layer each when splitting layers "
            "over pipeline stages: (num_layers + 2) must divide by pp*vp, and the first and the "
            "last model chunk hold one transformer layer fewer (Megatron-core "
            "account_for_embedding_in_pipeline_split + account_for_loss_in_pipeline_split)"
        ),
    )
    balanced_pipeline_layout: bool = Field(
        default=False,
        description=(
            "uneven pipeline split for layer counts that divide neither way (Megatron-core "
            "pipeline_model_parallel_layout as Megatron-Bridge's DeepSeek-V3 recipes build it): "
            "with K = pp*vp model chunks and a = ceil(num_layers/K), chunk 0 holds the "
            "embedding and a layers, chunks 1..K-2 a layers each, chunk K-1 the remaining "
            "num_layers - a*(K-1) >= 0 layers and the loss"
        ),
    )

    @model_validator(mode="after")
    def _self_consistency(self) -> LayoutSpec:
        dims = self.rank_order.split("-")
        if sorted(dims) != sorted(["tp", "cp", "ep", "dp", "pp"]):
            raise ValueError(
                f"rank_order '{self.rank_order}' must order exactly tp, cp, ep, dp, pp"
            )
        return self

    @property
    def num_gpus(self) -> int:
        return self.tp * self.pp * self.cp * self.dp

    @property
    def expert_tp(self) -> int:
        return self.etp or self.tp

    @property
    def grad_accum(self) -> int:
        return self.global_batch // (self.dp * self.micro_batch)

    @property
    def num_microbatches(self) -> int:
        return self.grad_accum

    @property
    def shards_optimizer(self) -> bool:
        return self.distributed_optimizer or self.zero_stage >= 1


def balanced_chunk_layers(num_layers: int, chunks: Any) -> tuple[Any, Any]:
    """(a, last): decoder layers of a full model chunk and of the last one in the balanced
    layout (`LayoutSpec.balanced_pipeline_layout`; Megatron-Bridge DeepSeek-V3 recipes'
    pipeline_model_parallel_layout): a = ceil(L/K), last = L - a*(K-1), valid where last >= 0.
    Works on ints and numpy arrays."""
    per_chunk = -(-num_layers // chunks)
    return per_chunk, num_layers - per_chunk * (chunks - 1)


def layout_violations(
    lay: dict[str, Any],
    *,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    num_experts: int,
    seq_length: int,
    vocab_size: int,
    ffn_hidden_size: int,
    num_gpus: Any = None,
    engines: bool = True,
) -> list[tuple[str, Any, str]]:
    """Every divisibility and consistency rule, as (field, failing mask, reason).

    `engines=False` drops the rules that only the engines scaleplan compiles for impose (ZeRO-2/3
    with pipeline parallelism), for measured runs of other trainers (`scaleplan validate`).

    `lay` maps layout field names to ints or numpy int arrays; bools as 0/1. The mask is True
    where the rule is violated. `num_gpus=None` skips the world-size rule.
    """
    tp, pp, vp, cp, dp = lay["tp"], lay["pp"], lay["vp"], lay["cp"], lay["dp"]
    ep, etp, mb, gb = lay["ep"], lay["etp"], lay["micro_batch"], lay["global_batch"]
    sp, zero, dist_opt = lay["sequence_parallel"], lay["zero_stage"], lay["distributed_optimizer"]
    # Megatron-core TransformerConfig.account_for_embedding_in_pipeline_split and
    # account_for_loss_in_pipeline_split (core v0.16): the embedding and the loss take one
    # layer slot each, so num_layers + 2 slots split over pp*vp model chunks.
    split = lay.get("account_embedding_loss_in_pipeline_split", 0)
    # Megatron-core pipeline_model_parallel_layout, balanced as Megatron-Bridge's DeepSeek-V3
    # recipes build it: no divisibility rule, but the last chunk cannot hold fewer than 0 layers
    balanced = lay.get("balanced_pipeline_layout", 0)
    _, last_chunk = balanced_chunk_layers(num_layers, pp * vp)
    moe = num_experts > 1
    rules: list[tuple[str, Any, str]] = [
        ("tp", num_heads % tp != 0, f"num_heads={num_heads} is not divisible by tp"),
        (
            "tp",
            (num_kv_heads % tp != 0) & (tp % num_kv_heads != 0),
            f"num_kv_heads={num_kv_heads} and tp must divide one another",
        ),
        ("tp", ffn_hidden_size % tp != 0, f"ffn_hidden_size={ffn_hidden_size} not divisible by tp"),
        ("pp", pp > num_layers, f"pp exceeds num_layers={num_layers}"),
        (
            "vp",
            (split == 0) & (balanced == 0) & (num_layers % (pp * vp) != 0),
            f"num_layers={num_layers} is not divisible by pp*vp (with "
            "account_embedding_loss_in_pipeline_split, num_layers+2 must be instead; "
            "balanced_pipeline_layout needs neither)",
        ),
        (
            "vp",
            (split != 0) & ((num_layers + 2) % (pp * vp) != 0),
            f"num_layers+2={num_layers + 2} (embedding and loss counted as layers: "
            "account_embedding_loss_in_pipeline_split) is not divisible by pp*vp",
        ),
        (
            "vp",
            (balanced != 0) & (last_chunk < 0),
            f"balanced_pipeline_layout: ceil(num_layers/(pp*vp)) layers on each of the first "
            f"pp*vp-1 model chunks leave the last one fewer than 0 of num_layers={num_layers}",
        ),
        (
            "balanced_pipeline_layout",
            (balanced != 0) & (split != 0),
            "balanced_pipeline_layout and account_embedding_loss_in_pipeline_split exclude "
            "one another (Megatron-core refuses pipeline_model_parallel_layout with the "
            "account_for_* options)",
        ),
        ("vp", (vp > 1) & (pp == 1), "virtual stages (vp>1) need pp>1"),
        (
            "vp",
            (vp > 1) & ((gb // (dp * mb)) % pp != 0),
            "interleaved schedule needs the number of micro-batches divisible by pp",
        ),
        # before the divisibility rule below, which would otherwise always report it first
        ("micro_batch", mb > gb, "micro_batch exceeds global_batch"),
        (
            "global_batch",
            gb % (dp * mb) != 0,
            "global_batch is not divisible by dp*micro_batch",
        ),
        (
            "cp",
            (cp > 1) & (seq_length % (2 * cp) != 0),
            f"seq_length={seq_length} is not divisible by 2*cp",
        ),
        (
            "sequence_parallel",
            (sp != 0) & (tp == 1),
            "sequence_parallel needs tp>1",
        ),
        (
            "sequence_parallel",
            (sp != 0) & (seq_length % (tp * cp) != 0),
            f"seq_length={seq_length} is not divisible by tp*cp (sequence parallel)",
        ),
        ("ep", (ep > 1) & (not moe), "ep>1 needs an MoE model"),
        (
            "ep",
            (num_experts % ep != 0) if moe else (ep != 1),
            f"num_experts={num_experts} is not divisible by ep",
        ),
        (
            "etp",
            (etp > tp) | (tp % etp != 0),
            "expert tensor parallel (etp) must divide tp",
        ),
        # Megatron-core parallel_state.initialize_model_parallel (MoE parallel folding, core
        # >= 0.10): the expert groups (etp innermost, then ep, then expert-DP) tile each
        # pipeline stage's tp*cp*dp ranks, so EP may span TP and CP ranks as well as DP ones.
        (
            "ep",
            (tp * cp * dp) % (etp * ep) != 0,
            "etp*ep must divide tp*cp*dp (the expert groups tile a pipeline stage's ranks)",
        ),
        (
            "sequence_parallel",
            (sp == 0) & (tp > 1) & moe,
            "MoE layers with tp>1 need sequence_parallel (Megatron-core MoELayer refuses to "
            "train without it)",
        ),
        (
            "zero_stage",
            (zero >= 2) & (pp > 1) & engines,
            "ZeRO-2/3 with pipeline parallelism cannot be compiled: the engines scaleplan "
            "compiles for cannot run it (DeepSpeed's pipeline engine refuses ZeRO-2/3; "
            "Megatron's distributed optimizer is ZeRO-1); `validate` still predicts measured "
            "FSDP+PP runs (torchtitan, Llama 3)",
        ),
        (
            "distributed_optimizer",
            (dist_opt != 0) & (zero >= 2),
            "use either distributed_optimizer (ZeRO-1 in Megatron) or zero_stage>=2, not both",
        ),
    ]
    if num_gpus is not None:
        gpus = f"{num_gpus} GPUs" if isinstance(num_gpus, int) else "the GPU count"
        rules.append(("dp", tp * pp * cp * dp != num_gpus, f"tp*pp*cp*dp must equal {gpus}"))
    return rules


def layout_as_dict(layout: LayoutSpec) -> dict[str, int]:
    """The fields `layout_violations` reads, as ints (expert TP resolved, booleans 0/1)."""
    return {
        "tp": layout.tp,
        "pp": layout.pp,
        "vp": layout.vp,
        "cp": layout.cp,
        "dp": layout.dp,
        "ep": layout.ep,
        "etp": layout.expert_tp,
        "micro_batch": layout.micro_batch,
        "global_batch": layout.global_batch,
        "sequence_parallel": int(layout.sequence_parallel),
        "zero_stage": layout.zero_stage,
        "distributed_optimizer": int(layout.distributed_optimizer),
        "account_embedding_loss_in_pipeline_split": int(
            layout.account_embedding_loss_in_pipeline_split
        ),
        "balanced_pipeline_layout": int(layout.balanced_pipeline_layout),
    }


def validate_layout(
    layout: LayoutSpec,
    model: ModelSpec,
    num_gpus: int | None = None,
    seq_length: int | None = None,
    field_prefix: str = "layout",
    engines: bool = True,
) -> None:
    """Raise a `SpecError` naming the first violated rule's field; return None when valid.
    `engines=False`: see `layout_violations`."""
    rules = layout_violations(
        layout_as_dict(layout),
        num_layers=model.num_layers,
        num_heads=model.num_heads,
        num_kv_heads=model.kv_heads,
        num_experts=model.moe.num_experts if model.moe else 1,
        seq_length=seq_length or model.seq_length,
        vocab_size=model.vocab_size,
        ffn_hidden_size=model.ffn_hidden_size,
        num_gpus=num_gpus,
        engines=engines,
    )
    for field, violated, reason in rules:
        if bool(violated):
            value = getattr(layout, field, None)
            raise SpecError(f"{reason} (got {field}={value})", field=f"{field_prefix}.{field}")
    if layout.etp is not None and model.moe is None and layout.etp != layout.tp:
        raise SpecError(
            f"expert tensor parallelism applies to MoE models; {model.name} is dense "
            f"(got etp={layout.etp})",
            field=f"{field_prefix}.etp",
        )
    if layout.recompute_layers is not None and layout.recompute != "full":
        raise SpecError(
            "recompute_layers applies only to recompute='full'",
            field=f"{field_prefix}.recompute_layers",
        )
    # a stage that holds neither the embedding nor the loss (nor the short last chunk)
    slots = model.num_layers + (2 if layout.account_embedding_loss_in_pipeline_split else 0)
    stage_layers = slots // layout.pp
    if layout.balanced_pipeline_layout:
        stage_layers = layout.vp * balanced_chunk_layers(model.num_layers, layout.pp * layout.vp)[0]
    if layout.recompute_layers is not None and layout.recompute_layers > stage_layers:
        raise SpecError(
            f"recompute_layers={layout.recompute_layers} exceeds the {stage_layers} "
            "layers of a pipeline stage",
            field=f"{field_prefix}.recompute_layers",
        )

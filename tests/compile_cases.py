"""Plans the compile tests share: tiny layout variants (from factories.tiny_plan) and a few
production-scale layouts built from model presets."""

from __future__ import annotations

from factories import tiny_plan

from scaleplan.specs.hardware import make_cluster
from scaleplan.specs.layout import LayoutSpec
from scaleplan.specs.model import get_model
from scaleplan.specs.plan import PhaseSpec, Plan, ScheduleSpec

LM_PHASES = ("pretrain", "anneal", "long_context", "sft")


def tiny_variants() -> dict[str, Plan]:
    """Layouts the engines run on CPU (TP2, PP2, DP2, MoE EP2, ZeRO 1-3), two phases each."""
    two = ("pretrain", "anneal")
    return {
        "single": tiny_plan(phases=LM_PHASES),
        "tp2": tiny_plan(tp=2, phases=two),
        "pp2": tiny_plan(pp=2, phases=two),
        "dp2": tiny_plan(dp=2, phases=two),
        "tp2pp2": tiny_plan(tp=2, pp=2, phases=two),
        "tp2dp2": tiny_plan(tp=2, dp=2, phases=two),
        "moe_ep2": tiny_plan(dp=2, ep=2, moe=True, phases=two),
        "zero1": tiny_plan(dp=2, zero_stage=1, phases=two),
        "zero2": tiny_plan(dp=2, zero_stage=2, phases=two),
        "zero3": tiny_plan(dp=2, zero_stage=3, phases=two),
        "distopt": tiny_plan(dp=2, distributed_optimizer=True, phases=two),
        "distopt_offload_fp16": tiny_plan(
            dp=2,
            distributed_optimizer=True,
            phases=two,
            phase_layouts={p: {"offload_optimizer": True, "precision": "fp16"} for p in two},
        ),
    }


def big_plan(
    model: str, gpus: int, seq: int, steps: int = 1000, style: str = "wsd", **layout: object
) -> Plan:
    lay = LayoutSpec.model_validate(layout)
    sched = ScheduleSpec(
        style=style,
        peak_lr=3e-4,
        min_lr=3e-5,
        warmup_steps=100,
        decay_steps=200 if style == "wsd" else 0,
    )  # type: ignore[arg-type]
    phase = PhaseSpec(
        name="pretrain",
        num_gpus=gpus,
        layout=lay,
        seq_length=seq,
        tokens=float(steps * lay.global_batch * seq),
        steps=steps,
        schedule=sched,
        time_s=1.0,
        cost_usd=1.0,
        mfu=0.4,
    )
    return Plan(
        name=f"{model}-{gpus}",
        cluster=make_cluster("H100-SXM5-80GB", gpus),
        model=get_model(model),
        tokens=phase.tokens,
        phases=(phase,),
    )


def big_variants() -> dict[str, Plan]:
    return {
        # Llama 3 70B on 512 H100: TP8 x PP4 (5 interleaved chunks) x DP16, SP, selective recompute
        "llama3_70b_tp8pp4vp5": big_plan(
            "llama3-70b",
            512,
            8192,
            tp=8,
            pp=4,
            vp=5,
            dp=16,
            sequence_parallel=True,
            distributed_optimizer=True,
            micro_batch=1,
            global_batch=512,
            recompute="selective",
        ),
        # Llama 3.1 405B as Megatron-Bridge runs it on 1,024 H100: 126 layers on PP8 x VP8 with
        # the embedding and loss counted as pipeline layers ((126 + 2) / 64 = 2 per chunk)
        "llama3_405b_tp8pp8vp8_split": big_plan(
            "llama3-405b",
            1024,
            8192,
            tp=8,
            pp=8,
            vp=8,
            cp=2,
            dp=8,
            sequence_parallel=True,
            distributed_optimizer=True,
            micro_batch=1,
            global_batch=512,
            account_embedding_loss_in_pipeline_split=True,
        ),
        # Llama 3 8B, fp8, CP2, full recompute of 2 layers per stage, cosine
        "llama3_8b_fp8_cp2": big_plan(
            "llama3-8b",
            64,
            8192,
            style="cosine",
            tp=4,
            pp=2,
            cp=2,
            dp=4,
            sequence_parallel=True,
            precision="fp8",
            micro_batch=1,
            global_batch=256,
            recompute="full",
            recompute_layers=2,
        ),
        # Mixtral 8x7B: EP8 inside DP8, expert-TP 1
        "mixtral_ep8": big_plan(
            "mixtral-8x7b",
            64,
            4096,
            tp=2,
            pp=4,
            dp=8,
            ep=8,
            etp=1,
            sequence_parallel=True,
            distributed_optimizer=True,
            micro_batch=1,
            global_batch=256,
        ),
        # DeepSeek-V3 (MLA, 3 dense + 58 MoE layers) on 256 GPUs, EP32
        "deepseek_v3_ep32": big_plan(
            "deepseek-v3",
            256,
            4096,
            tp=8,
            pp=1,
            dp=32,
            ep=32,
            etp=1,
            sequence_parallel=True,
            distributed_optimizer=True,
            micro_batch=1,
            global_batch=1024,
            precision="fp8",
        ),
        # DeepSeek-V3 as Megatron-Bridge runs it on GB200 (row 55 of published_runs_dev.csv):
        # 61 layers on PP4 x VP4 with the balanced layout (4 per chunk, 1 on the last)
        "deepseek_v3_pp4vp4_balanced": big_plan(
            "deepseek-v3",
            256,
            4096,
            tp=1,
            pp=4,
            vp=4,
            dp=64,
            ep=64,
            distributed_optimizer=True,
            micro_batch=1,
            global_batch=4096,
            balanced_pipeline_layout=True,
        ),
        # Llama 3 8B with ZeRO-3 + offload (DeepSpeed's home ground)
        "llama3_8b_zero3_offload": big_plan(
            "llama3-8b",
            16,
            4096,
            style="cosine",
            dp=16,
            zero_stage=3,
            offload_optimizer=True,
            offload_params=True,
            micro_batch=2,
            global_batch=256,
            recompute="full",
        ),
    }

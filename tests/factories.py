"""Hand-built plans for tests that must not depend on the planner (compile, run, report)."""

from __future__ import annotations

from scaleplan.specs.budget import DataSource
from scaleplan.specs.hardware import make_cluster
from scaleplan.specs.layout import LayoutSpec
from scaleplan.specs.model import ModelSpec, MoESpec
from scaleplan.specs.plan import ObjectiveSpec, PhaseSpec, Plan, ScheduleSpec


def tiny_model(
    moe: bool = False, vocab_size: int = 512, seq_length: int = 64, num_layers: int = 4
) -> ModelSpec:
    return ModelSpec(
        name="tiny-moe" if moe else "tiny",
        num_layers=num_layers,
        hidden_size=64,
        num_heads=4,
        num_kv_heads=2,
        ffn_hidden_size=128,
        vocab_size=vocab_size,
        seq_length=seq_length,
        moe=MoESpec(num_experts=2, top_k=1, expert_ffn_hidden_size=128) if moe else None,
    )


def tiny_plan(
    tp: int = 1,
    pp: int = 1,
    dp: int = 1,
    ep: int = 1,
    etp: int | None = None,
    moe: bool = False,
    zero_stage: int = 0,
    distributed_optimizer: bool = False,
    phases: tuple[str, ...] = ("pretrain", "anneal", "long_context", "sft", "dpo", "grpo"),
    steps: int = 20,
    micro_batch: int = 2,
    global_batch: int = 8,
    seq_length: int = 64,
    name: str = "tiny",
    phase_layouts: dict[str, dict[str, int | bool]] | None = None,
    phase_overrides: dict[str, dict[str, object]] | None = None,
    num_layers: int = 4,
) -> Plan:
    """A plan for a `num_layers`-layer (4), hidden-64 model that trains on CPU in seconds per phase.

    `phase_layouts` overrides layout fields of single phases (e.g. {"anneal": {"tp": 1, "pp": 2}}),
    `phase_overrides` other phase fields (e.g. {"grpo": {"steps": 30}})."""
    num_gpus = tp * pp * dp
    model = tiny_model(moe=moe, seq_length=seq_length, num_layers=num_layers)
    most = max(
        [num_gpus]
        + [
            int(f.get("tp", tp)) * int(f.get("pp", pp)) * int(f.get("dp", dp))
            for f in (phase_layouts or {}).values()
        ]
    )
    cluster = make_cluster("H100-SXM5-80GB", most)

    def layout(gb: int = global_batch) -> LayoutSpec:
        return LayoutSpec(
            tp=tp,
            pp=pp,
            dp=dp,
            ep=ep,
            etp=etp,
            micro_batch=micro_batch,
            global_batch=gb,
            zero_stage=zero_stage,
            distributed_optimizer=distributed_optimizer,
            # Megatron-core's MoELayer needs sequence parallelism with tp > 1
            sequence_parallel=moe and tp > 1,
        )

    def phase(kind: str, **kw: object) -> PhaseSpec:
        seq = int(kw.pop("seq_length", seq_length))  # type: ignore[call-overload]
        base: dict[str, object] = {
            "name": kind,
            "num_gpus": num_gpus,
            "layout": layout(),
            "seq_length": seq,
            "tokens": float(steps * global_batch * seq),
            "steps": steps,
            "time_s": 1.0,
            "cost_usd": 0.01,
            "mfu": 0.0,
            "checkpoint_every_steps": 10,
        }
        base.update(kw)
        return PhaseSpec.model_validate(base)

    lr = 3e-3
    wanted = {
        "pretrain": phase(
            "pretrain",
            schedule=ScheduleSpec(style="wsd", peak_lr=lr, min_lr=lr / 10, warmup_steps=2),
        ),
        "anneal": phase(
            "anneal",
            schedule=ScheduleSpec(style="wsd", peak_lr=lr, min_lr=lr / 10, decay_steps=steps),
            data=(DataSource(name="hq", weight=0.7), DataSource(name="web", weight=0.3)),
            init_from="pretrain",
        ),
        "long_context": phase(
            "long_context",
            seq_length=2 * seq_length,
            schedule=ScheduleSpec(style="cosine", peak_lr=lr / 3, min_lr=lr / 30, warmup_steps=2),
            init_from="anneal",
            rope_base=40000.0,
        ),
        "sft": phase(
            "sft",
            schedule=ScheduleSpec(style="cosine", peak_lr=lr / 10, min_lr=0.0, warmup_steps=2),
            objective=ObjectiveSpec(kind="sft"),
            data=(DataSource(name="sft", weight=1.0),),
            init_from="long_context",
        ),
        "dpo": phase(
            "dpo",
            schedule=ScheduleSpec(style="constant", peak_lr=lr / 30),
            objective=ObjectiveSpec(kind="dpo", dpo_beta=0.1),
            data=(DataSource(name="dpo", weight=1.0),),
            init_from="sft",
        ),
        "grpo": phase(
            "grpo",
            schedule=ScheduleSpec(style="constant", peak_lr=lr / 30),
            objective=ObjectiveSpec(
                kind="grpo",
                group_size=4,
                clip_eps=0.2,
                kl_beta=0.02,
                max_response_tokens=8,
                prompt_tokens=16,
            ),
            data=(DataSource(name="rlvr", weight=1.0),),
            init_from="dpo",
        ),
    }
    for pname, fields in (phase_layouts or {}).items():
        lay = wanted[pname].layout.model_copy(update=fields)
        wanted[pname] = wanted[pname].model_copy(update={"layout": lay, "num_gpus": lay.num_gpus})
    for pname, fields in (phase_overrides or {}).items():
        wanted[pname] = PhaseSpec.model_validate({**wanted[pname].model_dump(), **fields})
    chosen = [wanted[p] for p in phases]
    # a phase whose init_from is not in the plan starts from scratch
    names = {p.name for p in chosen}
    chosen = [
        p
        if p.init_from in names or p.init_from is None
        else p.model_copy(update={"init_from": None})
        for p in chosen
    ]
    return Plan(
        name=name,
        cluster=cluster,
        model=model,
        tokens=float(steps * global_batch * seq_length),
        phases=tuple(chosen),
    )

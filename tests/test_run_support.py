"""What `scaleplan run` can train, checked before anything is launched (executor/run_support.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from factories import tiny_plan

from scaleplan.executor.compile import compile_plan
from scaleplan.executor.run_support import default_backend, run_refusal
from scaleplan.specs.errors import NotImplementedFeature


def test_backend_and_refusals_per_device() -> None:
    plan = tiny_plan(dp=2, phases=("pretrain",))
    pre = plan.phase("pretrain")
    assert default_backend(pre.layout) == "megatron"
    assert run_refusal(plan, pre, "cpu") is None and run_refusal(plan, pre, "cuda") is None
    # ZeRO-3 trains through DeepSpeed: data-parallel next-token/SFT only
    zero3 = tiny_plan(dp=2, zero_stage=3, phases=("pretrain", "dpo"))
    assert default_backend(zero3.phase("pretrain").layout) == "deepspeed"
    assert run_refusal(zero3, zero3.phase("pretrain"), "cuda") is None
    refused = run_refusal(zero3, zero3.phase("dpo"), "cuda")
    assert refused is not None and "next-token and SFT" in refused.reason
    assert refused.field == "phases.dpo.objective"
    moe = tiny_plan(dp=2, ep=2, moe=True, zero_stage=3, phases=("pretrain",))
    refused = run_refusal(moe, moe.phase("pretrain"), "cuda")
    assert refused is not None and "ep=2" in refused.reason
    # the megatron entry point: Megatron-FSDP only through --backend megatron, GPU-only features
    assert "Megatron-FSDP" in run_refusal(zero3, zero3.phase("pretrain"), "cuda", "megatron").reason
    sp = tiny_plan(tp=2, moe=True, phases=("pretrain",))  # MoE with tp 2 turns SP on
    assert "sequence parallel" in run_refusal(sp, sp.phase("pretrain"), "cpu").reason
    assert run_refusal(sp, sp.phase("pretrain"), "cuda") is None


def test_run_plan_refuses_a_late_phase_before_launching_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scaleplan.executor import run as run_mod

    plan = tiny_plan(dp=2, phases=("pretrain", "dpo"), phase_layouts={"dpo": {"zero_stage": 3}})
    path = tmp_path / "plan.json"
    path.write_text(plan.model_dump_json())

    def no_launch(*_args: object, **_kw: object) -> None:
        raise AssertionError("a phase was launched")

    monkeypatch.setattr(run_mod, "_launch", no_launch)
    with pytest.raises(NotImplementedFeature, match="phase 'dpo'.*nothing was launched") as err:
        run_mod.run_plan(path, run_dir=tmp_path / "run", nproc=4, log=False)
    assert err.value.field == "phases.dpo.objective"
    assert not (tmp_path / "run").exists()


def test_compile_notes_the_phases_scaleplan_run_cannot_train() -> None:
    moe = tiny_plan(dp=2, ep=2, moe=True, zero_stage=3, phases=("pretrain",))
    notes = compile_plan(moe, "megatron").notes
    assert any("phase pretrain: scaleplan run cannot train it" in n and "--engine megatron-lm" in n
               for n in notes), notes  # fmt: skip
    assert not compile_plan(tiny_plan(dp=2, phases=("pretrain",)), "megatron").notes

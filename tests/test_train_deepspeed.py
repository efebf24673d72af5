"""Integration test: pretraining with DeepSpeed ZeRO-2 and ZeRO-3 on CPU (2 processes, gloo),
with the same data order and LR schedule as the megatron path, and the backend's refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from factories import tiny_plan

pytest.importorskip("deepspeed")


def _steps(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "metrics" / "pretrain.jsonl").read_text().splitlines()]
    return [r for r in rows if r["event"] == "step"]


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_zero_pretrain_learns_and_checkpoints(
    stage: int, tmp_path: Path, engine_env: dict[str, str]
) -> None:
    from scaleplan.executor.run import run_plan

    plan = tiny_plan(dp=2, zero_stage=stage, phases=("pretrain",), steps=12)
    path = tmp_path / "plan.json"
    path.write_text(plan.model_dump_json())
    run_plan(path, "all", tmp_path / "run", nproc=2, env=engine_env, log=False)
    steps = _steps(tmp_path / "run")
    start = json.loads(
        (tmp_path / "run" / "metrics" / "pretrain.jsonl").read_text().splitlines()[0]
    )
    assert start["backend"] == "deepspeed" and start["layout"]["zero_stage"] == stage
    assert [s["step"] for s in steps] == list(range(1, 13))
    assert [s["lr"] for s in steps[:3]] == pytest.approx([0.0, 1.5e-3, 3e-3])  # the plan's warmup
    assert steps[-1]["loss"] < steps[0]["loss"] - 0.4
    assert (tmp_path / "run" / "checkpoints" / "pretrain" / "final").exists()
    assert (tmp_path / "run" / "checkpoints" / "pretrain" / "step_0000012" / "ds").is_dir()


def test_deepspeed_backend_refuses_what_it_cannot_train(tmp_path: Path) -> None:
    import argparse

    from scaleplan.executor.ds_backend import train_deepspeed
    from scaleplan.specs.errors import NotImplementedFeature

    plan = tiny_plan(dp=2, zero_stage=2, phases=("dpo",))
    args = argparse.Namespace(resume=False, seed=1, max_steps=None)
    with pytest.raises(NotImplementedFeature, match="next-token and SFT"):
        train_deepspeed(plan, plan.phase("dpo"), tmp_path, args)
    plan = tiny_plan(tp=2, zero_stage=2, phases=("pretrain",))
    with pytest.raises(NotImplementedFeature, match="data-parallel"):
        train_deepspeed(plan, plan.phase("pretrain"), tmp_path, args)

"""Integration tests: every phase of a tiny plan trained through megatron-core on CPU (2 processes,
gloo, the CPU device adapter), with layouts changing between phases (TP=2, PP=2, DP=2: each phase
loads its parent's dist_checkpoint into a different layout), TP parity, kill -9 resume, an MoE
variant with EP=2, and calibration of the measured steps.

These are layout, flag-mapping, objective and checkpoint tests, not tests of CUDA numerics.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from factories import tiny_plan

from scaleplan.specs.errors import SpecError
from scaleplan.specs.plan import Plan

pytest.importorskip("megatron.core")

TASK = [{"name": "first", "weight": 1.0}]  # the easiest verifiable task (see data/tasks.py)
CHAIN_LAYOUTS: dict[str, dict[str, Any]] = {
    "pretrain": {"tp": 2},
    "anneal": {"pp": 2},
    "long_context": {"dp": 2, "distributed_optimizer": True},
    "sft": {"dp": 2},  # the longest phase: DP is the cheapest layout on CPU (TP=2 is pretrain's)
    "dpo": {"pp": 2},
    "grpo": {"dp": 2},
}


NO_MID_CHECKPOINT = {"checkpoint_every_steps": 1000}  # only the final one (pretrain's: see below)


def _chain_plan() -> Plan:
    layouts = {k: {"tp": 1, "pp": 1, "dp": 1, **v} for k, v in CHAIN_LAYOUTS.items()}
    base = tiny_plan()
    return tiny_plan(
        steps=20,
        phase_layouts=layouts,
        phase_overrides={
            # pretrain keeps the factory's checkpoint every 10 steps: the kill -9 test resumes there
            "anneal": NO_MID_CHECKPOINT,
            "long_context": NO_MID_CHECKPOINT,
            # SFT to partial competence (greedy right, samples often wrong), so GRPO has room
            "sft": {
                "steps": 120,
                "data": TASK,
                "checkpoint_every_steps": 1000,
                "schedule": {"style": "cosine", "peak_lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 2},
            },
            "dpo": {
                "steps": 10,
                "data": TASK,
                "schedule": {"style": "constant", "peak_lr": 3e-4},
                **NO_MID_CHECKPOINT,
            },
            "grpo": {
                **NO_MID_CHECKPOINT,
                "steps": 20,
                "data": TASK,
                "schedule": {"style": "constant", "peak_lr": 1e-4},
                "layout": {
                    **base.phase("grpo").layout.model_dump(),
                    **CHAIN_LAYOUTS["grpo"],
                    "global_batch": 32,
                    "micro_batch": 4,
                },
            },
        },
    )


def write_plan(plan: Plan, path: Path) -> Path:
    path.write_text(plan.model_dump_json(indent=1))
    return path


def records(run_dir: Path, phase: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    lines = [
        json.loads(x) for x in (run_dir / "metrics" / f"{phase}.jsonl").read_text().splitlines()
    ]
    return [r for r in lines if r["event"] == "step"], [r for r in lines if r["event"] == "eval"]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


@pytest.fixture(scope="session")
def env(engine_env: dict[str, str]) -> dict[str, str]:
    return engine_env


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> tuple[Path, Path]:
    from scaleplan.executor.run import run_plan

    root = tmp_path_factory.mktemp("chain")
    plan_path = write_plan(_chain_plan(), root / "plan.json")
    results = run_plan(plan_path, "all", root / "run", nproc=2, env=env, log=False)
    assert [r.status for r in results] == ["trained"] * 6
    return plan_path, root / "run"


@pytest.mark.slow
def test_six_phases_learn_across_layouts(chain: tuple[Path, Path]) -> None:
    _, run = chain
    for phase in CHAIN_LAYOUTS:
        assert (run / "checkpoints" / phase / "final").exists()
    steps, evals = records(run, "pretrain")
    assert _mean([s["loss"] for s in steps[-3:]]) < steps[0]["loss"] - 0.7  # falls well below start
    assert evals[-1]["eval_loss_web"] < evals[0]["eval_loss_web"] - 0.7
    _, evals = records(run, "anneal")  # the decay on the hq mix lowers the hq loss further
    assert evals[-1]["eval_loss_hq"] < evals[0]["eval_loss_hq"] - 0.05
    steps, evals = records(run, "long_context")
    start = json.loads((run / "metrics" / "long_context.jsonl").read_text().splitlines()[0])
    assert start["rope_base"] == 40000.0 and start["layout"]["distributed_optimizer"]
    assert evals[-1]["eval_loss_web"] < evals[0]["eval_loss_web"]
    _, evals = records(run, "sft")
    assert evals[-1]["eval_response_loss"] < evals[0]["eval_response_loss"] - 1.0
    steps, evals = records(run, "dpo")
    assert steps[0]["reward_margin"] == pytest.approx(0.0, abs=1e-6)  # policy == reference
    assert evals[-1]["eval_reward_margin"] > evals[0]["eval_reward_margin"] + 0.03  # held-out pairs
    assert (
        _mean([s["reward_margin"] for s in steps[-3:]])
        > _mean([s["reward_margin"] for s in steps[:3]]) + 0.01
    )
    steps, evals = records(run, "grpo")
    assert evals[-1]["heldout_reward"] > evals[0]["heldout_reward"]
    assert all(s["step_time_s"] > 0 and 0 <= s["mfu"] < 1 for s in steps)


@pytest.mark.slow
def test_tp1_matches_tp2_and_kill9_resume_matches(
    chain: tuple[Path, Path], env: dict[str, str], tmp_path: Path
) -> None:
    """One interrupted run serves both checks (two launches, not three): the chain's pretrain
    (TP=2, uninterrupted) is the reference; the same phase with TP=1 (DP=2, so that one of two
    ranks can be killed) must agree step by step, and after kill -9 of rank 1 and --resume
    from the step-10 checkpoint, its final loss must equal the reference's."""
    from scaleplan.executor.run import PhaseFailed, run_plan

    _, run = chain
    reference, _ = records(run, "pretrain")  # TP=2, uninterrupted
    tp1 = _chain_plan()
    pre = tp1.phase("pretrain")
    pre1 = pre.model_copy(update={"layout": pre.layout.model_copy(update={"tp": 1, "dp": 2})})
    tp1 = tp1.model_copy(update={"phases": (pre1,) + tp1.phases[1:]})
    plan_path = write_plan(tp1, tmp_path / "tp1.json")
    killed = tmp_path / "killed"
    with pytest.raises(PhaseFailed):  # SIGKILL of rank 1 after step 13 (checkpoint at step 10)
        run_plan(
            plan_path,
            "pretrain",
            killed,
            nproc=2,
            env={**env, "SCALEPLAN_KILL_AT_STEP": "13:1"},
            log=False,
        )
    assert (killed / "checkpoints" / "pretrain" / "latest").read_text().strip() == "step_0000010"
    assert not (killed / "checkpoints" / "pretrain" / "final").exists()
    before_kill, _ = records(killed, "pretrain")
    assert [s["step"] for s in before_kill] == list(range(1, 14))
    for a, b in zip(before_kill[:5], reference[:5], strict=True):  # TP=1 vs TP=2 parity
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    run_plan(plan_path, "pretrain", killed, resume=True, nproc=2, env=env, log=False)
    resumed, _ = records(killed, "pretrain")
    assert [s["step"] for s in resumed] == list(range(1, 21))  # steps 11-13 redone, not doubled
    assert (killed / "checkpoints" / "pretrain" / "final").exists()
    assert resumed[-1]["loss"] == pytest.approx(reference[-1]["loss"], abs=1e-4)


@pytest.mark.slow
def test_moe_ep2_pretrain_then_grpo(env: dict[str, str], tmp_path: Path) -> None:
    """EP=2: expert-parallel training, the parent's checkpoint loaded into the next phase, and
    sampling plus a frozen reference model (GRPO) through the MoE layers; two launches."""
    from scaleplan.executor.run import run_plan

    plan = tiny_plan(
        moe=True,
        dp=2,
        ep=2,
        steps=8,
        phases=("pretrain", "grpo"),
        phase_overrides={
            "pretrain": NO_MID_CHECKPOINT,
            "grpo": {"init_from": "pretrain", "steps": 3, "data": TASK},
        },
    )
    run_plan(
        write_plan(plan, tmp_path / "moe.json"),
        "all",
        tmp_path / "run",
        nproc=2,
        env=env,
        log=False,
    )
    steps, _ = records(tmp_path / "run", "pretrain")
    assert (
        json.loads((tmp_path / "run" / "metrics" / "pretrain.jsonl").read_text().splitlines()[0])[
            "layout"
        ]["ep"]
        == 2
    )
    assert steps[-1]["loss"] < steps[0]["loss"] - 0.3
    grpo, _ = records(tmp_path / "run", "grpo")
    assert [s["step"] for s in grpo] == [1, 2, 3]
    assert (tmp_path / "run" / "checkpoints" / "grpo" / "final").exists()


@pytest.mark.slow
def test_calibrate_reads_run_metrics(
    chain: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from scaleplan.planner.cli import main

    _, run = chain
    metrics = str(run / "metrics" / "pretrain.jsonl")
    with pytest.raises(SystemExit) as exc:  # CPU timings are no basis for a GPU profile
        main(["calibrate", metrics, "--json"])
    assert exc.value.code == 2
    capsys.readouterr()
    out = tmp_path / "profile.yaml"
    main(
        [
            "calibrate",
            metrics,
            str(run / "metrics" / "sft.jsonl"),
            "--allow-device-mismatch",
            "--out",
            str(out),
            "--json",
        ]
    )
    result = json.loads(capsys.readouterr().out)
    assert [r["phase"] for r in result["runs"]] == ["pretrain", "sft"]
    for row in result["runs"]:
        assert row["measured_step_time_s"] > 0 and row["predicted_step_time_s"] > 0
    assert out.exists() and "gemm_max" in out.read_text()


def test_run_refuses_layouts_larger_than_allowed(tmp_path: Path) -> None:
    from scaleplan.executor.run import run_plan

    path = write_plan(tiny_plan(tp=2, dp=2, phases=("pretrain",)), tmp_path / "p.json")
    with pytest.raises(SpecError, match="needs 4 processes"):
        run_plan(path, "all", tmp_path / "run", nproc=2)
    with pytest.raises(SpecError, match="unknown phase"):
        run_plan(path, "pretrain,nope", tmp_path / "run", nproc=8)
    assert not os.path.exists(tmp_path / "run")


def test_schedule_mapping_wsd_and_cosine() -> None:
    from scaleplan.executor.mcore_build import build_scheduler

    class Opt:
        param_groups: list[dict[str, float]] = [{}]

    plan = tiny_plan(phases=("pretrain",), steps=10)
    phase = plan.phase("pretrain").model_copy(
        update={
            "schedule": plan.phase("pretrain").schedule.model_copy(
                update={
                    "style": "wsd",
                    "peak_lr": 1.0,
                    "min_lr": 0.1,
                    "warmup_steps": 2,
                    "decay_steps": 4,
                }
            )
        }
    )
    sched = build_scheduler(Opt(), phase)
    lrs = []
    for _ in range(11):
        lrs.append(Opt.param_groups[0]["lr"])
        sched.step(1)
    assert lrs[:3] == [0.0, 0.5, 1.0] and lrs[3:7] == [1.0] * 4  # warmup, then stable
    assert lrs[7] == pytest.approx(0.775) and lrs[10] == pytest.approx(0.1)  # linear decay to min
    cos = phase.model_copy(
        update={
            "schedule": phase.schedule.model_copy(update={"style": "cosine", "warmup_steps": 0})
        }
    )
    sched = build_scheduler(Opt(), cos)
    sched.step(5)
    assert Opt.param_groups[0]["lr"] == pytest.approx(0.1 + 0.9 * 0.5)


def test_gpu_only_layouts_are_refused_on_cpu(tmp_path: Path) -> None:
    import torch

    from scaleplan.executor.mcore_build import phase_document
    from scaleplan.executor.run_support import cpu_refusals
    from scaleplan.executor.train import main
    from scaleplan.specs.errors import NotImplementedFeature

    plan = tiny_plan(tp=2, phases=("pretrain",))
    pre = plan.phase("pretrain")
    sp = pre.model_copy(
        update={"layout": pre.layout.model_copy(update={"sequence_parallel": True})}
    )
    sp_plan = plan.model_copy(update={"phases": (sp,)})
    assert cpu_refusals(phase_document(sp_plan, sp)) == ["sequence parallel"]
    assert cpu_refusals(phase_document(plan, pre)) == []
    if torch.cuda.is_available():
        return
    path = write_plan(sp_plan, tmp_path / "sp.json")
    with pytest.raises(NotImplementedFeature, match="sequence parallel need a GPU"):
        main(["--plan", str(path), "--phase", "pretrain", "--run-dir", str(tmp_path / "run")])


@pytest.mark.slow
def test_entry_point_trains_the_compiled_document() -> None:
    """`scaleplan run` builds megatron's configs from the document `scaleplan compile` emits:
    every compiled field arrives unchanged except the documented CPU overrides, and what the CPU
    cannot train (Megatron-FSDP for ZeRO-2/3) is refused, not trained differently."""
    import torch

    from scaleplan.executor import mcore_build as mb
    from scaleplan.specs.errors import NotImplementedFeature

    plan = _chain_plan()
    converted = {"params_dtype", "pipeline_dtype", "activation_func"}  # names -> torch objects
    for phase in plan.phases:
        doc = mb.phase_document(plan, phase)
        cfg = mb.megatron_configs(doc, "cpu")
        tc, oc = cfg["transformer"], cfg["optimizer"]
        for key, value in doc["transformer_config"].items():
            if key in mb.CPU_TRANSFORMER_OVERRIDES or key in converted:
                continue
            assert getattr(tc, key) == value, (phase.name, key)
        for key, value in doc["optimizer_config"].items():
            if key not in mb.CPU_OPTIMIZER_OVERRIDES:
                assert getattr(oc, key) == value, (phase.name, key)
        for key, value in doc["ddp_config"].items():
            assert getattr(cfg["ddp"], key) == value, (phase.name, key)
        assert tc.params_dtype == torch.float32 and not tc.bf16 and tc.use_cpu_initialization
    zero2 = tiny_plan(dp=2, zero_stage=2, phases=("pretrain",))
    doc = mb.phase_document(zero2, zero2.phase("pretrain"))
    assert doc["ddp_config"]["use_megatron_fsdp"]
    with pytest.raises(NotImplementedFeature, match="Megatron-FSDP"):
        mb.megatron_configs(doc, "cpu")


def test_max_steps_leaves_the_phase_unfinished_and_later_phases_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--max-steps` stops a phase early: it keeps a checkpoint but no `final` marker, the
    phases after it are reported as not started (with the reason), and a phase that starts from
    it refuses with a message saying how to finish it."""
    from scaleplan.executor import checkpoints as ckpt
    from scaleplan.executor import run as run_mod

    launched: list[list[str]] = []

    def fake_launch(cmd: list[str], env: dict[str, str], log: Path, echo: bool) -> tuple[int, str]:
        launched.append(cmd)  # what a --max-steps 3 run leaves: a step-3 checkpoint, no final
        run_dir = Path(cmd[cmd.index("--run-dir") + 1])
        phase = cmd[cmd.index("--phase") + 1]
        ckpt.prepare_tmp(run_dir, phase, 3)
        ckpt.commit(run_dir, phase, 3, final=False)
        return 0, ""

    monkeypatch.setattr(run_mod, "_launch", fake_launch)
    path = write_plan(tiny_plan(phases=("pretrain", "anneal")), tmp_path / "p.json")
    results = run_mod.run_plan(path, "all", tmp_path / "run", nproc=2, max_steps=3, log=False)
    assert len(launched) == 1 and "--max-steps" in launched[0]
    assert results[0].status == "unfinished (--max-steps)"
    assert results[1].status.startswith("not started: 'pretrain' stopped at --max-steps")
    with pytest.raises(SpecError, match="unfinished \\(stopped at step 3.*--resume"):
        ckpt.require_final(tmp_path / "run", "pretrain", "phases.anneal.init_from")

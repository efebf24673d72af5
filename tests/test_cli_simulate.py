"""`scaleplan simulate`: the issue's acceptance run, run files, plan files, human output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli as run
from factories import tiny_plan

ACCEPTANCE = [
    "simulate", "--json", "--model", "llama3-70b", "--gpu", "h100-sxm", "--gpus", "64",
    "--tp", "8", "--pp", "4", "--dp", "2", "--micro-batch", "1", "--global-batch", "512",
    "--seq-len", "8192", "--recompute", "selective", "--distributed-optimizer",
]  # fmt: skip


def test_acceptance_llama3_70b_on_64_h100(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(ACCEPTANCE, capsys)
    assert code == 0, err
    result = json.loads(out)
    for key in ("params_total", "params_active", "flops_per_token_model", "flops_per_token_hardware",
                "memory_bytes", "fits", "hbm_bytes", "layout"):  # fmt: skip
        assert key in result
    assert result["params_total"] == pytest.approx(70.6e9, rel=0.01)
    mem = result["memory_bytes"]
    assert sum(v for k, v in mem.items() if k != "total") == pytest.approx(mem["total"], rel=1e-12)
    assert result["fits"] is True and mem["total"] < result["hbm_bytes"]
    assert result["flops_per_token_hardware"] > result["flops_per_token_model"] > 6 * 70e9
    assert result["layout"]["dp"] == 2 and result["layout"]["sequence_parallel"] is True


def test_dp_is_derived_and_flags_match_a_run_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = [a for a in ACCEPTANCE if a not in ("--dp", "2")]
    code, out, _ = run(flags, capsys)
    assert code == 0
    from_flags = json.loads(out)
    assert from_flags["layout"]["dp"] == 2
    run_file = tmp_path / "run.yaml"
    run_file.write_text(
        "model: llama3-70b\ngpu: H100-SXM5-80GB\ngpus: 64\nseq_length: 8192\n"
        "layout: {tp: 8, pp: 4, micro_batch: 1, global_batch: 512, recompute: selective,"
        " distributed_optimizer: true}\n"
    )
    code, out, err = run(["simulate", "--json", str(run_file)], capsys)
    assert code == 0, err
    from_file = json.loads(out)
    for key in ("params_total", "flops_per_token_hardware", "memory_bytes", "fits", "layout"):
        assert from_file[key] == from_flags[key]
    # flags override the file; dp is re-derived from the new tp
    code, out, _ = run(
        ["simulate", "--json", str(run_file), "--tp", "4", "--recompute", "full"], capsys
    )
    over = json.loads(out)
    assert (
        over["layout"]["tp"] == 4
        and over["layout"]["dp"] == 4
        and over["layout"]["recompute"] == "full"
    )
    assert over["flops_per_token_hardware"] > from_file["flops_per_token_hardware"]


def test_model_mapping_with_preset_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_file = tmp_path / "run.yaml"
    run_file.write_text(
        "model: {preset: llama3-8b, num_layers: 16, name: half-8b}\ngpu: a100-80gb\n"
        "layout: {tp: 2, dp: 4, global_batch: 64}\n"
    )
    code, out, err = run(["simulate", "--json", str(run_file)], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["model"] == "half-8b" and result["gpus"] == 8 and result["seq_length"] == 8192
    assert result["params_total"] < 5e9


def test_plan_file_simulates_every_phase(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = tiny_plan(tp=2, dp=2, phases=("pretrain", "long_context", "sft"))
    path = tmp_path / "plan.json"
    path.write_text(plan.model_dump_json())
    code, out, err = run(["simulate", "--json", str(path)], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["plan"] == "tiny"
    assert [p["phase"] for p in result["phases"]] == ["pretrain", "long_context", "sft"]
    pre, long = result["phases"][0], result["phases"][1]
    assert long["seq_length"] == 2 * pre["seq_length"]
    assert long["memory_bytes"]["activations"] > pre["memory_bytes"]["activations"]
    code, out, _ = run(["simulate", str(path)], capsys)
    assert code == 0 and out.count("Memory per GPU") == 3


def test_human_output_has_flops_and_memory_tables(capsys: pytest.CaptureFixture[str]) -> None:
    args = [a for a in ACCEPTANCE if a != "--json"]
    code, out, _ = run(args, capsys)
    assert code == 0
    for text in ("FLOPs per token", "attn_scores", "mlp", "lm_head", "hardware", "Memory per GPU",
                 "optimizer", "activations", "framework_margin", "HBM capacity", "fits: yes"):  # fmt: skip
        assert text in out


def test_a_layout_that_does_not_fit(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["simulate", "--json", "--model", "llama3-70b", "--gpu", "a100-40gb", "--gpus", "8",
                        "--tp", "8", "--global-batch", "8", "--seq-len", "4096"], capsys)  # fmt: skip
    assert code == 0
    result = json.loads(out)
    assert result["fits"] is False and result["headroom_bytes"] < 0


def test_moe_model_reports_active_params_and_experts(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["simulate", "--json", "--model", "mixtral-8x7b", "--gpu", "h100", "--gpus", "64",
                        "--tp", "2", "--ep", "8", "--global-batch", "256", "--seq-len", "4096",
                        "--distributed-optimizer"], capsys)  # fmt: skip
    assert code == 0
    result = json.loads(out)
    assert result["params_active"] == pytest.approx(12.9e9, rel=0.01)
    assert result["memory_bytes"]["moe_experts"] > 0
    assert result["flops_forward_by_op"]["moe_experts"] > 0


def test_console_script_end_to_end() -> None:
    """The installed entry point, as a user runs it: exit 0 with JSON, exit 2 with one line."""
    exe = Path(sys.executable).parent / "scaleplan"
    ok = subprocess.run([str(exe), *ACCEPTANCE], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and json.loads(ok.stdout)["fits"] is True
    bad = subprocess.run(
        [str(exe), *ACCEPTANCE[:-1], "--tp", "3"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().count("\n") == 0 and "layout.tp" in bad.stderr

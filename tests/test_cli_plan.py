"""`scaleplan plan`: the JSON contract, the plan file, bad budgets (exit 2, one line, nothing
written)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import run_cli as _run

from scaleplan.specs.plan import Plan

EXAMPLES = Path(__file__).resolve().parents[1] / "specs" / "examples"


def _budget_file(tmp_path: Path, **overrides: object) -> Path:
    doc: dict[str, object] = {
        "name": "t",
        "gpu": "H100",
        "gpus": 8,
        "hours": 24,
        "data": {"seq_length": 2048, "vocab_size": 32000, "max_unique_tokens": 1e12},
    }
    doc.update(overrides)
    path = tmp_path / "budget.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_json_has_the_contract_keys(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["plan", str(EXAMPLES / "h100x8-week.yaml"), "--json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["model"]["params_total"] > 1e9
    assert doc["tokens"] > 0
    assert doc["search"]["layouts_evaluated"] > 1000 and doc["search"]["seconds"] > 0
    names = [p["name"] for p in doc["phases"]]
    assert names[:2] == ["pretrain", "anneal"] and "sft" in names and "dpo" in names
    for phase in doc["phases"]:
        for key in ("name", "layout", "tokens", "steps", "time_s", "cost_usd", "mfu"):
            assert key in phase, key
        assert (
            phase["layout"]["tp"]
            * phase["layout"]["pp"]
            * phase["layout"]["cp"]
            * phase["layout"]["dp"]
            == phase["num_gpus"]
        )


def test_out_writes_a_plan_file_that_round_trips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sub" / "plan.json"
    code, stdout, _ = _run(["plan", str(EXAMPLES / "moe.yaml"), "--out", str(out)], capsys)
    assert code == 0, stdout
    text = out.read_text()
    plan = Plan.model_validate_json(text)
    assert plan.model.moe is not None and plan.model.moe.num_experts == 64
    assert Plan.model_validate_json(plan.model_dump_json()) == plan
    assert "phases" in stdout and "pretrain" in stdout  # the rich summary


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"gpus": 0}, "gpus", "must be a positive GPU count"),
        ({"gpus": [8, -16]}, "gpus", "must be a positive GPU count"),
        ({"hours": -5}, "hours", "greater than 0"),
        ({"gpu": "Z100"}, "gpu", "unknown GPU 'Z100'"),
        ({"gpus": 12}, "gpus", "whole number of nodes"),
        (
            {"data": {"max_unique_tokens": 1e6, "seq_length": 2048}},
            "data.max_unique_tokens",
            "Raise data.max_unique_tokens",
        ),
        ({"target": {"kind": "fixed-size", "params": 4e11}}, "gpus", "use more GPUs"),
        (
            {"phases": {"post_training_gpus": 64, "sft": {"examples": 10}}},
            "phases.post_training_gpus",
            "lower it",
        ),
        ({"hours": None}, "", "give hours, dollars, or both"),
        ({"hours": 0.002}, "target", "shrink the vocabulary (data.vocab_size)"),
        (
            {
                "gpus": 256,
                "target": {"kind": "fixed-size", "params": 4e11},
                "phases": {"grpo": {"prompts": 100}},
            },
            "phases.grpo",
            "drop the grpo phase",
        ),
        ({"moe": {"num_experts": 8, "top_k": 2}}, "", "needs architecture: moe"),
        (
            {"architecture": "moe", "moe": {"num_experts": 4, "top_k": 8}},
            "moe",
            "exceeds num_experts",
        ),
    ],
)
def test_bad_budgets_exit_2_with_a_fix(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    overrides: dict[str, object],
    field: str,
    words: str,
) -> None:
    budget = _budget_file(tmp_path, **overrides)
    out = tmp_path / "plan.json"
    code, stdout, err = _run(["plan", str(budget), "--out", str(out), "--json"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {budget}"), err
    assert words in lines[0]
    if field:
        assert f": {field}: " in lines[0]
    assert "Traceback" not in err and not out.exists() and stdout == ""


def test_missing_budget_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _run(["plan", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2 and "file not found" in err


def test_report_unavailable_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from scaleplan.planner.cli import plan_cmd

    monkeypatch.setattr(plan_cmd, "_report_writer", lambda: None)
    out = tmp_path / "plan.json"
    code, _, err = _run(
        [
            "plan",
            str(EXAMPLES / "h100x8-week.yaml"),
            "--out",
            str(out),
            "--report",
            str(tmp_path / "rep"),
        ],
        capsys,
    )
    assert code == 2 and "not available" in err and not out.exists()


def test_report_is_written_when_the_module_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from scaleplan.planner.cli import plan_cmd

    calls: list[tuple[object, Path]] = []
    monkeypatch.setattr(
        plan_cmd,
        "_report_writer",
        lambda: lambda plan, where, fit_path=None: calls.append((plan, where)),
    )
    code, _, _ = _run(
        ["plan", str(EXAMPLES / "h100x8-week.yaml"), "--report", str(tmp_path / "r")], capsys
    )
    assert code == 0 and len(calls) == 1 and isinstance(calls[0][0], Plan)


def test_simulate_reproduces_the_plans_step_time_and_cost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plan.json"
    code, _, _ = _run(["plan", str(EXAMPLES / "h100x8-week.yaml"), "--out", str(out)], capsys)
    assert code == 0
    plan = Plan.model_validate_json(out.read_text())
    pre = plan.phase("pretrain")
    code, stdout, err = _run(["simulate", str(out), "--json", "--tokens", repr(pre.tokens)], capsys)
    assert code == 0, err
    sims = {p["phase"]: p["step"] for p in json.loads(stdout)["phases"]}
    for phase in plan.phases:
        est = phase.estimate
        assert est is not None
        # simulate times the training step; the plan adds DPO/GRPO reference and rollout passes
        simulated = sims[phase.name]["step_time_s"] + est.reference_s + est.rollout_s
        assert simulated == pytest.approx(est.step_time_s, rel=1e-6), phase.name
    assert sims["pretrain"]["time_to_train_s"] == pytest.approx(pre.time_s, rel=1e-6)
    assert sims["pretrain"]["cost_usd"] == pytest.approx(pre.cost_usd, rel=1e-6)


def test_fit_file_next_to_the_budget_is_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scaleplan.planner.laws import ChinchillaLaw
    from scaleplan.planner.laws.io import fit_document, write_fit

    law = ChinchillaLaw(E=1.8, A=480.0, B=2100.0, alpha=0.35, beta=0.37, source="test fit")
    points = {"N": [1e8], "D": [2e9], "loss": [3.0], "flops": [1.2e18]}
    write_fit(tmp_path / "fit.json", fit_document(law, method="epoch", points=points))
    budget = _budget_file(tmp_path, law={"fit": "fit.json", "preset": None})
    code, out, err = _run(["plan", str(budget), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["law"]["params"]["alpha"] == pytest.approx(0.35)
    missing = _budget_file(tmp_path, law={"fit": "nope.json", "preset": None})
    code, _, err = _run(["plan", str(missing)], capsys)
    assert code == 2 and "law.fit" in err and "not found" in err


def test_an_existing_report_needs_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from scaleplan.planner.cli import plan_cmd

    calls: list[Path] = []
    monkeypatch.setattr(
        plan_cmd, "_report_writer", lambda: lambda plan, where, fit_path=None: calls.append(where)
    )
    rep = tmp_path / "r"
    rep.mkdir()
    (rep / "report.html").write_text("old")
    out = tmp_path / "plan.json"
    args = ["plan", str(EXAMPLES / "h100x8-week.yaml"), "--report", str(rep), "--out", str(out)]
    code, _, err = _run(args, capsys)
    assert code == 2 and "--force" in err and "--report" in err
    assert not calls and not out.exists() and (rep / "report.html").read_text() == "old"
    code, _, _ = _run([*args, "--force"], capsys)
    assert code == 0 and calls == [rep] and out.exists()

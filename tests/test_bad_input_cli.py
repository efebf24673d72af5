"""Bad input to plan, simulate, report and validate: one error line, exit 2, nothing written."""

from __future__ import annotations

import csv
import os
import stat
from pathlib import Path

import pytest
from conftest import assert_one_error, run_cli

SMALL = "name: tiny\ngpu: H100\ngpus: 8\nhours: 2\ndata: {seq_length: 2048, vocab_size: 32000}\n"
BUILTIN_CSV = Path(__file__).resolve().parents[1] / "specs" / "data" / "published_runs_dev.csv"


def _budget(tmp_path: Path, extra: str = "", name: str = "b.yaml") -> Path:
    path = tmp_path / name
    path.write_text(SMALL + extra)
    return path


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["simulate", "--zero", "4"], capsys)
    assert "--zero" in assert_one_error(code, err)
    code, _, err = run_cli(["catalog", "tpus"], capsys)
    assert "tpus" in assert_one_error(code, err)
    code, _, err = run_cli(["--no-such-option"], capsys)
    assert "--no-such-option" in assert_one_error(code, err)


def test_an_unwritable_out_leaves_no_report_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    report = tmp_path / "report"
    code, _, err = run_cli(
        ["plan", str(_budget(tmp_path)), "--report", str(report), "--out", str(blocker / "p.json")],
        capsys,
    )
    assert "--out" in assert_one_error(code, err)
    assert not report.exists()
    code, _, err = run_cli(["plan", str(_budget(tmp_path)), "--report", str(blocker / "r")], capsys)
    assert "--report" in assert_one_error(code, err)


def test_plan_file_follows_the_umask(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = os.umask(0o022)
    try:
        out = tmp_path / "sub" / "plan.json"
        code, _, _ = run_cli(["plan", str(_budget(tmp_path)), "--out", str(out)], capsys)
    finally:
        os.umask(old)
    assert code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("usd_per_gpu_hour: .inf\n", "usd_per_gpu_hour"),
        ("phases: {anneal: {mix: []}}\n", "mix"),
        ("phases: {long_context: {target_length: 1024}}\n", "target_length"),
        ("law: {schedule_fit: missing.json}\n", "law.schedule_fit"),
        ("gpus: 16\n", "given twice"),
        ("law: {preset: null}\n", "law.preset"),
    ],
)
def test_impossible_budgets_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, field: str
) -> None:
    code, _, err = run_cli(["plan", str(_budget(tmp_path, extra))], capsys)
    assert field in assert_one_error(code, err)


def test_infinite_hours_name_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "b.yaml"
    path.write_text(SMALL.replace("hours: 2", "hours: .inf"))
    code, _, err = run_cli(["plan", str(path)], capsys)
    assert "hours" in assert_one_error(code, err) and "finite" in err


def test_simulate_refuses_nan_tokens_and_absurd_gpu_counts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = ["simulate", "--model", "llama3-8b", "--gpu", "h100", "--global-batch", "64"]
    code, _, err = run_cli([*base, "--gpus", "8", "--tokens", "nan"], capsys)
    assert "--tokens" in assert_one_error(code, err)
    code, _, err = run_cli([*base, "--gpus", "100000000000", "--tp", "8"], capsys)
    assert "gpus" in assert_one_error(code, err)


def _rows(tmp_path: Path, **changes: str) -> Path:
    """The dev file's row 72 (an llm-foundry row) with some cells changed."""
    rows = list(csv.DictReader(BUILTIN_CSV.open()))
    row = {**rows[72], **changes}
    path = tmp_path / "runs.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0].keys()))
        writer.writeheader()
        writer.writerow(row)
    return path


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"zero_stage_or_fsdp": "9"}, "zero_stage_or_fsdp"),
        ({"params_billion": "-70"}, "params_billion"),
        ({"sequence_parallel": "maybe"}, "sequence_parallel"),
        ({"measured_tokens_per_sec_per_gpu": "-100"}, "measured_tokens_per_sec_per_gpu"),
        ({"global_batch": "1e30"}, "out of range"),
        ({"num_gpus": "0"}, "num_gpus"),
    ],
)
def test_validate_refuses_a_cell_it_cannot_trust(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: dict, reason: str
) -> None:
    import json

    code, out, err = run_cli(
        ["validate", "--runs", str(_rows(tmp_path, **changes)), "--json"], capsys
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["summary"]["n_predicted"] == 0
    assert reason in doc["skipped"][0]["reason"]


def test_validate_options_that_match_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = str(_rows(tmp_path))
    code, _, err = run_cli(["validate", "--runs", runs, "--source", "zzz"], capsys)
    assert "--source" in assert_one_error(code, err)
    code, _, err = run_cli(["validate", "--runs", runs, "--assume", "micro_batch=abc"], capsys)
    assert "micro_batch" in assert_one_error(code, err)
    header = tmp_path / "header.csv"
    header.write_text(BUILTIN_CSV.read_text().splitlines()[0] + "\n")
    code, _, err = run_cli(["validate", "--runs", str(header)], capsys)
    assert "no data rows" in assert_one_error(code, err)


def test_options_that_would_be_ignored_or_misnamed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["optimal", "--compute", "1e22", "--max-tokens", "-5"], capsys)
    assert "--max-tokens" in assert_one_error(code, err)
    code, _, err = run_cli(
        ["simulate", "--model", "llama3-8b", "--gpu", "h100", "--gpus", "8",
         "--global-batch", "64", "--tp", "2", "--etp", "1"],
        capsys,
    )  # fmt: skip
    assert "etp" in assert_one_error(code, err)
    extra = "target: {kind: compute-optimal, params: 1.0e9}\n"
    code, _, err = run_cli(["plan", str(_budget(tmp_path, extra))], capsys)
    assert "fixed-size" in assert_one_error(code, err)
    plan_file = tmp_path / "plan.json"
    assert run_cli(["plan", str(_budget(tmp_path)), "--out", str(plan_file)], capsys)[0] == 0
    for phases, reason in ((",", "no phase named"), ("pretrain,pretrain", "named twice")):
        code, _, err = run_cli(
            ["compile", str(plan_file), "--out", str(tmp_path / "c"), "--phases", phases], capsys
        )
        assert reason in assert_one_error(code, err)
    assert not (tmp_path / "c").exists()


def test_a_boolean_is_not_a_gpu_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "b.yaml"
    path.write_text(SMALL.replace("gpus: 8", "gpus: true"))
    code, _, err = run_cli(["plan", str(path)], capsys)
    assert "gpus" in assert_one_error(code, err)


def test_yaml_merge_keys_work_and_odd_keys_are_one_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scaleplan.specs.loader import read_document

    merged = tmp_path / "m.yaml"
    merged.write_text("base: &b {a: 1, b: 2}\nx:\n  <<: *b\n  b: 3\n")
    assert read_document(merged)["x"] == {"a": 1, "b": 3}
    odd = tmp_path / "o.yaml"
    odd.write_text(SMALL + "? [a, b]\n: 1\n")
    code, _, err = run_cli(["plan", str(odd)], capsys)
    assert "plain value" in assert_one_error(code, err)


def test_bare_command_prints_help_and_succeeds(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli([], capsys)
    assert code == 0 and "Usage:" in out and "error" not in err


def test_a_one_token_sequence_names_seq_length(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "b.yaml"
    path.write_text(SMALL.replace("seq_length: 2048", "seq_length: 1"))
    code, _, err = run_cli(["plan", str(path)], capsys)
    assert "data.seq_length" in assert_one_error(code, err)

"""Bad input to `scaleplan calibrate` (metrics JSONL) and `scaleplan status` (slurm_jobs.json): one
error line naming the file, the line or field and the reason, exit 2, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_one_error, run_cli
from factories import tiny_plan

PLAN = tiny_plan(phases=("pretrain",))


def _start(**changes) -> dict:
    phase = PLAN.phases[0]
    record = {
        "event": "start",
        "phase": "pretrain",
        "step": 0,
        "device": "cuda",
        "world_size": 1,
        "layout": phase.layout.model_dump(),
        "seq_length": phase.seq_length,
        "model": PLAN.model.model_dump(mode="json"),
        "cluster": PLAN.cluster.model_dump(mode="json"),
    }
    record.update(changes)
    return record


def _metrics(tmp_path: Path, start: dict | None = None, steps=None, extra=()) -> str:
    """A metrics JSONL: a start record, ten step records, then `extra` raw lines."""
    steps = steps or [{"event": "step", "step": i, "step_time_s": 0.1} for i in range(1, 11)]
    lines = [json.dumps(start or _start())] + [json.dumps(s) for s in steps] + list(extra)
    path = tmp_path / "pretrain.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _calibrate(path: str, capsys, *more: str) -> tuple[int, str, str]:
    return run_cli(["calibrate", path, "--allow-device-mismatch", "--json", *more], capsys)


# --- calibrate METRICS.jsonl ------------------------------------------------------------------


def test_calibrate_accepts_a_trailing_blank_line(tmp_path, capsys) -> None:
    code, out, err = _calibrate(_metrics(tmp_path, extra=[""]), capsys)
    assert code == 0, err
    assert json.loads(out)["runs"][0]["measured_step_time_s"] == pytest.approx(0.1)


@pytest.mark.parametrize("line", ["[1, 2]", "5", '"step"', "null"])
def test_calibrate_line_that_is_not_an_object(tmp_path, capsys, line) -> None:
    path = _metrics(tmp_path, extra=[line])
    code, _, err = _calibrate(path, capsys)
    assert_one_error(code, err, path, "line 12", "object")


@pytest.mark.parametrize(
    ("step", "needles"),
    [
        ({"event": "step", "step": 4}, ("lacks 'step_time_s'",)),
        ({"event": "step", "step": 4, "step_time_s": "fast"}, ("'fast'",)),
        ({"event": "step", "step": 4, "step_time_s": 0}, ("positive",)),
        ({"event": "step", "step": 4, "step_time_s": -1}, ("positive",)),
        ({"event": "step", "step": 4, "step_time_s": float("nan")}, ("nan",)),
        ({"event": "step", "step": 4, "step_time_s": True}, ("True",)),
    ],
)
def test_calibrate_bad_step_time(tmp_path, capsys, step, needles) -> None:
    steps = [{"event": "step", "step": i, "step_time_s": 0.1} for i in range(1, 11)]
    steps[3] = step
    path = _metrics(tmp_path, steps=steps)
    code, _, err = _calibrate(path, capsys)
    assert_one_error(code, err, path, "line 5", "step_time_s", *needles)


@pytest.mark.parametrize(
    ("changes", "needles"),
    [
        ({"seq_length": "long"}, ("seq_length", "'long'")),
        ({"seq_length": 0}, ("seq_length",)),
        ({"seq_length": -64}, ("seq_length",)),
        ({"layout": {**PLAN.phases[0].layout.model_dump(), "tp": 3}}, ("layout.tp",)),
        ({"model": "tiny"}, ("model",)),
    ],
)
def test_calibrate_bad_start_record(tmp_path, capsys, changes, needles) -> None:
    path = _metrics(tmp_path, start=_start(**changes))
    code, _, err = _calibrate(path, capsys)
    assert_one_error(code, err, path, "line 1", *needles)


def test_calibrate_binary_file(tmp_path, capsys) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"event": "start"}\n\xff\xfe\x00\x81\n')
    code, _, err = _calibrate(str(path), capsys)
    assert_one_error(code, err, str(path), "not UTF-8")


def test_calibrate_phase_missing_from_plan(tmp_path, capsys) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(PLAN.model_dump_json())
    path = _metrics(tmp_path, start=_start(phase="sft"))
    code, _, err = _calibrate(path, capsys, "--plan", str(plan))
    assert_one_error(code, err, path, "'sft'", "pretrain", "phase")


def test_calibrate_bad_out_is_refused_before_fitting(tmp_path, capsys) -> None:
    code, _, err = _calibrate(_metrics(tmp_path), capsys, "--out", "/proc/x/profile.yaml")
    assert_one_error(code, err, "--out", "/proc/x")


# --- status RUN_DIR/slurm_jobs.json ---------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        (b"{}", ("jobs",)),
        (b"[]", ("object",)),
        (b'{"jobs": {"pretrain": "12"}}', ("jobs",)),
        (b'{"jobs": ["12"]}', ("jobs[0]",)),
        (b'{"jobs": [{"phase": "pretrain", "job_id": 12}]}', ("jobs[0].job_id", "12")),
        (b'{"jobs": [{"job_id": "12"}]}', ("jobs[0].phase", "missing")),
        (b"\xff\xfe\x00\x81garbage", ("not UTF-8",)),
        (b'{"jobs": [', ("malformed",)),
    ],
)
def test_status_bad_jobs_file(tmp_path, capsys, content, needles) -> None:
    jobs = tmp_path / "slurm_jobs.json"
    jobs.write_bytes(content)
    code, _, err = run_cli(["status", str(tmp_path)], capsys)
    assert_one_error(code, err, str(jobs), *needles)

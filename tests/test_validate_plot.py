"""`scaleplan validate --plot`: the figure is written, its step times are the rows' own, and a
bad path is one error before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_one_error, run_cli

from scaleplan.planner.cli.validate_cmd import _builtin_runs, validation_payload
from scaleplan.planner.report.plot_validation import measured_step_time_s, step_time_error_pct
from scaleplan.planner.validation import load_cases
from scaleplan.planner.validation_score import case_flops_per_token

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plot_is_a_png_and_named_in_the_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "figs" / "validate.png"
    code, stdout, _ = run_cli(
        ["validate", "--source", "Korthikanti", "--plot", str(out), "--json"], capsys
    )
    assert code == 0
    assert json.loads(stdout)["plot"] == str(out)
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 20_000


def test_measured_step_times_match_the_cases_own_conversion() -> None:
    """Throughput rows are drawn at the step time their measurement implies (validation's
    step_time_from_metric), and the step-time error has the opposite sign of a throughput
    error."""
    path = _builtin_runs()
    payload = validation_payload(path)
    cases = {c.index: c for c in load_cases(path)[0]}
    metrics = set()
    for row in payload["rows"]:
        case = cases[row["index"]]
        expected = case.measured_step_time_s(case_flops_per_token(case))
        assert measured_step_time_s(row) == pytest.approx(expected, rel=1e-9)
        err = step_time_error_pct(row)
        if row["metric"] == "step_time_s":
            assert err == pytest.approx(row["error_pct"], rel=1e-9)
        elif abs(row["error_pct"]) > 1e-6:
            assert (err > 0) == (row["error_pct"] < 0)
        metrics.add(row["metric"])
    assert {"step_time_s", "tokens_per_s_per_gpu"} <= metrics


def test_an_unwritable_plot_path_is_one_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    fit = tmp_path / "fit.yaml"
    code, _, err = run_cli(
        ["validate", "--source", "Korthikanti", "--fit-profile", str(fit),
         "--plot", str(blocker / "v.png")],
        capsys,
    )  # fmt: skip
    assert "--plot" in assert_one_error(code, err)
    assert not fit.exists()
    code, _, err = run_cli(["validate", "--plot", str(tmp_path)], capsys)
    assert "--plot" in assert_one_error(code, err)


def test_fit_profile_cross_validation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--cv-folds K: each refit predicts the fold it did not see; fewer runs than folds says so;
    without --fit-profile it is one error."""
    out = tmp_path / "p.yaml"
    base = ["validate", "--source", "Korthikanti", "--fit-profile", str(out), "--json"]
    code, stdout, err = run_cli([*base, "--cv-folds", "4"], capsys)
    assert code == 0, err
    (fit,) = json.loads(stdout)["fits"]
    assert fit["cv_folds"] == 4 and fit["n_runs"] == 8
    assert 0.0 < fit["mape_held_out_pct"] < 20.0
    assert fit["mape_held_out_pct"] >= fit["mape_after_pct"] - 1e-9  # unseen runs are harder
    code, stdout, _ = run_cli([*base, "--cv-folds", "9"], capsys)
    assert code == 0 and json.loads(stdout)["fits"][0]["mape_held_out_pct"] is None
    code, _, err = run_cli(["validate", "--cv-folds", "3"], capsys)
    assert "--fit-profile" in assert_one_error(code, err)

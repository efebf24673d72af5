"""Fitted profiles travel as files: `validate --fit-profile` writes them, and `validate --profile`,
`simulate --profile` and a budget's `cluster.profile` read them (as does `calibrate --out`)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
import yaml
from conftest import run_cli

from scaleplan.planner.planning import plan as make_plan
from scaleplan.specs.budget import BudgetSpec
from scaleplan.specs.efficiency import shipped_profiles
from scaleplan.specs.errors import SpecError
from scaleplan.specs.loader import load_spec, profile_for_gpu, read_profiles

EXAMPLES = Path(str(resources.files("scaleplan.specs") / "examples"))


def _dump(profile_name: str) -> dict:
    values = shipped_profiles()[profile_name].model_dump(mode="json", exclude={"name"})
    return values


def test_read_profiles_accepts_every_written_format(tmp_path: Path) -> None:
    named = tmp_path / "named.yaml"  # calibrate --out / validate --fit-profile / profiles.yaml
    named.write_text(yaml.safe_dump({"A100": _dump("A100"), "H100": _dump("H100")}))
    bare = tmp_path / "bare.yaml"
    bare.write_text("name: mine\ngemm_max: 0.7\n")
    wrapped = tmp_path / "wrapped.json"  # calibrate --json
    wrapped.write_text(json.dumps({"runs": [], "profile": {"name": "fit", "gemm_max": 0.6}}))
    profiles = read_profiles(named)
    assert set(profiles) == {"A100", "H100"} and profiles["H100"].name == "H100"
    assert profiles["H100"] == shipped_profiles()["H100"]
    assert read_profiles(bare)["mine"].gemm_max == 0.7
    assert read_profiles(wrapped)["fit"].gemm_max == 0.6
    # several profiles: the one listing the GPU; one profile: that one
    assert profile_for_gpu(profiles, "H200-SXM-141GB", named).name == "H100"
    assert profile_for_gpu(read_profiles(bare), "H200-SXM-141GB", bare).name == "mine"
    with pytest.raises(SpecError, match="no profile for MI300X"):
        profile_for_gpu(profiles, "MI300X", named)
    junk = tmp_path / "junk.yaml"
    junk.write_text("- 1\n- 2\n")
    with pytest.raises(SpecError, match="mapping"):
        read_profiles(junk)
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump({"A100": {"gemm_maxx": 0.5}}))
    with pytest.raises(SpecError) as info:
        read_profiles(typo)
    assert info.value.field == "A100.gemm_maxx"


def test_fit_profile_then_validate_with_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refit on the Korthikanti rows of the built-in set: the written file, read back with
    --profile, reproduces the refitted error, which is no worse than the shipped one."""
    out = tmp_path / "mine.yaml"
    code, text, err = run_cli(
        ["validate", "--source", "Korthikanti", "--fit-profile", str(out), "--json"], capsys
    )
    assert code == 0, err
    payload = json.loads(text)
    (fit,) = payload["fits"]
    assert fit["profile"] == "A100/megatron-legacy" and fit["n_runs"] == 8
    assert fit["mape_after_pct"] <= fit["mape_before_pct"] + 1e-9
    assert payload["summary"]["mape_pct"] == pytest.approx(fit["mape_before_pct"])
    code, text, _ = run_cli(
        ["validate", "--source", "Korthikanti", "--profile", str(out), "--json"], capsys
    )
    again = json.loads(text)
    assert again["summary"]["mape_pct"] == pytest.approx(fit["mape_after_pct"])
    assert again["rows"][0]["profile"] == f"{out}:A100/megatron-legacy"
    code, _, err = run_cli(
        ["validate", "--profile", str(out), "--fit-profile", str(tmp_path / "x.yaml")], capsys
    )
    assert code == 2 and "--fit-profile" in err


def test_shipped_profiles_file_reproduces_the_builtin_validation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    shipped = Path(str(resources.files("scaleplan.specs") / "catalog/profiles.yaml"))
    _, plain, _ = run_cli(["validate", "--source", "NeMo", "--json"], capsys)
    _, again, _ = run_cli(
        ["validate", "--source", "NeMo", "--profile", str(shipped), "--json"], capsys
    )
    assert json.loads(plain)["summary"]["mape_pct"] == pytest.approx(
        json.loads(again)["summary"]["mape_pct"]
    )


def test_simulate_and_plan_use_a_profile_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slow = tmp_path / "slow.yaml"
    slow.write_text(yaml.safe_dump({"H100": {**_dump("H100"), "gemm_max": 0.3}}))
    base = [
        "simulate",
        "--model",
        "llama3-8b",
        "--gpu",
        "h100",
        "--gpus",
        "8",
        "--global-batch",
        "32",
        "--json",
    ]
    _, shipped, _ = run_cli(base, capsys)
    code, mine, err = run_cli([*base, "--profile", str(slow)], capsys)
    assert code == 0, err
    assert (
        json.loads(mine)["step"]["step_time_s"] > 1.5 * json.loads(shipped)["step"]["step_time_s"]
    )
    # a budget names the file next to it; the plan carries the profile inline
    budget = tmp_path / "budget.yaml"
    text = (EXAMPLES / "h100x8-week.yaml").read_text()
    budget.write_text(text + "\ncluster: { profile: slow.yaml }\n")
    plan_path = tmp_path / "plan.json"
    code, out, err = run_cli(["plan", str(budget), "--out", str(plan_path)], capsys)
    assert code == 0, err
    assert "your profile" in out  # the plan view says which efficiency profile chose the layouts
    planned = json.loads(plan_path.read_text())
    assert planned["cluster"]["efficiency"]["gemm_max"] == 0.3
    budget.write_text(text + "\ncluster: { profile: missing.yaml }\n")
    code, _, err = run_cli(["plan", str(budget)], capsys)
    assert code == 2 and "cluster.profile" in err and "--fit-profile" in err
    # from Python, the file is the CLI's to read: the budget must carry the profile inline
    spec = load_spec(BudgetSpec, EXAMPLES / "h100x8-week.yaml")
    with_file = spec.model_copy(
        update={"cluster": spec.cluster.model_copy(update={"profile": "x.yaml"})}
    )
    with pytest.raises(SpecError, match="inline"):
        make_plan(with_file)

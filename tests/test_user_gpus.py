"""The user's own GPUs (SCALEPLAN_GPUS): a YAML file in the shipped catalog's schema extends the
catalog for every command; a malformed file is one error naming the file, entry and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from scaleplan.specs.errors import SpecError
from scaleplan.specs.hardware import USER_GPUS_ENV, get_gpu, gpu_catalog

L40S = """gpus:
  - name: L40S
    aliases: [NVIDIA L40S]
    peak_tflops: {tf32: 183, bf16: 362, fp16: 362, fp8: 733}
    hbm_gb: 48
    hbm_gbps: 864
    nvlink_gbps: 64
    nvlink_domain: 1
    nic_gbps_per_gpu: 100
    tdp_w: 350
    usd_per_gpu_hour: 0.99
"""


def _use(monkeypatch: pytest.MonkeyPatch, path: Path, text: str) -> Path:
    path.write_text(text)
    monkeypatch.setenv(USER_GPUS_ENV, str(path))
    return path


def test_a_user_gpu_joins_the_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = len(gpu_catalog())
    with pytest.raises(SpecError, match="unknown GPU 'L40S'"):
        get_gpu("L40S")
    _use(monkeypatch, tmp_path / "gpus.yaml", L40S)
    assert len(gpu_catalog()) == shipped + 1
    gpu = get_gpu("nvidia l40s")  # by alias, as the shipped entries
    assert gpu.name == "L40S" and gpu.dense16_flops == 362e12 and gpu.hbm_gb == 48
    assert get_gpu("H100").name == "H100-SXM5-80GB"  # the shipped ones are still there
    monkeypatch.delenv(USER_GPUS_ENV)
    assert len(gpu_catalog()) == shipped


def test_simulate_and_catalog_use_the_user_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _use(monkeypatch, tmp_path / "gpus.yaml", L40S)
    code, out, _ = run_cli(["catalog", "gpus", "--json"], capsys)
    assert code == 0
    assert any(g["name"] == "L40S" for g in json.loads(out))
    args = ["simulate", "--model", "llama3-8b", "--gpu", "L40S", "--gpus", "8", "--tp", "1"]
    code, out, err = run_cli(
        [*args, "--global-batch", "64", "--micro-batch", "1", "--json"], capsys
    )
    assert code == 0, err
    step = json.loads(out)["step"]
    # the roofline runs at this GPU's own peak: slower than the same layout on H100s
    code, out_h100, _ = run_cli(
        [*args[:4], "H100", *args[5:], "--global-batch", "64", "--micro-batch", "1", "--json"],
        capsys,
    )
    assert code == 0
    assert step["step_time_s"] > 1.5 * json.loads(out_h100)["step"]["step_time_s"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gpus: []\n", "gpus: expected a list of GPU entries"),
        ("- name: X\n", "expected a mapping"),
        (L40S.replace("hbm_gb: 48", "hbm_gb: -48"), "gpus[0].hbm_gb: Input should be greater than 0"),
        (L40S.replace("    tdp_w: 350\n", ""), "gpus[0].tdp_w: required field is missing"),
        (L40S.replace("name: L40S", "name: H100"), "gpus[0].name: 'H100' already names the catalog's H100-SXM5-80GB"),
        (L40S + L40S.removeprefix("gpus:\n"), "gpus[1].name: 'L40S' already names the catalog's L40S"),
    ],
)  # fmt: skip
def test_a_bad_gpu_file_is_one_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    text: str,
    message: str,
) -> None:
    path = _use(monkeypatch, tmp_path / "gpus.yaml", text)
    code, out, err = run_cli(["catalog", "gpus"], capsys)
    assert code == 2 and not out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert f"{path} ({USER_GPUS_ENV})" in lines[0] and message in lines[0]


def test_a_missing_gpu_file_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(USER_GPUS_ENV, str(tmp_path / "nope.yaml"))
    code, _, err = run_cli(["catalog", "gpus"], capsys)
    assert code == 2 and "nope.yaml (SCALEPLAN_GPUS): file not found" in err


def test_validate_predicts_runs_on_a_user_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user's measured runs on their own GPU are predicted, and a profile refitted on them is
    written (what the README tells such a user to plan with)."""
    from test_validate import GOOD_ROW

    runs = tmp_path / "runs.csv"
    rows = [{**GOOD_ROW, "gpu_type": "NVIDIA L40S", "num_gpus": "8", "dp": "", "tp": str(tp),
             "measured_tokens_per_sec_per_gpu": str(t)} for tp, t in ((1, 2400), (2, 2000), (4, 1300))]  # fmt: skip
    runs.write_text(
        ",".join(GOOD_ROW) + "\n" + "\n".join(",".join(f'"{r[k]}"' for k in GOOD_ROW) for r in rows)
    )
    code, out, _ = run_cli(["validate", "--runs", str(runs), "--json"], capsys)
    skipped = json.loads(out)["skipped"]  # without the file: listed with the reason
    assert code == 0 and len(skipped) == 3
    assert all("unknown GPU 'NVIDIA L40S'" in s["reason"] for s in skipped)
    _use(monkeypatch, tmp_path / "gpus.yaml", L40S)
    profile = tmp_path / "mine.yaml"
    code, out, err = run_cli(
        ["validate", "--runs", str(runs), "--json", "--fit-profile", str(profile)], capsys
    )
    assert code == 0, err
    payload = json.loads(out)
    assert payload["summary"]["n_predicted"] == 3 and payload["summary"]["n_skipped"] == 0
    assert {r["gpu"] for r in payload["rows"]} == {"L40S"}
    assert profile.is_file()

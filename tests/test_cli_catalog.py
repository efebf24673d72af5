"""`scaleplan catalog`: the shipped GPUs, model presets and profiles, as the other commands see them."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli


def test_catalog_lists_what_the_specs_resolve(capsys: pytest.CaptureFixture[str]) -> None:
    """`scaleplan catalog` lists every GPU, model preset and profile the other commands accept."""
    from scaleplan.specs.efficiency import shipped_profiles
    from scaleplan.specs.hardware import get_gpu
    from scaleplan.specs.model import get_model

    code, out, _ = run_cli(["catalog", "gpus", "--json"], capsys)
    gpus = json.loads(out)
    assert code == 0 and {"V100-SXM2-32GB", "GB300-NVL72", "MI250X-GCD"} <= {
        g["name"] for g in gpus
    }
    for g in gpus:
        assert get_gpu(g["name"]).name == g["name"] and g["profile"] in shipped_profiles()
    v100 = next(g for g in gpus if g["name"] == "V100-SXM2-32GB")
    assert v100["peak_tflops"]["bf16"] is None and v100["profile"] == "A100/megatron-legacy"
    code, out, _ = run_cli(["catalog", "models", "--json"], capsys)
    for m in json.loads(out):
        assert get_model(m["name"]).params_total == m["params_total"]
    code, out, _ = run_cli(["catalog", "profiles"], capsys)
    assert code == 0 and "megatron-legacy" in out
    code, _, err = run_cli(["catalog", "tpus"], capsys)
    assert code == 2 and "tpus" in err

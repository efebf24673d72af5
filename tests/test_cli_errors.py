"""Bad input to `scaleplan simulate`: one line naming the field, exit code 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli as run
from factories import tiny_plan

BASE = [
    "simulate",
    "--model",
    "llama3-8b",
    "--gpu",
    "h100-sxm",
    "--gpus",
    "8",
    "--global-batch",
    "64",
]
MOE = ["simulate", "--model", "mixtral-8x7b", "--gpu", "h100-sxm", "--global-batch", "64"]

# (id, argv, words the one-line message must contain: the field first)
FLAG_CASES = [
    ("unknown-model", ["simulate", "--model", "llama9-1t", "--gpu", "h100", "--gpus", "8", "--global-batch", "8"], ["model:", "unknown model preset"]),
    ("unknown-gpu", [*BASE[:3], "--gpu", "rtx-9090", *BASE[5:]], ["gpu:", "unknown GPU"]),
    ("heads%tp", [*BASE, "--tp", "3", "--dp", "1", "--gpus", "3"], ["layout.tp:", "num_heads=32"]),
    ("negative-tp", [*BASE, "--tp", "-2"], ["--tp", "-2"]),
    ("zero-tp", [*BASE, "--tp", "0"], ["--tp", "0"]),
    ("non-integer-tp", [*BASE, "--tp", "abc"], ["--tp", "abc"]),
    ("zero-gpus", [*BASE, "--gpus", "0"], ["--gpus", "0"]),
    ("negative-global-batch", [*BASE, "--global-batch", "-64"], ["--global-batch"]),
    ("gpus-not-divisible", [*BASE, "--tp", "8", "--gpus", "12"], ["layout.dp:", "gpus=12"]),
    ("gpus-mismatch", [*BASE, "--tp", "8", "--dp", "4", "--gpus", "16"], ["layout.dp:", "16 GPUs"]),
    ("seq%2cp", [*BASE, "--cp", "3", "--gpus", "24", "--global-batch", "64"], ["layout.cp:", "2*cp"]),
    ("experts%ep", [*MOE, "--gpus", "24", "--ep", "3", "--global-batch", "48"], ["layout.ep:", "num_experts=8"]),
    ("ep-on-dense", [*BASE, "--ep", "2"], ["layout.ep:", "MoE"]),
    ("tpcpdp%etp*ep", [*MOE, "--gpus", "8", "--tp", "2", "--ep", "8", "--no-sp"], ["layout.ep:", "tp*cp*dp"]),
    ("etp>tp", [*MOE, "--gpus", "16", "--tp", "2", "--etp", "4"], ["layout.etp:", "divide tp"]),
    ("global-batch%dp", [*BASE, "--global-batch", "7"], ["layout.global_batch:", "dp*micro_batch"]),
    ("micro>global", [*BASE, "--gpus", "1", "--micro-batch", "128"], ["layout.micro_batch:", "exceeds"]),
    ("pp>layers", [*BASE, "--pp", "64", "--gpus", "64"], ["layout.pp:", "num_layers=32"]),
    ("layers%pp", [*BASE, "--pp", "3", "--gpus", "3"], ["layout.vp:", "pp*vp"]),
    ("vp-without-pp", [*BASE, "--vp", "2"], ["layout.vp:", "pp>1"]),
    ("interleaved-m%pp", [*BASE, "--pp", "2", "--vp", "2", "--global-batch", "12"], ["layout.vp:", "micro-batches"]),
    ("zero2+pp", [*BASE, "--zero", "2", "--pp", "2"], ["layout.zero_stage:", "pipeline"]),
    ("distopt+zero2", [*BASE, "--zero", "2", "--distributed-optimizer"], ["layout.distributed_optimizer:", "not both"]),
    ("zero-out-of-range", [*BASE, "--zero", "5"], ["--zero", "5"]),
    ("sp-without-tp", [*BASE, "--sp"], ["layout.sequence_parallel:", "tp>1"]),
    ("seq%tp-sp", [*BASE, "--tp", "8", "--sp", "--seq-len", "8196"], ["layout.sequence_parallel:", "tp*cp"]),
    ("recompute-layers-not-full", [*BASE, "--recompute", "selective", "--recompute-layers", "2"], ["layout.recompute_layers:", "full"]),
    ("recompute-layers-too-many", [*BASE, "--recompute", "full", "--recompute-layers", "64"], ["layout.recompute_layers:", "exceeds"]),
    ("bad-recompute", [*BASE, "--recompute", "sometimes"], ["--recompute", "sometimes"]),
    ("bad-precision", [*BASE, "--precision", "fp4"], ["--precision", "fp4"]),
    ("fp8-on-a100", [*BASE[:3], "--gpu", "a100-80gb", *BASE[5:], "--precision", "fp8"], ["layout.precision:", "fp8"]),
    ("bf16-on-v100", [*BASE[:3], "--gpu", "v100", *BASE[5:], "--precision", "bf16"], ["layout.precision:", "no bf16", "fp16"]),
    ("zero-seq-len", [*BASE, "--seq-len", "0"], ["--seq-len"]),
    ("missing-model", ["simulate", "--gpu", "h100", "--gpus", "8"], ["model:", "--model"]),
    ("missing-gpu", ["simulate", "--model", "llama3-8b", "--gpus", "8"], ["gpu:", "--gpu"]),
    ("missing-global-batch", BASE[:7], ["layout.global_batch:", "missing"]),
    ("missing-gpus-and-dp", [*BASE[:5], "--global-batch", "8"], ["gpus:", "number of GPUs"]),
    ("gpus-not-whole-nodes", [*BASE, "--gpus", "12", "--tp", "4"], ["gpus:", "whole number of nodes"]),
    ("unknown-option", [*BASE, "--tensor-parallel", "8"], ["--tensor-parallel"]),
]  # fmt: skip

RUN_OK = "model: llama3-8b\ngpu: h100-sxm\ngpus: 8\nlayout: {tp: 2, global_batch: 64}\n"

# (id, file name, file text, words): the file's name must appear in the message too
FILE_CASES = [
    ("malformed-yaml", "run.yaml", "model: llama3-8b\nlayout: {tp: 2,\n", ["malformed YAML", "line"]),
    ("malformed-json", "run.json", '{"model": "llama3-8b",', ["malformed JSON"]),
    ("top-level-list", "run.yaml", "- model: llama3-8b\n", ["mapping"]),
    ("unknown-key", "run.yaml", RUN_OK + "learning_rate: 3e-4\n", ["learning_rate:", "unknown field"]),
    ("missing-layout", "run.yaml", "model: llama3-8b\ngpu: h100\ngpus: 8\n", ["layout:", "missing"]),
    ("layout-not-mapping", "run.yaml", "model: llama3-8b\ngpu: h100\nlayout: 8\n", ["layout:", "mapping"]),
    ("layout-typo", "run.yaml", RUN_OK.replace("tp: 2", "tpp: 2"), ["layout.tpp:", "unknown field"]),
    ("layout-string-tp", "run.yaml", RUN_OK.replace("tp: 2", "tp: eight"), ["layout.tp:", "whole number"]),
    ("layout-heads%tp", "run.yaml", RUN_OK.replace("tp: 2", "tp: 3").replace("gpus: 8", "gpus: 3"), ["layout.tp:", "num_heads"]),
    ("negative-gpus", "run.yaml", RUN_OK.replace("gpus: 8", "gpus: -8"), ["gpus:", "at least 1"]),
    ("bad-recompute", "run.yaml", RUN_OK.replace("global_batch: 64", "global_batch: 64, recompute: most"), ["layout.recompute:"]),
    ("model-bad-field", "run.yaml", RUN_OK.replace("model: llama3-8b", "model: {num_layers: -1, hidden_size: 64, num_heads: 4, ffn_hidden_size: 64, vocab_size: 10}"), ["model.num_layers:"]),
    ("model-unknown-preset", "run.yaml", RUN_OK.replace("model: llama3-8b", "model: {preset: gpt5}"), ["model.preset:", "unknown model preset"]),
    ("model-wrong-type", "run.yaml", RUN_OK.replace("model: llama3-8b", "model: 8"), ["model:", "preset name"]),
    ("unknown-gpu", "run.yaml", RUN_OK.replace("gpu: h100-sxm", "gpu: tpu-v5"), ["gpu:", "unknown GPU"]),
]  # fmt: skip


def _assert_one_line_error(code: int, out: str, err: str, words: list[str]) -> None:
    assert code == 2, (code, err)
    assert out == ""  # nothing written half-way
    assert "Traceback" not in err
    text = err.strip()
    for word in words:
        assert word in text, (word, text)
    if not text.startswith(("Usage:", "Error:")):  # click's own usage errors print usage first
        assert text.count("\n") == 0 and text.startswith("error: "), text


@pytest.mark.parametrize(
    ("args", "words"), [c[1:] for c in FLAG_CASES], ids=[c[0] for c in FLAG_CASES]
)
def test_bad_flags(args: list[str], words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    _assert_one_line_error(*run(args, capsys), words)


@pytest.mark.parametrize(
    ("name", "text", "words"), [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES]
)
def test_bad_run_files(
    name: str, text: str, words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / name
    path.write_text(text)
    code, out, err = run(["simulate", str(path)], capsys)
    _assert_one_line_error(code, out, err, [str(path), *words])


def test_missing_file_and_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    _assert_one_line_error(
        *run(["simulate", str(missing)], capsys), [str(missing), "file not found"]
    )
    _assert_one_line_error(*run(["simulate", str(tmp_path)], capsys), ["SPEC_FILE", "directory"])


def test_bad_plan_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = tiny_plan(tp=2, dp=2, phases=("pretrain",))
    path = tmp_path / "plan.json"
    # a phase whose layout breaks a rule: 4 heads, tp=8
    bad = plan.model_dump(mode="json")
    bad["phases"][0]["layout"]["tp"] = 8
    bad["phases"][0]["num_gpus"] = 16
    path.write_text(__import__("json").dumps(bad))
    _assert_one_line_error(
        *run(["simulate", str(path)], capsys), [str(path), "phases[0].layout.tp:", "num_heads=4"]
    )
    bad = plan.model_dump(mode="json")
    bad["schema_version"] = "9.0"
    path.write_text(__import__("json").dumps(bad))
    _assert_one_line_error(*run(["simulate", str(path)], capsys), [str(path), "schema_version"])
    path.write_text(plan.model_dump_json())
    _assert_one_line_error(
        *run(["simulate", str(path), "--tp", "1"], capsys), [str(path), "cannot override a plan"]
    )


def test_there_are_at_least_thirty_distinct_bad_inputs() -> None:
    assert len(FLAG_CASES) + len(FILE_CASES) + 5 >= 30
    assert len({c[0] for c in FLAG_CASES}) == len(FLAG_CASES)

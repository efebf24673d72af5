"""`scaleplan validate`: CSV rows -> specs, source conventions, skipped rows, the JSON summary."""

from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path

import pytest
from conftest import run_cli

from scaleplan.planner.validation import (
    RunCase,
    SkippedRow,
    metric_from_step_time,
    row_to_case,
    step_time_from_metric,
)
from scaleplan.planner.validation_rows import (
    cell_float,
    flop_convention,
    parse_nic_gbps_per_gpu,
    parse_precision,
    parse_recompute,
    parse_sharding,
    parse_stack,
    parse_yes_no,
    source_label,
)
from scaleplan.specs.errors import SpecError

BUILTIN = Path(str(resources.files("scaleplan.specs") / "data/published_runs_dev.csv"))
GOOD_ROW = {
    "source": "Someone et al. 2024 'A paper' Table 2", "model_name": "GPT 3.6B", "params_billion": "3.6",
    "layers": "30", "hidden": "3072", "ffn_hidden": "12288", "heads": "32", "kv_heads": "32",
    "vocab": "51200", "seq_len": "2048", "gpu_type": "A100-SXM4-80GB", "num_gpus": "64",
    "gpus_per_node": "8", "interconnect": "8x200Gb/s HDR InfiniBand", "tp": "2", "pp": "1",
    "dp": "32", "micro_batch": "4", "global_batch": "512", "recompute": "full",
    "precision": "bf16", "measured_tokens_per_sec_per_gpu": "4000",
}  # fmt: skip


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    return run_cli(list(args), capsys)


def test_interconnect_parsing() -> None:
    assert parse_nic_gbps_per_gpu("Selene: 8x200Gb/s HDR InfiniBand per node", 8) == 200
    assert parse_nic_gbps_per_gpu("1600 Gb/s node-node RoCE", 8) == 200
    assert parse_nic_gbps_per_gpu("node_size 8, inter_node_bandwidth=800", 8) == 100
    assert parse_nic_gbps_per_gpu("NVLink intra-node; 4x Omni-Path links per node", 8) == 50
    assert parse_nic_gbps_per_gpu("DGX-H100 system", 8) is None
    # other ways runs state their network: per node, per GPU, in Tb/s, AWS EFA totals
    assert parse_nic_gbps_per_gpu("RoCE 4x400G", 8) == 200
    assert parse_nic_gbps_per_gpu("3.2 Tbps per node", 8) == 400
    assert parse_nic_gbps_per_gpu("400 Gb/s per GPU (ConnectX-7)", 8) == 400
    assert parse_nic_gbps_per_gpu("AWS p5, EFA 3200 Gbps", 8) == 400
    assert parse_nic_gbps_per_gpu("400 Gb/s", 8) is None  # per GPU or per node? not guessed


def test_cell_parsing_and_conventions() -> None:
    assert parse_recompute("full") == ("full", 1.0)
    assert parse_recompute("selective (per-op)") == ("selective", 1.0)
    assert parse_recompute("selective (per-layer)") == ("full", 0.5)
    assert parse_recompute("") == ("none", 1.0)
    assert parse_recompute("yes") == ("full", 1.0) and parse_recompute("off") == ("none", 1.0)
    assert parse_recompute("partial (4 of 12 layers)") == ("full", 4 / 12)
    assert parse_recompute("Megatron selective") == ("selective", 1.0)
    with pytest.raises(SpecError, match="recompute"):
        parse_recompute("sometimes")  # not silently 'none'
    assert parse_sharding("ZeRO stage 2") == (2, False)
    assert parse_sharding("FSDP SHARD_GRAD_OP") == (2, False)
    assert parse_sharding("FSDP HYBRID_SHARD") == (3, False)
    assert parse_sharding("FSDP NO_SHARD") == (0, False)
    assert parse_precision("mixed fp16") == "fp16" and parse_precision("MXFP8") == "fp8"
    assert parse_precision("bfloat16") == "bf16" and parse_precision("fp8, bf16 params") == "fp8"
    with pytest.raises(SpecError, match="fp4"):
        parse_precision("NVFP4")  # not silently bf16
    assert parse_sharding("FSDP FULL_SHARD (ZeRO-3-like)") == (3, False)
    assert parse_sharding("Megatron-FSDP (sharding group 64)") == (3, False)
    assert parse_sharding("DDP + distributed optimizer (FSDP=0 in table)") == (0, True)
    assert parse_sharding("ZeRO-1 (DeepSpeed)") == (0, True)
    assert flop_convention("Narayanan et al. 2021 'Efficient ...'") == "narayanan"
    assert (
        flop_convention("bigscience-workshop/bigscience train/tr11-176B-ml/README.md") == "hardware"
    )
    assert flop_convention("NVIDIA/NeMo docs/source/performance/performance_summary.md") == "model"
    assert source_label("Korthikanti et al. 2022 'Reducing ...'") == "Korthikanti et al. 2022"
    assert (
        source_label("pytorch/torchtitan docs/performance.md (commit 0413)")
        == "torchtitan performance"
    )
    assert parse_stack({"notes": "Measured with microsoft/Megatron-DeepSpeed"}) == "megatron-legacy"
    assert parse_stack({"precision": "fp16 mixed"}) == "megatron-legacy"
    assert parse_stack({"precision": "bf16", "software_stack": "default"}) == "default"
    assert parse_stack({"precision": "bf16"}) == "default"


def test_megatron_lm_before_hopper_reads_as_the_legacy_stack() -> None:
    """Megatron-LM on Ampere had no TP communication overlap (MegaScale adds it to its
    Megatron-LM baseline); Megatron-core/TE/NeMo runs, and Megatron-LM on Hopper, stay default."""
    ampere = {"gpu_type": "A100-SXM4-80GB", "notes": "Megatron-LM baseline, bf16"}
    assert parse_stack(ampere) == "megatron-legacy"
    assert parse_stack({**ampere, "gpu_type": "NVIDIA Ampere (A100-class)"}) == "megatron-legacy"
    assert parse_stack({**ampere, "notes": "Megatron-LM with Transformer Engine"}) == "default"
    assert parse_stack({**ampere, "notes": "NeMo, Megatron-LM backend"}) == "default"
    assert parse_stack({**ampere, "gpu_type": "H100"}) == "default"
    assert parse_stack({**ampere, "software_stack": "default"}) == "default"


def test_row_to_case_maps_the_row() -> None:
    case = row_to_case(0, GOOD_ROW)
    assert isinstance(case, RunCase)
    assert (case.layout.tp, case.layout.dp, case.layout.micro_batch) == (2, 32, 4)
    assert case.layout.recompute == "full" and case.layout.sequence_parallel  # default stack
    assert case.cluster.gpu.name == "A100-SXM4-80GB" and case.cluster.nic_bytes_per_s == 25e9
    assert case.model.activation == "gelu"  # 4h FFN with 2 matrices matches 3.6B
    assert case.metric == "tokens_per_s_per_gpu" and case.measured == 4000
    assert case.cluster.profile.name == "A100"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"micro_batch": ""}, "micro_batch not given"),
        ({"tp": "", "pp": ""}, "tp, pp"),
        ({"gpu_type": "Z9000"}, "unknown GPU"),
        ({"dp": "8"}, "differs from num_gpus"),
        ({"measured_tokens_per_sec_per_gpu": ""}, "no measured value"),
        ({"params_billion": "50"}, "parameters"),
        ({"heads": "7"}, "num_heads"),
        ({"recompute": "sometimes"}, "cannot read recompute"),
    ],
)
def test_unpredictable_rows_say_why(change: dict[str, str], reason: str) -> None:
    got = row_to_case(3, {**GOOD_ROW, **change})
    assert isinstance(got, SkippedRow), got
    assert got.index == 3 and reason in got.reason


def test_metric_conversions_round_trip() -> None:
    case = row_to_case(0, GOOD_ROW)
    assert isinstance(case, RunCase)
    for metric in ("step_time_s", "tokens_per_s_per_gpu", "tflops_per_gpu", "mfu"):
        c = case.__class__(**{**case.__dict__, "metric": metric})
        value = metric_from_step_time(c, 2.5, 3.0e10)
        assert step_time_from_metric(c, value, 3.0e10) == pytest.approx(2.5)
    # tokens/s per GPU of a 2.5 s step of 512 x 2048 tokens on 64 GPUs
    assert metric_from_step_time(case, 2.5, 1.0) == pytest.approx(512 * 2048 / 2.5 / 64)


def test_builtin_validation_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "validate", "--json")
    assert code == 0
    payload = json.loads(out)
    with open(BUILTIN, newline="") as fh:
        n_rows = sum(1 for _ in csv.DictReader(fh))
    summary = payload["summary"]
    indices = [r["index"] for r in payload["rows"]] + [s["index"] for s in payload["skipped"]]
    assert sorted(indices) == list(range(n_rows))  # every row predicted or listed, none dropped
    assert summary["n_predicted"] + summary["n_skipped"] == n_rows
    assert all(s["reason"] for s in payload["skipped"])
    errors = []
    for row in payload["rows"]:
        assert row["error_pct"] == pytest.approx(
            (row["predicted"] - row["measured"]) / row["measured"] * 100
        )
        errors.append(abs(row["error_pct"]))
    assert summary["mape_pct"] == pytest.approx(sum(errors) / len(errors))
    assert summary["max_pct"] == pytest.approx(max(errors))
    vtrain = [k for k in summary["by_source"] if k.startswith("vTrain")]
    assert vtrain and summary["by_source"][vtrain[0]]["n"] == 109
    # Accuracy guard with the shipped profiles (bench/accuracy.py has the full figures).
    assert summary["by_source"][vtrain[0]]["mape_pct"] < 8.0
    assert summary["mape_pct"] < 15.0


def test_custom_csv_and_bad_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "runs.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(GOOD_ROW))
        writer.writeheader()
        writer.writerow(GOOD_ROW)
        writer.writerow({**GOOD_ROW, "tp": ""})
    code, out, _ = _run(capsys, "validate", "--runs", str(path), "--json")
    assert code == 0
    payload = json.loads(out)
    assert payload["summary"]["n_predicted"] == 1 and payload["summary"]["n_skipped"] == 1
    assert payload["skipped"][0]["index"] == 1
    code, out, _ = _run(capsys, "validate", "--runs", str(path))
    assert code == 0 and "Rows not predicted" in out and "MAPE" in out
    assert "assumed" in out and "fits" in out  # the memory check and what the row left unstated
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    code, out, err = _run(capsys, "validate", "--runs", str(bad))
    assert code == 2 and err.startswith("error: ") and "missing columns" in err
    assert len(err.strip().splitlines()) == 1


def test_validate_with_a_user_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "runs.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(GOOD_ROW))
        writer.writeheader()
        writer.writerow(GOOD_ROW)
    slow = tmp_path / "slow.yaml"
    slow.write_text("name: mine\ngemm_max: 0.2\nattention_eff: 0.2\n")
    fast = tmp_path / "fast.yaml"
    fast.write_text("name: mine\ngemm_max: 0.9\nattention_eff: 0.9\n")
    preds = []
    for prof in (slow, fast):
        code, out, _ = _run(
            capsys, "validate", "--runs", str(path), "--profile", str(prof), "--json"
        )
        assert code == 0
        preds.append(json.loads(out)["rows"][0]["predicted"])
    assert preds[0] < preds[1]  # tokens/s: the slower profile predicts fewer
    bad = tmp_path / "bad.yaml"
    bad.write_text("gemm_max: 7\n")
    code, _, err = _run(capsys, "validate", "--runs", str(path), "--profile", str(bad))
    assert code == 2 and "gemm_max" in err


def test_assume_fills_only_empty_cells_and_source_filters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "runs.csv"
    other = {**GOOD_ROW, "source": "Other lab 2025", "micro_batch": "", "tp": "4", "dp": "16"}
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(GOOD_ROW))
        writer.writeheader()
        writer.writerow({**GOOD_ROW, "micro_batch": ""})
        writer.writerow(GOOD_ROW)  # micro_batch 4 stays 4
        writer.writerow(other)
    code, out, _ = _run(capsys, "validate", "--runs", str(path), "--json")
    assert code == 0 and json.loads(out)["summary"]["n_skipped"] == 2
    code, out, _ = _run(
        capsys, "validate", "--runs", str(path), "--assume", "micro_batch=2", "--json"
    )
    rows = {r["index"]: r for r in json.loads(out)["rows"]}
    assert set(rows) == {0, 1, 2}
    assert rows[0]["layout"]["micro_batch"] == 2 and rows[1]["layout"]["micro_batch"] == 4
    assert "micro_batch=2 (--assume; not stated)" in rows[0]["assumptions"]
    assert not any("--assume" in a for a in rows[1]["assumptions"])
    assert rows[0]["predicted"] != rows[1]["predicted"]  # the filled value is used
    code, out, _ = _run(
        capsys, "validate", "--runs", str(path), "--assume", "micro_batch=2",
        "--source", "other LAB", "--json",
    )  # fmt: skip
    payload = json.loads(out)
    assert [r["index"] for r in payload["rows"]] == [2] and payload["summary"]["n_skipped"] == 0
    for bad, why in (("micro_batch", "COLUMN=VALUE"), ("layers=3", "cannot be assumed")):
        code, _, err = _run(capsys, "validate", "--runs", str(path), "--assume", bad)
        assert code == 2 and why in err and "Traceback" not in err


def test_megatron_flags_in_notes_imply_the_distributed_optimizer() -> None:
    flagged = {**GOOD_ROW, "notes": "Overlap flags: --overlap-grad-reduce --overlap-param-gather"}
    case = row_to_case(0, flagged)
    assert isinstance(case, RunCase)
    assert case.layout.distributed_optimizer
    assert any("distributed optimizer" in a for a in case.assumptions)
    plain = row_to_case(0, {**GOOD_ROW, "notes": "--overlap-grad-reduce only"})
    assert isinstance(plain, RunCase) and not plain.layout.distributed_optimizer
    stated = row_to_case(0, {**flagged, "zero_stage_or_fsdp": "FSDP FULL_SHARD"})
    assert isinstance(stated, RunCase) and stated.layout.zero_stage == 3  # the column wins


def test_moe_row_whose_ep_only_fits_folded_gets_expert_tp_1() -> None:
    """EP larger than dp*cp needs MoE parallel folding: expert-TP 1 is assumed and listed; an
    optional `etp` column is taken as given; a row where no folding fits stays skipped."""
    moe = {
        **GOOD_ROW, "model_name": "MoE 8x", "params_billion": "", "moe_experts": "64",
        "moe_topk": "2", "ffn_hidden": "3072", "tp": "2", "dp": "32", "ep": "64",
    }  # fmt: skip
    case = row_to_case(0, moe)
    assert isinstance(case, RunCase), case
    assert (case.layout.ep, case.layout.expert_tp, case.layout.tp) == (64, 1, 2)
    assert any("expert_tensor_parallel=1" in a for a in case.assumptions)
    stated = row_to_case(0, {**moe, "ep": "32", "etp": "2"})
    assert isinstance(stated, RunCase) and stated.layout.expert_tp == 2
    assert not any("expert_tensor_parallel" in a for a in stated.assumptions)
    too_big = row_to_case(0, {**moe, "ep": "128", "moe_experts": "128"})
    assert isinstance(too_big, SkippedRow) and "etp*ep" in too_big.reason


def test_stack_defaults_for_unstated_optimizer_and_gradient_overlap() -> None:
    """NeMo rows with an empty sharding cell train with NeMo's distributed_fused_adam; legacy-stack
    (Megatron-DeepSpeed, fp16) rows all-reduce gradients after the backward. Stated cells win."""
    nemo = {**GOOD_ROW, "source": "NVIDIA NeMo performance_summary (24.07)"}
    case = row_to_case(0, nemo)
    assert isinstance(case, RunCase) and case.layout.distributed_optimizer
    assert case.layout.overlap_grad_reduce
    assert any("distributed_fused_adam" in a for a in case.assumptions)
    stated = row_to_case(0, {**nemo, "zero_stage_or_fsdp": "FSDP FULL_SHARD"})
    assert isinstance(stated, RunCase) and stated.layout.zero_stage == 3
    assert not any("distributed_fused_adam" in a for a in stated.assumptions)
    other = row_to_case(0, GOOD_ROW)
    assert isinstance(other, RunCase) and not other.layout.distributed_optimizer
    legacy = row_to_case(0, {**GOOD_ROW, "notes": "Measured with microsoft/Megatron-DeepSpeed"})
    assert isinstance(legacy, RunCase) and not legacy.layout.overlap_grad_reduce
    assert any("after the backward" in a for a in legacy.assumptions)


def test_volta_rows_run_fp16() -> None:
    """A V100 row without a precision is assumed fp16 (the GPU has no bf16); one that states bf16
    is listed as unpredictable with the reason."""
    v100 = {**GOOD_ROW, "gpu_type": "Tesla V100-SXM2-32GB", "precision": ""}
    case = row_to_case(0, v100)
    assert isinstance(case, RunCase) and case.layout.precision == "fp16"
    assert case.cluster.gpu.name == "V100-SXM2-32GB"
    assert case.cluster.profile.name == "A100/megatron-legacy"  # no Transformer Engine on Volta
    assert any("has no bf16" in a for a in case.assumptions)
    refused = row_to_case(0, {**v100, "precision": "bf16"})
    assert isinstance(refused, SkippedRow) and "no bf16" in refused.reason


def test_a_named_model_without_architecture_columns_uses_its_preset() -> None:
    bare = {
        k: v
        for k, v in GOOD_ROW.items()
        if k not in ("layers", "hidden", "ffn_hidden", "heads", "kv_heads", "vocab")
    }
    named = {
        **bare,
        "model_name": "Llama 3.1 70B",
        "params_billion": "70.6",
        "seq_len": "8192",
        "tp": "8",
        "dp": "8",
    }
    case = row_to_case(0, named)
    assert (
        isinstance(case, RunCase) and case.model.num_layers == 80 and case.model.seq_length == 8192
    )
    assert any("preset llama3-70b" in a for a in case.assumptions)
    wrong = row_to_case(0, {**named, "params_billion": "13"})
    assert isinstance(wrong, SkippedRow) and "states 13B" in wrong.reason
    unknown = row_to_case(0, {**bare, "model_name": "Some 13B"})
    assert isinstance(unknown, SkippedRow) and "llama3-70b" in unknown.reason


def test_unstated_model_parallelism() -> None:
    """tp/pp left empty: an FSDP/ZeRO row is data parallel; one of them stated means the other
    is 1; neither and no sharding stays unpredictable. Each assumption is listed."""
    fsdp = {**GOOD_ROW, "tp": "", "pp": "", "dp": "", "zero_stage_or_fsdp": "FSDP FULL_SHARD"}
    case = row_to_case(0, fsdp)
    assert isinstance(case, RunCase) and (case.layout.tp, case.layout.pp, case.layout.dp) == (
        1,
        1,
        64,
    )
    assert any("sharded data-parallel" in a for a in case.assumptions)
    tp_only = row_to_case(0, {**GOOD_ROW, "pp": ""})
    assert isinstance(tp_only, RunCase) and tp_only.layout.pp == 1
    assert any("pp=1 (not stated" in a for a in tp_only.assumptions)
    neither = row_to_case(0, {**GOOD_ROW, "tp": "", "pp": ""})
    assert isinstance(neither, SkippedRow) and "tp, pp" in neither.reason


def test_spreadsheet_csv_with_bom_and_few_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A spreadsheet export (byte-order mark, spaces in the header) with only the columns a row
    needs is read; a file without source/gpu_type/num_gpus or any measured column is refused."""
    path = tmp_path / "mine.csv"
    path.write_text(
        "\ufeffsource, model_name ,gpu_type,num_gpus,tp,pp,micro_batch,global_batch,seq_len,"
        "measured_tokens_per_sec_per_gpu\n"
        "my cluster,Llama 3.1 8B,H100,8,1,1,1,128,8192,9000\n",
        encoding="utf-8",
    )
    code, out, err = _run(capsys, "validate", "--runs", str(path), "--json")
    assert code == 0, err
    (row,) = json.loads(out)["rows"]
    assert row["model"] == "Llama 3.1 8B" and row["gpu"] == "H100-SXM5-80GB"
    bad = tmp_path / "bad.csv"
    bad.write_text("source,gpu_type,num_gpus\nx,H100,8\n")
    code, _, err = _run(capsys, "validate", "--runs", str(bad))
    assert code == 2 and "measured_step_time_s or" in err


def test_sharding_text_naming_model_parallelism_is_not_taken_as_pure_data_parallel() -> None:
    row = {
        **GOOD_ROW,
        "tp": "",
        "pp": "",
        "dp": "",
        "zero_stage_or_fsdp": "FSDP + Megatron-LM tensor parallelism",
    }
    skipped = row_to_case(0, row)
    assert isinstance(skipped, SkippedRow) and "tp, pp" in skipped.reason


def test_cells_from_other_trainers_are_read_not_dropped() -> None:
    """Spellings seen in torchtitan / llm-foundry / paper tables: read as stated, or refused
    with the reason; never taken silently as something else."""
    assert parse_recompute("no activation checkpointing") == ("none", 1.0)
    assert parse_recompute("per-op SAC") == ("selective", 1.0)
    assert parse_recompute("full AC") == ("full", 1.0)
    assert parse_precision("Float8") == "fp8"
    assert parse_precision("float8 linear (torchao), bf16 otherwise") == "fp8"
    assert cell_float({"x": "48.2%"}, "x") == 48.2
    assert cell_float({"x": "1,234.5"}, "x") == 1234.5
    assert cell_float({"x": "~40"}, "x") == 40.0
    assert cell_float({"x": " "}, "x") is None
    with pytest.raises(SpecError, match="measured_mfu"):
        cell_float({"measured_mfu": "about half"}, "measured_mfu")
    no_tokens = {**GOOD_ROW, "measured_tokens_per_sec_per_gpu": ""}
    percent = row_to_case(0, {**no_tokens, "measured_mfu": "48.2%"})
    assert isinstance(percent, RunCase) and percent.metric == "mfu" and percent.measured == 48.2
    fraction = row_to_case(0, {**no_tokens, "measured_mfu": "0.482"})
    assert isinstance(fraction, RunCase) and fraction.measured == pytest.approx(48.2)
    assert any("read as a fraction" in a for a in fraction.assumptions)
    garbled = row_to_case(0, {**GOOD_ROW, "micro_batch": "1 or 2"})
    assert isinstance(garbled, SkippedRow) and "micro_batch" in garbled.reason


def test_a_preset_model_sets_the_depth_the_pipeline_split_is_checked_against() -> None:
    """A row naming a catalog model without a layers column: the pipeline split is checked
    against the preset's depth (Llama 3 70B: 80 layers over pp 4), not against 1 layer."""
    bare = {
        k: v
        for k, v in GOOD_ROW.items()
        if k not in ("layers", "hidden", "ffn_hidden", "heads", "kv_heads", "vocab")
    }
    row = {**bare, "model_name": "Llama 3 70B", "params_billion": "70.6", "seq_len": "8192",
           "tp": "8", "pp": "4", "dp": "2", "num_gpus": "64"}  # fmt: skip
    case = row_to_case(0, row)
    assert isinstance(case, RunCase), getattr(case, "reason", "")
    assert case.layout.pp == 4 and case.model.num_layers == 80


def test_pytorch_native_trainers_get_their_own_stack() -> None:
    assert parse_stack({"source": "mosaicml/llm-foundry scripts/train/benchmarking"}) == "pytorch"
    assert parse_stack({"source": "pytorch/torchtitan docs/performance.md"}) == "pytorch"
    assert parse_stack({"software_stack": "torchtitan (FSDP2)"}) == "pytorch"
    assert parse_stack({"software_stack": "PyTorch"}) == "pytorch"
    assert parse_stack({"software_stack": "Megatron-DeepSpeed"}) == "megatron-legacy"
    assert parse_stack({"zero_stage_or_fsdp": "FSDP2 full shard"}) == "pytorch"
    assert parse_stack({"zero_stage_or_fsdp": "Megatron-FSDP (sharding group 8)"}) == "default"
    row = {**GOOD_ROW, "source": "pytorch/torchtitan benchmarks", "gpu_type": "H100 SXM"}
    case = row_to_case(0, row)
    assert isinstance(case, RunCase) and case.stack == "pytorch"
    assert case.cluster.profile.name == "H100/pytorch"
    a100 = row_to_case(0, {**row, "gpu_type": "A100 80GB SXM"})
    assert isinstance(a100, RunCase) and a100.cluster.profile.name == "A100"  # FA2 either way


def test_an_unmatched_gpu_name_is_refused_with_the_candidates() -> None:
    case = row_to_case(0, {**GOOD_ROW, "gpu_type": "H100 NVL 80GB"})
    assert isinstance(case, SkippedRow)
    assert "H100-NVL-94GB" in case.reason and "H100-SXM5-80GB" in case.reason


def test_a_gpu_name_without_form_factor_is_the_sxm_part() -> None:
    """torchtitan's 'H100 96GB HBM2e' (8 per NVLink host): the SXM5 96 GB part, as 'A100 80GB'
    is the SXM4 one; the PCIe part needs its form factor named."""
    case = row_to_case(0, {**GOOD_ROW, "gpu_type": "H100 96GB HBM2e"})
    assert not isinstance(case, SkippedRow)
    assert case.cluster.gpu.name == "H100-SXM5-96GB"
    pcie = row_to_case(0, {**GOOD_ROW, "gpu_type": "H100 PCIe 96GB"})
    assert not isinstance(pcie, SkippedRow) and pcie.cluster.gpu.name == "H100-PCIe-96GB"


def test_unstated_and_plain_spellings_are_read() -> None:
    """'N/A', dashes and plain-DDP spellings mean 'not stated' / 'no sharding', not a bad row."""
    for cell in ("N/A", "-", "—", "?", "unknown", "none"):
        assert cell_float({"cp": cell}, "cp") is None
    for text in ("PyTorch DDP", "DP", "DistributedDataParallel", "data-parallel", "no sharding",
                 "replicated", "—", "N/A", "ZeRO-0"):  # fmt: skip
        assert parse_sharding(text) == (0, False), text
    cases = {
        "n/a": False, "-": False, "N": False, "disabled": False, "no": False,
        "yes (SP)": True, "Y": True, "enabled": True, "yes (with TP)": True,
    }  # fmt: skip
    for text, want in cases.items():
        case = row_to_case(0, {**GOOD_ROW, "sequence_parallel": text})
        assert isinstance(case, RunCase), (text, getattr(case, "reason", ""))
        assert case.layout.sequence_parallel is want, text
    dash_first = row_to_case(
        0, {**GOOD_ROW, "measured_step_time_s": "—", "measured_tokens_per_sec_per_gpu": "4000"}
    )
    assert isinstance(dash_first, RunCase) and dash_first.metric == "tokens_per_s_per_gpu"
    with pytest.raises(SpecError, match="sequence_parallel"):
        parse_yes_no("sometimes", "sequence_parallel")


def test_measured_fsdp_with_pipeline_parallelism_is_predicted() -> None:
    """FSDP/ZeRO runs may pipeline (Llama 3, torchtitan, MegaScale): validate predicts them (the
    engines scaleplan compiles for cannot run that, so search and compile still refuse it)."""
    from scaleplan.specs.errors import SpecError as Err
    from scaleplan.specs.layout import validate_layout

    assert parse_sharding("FSDP (shard optimizer+grads; no reshard after forward)") == (2, False)
    row = {**GOOD_ROW, "tp": "2", "pp": "2", "dp": "16", "zero_stage_or_fsdp": "FSDP FULL_SHARD"}
    case = row_to_case(0, row)
    assert isinstance(case, RunCase), getattr(case, "reason", "")
    assert case.layout.zero_stage == 3 and case.layout.pp == 2
    assert any("not compilable" in a for a in case.assumptions)
    with pytest.raises(Err, match="cannot be compiled"):
        validate_layout(case.layout, case.model, num_gpus=64)

"""The held-out checks' own inputs: the converters of bench/heldout_*.py (tables of other
projects turned into published-runs rows) and bench/data/runs_not_in_dev.csv, the runs compiled
after the shipped profiles were fitted."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import bench_module

from scaleplan.planner.validation import load_cases


def test_heldout_vtrain_single_converter(tmp_path: Path) -> None:
    """bench/heldout_vtrain_single.py turns vTrain's single-node CSV into predictable rows."""
    heldout = bench_module("heldout_vtrain_single")
    raw = tmp_path / "ground_truth_single.csv"
    raw.write_text(
        "\ufeff" + ",".join(heldout.RAW_COLUMNS) + "\n"
        "8,32,4,1024,16,24,1024,2,2,2,219.732754\n8,8,2,2048,16,20,1024,4,1,2,160.6027\n"
    )
    out = tmp_path / "rows.csv"
    assert heldout.convert(raw, out) == 2
    cases, skipped = load_cases(out)
    assert not skipped and len(cases) == 2
    first = cases[0]
    assert (first.layout.tp, first.layout.pp, first.layout.dp, first.layout.micro_batch) == (
        2,
        2,
        2,
        4,
    )
    assert first.layout.recompute == "full" and first.stack == "megatron-legacy"
    assert first.metric == "step_time_s" and abs(first.measured - 0.219732754) < 1e-12
    bad = tmp_path / "other.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(SystemExit):
        heldout.convert(bad, out)


def test_heldout_megatron_bridge_table_parser(tmp_path: Path) -> None:
    """bench/heldout_megatron_bridge.py reads a performance-summary table and keeps the rows whose
    model the dev file describes, on catalog systems, at modelled precisions."""
    mb = bench_module("heldout_megatron_bridge")
    head = "| System | #-GPUs | Precision | GBS | MBS | Sequence Length | TP | PP | CP | VP | EP | Tokens / sec / GPU | Model TFLOP / sec / GPU |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    text = (
        "## 26.08 NeMo Container\n\n#### Model: Qwen3_30B_a3B\n\n" + head
        + "| DGX-GB200 | 8 | MXFP8 | 512 | 4 | 4096 | 1 | 1 | 1 | n/a | 8 | 39936 | 923 |\n"
        + "| DGX-GB200 | 8 | NVFP4 | 512 | 4 | 4096 | 1 | 1 | 1 | n/a | 8 | 40000 | 923 |\n"
        + "\n#### Model: Unknown_9B\n\n" + head
        + "| DGX-GB200 | 8 | MXFP8 | 512 | 4 | 4096 | 1 | 1 | 1 | n/a | 8 | 1 | 1 |\n"
        + "\n## Archive\n\n#### Model: Qwen3_30B_a3B\n\n" + head
        + "| DGX-H100 | 16 | BF16 | 512 | 2 | 4096 | 1 | 2 | 1 | 24 | 8 | 5000 | 200 |\n"
    )  # fmt: skip
    container, rows = mb.parse_summary(text)
    assert container == "26.08" and len(rows) == 3  # the archive section is not read
    out = tmp_path / "rows.csv"
    dropped = mb.convert(rows, container, out)
    assert len(dropped) == 2 and any("NVFP4" in d for d in dropped)
    cases, skipped = load_cases(out)
    assert not skipped and len(cases) == 1
    (case,) = cases
    assert case.cluster.gpu.name == "GB200-NVL72" and case.layout.precision == "fp8"
    assert case.model.moe is not None and case.measured == 39936 and case.layout.ep == 8


def test_heldout_llm_foundry_table_parser(tmp_path: Path) -> None:
    """bench/heldout_llm_foundry.py turns the README's tables into published-runs rows, leaves
    out the rows the dev file has, and every converted row is predictable."""
    lf = bench_module("heldout_llm_foundry")
    head = (
        "|  Model | SeqLen (T) | # GPUs | GPU | MFU | HFU | Model TFLOP | MicroBatchSize | "
        "GradAccum | GlobalBatchSize | Throughput (S/s) | Throughput (T/s) | "
        "Throughput (T/s/GPU) | GlobalBatchSize (T) | Precision | MP Mode | Sharding Strategy | "
        "Activation Checkpointing | Activation CPUOffload | NumParams |\n"
        "|  --- | --- |\n"
    )
    text = (
        "## H100 80GB BF16\n" + head
        + "|  7b | 65536 | 8 | h100_80gb | 28.59 | 38.13 | 282 | 1 | 2 | 16 | 0 | 15654 | 1956 | "
        "1048576 | amp_bf16 | DEFAULT | FULL_SHARD | True | False | 6918905856 |\n"
        + "## A100 40GB with 1600 Gbps node-node interconnect (RoCE)\n" + head
        + "|  70b | 2048 | 128 | a100_40gb | 48.91 | 65.21 | 152 | 4 | 1 | 512 | 0 | 0 | 376 | "
        "0 | amp_bf16 | PURE | FULL_SHARD | True | False | 64862437376 |\n"
    )  # fmt: skip
    rows = lf.parse_readme(text)
    assert len(rows) == 2
    out = tmp_path / "rows.csv"
    in_dev, dropped = lf.convert(rows, out)
    assert in_dev == 1 and not dropped  # the A100 70b row is in the dev file
    cases, skipped = load_cases(out)
    assert not skipped and len(cases) == 1
    (case,) = cases
    assert case.cluster.gpu.name == "H100-SXM5-80GB" and case.stack == "pytorch"
    assert case.seq_length == 65536 and case.layout.recompute == "full"
    assert case.layout.zero_stage == 3 and case.measured == 1956


def test_heldout_megatron_bridge_archive_section(tmp_path: Path) -> None:
    """--archive: the 25.11 section's rows (one table per system) that the dev file leaves out."""
    mb = bench_module("heldout_megatron_bridge")
    head = (
        "| Model | #-GPUs | Precision | GBS | MBS | Sequence Length | FSDP | TP | PP | CP | VP | EP "
        "| GA | Tokens / sec / GPU | Model TFLOP / sec / GPU |\n|---|---|---|---|---|---|---|---|---|"
        "---|---|---|---|---|---|\n"
    )
    text = (
        "## 26.02 NeMo Container\n\n#### System: DGX-GB300\n\n" + head
        + "| LLAMA3_8B | 8 | FP8-CS | 128 | 2 | 8192 | 0 | 1 | 1 | 1 | n/a | 1 | 8 | 1 | 1 |\n"
        + "## 25.11 NeMo Container\n\n### Pre-Training Performance\n\n#### System: DGX-GB300\n\n"
        + head
        + "| LLAMA3_8B | 8 | FP8-CS (FP8-MX) | 128 | 2 | 8192 | 0 | 1 | 1 | 1 | n/a | 1 | 8 "
        "| 37556 (36108) | 1933 (1858) |\n"
        + "\n#### System: DGX-GB200\n\n" + head
        + "| LLAMA3_8B | 8 | FP8-CS (FP8-MX) | 128 | 2 | 8192 | 0 | 1 | 1 | 1 | n/a | 1 | 8 "
        "| 31508 (29789) | 1622 (1533) |\n"
        + "\n## 25.09 NeMo Container\n"
    )  # fmt: skip
    rows = mb.parse_archive(text)
    assert len(rows) == 2 and rows[0]["Tokens / sec / GPU"] == "37556"
    kept, in_dev = mb.not_in_dev(rows)
    assert in_dev == 1 and len(kept) == 1 and kept[0]["System"] == "DGX-GB300"
    out = tmp_path / "rows.csv"
    assert mb.convert(kept, "25.11", out) == []
    cases, skipped = load_cases(out)
    assert not skipped and cases[0].cluster.gpu.name == "GB300-NVL72"
    assert cases[0].measured == 37556 and cases[0].layout.precision == "fp8"


def test_runs_not_in_dev_are_read_and_predicted() -> None:
    """bench/data/runs_not_in_dev.csv (runs compiled after the profiles were fitted): every row
    is predicted or skipped with its reason, and the figures in bench/RESULTS.md hold."""
    from scaleplan.planner.cli.validate_cmd import validation_payload

    path = Path(__file__).resolve().parents[1] / "bench" / "data" / "runs_not_in_dev.csv"
    payload = validation_payload(str(path), assume={"micro_batch": "1"})
    assert len(payload["rows"]) == 27 and len(payload["skipped"]) == 1
    assert "differs from num_gpus" in payload["skipped"][0]["reason"]
    assert payload["summary"]["mape_pct"] < 12.0
    by_index = {r["index"]: r for r in payload["rows"]}
    # Grand Teton's H100 (96 GB HBM2e, 8 per NVLink host) is its own catalog part
    assert by_index[13]["gpu"] == "H100-SXM5-96GB"
    # torchtitan's 405B FSDP x TP x PP rows: weights gathered once per step, not per micro-batch
    for i in (16, 17):
        assert any("costed as ZeRO-1" in a for a in by_index[i]["assumptions"])
        assert abs(by_index[i]["error_pct"]) < 15.0
    megascale = [r for r in payload["rows"] if r["source"].startswith("Jiang")]
    assert sum(r["stack"] == "megatron-legacy" for r in megascale) == 8

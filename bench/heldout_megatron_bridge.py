"""Out-of-sample step-time check on a newer Megatron-Bridge performance table than the dev file's.

    git clone https://github.com/NVIDIA-NeMo/Megatron-Bridge /tmp/Megatron-Bridge
    .venv/bin/python bench/heldout_megatron_bridge.py --summary /tmp/Megatron-Bridge/docs/performance-summary.md \
        --archive /tmp/Megatron-Bridge/docs/performance-summary-archive.md

The dev file holds the 25.11 container's rows (performance-summary-archive). This script reads
the current `docs/performance-summary.md` of a user's clone (another project's data, not shipped),
keeps the rows whose model the dev file describes (its architecture columns are reused) on a
catalog GPU, predicts them with the shipped profiles, then refits the profile on the GB200 rows
(`validate --fit-profile`) and predicts the others with it: how far a newer software stack
drifts from the shipped profiles, and how much a few of a user's own runs recover.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

from results_md import publish, table_rows  # bench/ is on sys.path when run as a script

from scaleplan.planner.profile_fit import calibrate_from_shipped
from scaleplan.planner.validation import load_cases
from scaleplan.planner.validation_rows import parse_precision
from scaleplan.planner.validation_score import predict_cases, summarize
from scaleplan.specs.errors import SpecError

HEADING = "## Out-of-sample: a newer Megatron-Bridge table (bench/heldout_megatron_bridge.py)"
DEV = Path(str(resources.files("scaleplan.specs") / "data/published_runs_dev.csv"))
ARCH = ("params_billion", "layers", "hidden", "ffn_hidden", "heads", "kv_heads", "vocab",
        "moe_experts", "moe_topk")  # fmt: skip


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower().split("(")[0])


def parse_summary(text: str) -> tuple[str, list[dict[str, str]]]:
    """(container, rows) of the first container section of a performance-summary.md: one dict
    per table row with the table's column names and the model from the section heading."""
    container = (re.search(r"^## ([\d.]+) NeMo Container", text, re.M) or [None, "?"])[1]
    section = text.split("## Archive")[0]
    rows = [{"model": model, **row} for model, row in table_rows(section, r"#### Model: (.+)")]
    return container, rows


def parse_archive(text: str, container: str = "25.11") -> list[dict[str, str]]:
    """The pre-training rows of one container section of performance-summary-archive.md (one
    table per '#### System:'), as parse_summary's dicts; 'Tokens / sec / GPU' keeps its first
    figure ('37556 (36108)': the parenthesised one is another FP8 recipe)."""
    section = text.split(f"## {container} NeMo Container", 1)[-1].split("\n## ", 1)[0]
    section = section.split("### SFT", 1)[0].split("### LoRA", 1)[0]
    rows: list[dict[str, str]] = []
    for system, row in table_rows(section, r"#### System: (.+)"):
        row["Tokens / sec / GPU"] = row.get("Tokens / sec / GPU", "").split("(")[0].strip()
        rows.append({"model": row.pop("Model", ""), "System": system, **row})
    return rows


def not_in_dev(rows: list[dict[str, str]]) -> tuple[list[dict[str, str]], int]:
    """The rows whose (model, GPU, GPUs, precision, batch, layout) the dev file does not hold."""
    from scaleplan.specs.hardware import get_gpu

    def gpu(name: str) -> str:
        try:
            return get_gpu(name).name
        except SpecError:
            return name

    have = {
        (_key(r["model_name"]), gpu(r["gpu_type"]), r["num_gpus"], r["global_batch"],
         r["micro_batch"], r["tp"], r["pp"], r["ep"])
        for r in csv.DictReader(DEV.open()) if "Megatron-Bridge" in r["source"]
    }  # fmt: skip
    keep = [
        r for r in rows
        if (_key(r["model"]), gpu(r["System"]), r["#-GPUs"], r["GBS"], r["MBS"], r["TP"],
            r["PP"], r["EP"]) not in have
    ]  # fmt: skip
    return keep, len(rows) - len(keep)


def convert(rows: list[dict[str, str]], container: str, out: Path) -> list[str]:
    """Write the rows the dev file can describe, at a precision the step model has, as
    published-runs rows (the System cell is the GPU name: the catalog reads 'DGX-GB300'); return
    why the others are not written."""
    dev = list(csv.DictReader(DEV.open()))
    arch = {}
    for r in dev:
        if "Megatron-Bridge" in r["source"] and r["layers"]:
            arch.setdefault(_key(r["model_name"]), r)
    header = list(dev[0].keys())
    dropped = []
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, header)
        writer.writeheader()
        for r in rows:
            base = arch.get(_key(r["model"]))
            what = "model" if base is None else ""
            try:
                parse_precision(r.get("Precision", ""))
            except SpecError:
                what = what or "precision"
            if base is None or what:
                dropped.append(f"{r['model']} on {r.get('System')} {r.get('Precision')}: {what}")
                continue
            vp = r.get("VP", "")
            writer.writerow(
                {
                    **{k: base[k] for k in ARCH},
                    "source": f"NVIDIA-NeMo/Megatron-Bridge docs/performance-summary.md ({container}, held out)",
                    "model_name": base["model_name"],
                    "gpu_type": r["System"],
                    "num_gpus": r["#-GPUs"],
                    "precision": r["Precision"],
                    "global_batch": r["GBS"],
                    "micro_batch": r["MBS"],
                    "seq_len": r["Sequence Length"],
                    "tp": r["TP"],
                    "pp": r["PP"],
                    "cp": r["CP"],
                    "vp": "" if vp in ("", "n/a") else vp,
                    "ep": r["EP"],
                    "zero_stage_or_fsdp": (
                        f"Megatron-FSDP (sharding group {r['FSDP']})"
                        if r.get("FSDP", "0") not in ("", "0")
                        else "DDP + distributed optimizer"
                        if "FSDP" in r
                        else base["zero_stage_or_fsdp"]
                    ),
                    "measured_tokens_per_sec_per_gpu": r["Tokens / sec / GPU"],
                }  # fmt: skip
            )
    return dropped


def _mape(preds: list) -> float:
    return summarize(preds).mape_pct


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--summary", type=Path, required=True, help="Megatron-Bridge docs/performance-summary.md"
    )
    ap.add_argument(
        "--archive",
        type=Path,
        default=None,
        help="also: docs/performance-summary-archive.md, whose 25.11 rows the dev file leaves out",
    )
    ap.add_argument("--no-write", action="store_true", help="do not touch bench/RESULTS.md")
    args = ap.parse_args(argv)
    if not args.summary.is_file():
        print(
            f"skipped: {args.summary} not found (clone NVIDIA-NeMo/Megatron-Bridge)",
            file=sys.stderr,
        )
        return 2
    t0 = time.perf_counter()
    container, rows = parse_summary(args.summary.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.csv"
        dropped = convert(rows, container, path)
        cases, skipped = load_cases(path)
    preds = predict_cases(cases)
    lines = [
        HEADING, "",
        f"Command: `.venv/bin/python bench/heldout_megatron_bridge.py --summary "
        f".../Megatron-Bridge/docs/performance-summary.md --archive "
        f".../Megatron-Bridge/docs/performance-summary-archive.md` ({{seconds}} s). Container {container}: "
        f"{len(rows)} table rows, {len(preds)} predicted; {len(dropped)} have no model the dev file "
        f"describes or an unmodelled precision, {len(skipped)} not predictable.",
        "", "| row | model | GPUs | layout | measured tok/s/GPU | shipped profiles | refitted on the GB200 rows |",
        "|---:|---|---|---|---:|---:|---:|",
    ]  # fmt: skip
    train = [c for c in cases if c.cluster.gpu.name == "GB200-NVL72"]
    mine = {}
    if train:
        mine = {
            name: fit.report.profile for name, (fit, _, _) in calibrate_from_shipped(train).items()
        }
    refit = {p.case.index: p for p in predict_cases(cases, mine)} if mine else {}
    for p in preds:
        lay = p.case.layout
        other = refit.get(p.case.index)
        mark = " (fitted)" if p.case.cluster.gpu.name == "GB200-NVL72" else ""
        lines.append(
            f"| {p.case.index} | {p.case.label} | {lay.num_gpus} x {p.case.cluster.gpu.name} | "
            f"tp{lay.tp} pp{lay.pp} vp{lay.vp} ep{lay.ep} mb{lay.micro_batch} {lay.precision} | "
            f"{p.case.measured:,.0f} | {p.error_pct:+.1f} % | "
            + (f"{other.error_pct:+.1f} %{mark}" if other else "-")
            + " |"
        )
    held = [
        refit[p.case.index] for p in preds if p.case.cluster.gpu.name != "GB200-NVL72" and refit
    ]
    shipped_held = [p for p in preds if p.case.cluster.gpu.name != "GB200-NVL72"]
    lines += [
        "",
        f"- Shipped profiles: MAPE {_mape(preds):.1f} % over {len(preds)} rows "
        f"({sum(p.error_pct < 0 for p in preds)} predicted too slow).",
        f"- Refitted on the {len(train)} GB200 rows, on the other {len(held)}: "
        f"{_mape(shipped_held):.1f} % -> {_mape(held):.1f} %.",
        "- The shipped profiles are fitted on the 25.11 container's rows; the same layouts run "
        "faster in later containers (software), which only a profile fitted on runs of that "
        "software captures: `scaleplan validate --runs MINE.csv --fit-profile MINE.yaml`.",
    ]
    if args.archive is not None:
        lines += archive_lines(args.archive)
    section = "\n".join(lines).replace("{seconds}", f"{time.perf_counter() - t0:.0f}")
    publish(HEADING, section, not args.no_write, dropped)
    return 0


def archive_lines(path: Path) -> list[str]:
    """The 25.11 section's rows the dev file leaves out (its GB300 table among them), predicted
    with the shipped profiles."""
    rows, in_dev = not_in_dev(parse_archive(path.read_text()))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.csv"
        dropped = convert(rows, "25.11", out)
        cases, skipped = load_cases(out)
    preds = predict_cases(cases)
    lines = [
        "",
        "### The dev file's own container (25.11), rows it leaves out",
        "",
        "`--archive .../Megatron-Bridge/docs/performance-summary-archive.md`: of the 25.11 "
        f"section's pre-training rows, {in_dev} are in the dev file; {len(preds)} others are "
        f"predicted, {len(skipped)} not predictable, {len(dropped)} not converted.",
        "",
        "| model | GPUs | layout | measured tok/s/GPU | error |",
        "|---|---|---|---:|---:|",
    ]
    for p in preds:
        lay = p.case.layout
        lines.append(
            f"| {p.case.label} | {lay.num_gpus} x {p.case.cluster.gpu.name} | tp{lay.tp} pp{lay.pp} "
            f"vp{lay.vp} ep{lay.ep} mb{lay.micro_batch} {lay.precision} | {p.case.measured:,.0f} | "
            f"{p.error_pct:+.1f} % |"
        )
    if preds:
        lines += [
            "",
            f"- MAPE {_mape(preds):.1f} % over {len(preds)} rows "
            f"({sum(p.error_pct < 0 for p in preds)} predicted too slow). GB300 has GB200's "
            "dense BF16/FP8 rates in the catalog (NVIDIA's GB300 NVL72 sheet); at equal layouts "
            "it measured up to 22 % faster here (1,400 W against 1,200 W, twice the softmax "
            "exponential rate). The Blackwell profile is fitted on GB200/B200 rows only.",
        ]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())

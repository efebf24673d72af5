"""Step-time accuracy on published runs: in-sample (shipped profiles) and leave-one-source-out.

    .venv/bin/python bench/accuracy.py                    # table + bench/RESULTS.md section
    .venv/bin/python bench/accuracy.py --write-profiles   # refit specs/catalog/profiles.yaml first

The shipped profiles are fitted on the dev file itself, so their error is in-sample. The
leave-one-source-out run refits every profile without one source (from the documented priors,
not from the shipped values) and predicts that source, so overfitting shows.
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib import resources
from pathlib import Path

import yaml
from results_md import replace_section  # bench/ is on sys.path when run as a script

from scaleplan.planner.profile_fit import fit_profiles, leave_one_source_out
from scaleplan.planner.validation import load_cases
from scaleplan.planner.validation_score import Prediction, predict_cases, summarize
from scaleplan.specs import efficiency

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
PROFILES = ROOT / "specs" / "catalog" / "profiles.yaml"
HEADING = "## Step-time accuracy (bench/accuracy.py)"
PROFILE_KEYS_SKIPPED = {"name"}


def _round(value: object) -> object:
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, tuple):
        return list(value)
    return value


def write_profiles(fits: dict, path: Path = PROFILES) -> None:
    """Write fitted profiles (and the unfitted ones of GPUs without data) to profiles.yaml."""
    shipped = efficiency.shipped_profiles()
    data: dict[str, dict[str, object]] = {}
    for name in shipped:
        prof = fits[name].report.profile if name in fits else shipped[name]
        data[name] = {
            k: _round(v) for k, v in prof.model_dump().items() if k not in PROFILE_KEYS_SKIPPED
        }
        if name not in fits:
            data[name]["fitted_on"] = "not fitted: no published runs for this GPU family"
    header = (
        "# Hardware efficiency profiles, per GPU family and software stack\n"
        "# (scaleplan.specs.efficiency). Fitted on specs/data/published_runs_dev.csv by\n"
        "# `python bench/accuracy.py --write-profiles`; bench/RESULTS.md has the fit and its\n"
        "# leave-one-source-out error. Profiles without runs keep the documented priors.\n"
    )
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, width=100))
    efficiency._profiles.cache_clear()


def _stats_rows(preds: list[Prediction]) -> list[tuple[str, dict[str, float]]]:
    s = summarize(preds)
    rows = sorted(s.by_source.items())
    rows.append(
        (
            "all",
            {
                "n": s.n_predicted,
                "mape_pct": s.mape_pct,
                "median_pct": s.median_pct,
                "max_pct": s.max_pct,
            },
        )  # fmt: skip
    )
    return rows


def korthikanti_full_layout(preds: list[Prediction]) -> dict[str, float]:
    errs = [abs(p.error_pct) for p in preds if p.case.source.startswith("Korthikanti")]
    return {"n": len(errs), "mean": sum(errs) / len(errs), "max": max(errs)} if errs else {}


def table(in_sample: list[Prediction], loso: list[Prediction]) -> str:
    a = dict(_stats_rows(in_sample))
    b = dict(_stats_rows(loso))
    lines = [
        "| source | rows | MAPE (shipped profiles) | median | max | MAPE (leave-one-source-out) | max |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in [*sorted(k for k in a if k != "all"), "all"]:
        x, y = a[name], b.get(name, {})
        lines.append(
            f"| {name} | {int(x['n'])} | {x['mape_pct']:.1f} % | {x['median_pct']:.1f} % | "
            f"{x['max_pct']:.1f} % | {y.get('mape_pct', float('nan')):.1f} % | "
            f"{y.get('max_pct', float('nan')):.1f} % |"
        )
    return "\n".join(lines)


def worst_rows(preds: list[Prediction], k: int = 10) -> str:
    lines = ["| row | source | model | layout | metric | error |", "|---:|---|---|---|---|---:|"]
    for p in sorted(preds, key=lambda p: -abs(p.error_pct))[:k]:
        lay = p.case.layout
        desc = f"tp{lay.tp} pp{lay.pp} dp{lay.dp} mb{lay.micro_batch} gb{lay.global_batch}"
        lines.append(
            f"| {p.case.index} | {p.case.source} | {p.case.label} | {desc} | {p.case.metric} | "
            f"{p.error_pct:+.1f} % |"
        )
    return "\n".join(lines)


# What the misses are, from the measured rows themselves (independent of any fit).
KNOWN_MISSES = """Physics in the model that the misses were checked against: TP/CP/EP/PP/DP traffic on the
placed groups (expert gradients over the expert-DP group and its own links), GEMM size
efficiency, unfused/fused attention, element-wise traffic split into TP-replicated and sharded
parts (Korthikanti 2022 table 2), interleaved p2p per virtual stage, host-bound layers, memory.
The largest remaining misses are not explained by any of them:

- vTrain GPT-39.1B, mb 3, pp 16 on the same 512 A100s measures 20.0 s at tp 1, 26.2 s at tp 2,
  15.0 s at tp 4 and 16.4 s at tp 8 (rows 177, 154, 162, 180): the tp 2 runs are slower than both
  neighbours, which no monotonic cost in tp (TP, DP or PP traffic, GEMM shapes, memory) produces.
- vTrain GPT-3.6B tp 8 dp 8 measures 8.88 s at mb 2, 5.62 / 5.18 / 5.02 / 4.97 s at mb 4-32 and
  9.84 s at mb 64 (rows 119-124): the same token count per step; the model's only
  micro-batch-dependent terms (per-call GEMM efficiency, launch/host time, bubble-free pp 1) move
  smoothly. mb 64 is one micro-batch of 131k tokens per GPU (about 31 GiB of activations with
  full recompute): plausibly allocator pressure, which the model does not time.
- GPT-OSS-120B on B200 (row 63, EP 8, mb 4): the layout as stated needs about 214 GiB per GPU
  (100 GiB of experts, 96 GiB of activations) on a 180 GB GPU, so the real run recomputed or
  offloaded something the row does not state; and the schema has no head_dim column, so GPT-OSS's
  64 heads get hidden/heads = 45 (its config says 64). The same model on GB200 (EP 64, mb 1, no
  memory problem) is predicted within about 11 %. Inferring recompute from memory was not
  done: the memory model also flags NeMo rows that ran as stated (sequence parallelism and
  recompute are unstated there), so it would change rows the model already gets right.
"""


def update_results(section: str) -> None:
    replace_section(HEADING, section, RESULTS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", default=str(resources.files("scaleplan.specs") / "data/published_runs_dev.csv")
    )
    parser.add_argument("--write-profiles", action="store_true", help="refit profiles.yaml first")
    parser.add_argument("--max-nfev", type=int, default=200, help="function evaluations per fit")
    parser.add_argument("--no-results", action="store_true", help="do not touch bench/RESULTS.md")
    args = parser.parse_args(argv)
    cases, skipped = load_cases(args.runs)
    t0 = time.perf_counter()
    if args.write_profiles:
        fits = fit_profiles(cases, args.max_nfev)
        write_profiles(fits)
        cases, skipped = load_cases(args.runs)  # rebuild clusters with the new profiles
    in_sample = predict_cases(cases)
    loso = leave_one_source_out(cases, args.max_nfev)
    elapsed = time.perf_counter() - t0
    kort = korthikanti_full_layout(in_sample)
    vtrain = [p for p in in_sample if p.case.source.startswith("vTrain")]
    vt = summarize(vtrain)
    overall = summarize(in_sample, len(skipped))
    over30 = sum(abs(p.error_pct) > 30 for p in in_sample)
    body = table(in_sample, loso)
    section = "\n".join(
        [
            HEADING,
            "",
            f"Command: `.venv/bin/python bench/accuracy.py{' --write-profiles' if args.write_profiles else ''}`"
            f" ({elapsed:.0f} s). Data: `{Path(args.runs).name}`, {overall.n_predicted} rows predicted, "
            f"{overall.n_skipped} not predicted (`scaleplan validate` lists them with reasons).",
            "",
            "The shipped-profile columns are in-sample: the profiles (one per GPU family and "
            "software stack, specs/catalog/profiles.yaml) are fitted on this file. The "
            "leave-one-source-out columns refit every profile without one source, from the "
            "documented priors, and predict that source; a profile left with no data falls back "
            "to its priors (the Blackwell rows exist only in Megatron-Bridge, the legacy-stack "
            "rows only in vTrain and Korthikanti).",
            "",
            body,
            "",
            f"- vTrain rows: MAPE {vt.mape_pct:.1f} % (target <= 5 %), median {vt.median_pct:.1f} %, "
            f"max {vt.max_pct:.1f} %.",
            f"- Korthikanti rows with full layouts: mean {kort.get('mean', float('nan')):.1f} % "
            f"(target <= 3 %), max {kort.get('max', float('nan')):.1f} % (target <= 5 %).",
            f"- Whole file: MAPE {overall.mape_pct:.1f} % (target <= 10 %); rows over 30 %: {over30}.",
            f"- Leave-one-source-out MAPE: {summarize(loso).mape_pct:.1f} %.",
            "",
            "Worst rows (shipped profiles):",
            "",
            worst_rows(in_sample),
            "",
            KNOWN_MISSES,
        ]
    )
    print(section)
    if not args.no_results:
        update_results(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())

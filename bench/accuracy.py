"""Step-time accuracy on published runs: in-sample (shipped profiles) and leave-one-source-out.

    .venv/bin/python bench/accuracy.py                    # table + bench/RESULTS.md section
    .venv/bin/python bench/accuracy.py --write-profiles   # refit specs/catalog/profiles.yaml first

The shipped profiles are fitted on the dev file itself, so their error is in-sample. The
leave-one-source-out run refits every profile without one source (from the documented priors,
not from the shipped values; each stack's pooled fit first, `profile_fit.pooled_priors`) and
predicts that source, so overfitting shows.
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib import resources
from pathlib import Path

import yaml
from results_md import replace_section  # bench/ is on sys.path when run as a script

from scaleplan.costmodels.calibration import STARTS
from scaleplan.planner.profile_fit import (
    DERIVED,
    POOL,
    STACK_FALLBACK,
    derived_profile,
    fallback_profile,
    fit_profiles,
    leave_one_source_out,
    pooled_priors,
)
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


def write_profiles(fits: dict, pooled: dict | None = None, path: Path = PROFILES) -> None:
    """Write fitted profiles to profiles.yaml; a GPU family without data gets its stack's
    pooled fit where there is one (`profile_fit.pooled_priors`), else keeps its priors."""
    shipped = efficiency.shipped_profiles()
    pooled = pooled or {}
    data: dict[str, dict[str, object]] = {}
    for name in shipped:
        if name in fits:
            prof = fits[name].report.profile
        elif name in DERIVED and DERIVED[name][0] in fits:
            prof = derived_profile(name, fits[DERIVED[name][0]].report.profile)
        elif shipped[name].stack in pooled or STACK_FALLBACK.get(shipped[name].stack) in pooled:
            prof = fallback_profile(name, pooled)
        else:
            prof = shipped[name]
        data[name] = {
            k: _round(v) for k, v in prof.model_dump().items() if k not in PROFILE_KEYS_SKIPPED
        }
        if name not in fits and not (name in DERIVED and DERIVED[name][0] in fits):
            stack = prof.stack if prof.stack in pooled else STACK_FALLBACK.get(prof.stack, "")
            data[name]["fitted_on"] = "not fitted: no published runs for this GPU family" + (
                f"; values of the {stack} stack's pooled fit" if stack in pooled else ""
            )
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
        desc = f"tp{lay.tp} pp{lay.pp}" + (f" vp{lay.vp}" if lay.vp > 1 else "")
        desc += f" dp{lay.dp}" + (f" ep{lay.ep}" if lay.ep > 1 else "")
        desc += f" etp{lay.expert_tp}" if lay.expert_tp != lay.tp else ""
        desc += f" mb{lay.micro_batch} gb{lay.global_batch}"
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
- GPT-OSS-120B on B200 (row 63, EP 8, mb 4) was +25 % with a Blackwell profile fitted from
  generic priors and is within 1 % fitted from the default stack's pooled fit; the match may be
  partly fortuitous: the layout as stated needs about 214 GiB per GPU (100 GiB of experts,
  96 GiB of activations) on a 180 GB GPU, so the real run recomputed or offloaded something the
  row does not state, and the schema has no head_dim column (GPT-OSS's 64 heads get
  hidden/heads = 45; its config says 64). Inferring recompute from memory was not done: the
  memory model also flags NeMo rows that ran as stated (sequence parallelism and recompute are
  unstated there), so it would change rows the model already gets right.
- Qwen3-30B-A3B on 16 H100 (row 70, pp 2 vp 24: one layer per model chunk, fp8) runs 47 %
  slower than predicted. Until row 71 (Qwen3-235B-A22B on 256 H100, EP 32 folded over TP 2
  with expert-TP 1) could be predicted, the H100 fit bent the per-MoE-layer host time
  (`moe_layer_host_s`) to 8.4 ms to match row 70, and row 71, predicted with those profiles
  before they were refitted on it, came out 54 % too slow. Fitted on both rows, the H100 value
  settles at 2.3 ms, the value the Blackwell rows give independently, and row 71 is within 1 %.
  Row 70's stated layout needs about 92 GiB per GPU on an 80 GB GPU, so the run recomputed or
  offloaded something the row does not state.
- DeepSeek-V3 on 256 GB200 (row 55) is predicted from the catalog preset (MLA, 3 dense
  layers, shared expert) with the balanced pipeline layout Megatron-Bridge's recipe uses (pp 4
  vp 4: 15 chunks of 4 layers and one of 1): -16.6 % with the profiles fitted before it could be
  predicted, -3.8 % in-sample. Unstated recompute again: the layout as stated needs about
  234 GiB per GPU on the first stage. Row 56 (pp 8 vp 4: 32 chunks, where that scheme leaves
  the last chunk -1 layers) and row 62 (multi-token prediction) are not predicted.
- The Megatron-Bridge rows 59 (Qwen3-235B-A22B on 256 GB200, pp 8 vp 3) and 66 (Llama-3 8B
  fp8 on 8 H100, ZeRO-3) have not been analysed; row 66 was -10.6 % without pooling (the H100
  fit's unfitted parameters now come from the pooled fit).
"""


# How the fit was chosen (measured with this script; the commit messages have the figures).
FIT_NOTES = """Fit choices, each kept because the leave-one-source-out error fell and the in-sample
error did not rise (figures from this script with and without the change):

- `step_overhead_s` may range over 0-0.1 s (it was 0-2 s): fitted on vTrain alone (steps of
  3.5-66 s) it took 1.08 s as an intercept and predicted Korthikanti's 1.4 s steps 67-85 % too
  slow; Korthikanti leave-one-source-out 20.8 -> 3.1 %, in-sample unchanged (167-row file).
- Pooled per-stack fits (`--pool`, the default; `--no-pool` to compare): leave-one-source-out
  10.7 -> 9.2 % (Megatron-Bridge 40.1 -> 30.5 %, NeMo 15.2 -> 10.6 %, llm-foundry 6.5 -> 5.6 %,
  torchtitan 8.7 -> 4.7 %), whole file in-sample 5.4 -> 5.2 %; the legacy stack has one GPU
  family, so vTrain and Korthikanti do not change.
- Multi-start (`--starts N`, prior + N-1 Latin-hypercube starts) is available but off: without
  pooling, 4 starts found the same in-sample errors for every profile, moved
  leave-one-source-out 10.2 -> 10.1 % and took 3-4 times as long (167-row file). From 3 ms
  (host-bound layers) the legacy fit returns to 0.3 ms or stops at a higher objective: the
  vTrain micro-batch-2 misses are not a per-layer host time, which would also slow GPT-3.6B
  tp 16 mb 2 (less work per GPU), measured 7 % faster than predicted.
- Multi-start again on the 175-row file (`--starts 4`, 25 min): the same legacy-stack fit,
  in-sample 5.4 % either way, leave-one-source-out 9.4 -> 11.0 % (NeMo 10.7 -> 35.4 %): kept off.
- The legacy fit does not identify how the unfused attention's time splits between its
  matmuls (`attention_eff`) and its score-matrix memory passes (`attention_score_passes`):
  both scale with s^2 per head and every legacy-stack row has head_dim 128. With the per-stage
  step model it moved from 0.38 and 5.6 passes to 0.059 and 0 passes (4 starts agree) at the
  same vTrain MAPE (5.8 %); the attention term is a fitted total, not a kernel efficiency.
- vTrain's MAPE is not reachable <= 5 % by fitting this model: a legacy profile fitted on the
  vTrain rows alone has 5.5 % in-sample even with a free step overhead (5.8 % within 0.1 s).

Input defaults (what the rows' software did, not fit choices; kept whatever the fit does):

- NeMo rows with an empty sharding cell use the distributed optimizer (NeMo's launcher configs
  train with `optim.name: distributed_fused_adam`). Before, 12 of NeMo's rows needed 90-200 GiB
  per 80 GB GPU as stated (the whole Adam state unsharded); now 6 are over, by 1-25 GiB. NeMo
  in-sample 6.1 -> 5.8 %, leave-one-source-out 10.7 -> 10.3 %; the dense Megatron-Bridge rows
  predicted without Megatron-Bridge improve (405B on GB200 19.4 -> 16.2 %, 8B on GB200 8.5 ->
  4.8 %), while its MoE rows, whose MoE parameters then have no data and come from the
  priors, move 10-60 points either way: whole-file leave-one-source-out 9.4 -> 10.4 %.
- Legacy-stack rows (Megatron-DeepSpeed, 2021-2022 Megatron-LM) all-reduce gradients after the
  backward (vTrain's configs: `use_gradient_bucket: false`); the legacy fit had already set
  `dp_overlap` to 0, so no figure moves.
"""


def _flags(args: argparse.Namespace) -> str:
    flags = " --write-profiles" if args.write_profiles else ""
    flags += f" --starts {args.starts}" if args.starts != STARTS else ""
    return flags + ("" if args.pool == POOL else (" --pool" if args.pool else " --no-pool"))


def update_results(section: str) -> None:
    replace_section(HEADING, section, RESULTS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", default=str(resources.files("scaleplan.specs") / "data/published_runs_dev.csv")
    )
    parser.add_argument("--write-profiles", action="store_true", help="refit profiles.yaml first")
    parser.add_argument("--max-nfev", type=int, default=200, help="function evaluations per fit")
    parser.add_argument(
        "--starts", type=int, default=STARTS, help="local fits per profile (multi-start)"
    )
    parser.add_argument(
        "--pool", action=argparse.BooleanOptionalAction, default=POOL,
        help="start each family's fit from its stack's pooled fit",
    )  # fmt: skip
    parser.add_argument("--no-results", action="store_true", help="do not touch bench/RESULTS.md")
    args = parser.parse_args(argv)
    cases, skipped = load_cases(args.runs)
    t0 = time.perf_counter()
    if args.write_profiles:
        pooled = pooled_priors(cases, args.max_nfev, args.starts) if args.pool else {}
        fits = fit_profiles(cases, args.max_nfev, args.starts, pooled)
        write_profiles(fits, pooled)
        cases, skipped = load_cases(args.runs)  # rebuild clusters with the new profiles
    in_sample = predict_cases(cases)
    loso = leave_one_source_out(cases, args.max_nfev, args.starts, args.pool)
    elapsed = time.perf_counter() - t0
    kort = korthikanti_full_layout(in_sample)
    vtrain = [p for p in in_sample if p.case.source.startswith("vTrain")]
    vt = summarize(vtrain)
    overall = summarize(in_sample, len(skipped))
    over30 = sum(abs(p.error_pct) > 30 for p in in_sample)
    body = table(in_sample, loso)
    legacy_sources = ", ".join(sorted({c.source for c in cases if c.stack == "megatron-legacy"}))
    section = "\n".join(
        [
            HEADING,
            "",
            f"Command: `.venv/bin/python bench/accuracy.py{_flags(args)}`"
            f" ({elapsed:.0f} s). Data: `{Path(args.runs).name}`, {overall.n_predicted} rows predicted, "
            f"{overall.n_skipped} not predicted (`scaleplan validate` lists them with reasons).",
            "",
            "The shipped-profile columns are in-sample: the profiles (one per GPU family and "
            "software stack, specs/catalog/profiles.yaml) are fitted on this file. The "
            "leave-one-source-out columns refit every profile without one source, from the "
            "documented priors, and predict that source. "
            + (
                "Each software stack is first fitted on all its GPU families together; each "
                "family's fit starts from (and is pulled towards) that pooled fit, and a family "
                "left with no data gets it (the Blackwell rows exist only in Megatron-Bridge). "
                if args.pool
                else "A profile left with no data falls back to its priors. "
            )
            + f"The legacy-stack rows come only from {legacy_sources}.",
            "",
            FIT_NOTES,
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

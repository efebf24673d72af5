"""Speed: layout evaluations per second on one CPU core.

    .venv/bin/python bench/speed.py            # table + bench/RESULTS.md section
    .venv/bin/python bench/speed.py --n 50000  # smaller batch

Pins numpy's thread pools to one thread before numpy loads, builds a numpy batch of candidate
layouts for a real model, and times `estimate_step_batch` (step time, its breakdown, MFU and the
memory model) over it. Acceptance: >= 100,000 layout evaluations per second.

Other benchmarks (the planner's layout search) register themselves in `BENCHMARKS`.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
HEADING = "## Step-model speed (bench/speed.py)"
TARGET_PER_S = 100_000


def random_layouts(n: int, num_gpus: int, seed: int = 0):
    """`n` layouts over tp, pp, vp, cp, micro-batch, recompute, SP and optimizer sharding whose
    tp*pp*cp*dp equals `num_gpus` (the planner's candidate space)."""
    from scaleplan.costmodels.batch import LayoutBatch

    rng = np.random.default_rng(seed)
    tp = rng.choice([1, 2, 4, 8], n)
    pp = rng.choice([1, 2, 4, 8, 16], n)
    cp = rng.choice([1, 1, 2], n)
    dp = num_gpus // (tp * pp * cp)
    mb = rng.choice([1, 2, 4], n)
    vp = np.where(pp > 1, rng.choice([1, 2], n), 1)
    return LayoutBatch.from_arrays(
        tp=tp, pp=pp, vp=vp, cp=cp, dp=dp, micro_batch=mb, global_batch=4096,
        sequence_parallel=(tp > 1).astype(int), recompute=rng.choice([0, 1, 2], n),
        distributed_optimizer=rng.choice([0, 1], n),
    )  # fmt: skip


def bench_step_batch(n: int) -> dict[str, float | str]:
    from scaleplan.costmodels.step import estimate_step_batch
    from scaleplan.specs.hardware import make_cluster
    from scaleplan.specs.model import get_model

    model = get_model("llama3-70b")
    cluster = make_cluster("H100", 1024)
    layouts = random_layouts(n, 1024)
    estimate_step_batch(model, cluster, layouts.select(np.arange(min(n, 1000))), 8192)  # warm
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        out = estimate_step_batch(model, cluster, layouts, 8192)
        best = min(best, time.perf_counter() - t0)
    assert len(out) == n and np.all(np.isfinite(out.step_time_s))
    return {
        "name": "estimate_step_batch (llama3-70b, 1024 x H100, with memory)",
        "layouts": n,
        "seconds": best,
        "per_s": n / best,
    }


# (name, function(n) -> result dict with name/layouts/seconds/per_s). The planner's search
# benchmark appends itself here.
BENCHMARKS: list[tuple[str, Callable[[int], dict[str, float | str]]]] = [
    ("step", bench_step_batch),
]

# --- planner section: plan-search speed (bench/plan_speed.py, owned by the planner) ---------
sys.path.insert(0, str(Path(__file__).resolve().parent))
from plan_speed import BENCHMARKS as PLAN_BENCHMARKS  # noqa: E402
from results_md import replace_section  # noqa: E402  (bench/ is on sys.path)

BENCHMARKS += PLAN_BENCHMARKS
# --- end of planner section ------------------------------------------------------------------


def update_results(section: str) -> None:
    replace_section(HEADING, section, RESULTS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="layout evaluations per second, one core")
    parser.add_argument("--n", type=int, default=200_000, help="layouts per batch")
    parser.add_argument("--no-results", action="store_true", help="do not touch bench/RESULTS.md")
    args = parser.parse_args(argv)
    rows = [fn(args.n) for _, fn in BENCHMARKS]
    lines = [
        HEADING,
        "",
        f"Command: `.venv/bin/python bench/speed.py --n {args.n}` (one thread; best of 3).",
        "",
        "| benchmark | layouts | seconds | layouts/s | target |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        ok = "met" if float(r["per_s"]) >= TARGET_PER_S else "NOT met"
        lines.append(
            f"| {r['name']} | {int(r['layouts']):,} | {float(r['seconds']):.3f} | "
            f"{float(r['per_s']):,.0f} | >= {TARGET_PER_S:,} ({ok}) |"
        )
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_results:
        update_results(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())

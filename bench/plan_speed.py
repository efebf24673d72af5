"""Plan-search speed: layouts evaluated per second by the vectorized search, and the wall time
of planning the 16,384-GPU example (`specs/examples/h100x16384-54d-15T.yaml`).

    .venv/bin/python bench/plan_speed.py

`bench/speed.py` registers `BENCHMARKS` from here (its plan-search section).
"""

from __future__ import annotations

import functools
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "specs" / "examples" / "h100x16384-54d-15T.yaml"

_COLD = """
import time
t0 = time.perf_counter()
from scaleplan.specs.budget import BudgetSpec
from scaleplan.specs.loader import load_spec
from scaleplan.planner.planning import plan
t1 = time.perf_counter()
p = plan(load_spec(BudgetSpec, {path!r}))
t2 = time.perf_counter()
print(t1 - t0, t2 - t1, p.search["layouts_evaluated"], p.model.params_total, p.tokens)
"""


def search_rows() -> list[tuple[str, int, float]]:
    """(case, layouts evaluated, seconds) for warm searches over the full default space."""
    from scaleplan.planner.architecture import architecture_for_params
    from scaleplan.planner.search import search_layouts
    from scaleplan.specs.hardware import make_cluster
    from scaleplan.specs.model import get_model

    cases = [
        ("llama3-8b on 64 H100", get_model("llama3-8b"), 64, 8192, 512.0),
        ("llama3-70b on 1,024 H100", get_model("llama3-70b"), 1024, 8192, 2048.0),
        (
            "361B on 16,384 H100",
            architecture_for_params(361e9, vocab_size=128256, seq_length=8192),
            16384,
            8192,
            8192.0,
        ),
        ("mixtral-8x7b on 256 H100", get_model("mixtral-8x7b"), 256, 4096, 1024.0),
    ]
    rows = []
    for name, model, gpus, seq, target in cases:
        cluster = make_cluster("H100", gpus)
        search_layouts(model, cluster, seq, target)  # warm the topology caches
        best = min(
            (search_layouts(model, cluster, seq, target) for _ in range(3)),
            key=lambda r: r.seconds,
        )
        rows.append((name, best.layouts_evaluated, best.seconds))
    return rows


@functools.cache
def plan_rows() -> list[tuple[str, float, int]]:
    """(what, seconds, layouts evaluated) for planning the 16,384-GPU example."""
    from scaleplan.planner.planning import plan
    from scaleplan.specs.budget import BudgetSpec
    from scaleplan.specs.loader import load_spec

    out = subprocess.run(
        [sys.executable, "-c", _COLD.format(path=str(EXAMPLE))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    imports_s, cold_s, evaluated = float(out[0]), float(out[1]), int(out[2])
    budget = load_spec(BudgetSpec, EXAMPLE)
    plan(budget)
    start = time.perf_counter()
    warm = plan(budget)
    warm_s = time.perf_counter() - start
    return [
        ("imports (fresh process)", imports_s, 0),
        ("plan(), fresh process", cold_s, evaluated),
        ("plan(), warm caches", warm_s, int(warm.search["layouts_evaluated"])),
    ]


def plan_speed_rows() -> list[str]:
    """The table lines of this benchmark (for bench/speed.py and bench/RESULTS.md)."""
    lines = ["| search case | layouts | seconds | layouts/s |", "|---|---:|---:|---:|"]
    for name, n, s in search_rows():
        lines.append(f"| {name} | {n:,} | {s:.4f} | {n / s:,.0f} |")
    lines += ["", "| 16,384-GPU example | seconds | layouts evaluated |", "|---|---:|---:|"]
    for what, s, n in plan_rows():
        lines.append(f"| {what} | {s:.3f} | {n:,} |")
    return lines


def bench_plan_search(_n: int) -> dict[str, float | str]:
    """bench/speed.py row: the full default search for a 361B model on 16,384 H100 (warm)."""
    name, n, s = search_rows()[2]
    return {"name": f"plan search: {name}", "layouts": n, "seconds": s, "per_s": n / s}


def bench_plan_16k(_n: int) -> dict[str, float | str]:
    """bench/speed.py rows' source: plan() of the 16,384-GPU example in a fresh process (topology
    graph built from scratch) and warm."""
    rows = {what: (s, n) for what, s, n in plan_rows()}
    s, n = rows["plan(), fresh process"]
    return {
        "name": "plan() 16,384-GPU example, fresh process",
        "layouts": n,
        "seconds": s,
        "per_s": n / s,
    }


def bench_plan_16k_warm(_n: int) -> dict[str, float | str]:
    rows = {what: (s, n) for what, s, n in plan_rows()}
    s, n = rows["plan(), warm caches"]
    return {"name": "plan() 16,384-GPU example, warm", "layouts": n, "seconds": s, "per_s": n / s}


BENCHMARKS = [
    ("plan-search", bench_plan_search),
    ("plan-16k", bench_plan_16k),
    ("plan-16k-warm", bench_plan_16k_warm),
]


if __name__ == "__main__":
    print("\n".join(plan_speed_rows()))

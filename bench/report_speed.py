"""Report speed: for every example budget, plan it, then time `scaleplan report` end to end in a
fresh process (imports included), wall and CPU, with each figure's status and drawing time.

    .venv/bin/python bench/report_speed.py [--markdown]

The acceptance bound is 10 s per report. CPU time is printed beside wall time because on a
shared machine the wall time also counts other processes' load.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "specs" / "examples").glob("*.yaml"))
SCALEPLAN = [str(Path(sys.executable).parent / "scaleplan")]  # the installed console script


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(example: Path, work: Path) -> dict[str, object]:
    plan_file = work / f"{example.stem}.json"
    subprocess.run(
        [*SCALEPLAN, "plan", str(example), "--out", str(plan_file)], check=True, capture_output=True
    )
    out_dir = work / example.stem
    cpu0, wall0 = _children_cpu_s(), time.perf_counter()
    done = subprocess.run(
        [*SCALEPLAN, "report", str(plan_file), "--out", str(out_dir), "--force", "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    wall_s, cpu_s = time.perf_counter() - wall0, _children_cpu_s() - cpu0
    obj = json.loads(done.stdout)
    drawn = sum(f["status"] == "ok" for f in obj["figures"])
    html_kib = (out_dir / "report.html").stat().st_size / 1024
    return {
        "example": example.stem,
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "drawing_s": obj["seconds"],
        "drawn": f"{drawn}/{len(obj['figures'])}",
        "html_kib": html_kib,
        "missing": "; ".join(
            f"{f['key']}: {f['reason']}" for f in obj["figures"] if f["status"] != "ok"
        ),
    }


def main() -> None:
    markdown = "--markdown" in sys.argv
    with tempfile.TemporaryDirectory(prefix="scaleplan-report-bench-") as tmp:
        rows = [measure(ex, Path(tmp)) for ex in EXAMPLES]
    head = ("example", "wall s", "CPU s", "drawing s", "plots drawn", "report.html KiB")
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|---|" + "---:|" * (len(head) - 1))
    else:
        print(f"{head[0]:<22} " + " ".join(f"{h:>15}" for h in head[1:]))
    for r in rows:
        cells = [
            f"{r['wall_s']:.2f}",
            f"{r['cpu_s']:.2f}",
            f"{r['drawing_s']:.2f}",
            str(r["drawn"]),
            f"{r['html_kib']:.0f}",
        ]
        if markdown:
            print(f"| {r['example']} | " + " | ".join(cells) + " |")
        else:
            print(f"{r['example']:<22} " + " ".join(f"{c:>15}" for c in cells))
    for r in rows:
        if r["missing"]:
            print(f"\n{r['example']}: not drawn: {r['missing']}")
    slow = [r["example"] for r in rows if float(r["cpu_s"]) >= 10.0]  # type: ignore[arg-type]
    print(f"\nover 10 s of CPU: {', '.join(slow) if slow else 'none'}")


if __name__ == "__main__":
    main()

"""The package installs under `scaleplan.` and the CLI starts fast without engine imports."""

from __future__ import annotations

import subprocess
import sys
import time
import tomllib
from pathlib import Path

from conftest import REPO_ROOT


def test_every_package_folder_is_listed_in_pyproject() -> None:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    mapping = config["tool"]["setuptools"]["package-dir"]
    found = set()
    for prefix, folder in mapping.items():
        for init in (REPO_ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO_ROOT / folder)
            found.add(".".join([prefix, *rel.parts]))
    assert found <= listed, f"unlisted packages: {sorted(found - listed)}"


def test_help_is_fast_and_imports_no_engine() -> None:
    code = (
        "import sys, time; t=time.perf_counter();"
        "from scaleplan.planner.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "bad=[m for m in ('torch','deepspeed','megatron') if m in sys.modules];"
        "print('ENGINES', bad, file=sys.stderr)"
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    assert "ENGINES []" in out.stderr, out.stderr
    assert "Usage" in out.stdout
    assert elapsed < 1.5  # includes interpreter start-up; the CLI itself is well under 0.5 s


def test_console_script_help_under_half_second() -> None:
    exe = Path(sys.executable).parent / "scaleplan"
    best = min(_timed([str(exe), "--help"]) for _ in range(3))
    assert best < 0.5, f"scaleplan --help took {best:.3f} s"


def _timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True)
    return time.perf_counter() - start

"""Shared test fixtures. Public ground-truth data is read in place from ../shared/data; tests
that need it skip, with a visible reason, where that folder is absent (a user's clone)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SCALEPLAN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"shared ground-truth data not found at {SHARED_DATA} (set SCALEPLAN_SHARED_DATA)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def engine_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for training runs in tests: one tokenizer/corpus cache for the whole session
    (every tiny plan shares the vocabulary, so it is built once) and one thread per rank."""
    cache = tmp_path_factory.mktemp("data-cache")
    return {"SCALEPLAN_DATA_CACHE": str(cache), "OMP_NUM_THREADS": "1"}


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run `scaleplan ARGS` in-process: (exit code, stdout, stderr)."""
    from scaleplan.planner.cli import main

    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def bench_module(name: str):
    """A bench/ script as a module (bench/ is not a package; its scripts import results_md)."""
    import importlib.util
    import sys

    bench = Path(__file__).resolve().parents[1] / "bench"
    if str(bench) not in sys.path:
        sys.path.insert(0, str(bench))
    spec = importlib.util.spec_from_file_location(name, bench / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_one_error(code: int, err: str, *needles: str) -> str:
    """A refused input: exit 2, no traceback, exactly one `error: ...` line containing every
    needle; returns that line."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in err, err
    return lines[0]


def sized_mpl_truth(**changes: float):
    """The synthetic size-aware multi-power law the schedule-fit tests generate curves from
    (`schedule_law_sized.SizedMPL`), with any field changed."""
    import dataclasses

    from scaleplan.planner.laws.schedule_law_sized import SizedMPL

    truth = SizedMPL(E=1.9, K=300.0, a_N=0.34, A0=0.6, a_A=0.02, B0=440.0, a_B=0.1,
                     alpha=0.45, C=2.0, beta=0.6, gamma=0.65)  # fmt: skip
    return dataclasses.replace(truth, **changes)

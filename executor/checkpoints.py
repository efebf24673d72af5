"""Checkpoint folder layout of a run, shared by both backends and the orchestrator.

RUN_DIR/checkpoints/PHASE/step_0000010/   one checkpoint (engine format inside)
RUN_DIR/checkpoints/PHASE/latest          text: the folder name of the newest complete one
RUN_DIR/checkpoints/PHASE/final           text: written once the phase has finished

A checkpoint is saved into `step_N.tmp` and renamed to `step_N` only when every rank has
finished writing, then `latest` is replaced atomically (`os.replace`). A crash mid-save leaves
a `.tmp` folder that the next save removes and no marker pointing at it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from scaleplan.specs.errors import SpecError


def phase_dir(run_dir: Path, phase: str) -> Path:
    return run_dir / "checkpoints" / phase


def step_name(step: int) -> str:
    return f"step_{step:07d}"


def tmp_dir(run_dir: Path, phase: str, step: int) -> Path:
    return phase_dir(run_dir, phase) / f"{step_name(step)}.tmp"


def prepare_tmp(run_dir: Path, phase: str, step: int) -> Path:
    """Rank 0: an empty temporary folder for step `step` (stale ones removed)."""
    root = phase_dir(run_dir, phase)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob("*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = tmp_dir(run_dir, phase, step)
    tmp.mkdir()
    return tmp


def _write_marker(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp-marker")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


def commit(run_dir: Path, phase: str, step: int, final: bool = False) -> Path:
    """Rank 0, after every rank wrote into the tmp folder: rename it and move `latest`."""
    final_dir = phase_dir(run_dir, phase) / step_name(step)
    if final_dir.exists():
        shutil.rmtree(final_dir)
    os.replace(tmp_dir(run_dir, phase, step), final_dir)
    _write_marker(phase_dir(run_dir, phase) / "latest", final_dir.name)
    if final:
        _write_marker(phase_dir(run_dir, phase) / "final", final_dir.name)
    return final_dir


def _marker(run_dir: Path, phase: str, name: str) -> Path | None:
    marker = phase_dir(run_dir, phase) / name
    if not marker.exists():
        return None
    path = phase_dir(run_dir, phase) / marker.read_text().strip()
    return path if path.is_dir() else None


def latest(run_dir: Path, phase: str) -> Path | None:
    """The newest complete checkpoint of a phase, or None."""
    return _marker(run_dir, phase, "latest")


def final(run_dir: Path, phase: str) -> Path | None:
    """The checkpoint of a finished phase, or None."""
    return _marker(run_dir, phase, "final")


def require_final(run_dir: Path, phase: str, field: str) -> Path:
    path = final(run_dir, phase)
    if path is None:
        partial = latest(run_dir, phase)
        if partial is not None:  # stopped early: --max-steps, or killed
            raise SpecError(
                f"phase '{phase}' is unfinished (stopped at step {step_of(partial)}, e.g. by "
                f"--max-steps), so phases that start from it cannot run yet; finish it with "
                f"`scaleplan run PLAN --phases {phase} --resume` first",
                field=field,
            )
        raise SpecError(
            f"phase '{phase}' has no finished checkpoint in {phase_dir(run_dir, phase)}; "
            f"run that phase first",
            field=field,
        )
    return path


def step_of(path: Path) -> int:
    return int(path.name.removeprefix("step_"))

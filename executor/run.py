"""`scaleplan run`: train a plan's phases in order on this machine, one `torchrun` per phase.

Each phase launches `torchrun --nproc-per-node G -m scaleplan.executor.train --plan ... --phase
NAME --run-dir RUN_DIR` with G = the phase layout's tp*pp*cp*dp, the same command the compiled
launch scripts run. With `resume`, finished phases are skipped and an interrupted phase
continues from its latest checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from scaleplan.executor import checkpoints as ckpt
from scaleplan.executor.run_support import run_refusal
from scaleplan.specs.errors import NotImplementedFeature, SpecError
from scaleplan.specs.loader import load_spec
from scaleplan.specs.plan import PhaseSpec, Plan


class PhaseFailed(RuntimeError):
    """A phase's training processes exited with an error."""


@dataclass(frozen=True)
class PhaseResult:
    phase: str
    status: (
        str  # "trained" | "skipped (finished)" | "unfinished (--max-steps)" | "not started: ..."
    )
    nproc: int
    wall_s: float
    final_loss: float | None
    steps: int
    metrics: str


def parse_phase_list(text: str, field: str = "phases") -> list[str]:
    """'pretrain,anneal' as a list: at least one name, none twice."""
    wanted = [p.strip() for p in text.split(",") if p.strip()]
    if not wanted:
        raise SpecError(f"no phase named in {text!r}", field=field)
    twice = sorted({w for w in wanted if wanted.count(w) > 1})
    if twice:
        raise SpecError(f"phase(s) {', '.join(twice)} named twice", field=field)
    return wanted


def select_phases(plan: Plan, phases: str) -> list[PhaseSpec]:
    """`all` or a comma list of phase names, kept in the plan's order."""
    if phases.strip() == "all":
        return list(plan.phases)
    wanted = parse_phase_list(phases)
    names = [p.name for p in plan.phases]
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise SpecError(
            f"unknown phase(s) {', '.join(unknown)}; the plan has {', '.join(names)}",
            field="phases",
        )
    return [p for p in plan.phases if p.name in wanted]


def default_max_procs() -> int:
    """GPUs on this machine, or on a CPU-only machine a small local cap for tiny runs."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.device_count()
    return max(os.cpu_count() or 1, 4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_command(
    plan_path: Path,
    phase: PhaseSpec,
    run_dir: Path,
    resume: bool,
    backend: str | None,
    max_steps: int | None,
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(phase.num_gpus),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
        "-m",
        "scaleplan.executor.train",
        "--plan",
        str(plan_path),
        "--phase",
        phase.name,
        "--run-dir",
        str(run_dir),
    ]
    if resume:
        cmd.append("--resume")
    if backend:
        cmd += ["--backend", backend]
    if max_steps:
        cmd += ["--max-steps", str(max_steps)]
    return cmd


def _launch(cmd: list[str], env: dict[str, str], log_file: Path, echo: bool) -> tuple[int, str]:
    """Run one phase in its own session; afterwards end whatever it left behind (e.g. the
    checkpoint helper processes of a rank that was killed), so nothing outlives the phase.
    Output goes to `log_file` (and to the terminal when `echo`). Returns (exit code, log tail)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a") as out:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=None if echo else out,
            stderr=None if echo else subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = proc.wait()
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # only this phase's own session
            except ProcessLookupError:
                pass
    tail = "" if echo else log_file.read_text(errors="replace")[-3000:]
    return returncode, tail


def last_loss(metrics: Path) -> tuple[float | None, int]:
    loss, step = None, 0
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("event") == "step":
                loss, step = rec["loss"], rec["step"]
    return loss, step


def check_phases_runnable(
    plan: Plan, phases: list[PhaseSpec], backend: str | None, source: str | None = None
) -> None:
    """Refuse before anything is launched when a selected phase cannot be trained here
    (`run_support.run_refusal`), so a chain does not stop at a late phase."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    for phase in phases:
        refusal = run_refusal(plan, phase, device, backend)
        if refusal is not None:
            raise NotImplementedFeature(
                f"phase '{phase.name}': {refusal.reason} (nothing was launched)",
                field=refusal.field,
                source=source,
            )


def run_plan(
    plan_path: str | Path,
    phases: str = "all",
    run_dir: str | Path | None = None,
    resume: bool = False,
    nproc: int | None = None,
    backend: str | None = None,
    max_steps: int | None = None,
    env: dict[str, str] | None = None,
    log: bool = True,
) -> list[PhaseResult]:
    """Train the selected phases in order; raise PhaseFailed at the first failure."""
    plan_path = Path(plan_path)
    plan = load_spec(Plan, plan_path)
    selected = select_phases(plan, phases)
    run = Path(run_dir) if run_dir else Path("runs") / plan.name
    allowed = nproc or default_max_procs()
    for phase in selected:
        if phase.num_gpus > allowed:
            raise SpecError(
                f"phase '{phase.name}' needs {phase.num_gpus} processes (tp*pp*cp*dp of its "
                f"layout) but at most {allowed} are allowed here (--nproc)",
                field=f"phases.{phase.name}.num_gpus",
                source=str(plan_path),
            )
    check_phases_runnable(plan, selected, backend, source=str(plan_path))
    run.mkdir(parents=True, exist_ok=True)
    child_env = {
        **os.environ,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        **(env or {}),
    }
    results: list[PhaseResult] = []
    unfinished: str | None = None  # a phase that --max-steps stopped early: later ones wait
    for phase in selected:
        metrics = run / "metrics" / f"{phase.name}.jsonl"
        if unfinished is not None:
            why = (
                f"not started: '{unfinished}' stopped at --max-steps and is unfinished; "
                f"finish it with --resume"
            )
            results.append(PhaseResult(phase.name, why, phase.num_gpus, 0.0, None, 0, str(metrics)))
            continue
        if resume and ckpt.final(run, phase.name) is not None:
            loss, step = last_loss(metrics)
            results.append(
                PhaseResult(
                    phase.name, "skipped (finished)", phase.num_gpus, 0.0, loss, step, str(metrics)
                )
            )
            continue
        cont = resume and ckpt.latest(run, phase.name) is not None
        cmd = launch_command(plan_path, phase, run, cont, backend, max_steps)
        t0 = time.perf_counter()
        returncode, tail = _launch(cmd, child_env, run / "logs" / f"{phase.name}.log", log)
        if returncode != 0:
            raise PhaseFailed(
                f"phase '{phase.name}' failed (exit code {returncode}); "
                f"rerun with --resume to continue from its latest checkpoint\n{tail}"
            )
        loss, step = last_loss(metrics)
        done = ckpt.final(run, phase.name) is not None
        if not done:
            unfinished = phase.name
        results.append(
            PhaseResult(
                phase.name,
                "trained" if done else "unfinished (--max-steps)",
                phase.num_gpus,
                time.perf_counter() - t0,
                loss,
                step,
                str(metrics),
            )
        )
    return results

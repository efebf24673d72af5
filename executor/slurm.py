"""Submit a compiled plan's phase chain to Slurm and read each phase's state back.

`submit` runs the compiled `submit_all.sh` (sbatch --parsable, --dependency=afterok) and records
the job ids in RUN_DIR/slurm_jobs.json. `status` asks slurmctld (`scontrol show job -o`, falling
back to `squeue --states=all`), which works without accounting (slurmdbd); finished jobs stay
visible for MinJobAge.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaleplan.specs.errors import SpecError

JOBS_FILE = "slurm_jobs.json"
DONE_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
    }
)


@dataclass(frozen=True)
class PhaseJob:
    phase: str
    job_id: str
    state: str = "UNKNOWN"
    exit_code: str | None = None
    reason: str | None = None
    node_list: str | None = None
    run_time: str | None = None
    start_time: str | None = None
    end_time: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def _need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise SpecError(
            f"'{binary}' not found: Slurm's client commands are not installed on this machine"
        )
    return path


def submit(compiled_dir: str | Path, run_dir: str | Path, sbatch_args: str = "") -> dict[str, Any]:
    """Submit every phase of a compiled plan; return (and write) the RUN_DIR/slurm_jobs.json record."""
    compiled, run = Path(compiled_dir).resolve(), Path(run_dir).resolve()
    manifest_path = compiled / "manifest.json"
    if not manifest_path.is_file():
        raise SpecError(
            "not a compiled plan (no manifest.json); run `scaleplan compile` first",
            source=str(compiled),
        )
    manifest = json.loads(manifest_path.read_text())
    env = dict(os.environ, RUN_DIR=str(run), SBATCH=_need("sbatch"), SBATCH_ARGS=sbatch_args)
    run.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["bash", str(compiled / manifest["chain_script"])],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    jobs = [line.split(maxsplit=1) for line in proc.stdout.splitlines() if line.strip()]
    record = {
        "plan": manifest["plan"],
        "engine": manifest["engine"],
        "compiled_dir": str(compiled),
        "run_dir": str(run),
        "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "jobs": [{"phase": p, "job_id": j.strip()} for p, j in jobs],
    }
    if jobs:  # record what was submitted even when a later sbatch failed
        (run / JOBS_FILE).write_text(json.dumps(record, indent=2) + "\n")
    if proc.returncode != 0:
        detail = (
            proc.stderr.strip().splitlines()[-1]
            if proc.stderr.strip()
            else f"exit {proc.returncode}"
        )
        done = ", ".join(f"{p}={j}" for p, j in jobs) or "none"
        raise SpecError(f"sbatch failed after submitting {done}: {detail}", source=str(compiled))
    return record


def _parse_scontrol(line: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for token in line.split():
        key, sep, value = token.partition("=")
        if sep and key not in fields:
            fields[key] = value
    return fields


def _known(value: str | None) -> str | None:
    return None if value in (None, "", "Unknown", "None", "(null)") else value


def job_state(job_id: str) -> PhaseJob:
    """One job's state from slurmctld; UNKNOWN when slurmctld no longer remembers it."""
    scontrol = shutil.which("scontrol")
    if scontrol:
        proc = subprocess.run(
            [scontrol, "show", "job", "-o", job_id], capture_output=True, text=True, check=False
        )
        if proc.returncode == 0 and "JobState=" in proc.stdout:
            f = _parse_scontrol(proc.stdout.splitlines()[0])
            return PhaseJob(
                phase="",
                job_id=job_id,
                state=f.get("JobState", "UNKNOWN"),
                exit_code=f.get("ExitCode"),
                reason=f.get("Reason") if f.get("Reason") not in (None, "None") else None,
                node_list=f.get("NodeList") if f.get("NodeList") not in (None, "(null)") else None,
                run_time=f.get("RunTime"),
                start_time=_known(f.get("StartTime")),
                end_time=_known(f.get("EndTime")),
            )
    squeue = shutil.which("squeue")
    if squeue:
        proc = subprocess.run(
            [squeue, "--states=all", "-h", "-j", job_id, "-o", "%i %T %R"],
            capture_output=True,
            text=True,
            check=False,
        )
        for line in proc.stdout.splitlines():
            parts = line.split(maxsplit=2)
            if parts and parts[0] == job_id:
                return PhaseJob(
                    phase="",
                    job_id=job_id,
                    state=parts[1],
                    reason=parts[2] if len(parts) > 2 else None,
                )
    if not scontrol and not squeue:
        raise SpecError("neither scontrol nor squeue is installed: cannot ask Slurm")
    return PhaseJob(
        phase="",
        job_id=job_id,
        state="UNKNOWN",
        reason="slurmctld no longer knows this job (older than MinJobAge?)",
    )


def read_jobs(run_dir: str | Path) -> dict[str, Any]:
    """RUN_DIR/slurm_jobs.json, checked: an object whose `jobs` lists {phase, job_id} strings."""
    path = Path(run_dir) / JOBS_FILE
    src = str(path)
    if not path.is_file():
        raise SpecError(
            f"no {JOBS_FILE}: this run was not submitted with `scaleplan submit`",
            source=str(run_dir),
        )
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise SpecError(
            f"not UTF-8 text (byte {err.start}: {err.reason}); expected the JSON written by "
            "`scaleplan submit`",
            source=src,
        ) from None
    except json.JSONDecodeError as err:
        raise SpecError(f"malformed {JOBS_FILE}: {err.msg}", source=src) from None
    except OSError as err:
        raise SpecError(f"cannot read: {err.strerror or err}", source=src) from None
    if not isinstance(record, dict):
        raise SpecError(
            f"expected a JSON object with a 'jobs' list, got {type(record).__name__}", source=src
        )
    jobs = record.get("jobs")
    if not isinstance(jobs, list):
        raise SpecError(
            "missing 'jobs' list (written by `scaleplan submit`)", field="jobs", source=src
        )
    for i, job in enumerate(jobs):
        if not isinstance(job, dict):
            raise SpecError(
                f"must be an object with phase and job_id (got {job!r})",
                field=f"jobs[{i}]",
                source=src,
            )
        for key in ("phase", "job_id"):
            value = job.get(key)
            if not isinstance(value, str) or not value.strip():
                what = (
                    "missing" if key not in job else f"must be a non-empty string (got {value!r})"
                )
                raise SpecError(what, field=f"jobs[{i}].{key}", source=src)
    return record


def status(run_dir: str | Path) -> list[PhaseJob]:
    """Each submitted phase's Slurm state, in chain order."""
    record = read_jobs(run_dir)
    out = []
    for job in record["jobs"]:
        st = job_state(job["job_id"])
        out.append(PhaseJob(**{**st.as_dict(), "phase": job["phase"]}))
    return out


def wait(run_dir: str | Path, timeout_s: float = 600.0, poll_s: float = 1.0) -> list[PhaseJob]:
    """Poll until every phase reached a final state (or one failed and the rest can never run)."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = status(run_dir)
        if all(s.state in DONE_STATES for s in states):
            return states
        if time.monotonic() > deadline:
            return states
        time.sleep(poll_s)

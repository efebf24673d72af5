"""`scaleplan submit` / `scaleplan status` against a real single-host Slurm (tests/slurm_cluster.py).

The two-phase test trains for real: scaleplan.executor.train (megatron-core through the CPU
adapter) runs a tiny pretrain, then an anneal that loads its checkpoint, as two chained jobs.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from factories import tiny_plan
from slurm_cluster import SlurmCluster, unavailable_reason

from scaleplan.executor import slurm
from scaleplan.executor.compile import compile_plan, write_compiled
from scaleplan.planner.cli import main
from scaleplan.specs.errors import SpecError

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def slurm_cluster() -> Iterator[SlurmCluster]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster(nodes=2, gpus_per_node=2)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def slurm_env(
    slurm_cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch, engine_env: dict[str, str]
) -> SlurmCluster:
    """Client commands (ours and the jobs') talk to the test cluster; torchrun is the venv's;
    jobs share the session's tokenizer/corpus cache (sbatch exports the environment)."""
    monkeypatch.setenv("SCALEPLAN_DATA_CACHE", engine_env["SCALEPLAN_DATA_CACHE"])
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    monkeypatch.setenv("TORCHRUN", str(VENV_BIN / "torchrun"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PATH", f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")
    return slurm_cluster


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = int(exc.code or 0)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _events(path: Path, kind: str) -> list[dict]:
    return [e for e in map(json.loads, path.read_text().splitlines()) if e["event"] == kind]


@pytest.mark.slow
def test_two_phase_chain_trains_in_order(
    slurm_env: SlurmCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(
        tiny_plan(phases=("pretrain", "anneal"), steps=4, name="slurm two phase").model_dump_json()
    )
    run_dir = tmp_path / "run dir"
    code, out, err = _cli(["submit", str(plan_path), "--run-dir", str(run_dir)], capsys)
    assert code == 0, err
    record = json.loads((run_dir / "slurm_jobs.json").read_text())
    assert [j["phase"] for j in record["jobs"]] == ["pretrain", "anneal"]
    assert f"pretrain: job {record['jobs'][0]['job_id']}" in out
    states = slurm.wait(run_dir, timeout_s=420, poll_s=1.0)
    logs = "\n".join(p.read_text()[-2000:] for p in sorted((run_dir / "logs").glob("*.out")))
    assert [s.state for s in states] == ["COMPLETED", "COMPLETED"], logs
    pre, ann = states
    assert pre.exit_code == "0:0" and ann.exit_code == "0:0"
    assert datetime.fromisoformat(ann.start_time) >= datetime.fromisoformat(pre.end_time)  # type: ignore[arg-type]
    # both phases trained; the anneal started from the pretrain checkpoint: its first evaluation
    # equals the pretrain's last one (same held-out batches, same weights)
    metrics = run_dir / "metrics"
    assert (
        len(_events(metrics / "pretrain.jsonl", "step")) == 4
        and len(_events(metrics / "anneal.jsonl", "step")) == 4
    )
    pre_last = _events(metrics / "pretrain.jsonl", "eval")[-1]
    ann_first = _events(metrics / "anneal.jsonl", "eval")[0]
    assert ann_first["step"] == 0 and ann_first["eval_loss_web"] == pytest.approx(
        pre_last["eval_loss_web"], rel=1e-6
    )
    assert (run_dir / "checkpoints" / "anneal").is_dir()
    code, out, _ = _cli(["status", str(run_dir), "--json"], capsys)
    assert code == 0
    reported = json.loads(out)["phases"]
    assert [(p["phase"], p["state"]) for p in reported] == [
        ("pretrain", "COMPLETED"),
        ("anneal", "COMPLETED"),
    ]


@pytest.mark.slow
def test_failed_phase_stops_the_chain_and_status_says_so(
    slurm_env: SlurmCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fail = tmp_path / "failing-launcher.sh"
    fail.write_text("#!/usr/bin/env bash\necho 'launcher failed on purpose' >&2\nexit 3\n")
    fail.chmod(0o755)
    monkeypatch.setenv("TORCHRUN", str(fail))
    compiled = tmp_path / "compiled"
    write_compiled(
        compile_plan(tiny_plan(phases=("pretrain", "anneal", "sft")), "megatron"), compiled
    )
    run_dir = tmp_path / "run"
    record = slurm.submit(compiled, run_dir)
    assert len(record["jobs"]) == 3
    states = slurm.wait(run_dir, timeout_s=60, poll_s=0.5)
    assert states[0].state == "FAILED" and states[0].exit_code == "3:0"
    # --kill-on-invalid-dep=yes: the dependants are cancelled rather than pending forever
    assert [s.state for s in states[1:]] == ["CANCELLED", "CANCELLED"], states
    code, out, _ = _cli(["status", str(run_dir)], capsys)
    assert code == 0 and "FAILED" in out and "CANCELLED" in out


@pytest.mark.slow
def test_sbatch_refusal_is_one_error_line(
    slurm_env: SlurmCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compiled = tmp_path / "compiled"
    write_compiled(compile_plan(tiny_plan(phases=("pretrain",)), "megatron"), compiled)
    with pytest.raises(SpecError, match="sbatch failed after submitting none"):
        slurm.submit(compiled, tmp_path / "run", sbatch_args="--partition=no_such_partition")
    code, _, err = _cli(["status", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "not submitted" in err


def test_status_parses_scontrol_and_falls_back_to_squeue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a cluster: stand-in scontrol/squeue print what Slurm 22.05 prints."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(
        "#!/usr/bin/env bash\n"
        'if [ "$4" = 11 ]; then echo "JobId=11 JobName=x-pretrain UserId=root(0) JobState=COMPLETED '
        "Reason=None Dependency=(null) ExitCode=0:0 RunTime=00:00:09 StartTime=2026-01-01T00:00:01 "
        'EndTime=2026-01-01T00:00:10 NodeList=n1"; exit 0; fi\n'
        'echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1\n'
    )
    (bin_dir / "squeue").write_text(
        '#!/usr/bin/env bash\n[ "$4" = 12 ] && echo "12 PENDING (Dependency)"\nexit 0\n'
    )
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    run = tmp_path / "run"
    run.mkdir()
    jobs = [
        {"phase": "pretrain", "job_id": "11"},
        {"phase": "anneal", "job_id": "12"},
        {"phase": "sft", "job_id": "13"},
    ]
    (run / slurm.JOBS_FILE).write_text(json.dumps({"jobs": jobs}))
    pre, ann, sft = slurm.status(run)
    assert (pre.phase, pre.state, pre.exit_code, pre.node_list, pre.end_time) == (
        "pretrain",
        "COMPLETED",
        "0:0",
        "n1",
        "2026-01-01T00:00:10",
    )
    assert pre.reason is None
    assert (ann.state, ann.reason) == ("PENDING", "(Dependency)")
    assert sft.state == "UNKNOWN" and "MinJobAge" in (sft.reason or "")

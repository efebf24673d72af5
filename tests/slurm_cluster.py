"""A real single-host Slurm for tests: munge + slurmctld + N fake slurmd nodes in a temp folder.

Follows ../shared/notes/slurm-local.md (Debian's slurm-wlm 22.05 and munge 0.5). Everything it
starts has its own key, socket, ports, state and log files under one temp folder; the client
commands find the cluster through SLURM_CONF. `stop()` cancels the jobs, then ends only the
processes it started, by pid. Use the `slurm_cluster` fixture (tests/test_slurm.py); it skips with
the reason when Slurm or munge is missing or the tests do not run as root.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BINARIES = (
    "munged",
    "mungekey",
    "slurmctld",
    "slurmd",
    "sbatch",
    "scontrol",
    "squeue",
    "sinfo",
    "srun",
    "runuser",
)
HOSTS_TAG = "# scaleplan-test-slurm"


def unavailable_reason() -> str | None:
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return f"Slurm/munge not installed ({', '.join(missing)} missing; apt-get install slurmctld slurmd slurm-client munge, see .ci/system-deps.sh)"
    if os.geteuid() != 0:
        return (
            "a test Slurm needs root (slurmd runs jobs as their users; munged needs the munge user)"
        )
    return None


def _free_ports(n: int) -> list[int]:
    """n consecutive free TCP ports on 127.0.0.1 (slurm.conf takes a Port=[a-b] range)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            start = s.getsockname()[1]
        if start + n >= 65535:
            continue
        ok = True
        for p in range(start, start + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return list(range(start, start + n))
    raise RuntimeError("no free port range")


@dataclass
class SlurmCluster:
    nodes: int = 2
    gpus_per_node: int = 2
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="scaleplan-slurm-")))
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    munged_pid: int | None = None
    node_names: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    def _write_config(self) -> None:
        host = socket.gethostname().split(".")[0]
        ports = _free_ports(self.nodes + 1)
        tag = f"sp{os.getpid() % 10000}n"
        self.node_names = [f"{tag}{i + 1}" for i in range(self.nodes)]
        mem_mb = 1024
        try:
            out = subprocess.run(
                ["slurmd", "-C"], capture_output=True, text=True, timeout=30
            ).stdout
            mem_mb = int(int(out.split("RealMemory=")[1].split()[0]) * 0.9 / self.nodes)
        except (IndexError, ValueError, subprocess.SubprocessError):
            pass
        cpus = os.cpu_count() or 2
        dev = self.root / "dev"
        dev.mkdir()
        for i in range(self.gpus_per_node):  # fake GPU device files (char 1,3 = /dev/null)
            try:
                if os.environ.get("SCALEPLAN_TEST_NO_MKNOD"):
                    raise PermissionError("mknod disabled")
                os.mknod(dev / f"nvidia{i}", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
            except PermissionError:  # containers without CAP_MKNOD: task/none only needs the path
                (dev / f"nvidia{i}").touch()
        r = self.root
        nodes = f"{tag}[1-{self.nodes}]"
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=scaleplantest",
                    f"SlurmctldHost={host}(127.0.0.1)",
                    f"SlurmctldPort={ports[0]}",
                    "SlurmUser=root",
                    "AuthType=auth/munge",
                    f"AuthInfo=socket={r}/munge/munge.socket",
                    "CryptoType=crypto/munge",
                    "MpiDefault=none",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_CPU_Memory",
                    "DefMemPerCPU=512",
                    "GresTypes=gpu",
                    "AccountingStorageType=accounting_storage/none",
                    "JobCompType=jobcomp/filetxt",
                    f"JobCompLoc={r}/jobcomp.txt",
                    "ReturnToService=2",
                    "EnforcePartLimits=ALL",
                    "SchedulerParameters=batch_sched_delay=0",
                    "MinJobAge=3600",
                    "KillWait=5",
                    "MailProg=/bin/true",
                    f"StateSaveLocation={r}/state",
                    f"SlurmdSpoolDir={r}/spool-%n",
                    f"SlurmctldPidFile={r}/slurmctld.pid",
                    f"SlurmdPidFile={r}/slurmd-%n.pid",
                    f"SlurmctldLogFile={r}/slurmctld.log",
                    f"SlurmdLogFile={r}/slurmd-%n.log",
                    f"NodeName={nodes} NodeHostname={host} Port=[{ports[1]}-{ports[-1]}] NodeAddr=127.0.0.1 "
                    f"CPUs={cpus} RealMemory={mem_mb} Gres=gpu:{self.gpus_per_node}",
                    "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )
        (self.root / "gres.conf").write_text(
            f"NodeName={nodes} Name=gpu File={dev}/nvidia[0-{self.gpus_per_node - 1}]\n"
        )
        (self.root / "state").mkdir()

    def _start_munge(self) -> None:
        mdir = self.root / "munge"
        mdir.mkdir()
        os.chmod(self.root, 0o755)  # the munge user must reach its folder
        subprocess.run(
            ["mungekey", "--create", "--keyfile", str(mdir / "munge.key")],
            check=True,
            capture_output=True,
        )
        shutil.chown(mdir, "munge", "munge")
        shutil.chown(mdir / "munge.key", "munge", "munge")
        os.chmod(mdir, 0o755)  # munged: the socket folder must be searchable by all
        os.chmod(mdir / "munge.key", 0o400)
        subprocess.run(
            [
                "runuser",
                "-u",
                "munge",
                "--",
                "munged",
                f"--socket={mdir}/munge.socket",
                f"--key-file={mdir}/munge.key",
                f"--pid-file={mdir}/munged.pid",
                f"--log-file={mdir}/munged.log",
                f"--seed-file={mdir}/munged.seed",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        self.munged_pid = int((mdir / "munged.pid").read_text().split()[0])

    def _add_hosts(self) -> None:
        """Node names must resolve (MASTER_ADDR); /etc/hosts may be a bind mount: rewrite in place."""
        hosts = Path("/etc/hosts")
        text = hosts.read_text()
        line = f"127.0.0.1 {' '.join(self.node_names)} {HOSTS_TAG}-{os.getpid()}\n"
        with open(hosts, "w") as f:
            f.write(text + ("" if text.endswith("\n") else "\n") + line)

    def _remove_hosts(self) -> None:
        hosts = Path("/etc/hosts")
        text = hosts.read_text()
        kept = [
            ln
            for ln in text.splitlines(keepends=True)
            if not ln.rstrip().endswith(f"{HOSTS_TAG}-{os.getpid()}")
        ]
        with open(hosts, "w") as f:
            f.write("".join(kept))

    def start(self, timeout_s: float = 60.0) -> SlurmCluster:
        self._write_config()
        self._start_munge()
        self._add_hosts()
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        log = open(self.root / "daemons.out", "ab")  # noqa: SIM115 - closed with the cluster
        self.procs.append(
            subprocess.Popen(
                ["slurmctld", "-D", "-i", "-f", str(self.conf)],
                env=self.env,
                stdout=log,
                stderr=log,
            )
        )
        for name in self.node_names:
            self.procs.append(
                subprocess.Popen(
                    ["slurmd", "-D", "-N", name, "-f", str(self.conf)],
                    env=self.env,
                    stdout=log,
                    stderr=log,
                )
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(
                        f"{p.args[0]} exited with {p.returncode}; see {self.root}/*.log"
                    )
            out = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%T"], env=self.env, capture_output=True, text=True
            ).stdout.split()
            if len(out) == self.nodes and set(out) == {"idle"}:
                return self
            time.sleep(0.25)
        raise RuntimeError(f"Slurm nodes not idle after {timeout_s}s: {out}; see {self.root}")

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(cmd), env=self.env, capture_output=True, text=True, check=check, timeout=60
        )

    def stop(self) -> None:
        if self.env:
            self.run("scancel", "--user=root", check=False)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                left = self.run("squeue", "-h", "-o", "%i %T", check=False).stdout.split("\n")
                if not any(" RUNNING" in ln or " COMPLETING" in ln for ln in left):
                    break
                time.sleep(0.25)
        for p in reversed(self.procs):  # slurmd first, slurmctld last
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        self.procs.clear()
        if self.munged_pid:
            try:
                os.kill(self.munged_pid, signal.SIGTERM)
                for _ in range(100):
                    os.kill(self.munged_pid, 0)
                    time.sleep(0.05)
            except ProcessLookupError:
                pass
            self.munged_pid = None
        if self.node_names:
            self._remove_hosts()
            self.node_names = []
        shutil.rmtree(self.root, ignore_errors=True)

"""A real single-node Slurm cluster on localhost for the tests: munged, slurmctld and slurmd from Debian's
packages (slurm-wlm, munge), with state, spool and logs in a temporary folder. Needs root (slurmd runs
jobs as their user); tests that need it are skipped, with the reason, where the packages are missing."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")


def unavailable_reason() -> str | None:
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return f"Slurm is not installed here (missing {', '.join(missing)}; apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "starting a Slurm cluster needs root (slurmd)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SlurmCluster:
    folder: Path
    conf: Path
    processes: list[subprocess.Popen]

    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *command: str) -> str:
        return subprocess.run(command, check=True, capture_output=True, text=True,
                              env={**os.environ, **self.env()}, timeout=60).stdout

    def stop(self) -> None:
        for p in self.processes:
            p.terminate()
        for p in self.processes:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.folder.glob("*.log")))


def _munge(folder: Path) -> subprocess.Popen | None:
    """munged with its own key and socket when none runs already."""
    socket_path = Path("/run/munge/munge.socket.2")
    if socket_path.exists() and subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
        return None
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        subprocess.run(["mungekey", "--create"], check=True, capture_output=True)
    for path in (Path("/run/munge"), Path("/var/lib/munge"), Path("/var/log/munge")):
        path.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(["munged", "--foreground", "--force"], stdout=subprocess.DEVNULL,
                               stderr=open(folder / "munged.log", "w"))
    for _ in range(50):
        if subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
            return process
        time.sleep(0.1)
    raise RuntimeError(f"munged did not start: {(folder / 'munged.log').read_text()}")


def start_cluster(folder: Path, cpus: int | None = None) -> SlurmCluster:
    folder.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    cpus = cpus or os.cpu_count() or 2
    memory_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
    for sub in ("state", "spool"):
        (folder / sub).mkdir(exist_ok=True)
    conf = folder / "slurm.conf"
    conf.write_text(f"""
ClusterName=tekapbench-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
KillWait=5
MinJobAge=30
InactiveLimit=0
SlurmdTimeout=60
JobRequeue=1
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    processes = []
    munge = _munge(folder)
    if munge is not None:
        processes.append(munge)
    processes.append(subprocess.Popen(["slurmctld", "-D", "-i", "-f", str(conf)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    processes.append(subprocess.Popen(["slurmd", "-D", "-f", str(conf)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    cluster = SlurmCluster(folder, conf, processes)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = subprocess.run(["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True, env=env)
        if out.returncode == 0 and out.stdout.strip() in ("idle", "mix", "alloc"):
            return cluster
        time.sleep(0.5)
    logs = cluster.logs()
    cluster.stop()
    raise RuntimeError(f"the Slurm test cluster did not come up within 60 s:\n{logs}")

"""A real single-node SLURM cluster on this machine for a test: munged, slurmctld and slurmd on localhost.

Debian's ``slurm-wlm`` (``apt-get install slurm-wlm``) provides the daemons; they run in the foreground as
children of the test (stopped by their pids afterwards) with a private ``slurm.conf`` and state directories.
:func:`start` returns the running cluster, or the one-line reason it cannot run here (not root, no apt, the
install failed, a daemon did not come up), for the test to skip with.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SLURM_CONF = """\
ClusterName=datascale
SlurmctldHost={host}
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmUser=root
SlurmdUser=root
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/d
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
NodeName={host} CPUs={cpus} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class SlurmCluster:
    conf: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _install() -> str | None:
    """Install slurm-wlm with apt if it is missing; the reason it is not available otherwise."""
    if shutil.which("slurmctld") and shutil.which("slurmd") and shutil.which("sbatch"):
        return None
    if os.geteuid() != 0:
        return "slurm-wlm is not installed and installing it needs root"
    if not shutil.which("apt-get"):
        return "slurm-wlm is not installed and there is no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "slurm-wlm"]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            return f"`{' '.join(cmd)}` failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_munge(cluster: SlurmCluster) -> str | None:
    if _munge_works():
        return None  # already running (left alone at the end)
    if not Path("/etc/munge/munge.key").exists():
        return "no /etc/munge/munge.key (the slurm-wlm/munge install did not create it)"
    for path in ("/run/munge", "/var/lib/munge", "/var/log/munge"):
        Path(path).mkdir(parents=True, exist_ok=True)
        shutil.chown(path, "munge", "munge")
    cluster.processes.append(subprocess.Popen(["/usr/sbin/munged", "-F"], user="munge"))
    for _ in range(20):
        time.sleep(0.5)
        if _munge_works():
            return None
    return "munged did not start (no credential from `munge -n`)"


def _munge_works() -> bool:
    return (
        shutil.which("munge") is not None
        and subprocess.run(["munge", "-n"], capture_output=True).returncode == 0
    )


def _wait_idle(cluster: SlurmCluster, timeout: float = 60) -> str | None:
    deadline = time.time() + timeout
    env = {**os.environ, **cluster.env()}
    while time.time() < deadline:
        proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=env)
        if proc.returncode == 0 and proc.stdout.strip() in ("idle", "mix"):
            return None
        time.sleep(1)
    return f"the SLURM node did not become idle within {timeout:.0f} s (sinfo: {proc.stdout or proc.stderr})"


def start(workdir: Path) -> SlurmCluster | str:
    """Start a one-node cluster (this host, all its cores) or say why not."""
    reason = _install()
    if reason:
        return reason
    host = socket.gethostname().split(".")[0]
    state = workdir / "slurm-state"
    for sub in ("ctld", "d"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    conf = workdir / "slurm.conf"
    conf.write_text(
        SLURM_CONF.format(
            host=host, state=state, cpus=os.cpu_count(), ctld_port=_free_port(), d_port=_free_port()
        )
    )
    cluster = SlurmCluster(conf)
    reason = _start_munge(cluster)
    if reason is None:
        log = open(workdir / "slurm-daemons.log", "w")  # noqa: SIM115 (kept open for the daemons)
        for daemon in ("slurmctld", "slurmd"):
            cluster.processes.append(
                subprocess.Popen([f"/usr/sbin/{daemon}", "-D", "-f", str(conf)], stdout=log, stderr=log)
            )
            time.sleep(2)
        reason = _wait_idle(cluster)
    if reason:
        cluster.stop()
        return reason
    return cluster

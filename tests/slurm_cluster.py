"""A real single-node SLURM cluster for integration tests, from Debian's packages.

Needs root and ``apt-get install slurm-wlm slurmctld slurmd slurm-client munge`` (``.ci/run``
installs them). There is no systemd here, so the daemons are started directly and stopped by
PID. Run by hand::

    python tests/slurm_cluster.py /tmp/slurm-state   # starts, prints sinfo, stops

What it sets up, and why (facts measured on this machine):

- ``slurm.conf`` at the default path ``/etc/slurm/slurm.conf``: the jobstep plugin strips
  ``SLURM_CONF`` before its inner ``srun``. Any file already there is moved aside and put back.
- ``ProctrackType=proctrack/linuxproc`` and ``TaskPlugin=task/none`` (no cgroups in a container),
  ``DefMemPerCPU`` set, ``MinJobAge`` large so finished jobs stay visible to ``squeue``.
- ``SlurmdParameters=config_overrides``: the node advertises 8 CPUs, 64 GB and ``GPUS`` (4) GPUs (GRES
  with no device files), so the slurm profile's real GPU/memory requests are accepted and
  scheduled as they would be on a cluster; the jobs themselves find no CUDA and run on the CPU.
- Two partitions, ``cpu`` (default) and ``gpu``, as named in ``profiles/slurm``.
- ``jobcomp/filetxt`` writes one line per finished job: the test's proof that jobs ran in SLURM.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

CONF_PATH = Path("/etc/slurm/slurm.conf")
GRES_PATH = Path("/etc/slurm/gres.conf")
DAEMONS = ("munged", "slurmctld", "slurmd")
GPUS = 4  # stand-in GPUs on the test node (GPU jobs wait for one each)


def available() -> str | None:
    """None when a cluster can be started here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "needs root (slurmd runs jobs as their user)"
    missing = [d for d in (*DAEMONS, "sbatch", "squeue") if shutil.which(d) is None]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install slurm-wlm slurm-client munge)"
    return None


def _slurm_conf(state: Path, host: str) -> str:
    return f"""\
ClusterName=sidflow-test
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/d
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SlurmdParameters=config_overrides
GresTypes=gpu
DefMemPerCPU=500
MinJobAge=86400
ReturnToService=2
SchedulerParameters=defer
JobCompType=jobcomp/filetxt
JobCompLoc={state}/jobcomp.txt
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
NodeName={host} NodeAddr=127.0.0.1 CPUs=8 RealMemory=64000 Gres=gpu:{GPUS} State=UNKNOWN
PartitionName=cpu Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
PartitionName=gpu Nodes={host} Default=NO MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
"""


def _wait(predicate, what: str, timeout: float = 30.0, log: Path | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    raise RuntimeError(f"SLURM test cluster: {what} not ready after {timeout:.0f} s\n{tail}")


def _node_idle() -> bool:
    r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return r.returncode == 0 and r.stdout.strip() in {"idle", "idle~", "mixed", "allocated"}


@contextmanager
def slurm_cluster(state: Path):
    """Start munged, slurmctld and slurmd; yield ``state``; stop every daemon by PID."""
    reason = available()
    if reason:
        raise RuntimeError(f"cannot start a SLURM test cluster: {reason}")
    state = Path(state).resolve()
    for sub in ("ctld", "d"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().split(".")[0]
    saved = {}
    for path in (CONF_PATH, GRES_PATH):
        if path.exists():
            saved[path] = path.with_name(path.name + ".sidflow-saved")
            path.replace(saved[path])
    pids: list[int] = []
    try:
        CONF_PATH.parent.mkdir(parents=True, exist_ok=True)
        CONF_PATH.write_text(_slurm_conf(state, host))
        for i in range(GPUS):  # stand-ins for /dev/nvidia<i> (char devices like /dev/null): the
            dev = state / f"gpu{i}"  # GPUs are only scheduled, never used
            if not dev.exists():
                os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        GRES_PATH.write_text(
            f"AutoDetect=off\nNodeName={host} Name=gpu File={state}/gpu[0-{GPUS - 1}]\n"
        )
        # munged runs as user munge, which cannot enter a private temp folder: its socket and
        # PID file stay in /run/munge. One already running (a real host's) is used as it is.
        run_dir = Path("/run/munge")
        alive = subprocess.run(["munge", "-n"], capture_output=True).returncode == 0
        if not alive:
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.chown(run_dir, "munge", "munge")
            pid_file = run_dir / "sidflow-test-munged.pid"
            r = subprocess.run(["munged", "--force", f"--pid-file={pid_file}"], capture_output=True,
                               text=True, user="munge")  # fmt: skip
            if r.returncode:
                raise RuntimeError(f"munged failed to start: {r.stderr.strip()}")
            _wait(pid_file.exists, "munged")
            pids.append(int(pid_file.read_text()))
        subprocess.run(["slurmctld", "-c"], check=True, capture_output=True)
        _wait(lambda: (state / "slurmctld.pid").exists(), "slurmctld", log=state / "slurmctld.log")
        pids.append(int((state / "slurmctld.pid").read_text()))
        subprocess.run(["slurmd"], check=True, capture_output=True)
        _wait(lambda: (state / "slurmd.pid").exists(), "slurmd", log=state / "slurmd.log")
        pids.append(int((state / "slurmd.pid").read_text()))
        _wait(_node_idle, "the node", log=state / "slurmd.log")
        yield state
    finally:
        for pid in reversed(pids):
            _stop(pid)
        for path in (CONF_PATH, GRES_PATH):
            path.unlink(missing_ok=True)
            if path in saved:
                saved[path].replace(path)


def _stop(pid: int, timeout: float = 15.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def jobcomp_records(state: Path) -> list[dict[str, str]]:
    """The finished-job records SLURM wrote (jobcomp/filetxt), one dict per job."""
    path = Path(state) / "jobcomp.txt"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if fields:
            out.append(fields)
    return out


def scontrol_jobs() -> list[dict[str, str]]:
    """Every job slurmctld still knows (all of them: MinJobAge is a day), one dict per job."""
    r = subprocess.run(
        ["scontrol", "-o", "show", "job"], capture_output=True, text=True, check=True
    )
    jobs = []
    for line in r.stdout.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if "JobId" in fields:
            jobs.append(fields)
    return jobs


if __name__ == "__main__":
    with slurm_cluster(Path(sys.argv[1] if len(sys.argv) > 1 else "slurm-state")) as s:
        print(subprocess.run(["sinfo"], capture_output=True, text=True).stdout)
        r = subprocess.run(
            ["sbatch", "--wrap", "hostname", "-p", "gpu", "--gres=gpu:1", "-o", f"{s}/job.out"],
            capture_output=True,
            text=True,
        )
        print(r.stdout, r.stderr)
        _wait(lambda: bool(jobcomp_records(s)), "a job", timeout=30)
        print(jobcomp_records(s))
        print(scontrol_jobs())

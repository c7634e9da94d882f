"""Background processes that `energy-monitor up` starts and `down` stops, safely.

A pid file holds the pid, the process's start time (`/proc/PID/stat`, in clock ticks since
boot) and the boot's id, so a pid the kernel has since given to another process is never
signalled: `var/run` survives reboots, and after one the same pid can start at the same tick. Each component leads a session of its own; `stop` sends SIGTERM
to the leader alone first (the stream job then stops its query while Spark's JVM and Python
workers still run), and only after the grace period the rest of the session, then SIGKILL.
Processes of a session whose leader already died are stopped too, never left orphaned.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# Longer than the longest flush of a stopping component (the producer's 30 s).
STOP_GRACE_S = 45.0
KILL_GRACE_S = 5.0


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat from the 3rd on (after the command name), or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text.rsplit(")", 1)[1].split()


def start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot); None once it has exited (a zombie
    waiting for its parent to reap it runs no more)."""
    fields = _stat(pid)
    return int(fields[19]) if fields and fields[0] != "Z" else None


def session_members(session: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) and int(fields[3]) == session:
            members.append(int(entry.name))
    return members


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


class PidFile:
    def __init__(self, path: Path):
        self.path = path

    def write(self, pid: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(f"{pid} {start_ticks(pid)} {boot_id()}\n")

    def read(self) -> tuple[int, int] | None:
        """(pid, start ticks) of a process started in this boot; None if there is none, or if
        the file is from an earlier boot (its pid names nothing of ours any more)."""
        try:
            pid, ticks, boot = self.path.read_text().split()
            if boot != boot_id():
                return None
            return int(pid), int(ticks)
        except (FileNotFoundError, ValueError):
            return None

    def running(self) -> int | None:
        """The recorded pid, if that very process (same start time) still runs."""
        recorded = self.read()
        if recorded is None:
            return None
        pid, ticks = recorded
        return pid if start_ticks(pid) == ticks else None


def spawn(command: list[str], log_file: Path, max_bytes: int, backups: int) -> subprocess.Popen:
    """Run `command` in a session of its own, its output through a rotating log (logpipe.py)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    subprocess.Popen([sys.executable, "-m", "pipeline.ops.logpipe", str(log_file), str(max_bytes), str(backups)],
                     stdin=process.stdout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)
    process.stdout.close()  # the log pipe holds the only reading end
    return process


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass  # gone meanwhile, or not ours to signal: nothing more to do for it


def _wait_gone(pids: list[int], seconds: float, alive) -> bool:
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def stop(pid_file: PidFile, grace_s: float = STOP_GRACE_S) -> str:
    recorded = pid_file.read()
    if recorded is None:
        pid_file.path.unlink(missing_ok=True)
        return "not running"
    pid, ticks = recorded
    leader_alive = start_ticks(pid) == ticks
    if not leader_alive and start_ticks(pid) is not None:
        pid_file.path.unlink(missing_ok=True)
        return f"not running (stale pid file: pid {pid} is now another process, left alone)"
    outcome = "not running"
    if leader_alive:
        _signal([pid], signal.SIGTERM)
        outcome = "stopped" if _wait_gone([pid], grace_s, lambda p: start_ticks(p) == ticks) else "killed after grace period"
    # What is left of the session: the leader's children, or orphans of a leader that died.
    rest = [p for p in session_members(pid) if (start_ticks(p) or 0) >= ticks]
    if rest:
        _signal(rest, signal.SIGTERM)
        if not _wait_gone(rest, KILL_GRACE_S, lambda p: start_ticks(p) is not None):
            _signal(rest, signal.SIGKILL)
        if outcome == "not running":
            outcome = f"stopped {len(rest)} leftover processes"
    if leader_alive and start_ticks(pid) == ticks:
        _signal([pid], signal.SIGKILL)
    pid_file.path.unlink(missing_ok=True)
    return outcome

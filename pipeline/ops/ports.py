"""Host ports a stack wants, checked before anything starts: who holds a port, in one line.

`python -m pipeline.ports --project NAME` reads `docker-compose config` on stdin and exits 1
with one line per published port that is already taken, naming the service that wants it and
the process that holds it (found through /proc). Ports published by the project's own running
containers are not in the way: `up` on a running stack only recreates what changed.
No pyspark; PyYAML (a development dependency, which docker-compose itself brings) only when
run as that command, since `energy-monitor up` uses `describe` in the app's images too.
"""
from __future__ import annotations

import argparse
import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

_LISTEN = "0A"


def published(config: dict) -> list[tuple[str, str, int]]:
    """(service, host address, port) of every port a rendered compose file publishes."""
    result = []
    for name, service in sorted(config.get("services", {}).items()):
        for port in service.get("ports", []):
            host, number = _host_port(port)
            if number:
                result.append((name, host, number))
    return result


def _host_port(port: dict | str) -> tuple[str, int | None]:
    """The long syntax, or "HOST:PUBLISHED:TARGET", "PUBLISHED:TARGET", "TARGET" (none published)."""
    if isinstance(port, dict):
        host, number = port.get("host_ip", "0.0.0.0"), port.get("published")
    else:
        parts = str(port).split(":")
        host = parts[0] if len(parts) == 3 else "0.0.0.0"
        number = parts[-2] if len(parts) >= 2 else None
    return host, int(str(number).split("/")[0]) if number else None


def in_use(host: str, port: int) -> bool:
    """Whether binding host:port fails as the engine's proxy would (SO_REUSEADDR, as Go sets it,
    so a connection in TIME_WAIT does not count)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == _LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def holder(port: int) -> int | None:
    """The pid of a process listening on `port`, if /proc lets us see it."""
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not wanted:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in wanted for fd in (entry / "fd").iterdir()):
                return int(entry.name)
        except OSError:
            continue  # gone meanwhile, or another user's: look at the next process
    return None


def _command(pid: int) -> str:
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(w.decode(errors="replace") for w in words if w)
    return text if len(text) <= 80 else text[:77] + "..."


def _session(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, ValueError, IndexError):
        return None


def local_stack_sessions(var_dir: Path) -> set[int]:
    """Session ids of the components `energy-monitor up` started (each leads its own session;
    its pid file's first field is the leader's pid)."""
    sessions = set()
    for pid_file in (var_dir / "run").glob("*.pid"):
        try:
            sessions.add(int(pid_file.read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            continue  # unreadable pid file: it names no running component
    return sessions


def describe(port: int, var_dir: Path) -> str:
    """Who holds `port`, for an error line."""
    pid = holder(port)
    if pid is None:
        return "by a process this user cannot see"
    text = f"by pid {pid} ({_command(pid)})"
    if _session(pid) in local_stack_sessions(var_dir):
        return text + ", this project's local stack: `energy-monitor down` frees it"
    if _command(pid).startswith(("/usr/bin/docker-proxy", "docker-proxy", "/usr/sbin/docker-proxy")):
        return text + ", a container's published port: `docker ps` shows which"
    return text


def _own_ports(project: str) -> set[int]:
    """Host ports that the project's running containers publish."""
    try:
        listed = subprocess.run(["docker", "ps", "--filter", f"label=com.docker.compose.project={project}",
                                 "--format", "{{.Ports}}"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return set()
    ports = set()
    for mapping in listed.stdout.replace("\n", ",").split(","):
        if "->" in mapping:
            ports.add(int(mapping.split("->")[0].rsplit(":", 1)[1]))
    return ports


def conflicts(config: dict, project: str, var_dir: Path) -> list[str]:
    own = _own_ports(project)
    return [f"port {host}:{port}, which service {service} publishes, is already in use "
            f"{describe(port, var_dir)}; nothing was started"
            for service, host, port in published(config) if port not in own and in_use(host, port)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check that the host ports a compose file publishes are free "
                                                 "(reads `docker-compose config` on stdin).")
    parser.add_argument("--project", required=True, help="compose project name (its own containers' ports are fine)")
    parser.add_argument("--var-dir", default="var", help="the local stack's VAR_DIR, to recognise its processes")
    args = parser.parse_args(argv)
    import yaml

    try:
        config = yaml.safe_load(sys.stdin.read()) or {}
    except yaml.YAMLError as error:
        print(f"ports: the compose config on stdin is not YAML: {error}", file=sys.stderr)
        return 2
    lines = conflicts(config, args.project, Path(args.var_dir))
    for line in lines:
        print(line, file=sys.stderr)
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())

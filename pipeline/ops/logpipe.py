"""Copies standard input to a size-capped log file, rotating it: `FILE`, `FILE.1` … `FILE.N`.

`energy-monitor up` pipes every component's output through this, so a log never grows past
LOG_MAX_BYTES × (LOG_BACKUPS + 1) whatever the component (JVM, Prometheus, Python) writes.
It ends when every writer has closed the pipe, and ignores SIGTERM/SIGINT so a stopping
component's last lines are still written.

    python -m pipeline.ops.logpipe FILE MAX_BYTES BACKUPS
"""
from __future__ import annotations

import signal
import sys
from pathlib import Path


def rotate(path: Path, backups: int) -> None:
    for n in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{n + 1}"))
    if path.exists():
        path.replace(path.with_name(f"{path.name}.1"))


def copy(source, path: Path, max_bytes: int, backups: int) -> None:
    out = path.open("ab")
    size = out.tell()
    try:
        for line in iter(lambda: source.readline(max_bytes), b""):
            if size + len(line) > max_bytes and size > 0:
                out.close()
                rotate(path, backups)
                out, size = path.open("ab"), 0
            out.write(line)
            out.flush()
            size += len(line)
    finally:
        out.close()


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    path, max_bytes, backups = Path(argv[0]), int(argv[1]), int(argv[2])
    path.parent.mkdir(parents=True, exist_ok=True)
    copy(sys.stdin.buffer, path, max_bytes, backups)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

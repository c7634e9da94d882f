"""The job's runs as its checkpoint directory remembers them: the batch each run that died was in,
and why, so that a job dying in the same batch again and again says so at its next start, and
how it can get past that batch without passing over its readings.

Spark writes a batch's offsets (`offsets/N`) before it runs the batch and `commits/N` after; a
batch with offsets and no commit is the one a restarted job runs again, with the same offsets.
A run notes in RUNS_FILE that it is running; a run that ends with an error notes the batch and the
cause, and a run that leaves the note behind (killed, or its machine stopped) is counted as dying
in the batch that is still pending at the next start.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.checkpoint import pending_batch, source_offsets

log = logging.getLogger(__name__)

RUNS_FILE = "energy-runs.json"
UNSAID = "the run ended without saying why (killed, or its machine stopped)"
_KEEP = 10  # deaths remembered, all in one batch


@dataclass(frozen=True)
class CrashLoop:
    """Runs that died in one batch, more than once."""

    batch: int
    deaths: int
    cause: str
    readings: int | None  # the batch's readings, from its offsets

    def line(self, memory: tuple[str, str], max_offsets: int) -> str:
        """`memory`: the setting that sizes the state's JVMs and its value."""
        size = f"its {self.readings:,} readings" if self.readings is not None else "it"
        return (f"crash loop: the stream job died {self.deaths} times in batch {self.batch} (last cause: {self.cause}); "
                f"it runs the batch again and never skips it: raise {memory[0]} (now {memory[1]}), or "
                f"set MAX_OFFSETS_PER_TRIGGER (now {max_offsets:,}) below {size} to run them in smaller batches "
                "(docs/operations.md, 'A job that dies in the same batch')")


def batch_readings(checkpoint: Path, batch: int) -> int | None:
    """How many records batch `batch` reads, from its offsets and the ones before it."""
    end, start = source_offsets(checkpoint, batch), source_offsets(checkpoint, batch - 1)
    if not end or start is None:
        return None
    return sum(int(offset) - int(start.get(topic, {}).get(partition, 0))
               for topic, partitions in end.items() for partition, offset in partitions.items())


class RunRecord:
    """RUNS_FILE of one checkpoint directory: whether a run is going on, and the runs that died in
    the pending batch."""

    def __init__(self, checkpoint: Path):
        self.checkpoint = checkpoint
        self.path = checkpoint / RUNS_FILE

    def _load(self) -> dict:
        try:
            record = json.loads(self.path.read_text())
            if isinstance(record, dict) and isinstance(record.get("deaths"), list):
                return record
        except FileNotFoundError:
            return {"running": False, "deaths": []}
        except (OSError, ValueError):
            pass
        log.warning("%s is unreadable: the job's earlier deaths are forgotten", self.path)
        return {"running": False, "deaths": []}

    def _save(self, running: bool, deaths: list[dict]) -> None:
        self.path.write_text(json.dumps({"running": running, "deaths": deaths[-_KEEP:]}) + "\n")

    def begin(self) -> CrashLoop | None:
        """A run starts: the crash loop it is in, if its batch killed runs before it."""
        record, batch = self._load(), pending_batch(self.checkpoint)
        deaths = [d for d in record["deaths"] if d.get("batch") == batch] if batch is not None else []
        if record.get("running") and batch is not None:
            deaths.append({"batch": batch, "cause": UNSAID})
        self._save(True, deaths)
        if len(deaths) < 2:
            return None
        return CrashLoop(batch, len(deaths), str(deaths[-1].get("cause")), batch_readings(self.checkpoint, batch))

    def end(self, cause: str | None) -> None:
        """A run ends: cleanly (None), or with the cause of its death."""
        record, batch = self._load(), pending_batch(self.checkpoint)
        deaths = [d for d in record["deaths"] if d.get("batch") == batch] if batch is not None else []
        if cause is not None and batch is not None:
            deaths.append({"batch": batch, "cause": cause})
        self._save(False, deaths)

    def replan(self, loop: CrashLoop, max_offsets: int) -> bool:
        """Let Spark plan the stuck batch again, under MAX_OFFSETS_PER_TRIGGER, when that is now
        below the batch's size: its offsets were only a plan (nothing committed them), and the
        batch before it is where the restarted job reads on from."""
        if loop.readings is None or loop.readings <= max_offsets:
            return False
        for name in (str(loop.batch), f".{loop.batch}.crc"):
            (self.checkpoint / "offsets" / name).unlink(missing_ok=True)
        log.warning("batch %d (%d readings) is planned again, at most %d readings a batch", loop.batch,
                    loop.readings, max_offsets)
        return True


_CAUSES = (
    (re.compile(r"OutOfMemoryError: ([^\n]+)|OutOfDirectMemoryError|OutOfMemoryException"), "out of memory"),
    (re.compile(r"\bMemoryError\b"), "out of memory in a Python worker"),
    (re.compile(r"kafka\.common\.errors\.(TimeoutException|NetworkException|DisconnectException)"),
     "Kafka unreachable"),
)


def cause_of(text: str, jvm_exit: int | None = None) -> str:
    """A failure's cause in a few words, from its text (the query's exception, or the JVM's
    last words) and the JVM's exit code if it exited: 52 is Spark's out-of-memory exit."""
    for pattern, cause in _CAUSES:
        match = pattern.search(text)
        if match:
            detail = match.group(1) if match.groups() and match.group(1) else ""
            return f"{cause} ({detail.strip()})" if detail else cause
    if jvm_exit == 52:
        return "out of memory"
    if jvm_exit is not None:
        return f"the Spark JVM exited with code {jvm_exit}"
    first = text.strip().splitlines()[0] if text.strip() else "unknown"
    return first[:300]

"""The job's checkpoint directory: its name, from everything that shapes the job's state, and
what Spark writes in it, read back: the batches planned (`offsets/N`, written before a batch
runs) and committed (`commits/N`, after), and the Kafka offsets of each. The job (its runs'
record) and the exporter (the job's lag per partition) read it; only Spark writes those logs."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pipeline.core.rules.blob import STATE_FORMAT
from pipeline.core.settings import JobSettings


def checkpoint_dir(job: JobSettings) -> Path | str:
    """A checkpoint per everything that shapes the job's state, so a mode or window switch
    starts a fresh state of its own and switching back resumes the old one. The scoring
    parameters (THRESHOLD_KWH, the baseline's allowance, persistence and warm-up) are not part of it:
    changing them keeps what the baseline learned (the state notes which rule its alerted
    windows belong to)."""
    rule, kafka = job.rule, job.kafka
    learning = job.baseline.learning_shape if job.baseline else "off"
    shape = "|".join(str(v) for v in (
        rule.window_s, rule.slide_s, rule.watermark_s, job.readings.max_reading_kwh, learning,
        job.state_buckets, job.shuffle_partitions, kafka.readings_topic, kafka.alerts_topic,
        kafka.dlq_topic, STATE_FORMAT, job.state_operator))
    digest = hashlib.sha256(shape.encode()).hexdigest()[:10]
    name = f"{rule.mode}-w{rule.window_s}-s{rule.slide_s}-wm{rule.watermark_s}-{digest}"
    if "://" in job.checkpoint_root:  # s3a://, hdfs://: Spark's storage, not a local folder
        return f"{job.checkpoint_root.rstrip('/')}/{name}"
    return Path(job.checkpoint_root) / name


def other_checkpoints(checkpoint: Path) -> list[str]:
    """The names of the other checkpoints of the same mode, window, slide and watermark beside
    `checkpoint`: those of another state layout, state operator or other settings."""
    prefix = checkpoint.name.rsplit("-", 1)[0] + "-"
    folder = checkpoint.parent
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name.startswith(prefix)
                  and p.name != checkpoint.name) if folder.is_dir() else []


def batch_ids(checkpoint: Path, log: str) -> set[int]:
    """The batches of one of Spark's logs: `offsets` (planned) or `commits`."""
    folder = checkpoint / log
    return {int(p.name) for p in folder.iterdir() if p.name.isdigit()} if folder.is_dir() else set()


def pending_batch(checkpoint: Path) -> int | None:
    """The batch Spark planned but has not committed, if any."""
    planned = batch_ids(checkpoint, "offsets")
    if not planned or max(planned) in batch_ids(checkpoint, "commits"):
        return None
    return max(planned)


def source_offsets(checkpoint: Path, batch: int) -> dict[str, dict[str, int]] | None:
    """The Kafka offsets batch `batch` reads up to (its offset log's last line, the source's), or
    for batch -1 those the query started from (the source's initial offsets)."""
    path = checkpoint / "offsets" / str(batch) if batch >= 0 else checkpoint / "sources" / "0" / "0"
    try:
        lines = path.read_text().splitlines()
        return json.loads(lines[-1] if batch >= 0 else lines[1])
    except (OSError, IndexError, ValueError):
        return None


def committed_offsets(checkpoint: Path) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the next offset the job reads: the offsets of the newest committed
    batch. Empty before the first commit."""
    commits = batch_ids(checkpoint, "commits")
    offsets = source_offsets(checkpoint, max(commits)) if commits else None
    return {(topic, int(p)): int(o) for topic, parts in (offsets or {}).items() for p, o in parts.items()}

"""The durable history: two Delta Lake tables under HISTORY_ROOT, read and written without a JVM.

- `alerts`: one row per `alert_id`, ever. Rows are MERGEd on `alert_id`, so an alert the
  at-least-once Kafka sink delivered twice is stored once.
- `energy`: kWh per household per slot (SLIDE_DURATION), as partial sums: each archiver commit
  appends the sums of the readings it consumed, and readers add them up. Compaction rewrites
  closed days to one row per (household, slot).

Both are partitioned by UTC day (`day`), which retention drops whole. Each commit also records,
as Delta app transactions, the next Kafka offset of every partition it consumed, in the same
atomic commit as the rows: a restarted archiver resumes exactly there, so no reading is counted
twice and none is skipped (archiver.py).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pa_fs

from pipeline.core import alert
from pipeline.core.settings import KWH_UNITS

log = logging.getLogger(__name__)

_TS = pa.timestamp("us", tz="UTC")
# Each alert field's column (core/alert.py): Arrow type, and the Delta type a table written before
# the field existed gains it as (null in its old rows).
_COLUMN_TYPES = {"text": (pa.string(), "string"), "number": (pa.float64(), "double"),
                 "count": (pa.int64(), "long"), "time": (_TS, "timestamp")}
ALERTS_SCHEMA = pa.schema([(f.name, _COLUMN_TYPES[f.type][0]) for f in alert.FIELDS] + [("day", pa.string())])
_TIMES = [f.name for f in alert.FIELDS if f.type == "time"]
_COUNTS = [f.name for f in alert.FIELDS if f.type == "count"]
ENERGY_SCHEMA = pa.schema([
    ("household_id", pa.string()), ("slot_start", _TS), ("kwh", pa.float64()), ("readings", pa.int64()),
    ("day", pa.string()),
])
_STAMP = "%Y-%m-%dT%H:%M:%SZ"
# A commit every few seconds is thousands a day: checkpoint the log every 100 commits and drop
# log entries older than a day, so opening a table stays fast.
TABLE_PROPERTIES = {"delta.checkpointInterval": "100", "delta.logRetentionDuration": "interval 1 days",
                    "delta.enableExpiredLogCleanup": "true"}


class HistoryUnavailable(RuntimeError):
    """The store cannot be read or written (unreachable, refused, not a Delta table)."""


@dataclass(frozen=True)
class AlertQuery:
    household: str | None = None
    since: datetime | None = None  # window_start >= since
    until: datetime | None = None  # window_start < until
    limit: int | None = None  # the newest N


def day_of(stamps: pd.Series) -> pd.Series:
    return stamps.dt.strftime("%Y-%m-%d")


def alerts_table(alerts: list[dict]) -> pa.Table:
    """Alert documents (as on the topic) -> rows of the alerts table."""
    frame = pd.DataFrame(alerts, columns=alert.NAMES)
    for name in _TIMES:
        frame[name] = pd.to_datetime(frame[name], utc=True, format="ISO8601").astype("datetime64[us, UTC]")
    frame["day"] = day_of(frame[alert.WINDOW_END.name])
    frame[alert.KIND.name] = frame[alert.KIND.name].fillna(alert.DEFAULT_KIND.value)
    for name in _COUNTS:
        frame[name] = frame[name].astype("Int64")
    return pa.Table.from_pandas(frame, schema=ALERTS_SCHEMA, preserve_index=False)


def energy_table(frame: pd.DataFrame) -> pa.Table:
    """(household_id, slot_start epoch s, kwh, readings) -> rows of the energy table."""
    out = frame.assign(slot_start=pd.to_datetime(frame.slot_start, unit="s", utc=True).astype("datetime64[us, UTC]"))
    out["day"] = day_of(out.slot_start)
    return pa.Table.from_pandas(out[ENERGY_SCHEMA.names], schema=ENERGY_SCHEMA, preserve_index=False)


def alert_documents(frame: pd.DataFrame) -> list[dict]:
    """Rows of the alerts table -> alert documents with the topic's field formats."""
    explaining = [f.name for f in alert.EXPLAINING]
    out = frame.reindex(columns=alert.NAMES).astype({name: object for name in explaining})
    for name in _TIMES:
        out[name] = out[name].dt.strftime(_STAMP).fillna("")
    out[alert.KIND.name] = out[alert.KIND.name].fillna(alert.DEFAULT_KIND.value)
    records = out.to_dict("records")
    for record in records:  # an alert has only its own kind's fields, as on the topic
        for name in explaining:
            value = record[name]
            if value is None or value is pd.NA or (isinstance(value, float) and value != value):
                del record[name]
            elif name in _COUNTS:
                record[name] = int(value)
    return records


@dataclass(frozen=True)
class LearningWindows:
    """The energy table as the baseline rule's learning windows: per (household, window j) the
    sum in integer units, and the newest slot seen (epoch seconds)."""

    household_id: np.ndarray  # str
    j: np.ndarray
    units: np.ndarray
    newest_s: int


class HistoryStore:
    """Both tables under one root (a folder or an object-store URI such as s3a://bucket/path;
    credentials for object stores come from the usual AWS_* variables)."""

    def __init__(self, root: str):
        self.root = root.rstrip("/")

    def _uri(self, table: str) -> str:
        return f"{self.root}/{table}"

    def _open(self, table: str):
        """The table, or None when it does not exist yet."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(self._uri(table))
        except TableNotFoundError:
            if "://" not in self.root and Path(self.root).exists() and not Path(self.root).is_dir():
                raise HistoryUnavailable(f"{self.root} is not a folder") from None
            return None
        except Exception as exc:  # delta-rs has no common base for I/O, object-store and log errors
            raise HistoryUnavailable(f"cannot open {self._uri(table)}: {_first_line(exc)}") from exc

    def _dataset(self, table: str, delta):
        """The table's current files as an Arrow dataset. A local table is read through Arrow's
        own file system: through delta-rs's default one, Arrow's I/O threads call back into
        Python, and a process that had read a table with many files aborted at interpreter exit
        ("terminate called without an active exception") in 30 of 50 runs (docs/decisions/0007-delta-rs-history.md).
        Object stores keep delta-rs's file system, which knows their credentials and endpoints."""
        if "://" in self.root:
            return delta.to_pyarrow_dataset()
        local = pa_fs.SubTreeFileSystem(str(Path(self._uri(table)).resolve()), pa_fs.LocalFileSystem())
        return delta.to_pyarrow_dataset(filesystem=local)

    def create(self) -> None:
        """Create both tables if missing (empty, with their schemas and day partitions)."""
        from deltalake import DeltaTable

        for table, schema in (("alerts", ALERTS_SCHEMA), ("energy", ENERGY_SCHEMA)):
            existing = self._open(table)
            if existing is not None and table == "alerts":
                self._add_missing_columns(existing)
            if existing is None:
                try:
                    DeltaTable.create(self._uri(table), schema=schema, partition_by=["day"], mode="ignore",
                                      configuration=TABLE_PROPERTIES)
                except Exception as exc:  # delta-rs: no common base for I/O and object-store errors
                    raise HistoryUnavailable(f"cannot create {self._uri(table)}: {_first_line(exc)}") from exc

    def _add_missing_columns(self, delta) -> None:
        """An alerts table written before some alert fields existed gains their columns (null in old rows)."""
        from deltalake import Field

        have = set(delta.schema().to_arrow().names)
        missing = [Field(f.name, _COLUMN_TYPES[f.type][1], nullable=True) for f in alert.FIELDS if f.name not in have]
        if missing:
            try:
                delta.alter.add_columns(missing)
            except Exception as exc:  # delta-rs: no common base for I/O and object-store errors
                raise HistoryUnavailable(f"cannot add columns to {self._uri('alerts')}: {_first_line(exc)}") from exc
            log.info("alerts table: added columns %s", ", ".join(f.name for f in missing))

    # Writing (the archiver is the only writer).

    def next_offsets(self, table: str, topic: str, partitions: list[int]) -> dict[int, int]:
        """partition -> the first offset no commit of `table` has consumed yet (0 when none)."""
        delta = self._open(table)
        if delta is None:
            return {p: 0 for p in partitions}
        return {p: delta.transaction_version(f"{topic}:{p}") or 0 for p in partitions}

    def commit(self, table: str, rows: pa.Table, topic: str, next_offsets: dict[int, int]) -> int:
        """Write `rows` (alerts: merged on alert_id; energy: appended) and record the offsets,
        in one Delta commit. Returns the rows inserted."""
        from deltalake import CommitProperties, Transaction, write_deltalake

        props = CommitProperties(app_transactions=[Transaction(f"{topic}:{p}", o) for p, o in next_offsets.items()])
        delta = self._open(table)
        try:
            if table == "energy":
                write_deltalake(delta, rows, mode="append", commit_properties=props)
                return rows.num_rows
            result = (delta.merge(rows, "t.alert_id = s.alert_id AND t.day = s.day", source_alias="s",
                                  target_alias="t", commit_properties=props)
                      .when_not_matched_insert_all().execute())
        except Exception as exc:  # delta-rs: object-store, I/O and commit-conflict errors
            raise HistoryUnavailable(f"writing {self._uri(table)}: {_first_line(exc)}") from exc
        return int(result["num_target_rows_inserted"])

    def maintain(self, retention_days: int) -> dict[str, int]:
        """Drop days more than `retention_days` before the table's newest day up to tomorrow
        (event time, so replayed old data is kept as long as live data), fold closed days of `energy` to one row
        per (household, slot), compact small files, and delete files unreferenced for an hour
        (a reader still on an older version keeps its files)."""
        done = {"days_dropped": 0, "days_folded": 0, "files_compacted": 0}
        for table in ("alerts", "energy"):
            delta = self._open(table)
            days = sorted({p["day"] for p in delta.partitions()}) if delta is not None else []
            if not days:
                continue
            # A day stamped ahead of tomorrow (a bad sender's record that got in) never moves the
            # cutoff: retention must not drop real days.
            tomorrow = (datetime.now(timezone.utc) + timedelta(days=1)).strftime("%Y-%m-%d")
            newest = datetime.fromisoformat(min(days[-1], tomorrow))
            cutoff = (newest - timedelta(days=retention_days)).strftime("%Y-%m-%d")
            if days[0] < cutoff:
                delta.delete(f"day < '{cutoff}'")
                done["days_dropped"] += sum(d < cutoff for d in days)
            if table == "energy":
                for day in (d for d in days if cutoff <= d < days[-1]):
                    done["days_folded"] += self._fold_day(delta, day)
            done["files_compacted"] += delta.optimize.compact()["numFilesRemoved"]
            delta.vacuum(retention_hours=1, enforce_retention_duration=False, dry_run=False)
        return done

    def _fold_day(self, delta, day: str) -> int:
        """Rewrite a closed day of `energy` as one row per (household, slot), sorted by household
        so a one-household read skips most row groups. 1 if rewritten."""
        from deltalake import write_deltalake

        part = self._dataset("energy", delta).to_table(filter=pc.field("day") == day)
        folded = fold_energy(part.to_pandas())
        if len(folded) == part.num_rows:
            return 0
        rows = pa.Table.from_pandas(folded[ENERGY_SCHEMA.names], schema=ENERGY_SCHEMA, preserve_index=False)
        write_deltalake(delta, rows, mode="overwrite", predicate=f"day = '{day}'")
        return 1

    def learning_windows(self, window_s: int) -> LearningWindows | None:
        """The energy table summed per (household, learning window of `window_s`); None when it
        holds no energy. Read a file batch at a time and summed as it goes, so memory holds
        households x windows, not every slot row."""
        delta = self._open("energy")
        if delta is None:
            return None
        parts, newest = [], None
        for batch in self._dataset("energy", delta).to_batches(columns=["household_id", "slot_start", "kwh"]):
            if not batch.num_rows:
                continue
            seconds = pc.cast(batch.column("slot_start").cast(pa.timestamp("s", tz="UTC")), pa.int64()).to_numpy()
            newest = max(newest or 0, int(seconds.max()))
            # A stored sum is of readings with at most 9 decimals: it rounds back to exact units.
            frame = pd.DataFrame({"household_id": batch.column("household_id").to_pandas(), "j": seconds // window_s,
                                  "units": np.rint(batch.column("kwh").to_numpy() * KWH_UNITS).astype(np.int64)})
            parts.append(frame.groupby(["household_id", "j"], as_index=False).units.sum())
        if not parts:
            return None
        sums = pd.concat(parts, ignore_index=True).groupby(["household_id", "j"], as_index=False).units.sum()
        return LearningWindows(sums.household_id.to_numpy(), sums.j.to_numpy(np.int64),
                               sums.units.to_numpy(np.int64), newest)

    # Reading (the CLI and the view; consistent snapshots while the archiver writes).

    def alerts(self, query: AlertQuery = AlertQuery()) -> pd.DataFrame:
        """Matching alerts, oldest window first; with a limit, the newest `limit` of them. Only
        the columns needed to find them are read in full, the other columns only for them."""
        delta = self._open("alerts")
        if delta is None:
            return ALERTS_SCHEMA.empty_table().to_pandas()
        dataset = self._dataset("alerts", delta)
        condition = _all(_alert_filters(query))
        if query.limit is not None:
            starts = dataset.to_table(columns=["window_start"], filter=condition).column("window_start")
            if len(starts) > query.limit:
                cutoff = pc.select_k_unstable(starts, query.limit, [("window_start", "descending")])
                condition = _all([condition, pc.field("window_start") >= pc.min(starts.take(cutoff))])
        frame = dataset.to_table(filter=condition).to_pandas()
        # Rows written before the baseline rule have no kind (a table that gained the column: null).
        kind = alert.KIND.name
        frame[kind] = frame[kind].fillna(alert.DEFAULT_KIND.value) if kind in frame else alert.DEFAULT_KIND.value
        frame = frame.sort_values(["window_start", "household_id", "kind"], kind="stable", ignore_index=True)
        return frame.tail(query.limit).reset_index(drop=True) if query.limit is not None else frame

    def alert_counts(self, period: timedelta, by_hour: bool = False) -> pd.DataFrame:
        """Alerts per household (and per UTC hour of the window start) over the `period` before
        the newest alert's window start: household_id, [hour,] alerts."""
        delta = self._open("alerts")
        columns = ["household_id", "hour", "alerts"] if by_hour else ["household_id", "alerts"]
        if delta is None:
            return pd.DataFrame(columns=columns)
        dataset = self._dataset("alerts", delta)
        newest_day = max(p["day"] for p in delta.partitions()) if delta.partitions() else None
        if newest_day is None:
            return pd.DataFrame(columns=columns)
        newest = pc.max(dataset.to_table(columns=["window_start"], filter=pc.field("day") == newest_day)
                        .column("window_start"))
        since = pa.scalar(newest.as_py() - period, type=_TS)
        table = dataset.to_table(columns=["household_id", "window_start"], filter=pc.field("window_start") >= since)
        keys = ["household_id"]
        if by_hour:
            table = table.append_column("hour", pc.hour(table.column("window_start")))
            keys.append("hour")
        counts = table.group_by(keys).aggregate([("window_start", "count")]).to_pandas()
        return counts.rename(columns={"window_start_count": "alerts"})[columns]

    def energy(self, household: str, hours: float = 24.0) -> pd.DataFrame:
        """kWh per slot of one household over the `hours` up to its newest slot: slot_start,
        kwh, readings. Only the newest days' partitions are read."""
        delta = self._open("energy")
        empty = pd.DataFrame(columns=["slot_start", "kwh", "readings"])
        days = sorted({p["day"] for p in delta.partitions()}) if delta is not None else []
        if not days:
            return empty
        first_day = (datetime.fromisoformat(days[-1]) - timedelta(hours=hours)).strftime("%Y-%m-%d")
        condition = (pc.field("day") >= first_day) & (pc.field("household_id") == household)
        frame = fold_energy(self._dataset("energy", delta).to_table(filter=condition).to_pandas())
        if frame.empty:
            return empty
        frame = frame[frame.slot_start > frame.slot_start.max() - timedelta(hours=hours)]
        return frame[["slot_start", "kwh", "readings"]].sort_values("slot_start", ignore_index=True)

def _first_line(exc: Exception) -> str:
    """delta-rs errors span many lines with terminal colours; the cause is in the first ones."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    return " ".join(line.strip(" ↳") for line in text.splitlines()[:3] if line.strip())[:300]


def _all(conditions: list):
    """The conjunction of dataset filter expressions (None: no filter)."""
    conditions = [c for c in conditions if c is not None]
    out = conditions[0] if conditions else None
    for condition in conditions[1:]:
        out = out & condition
    return out


def _alert_filters(query: AlertQuery) -> list:
    parts = []
    if query.household:
        parts.append(pc.field("household_id") == query.household)
    if query.since:
        parts.append(pc.field("window_start") >= pa.scalar(query.since, type=_TS))
    if query.until:
        parts.append(pc.field("window_start") < pa.scalar(query.until, type=_TS))
    return parts


def fold_energy(frame: pd.DataFrame) -> pd.DataFrame:
    """Partial sums -> one row per (household, slot)."""
    if frame.empty:
        return frame.reindex(columns=ENERGY_SCHEMA.names)
    folded = frame.groupby(["household_id", "slot_start"], as_index=False).agg(
        kwh=("kwh", "sum"), readings=("readings", "sum"))
    folded["day"] = day_of(folded.slot_start)
    return folded


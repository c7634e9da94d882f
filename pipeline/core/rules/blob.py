"""The layout the job's state blobs share (the pane table, the baseline state): a header of
named int64 fields, the first of them `format`, then columns, each packed in its own dtype, in a
fixed order."""
from __future__ import annotations

import numpy as np

# The layout of the job's state: the pane table's and the baseline's encodings and the state
# buckets' keys. Part of the checkpoint's name, so a new layout starts a checkpoint of its own
# instead of misreading an old one.
STATE_FORMAT = 9


class BlobReader:
    def __init__(self, blob: bytes, fields: tuple[str, ...], expected_format: int, what: str):
        self.header = dict(zip(fields, np.frombuffer(blob, dtype=np.int64, count=len(fields)).tolist()))
        if self.header["format"] != expected_format:
            raise ValueError(f"{what} in format {self.header['format']}, this version reads {expected_format}: "
                             "it belongs to another version's checkpoint")
        self._blob, self._at = blob, 8 * len(fields)

    def column(self, kind, count: int) -> np.ndarray:
        """The next `count` values of dtype `kind` (a read-only view of the blob)."""
        values = np.frombuffer(self._blob, dtype=kind, count=count, offset=self._at)
        self._at += np.dtype(kind).itemsize * count
        return values

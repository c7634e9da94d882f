"""Spark's Python worker daemon (`spark.python.daemon.module`), importing pyspark from the
installed package instead of the copy zipped in it.

Spark puts pyspark.zip and py4j's zip first on every worker's path. Each task a worker runs
calls importlib.invalidate_caches(), which re-reads both zips' directories: about 55 ms here,
paid by every Python task of every micro-batch (py-spy showed it among the top costs of a
batch). The installed package is the same release, so it is used when it is importable;
otherwise the zips stay.
"""
from __future__ import annotations

import sys
from pathlib import Path


def _is_spark_zip(entry: str) -> bool:
    name = Path(entry).name
    return name == "pyspark.zip" or (name.startswith("py4j-") and name.endswith(".zip"))


def main() -> None:
    saved = list(sys.path)
    sys.path[:] = [entry for entry in sys.path if not _is_spark_zip(entry)]
    try:
        from pyspark import daemon
    except ImportError:
        sys.path[:] = saved
        from pyspark import daemon
    daemon.manager()


if __name__ == "__main__":
    main()

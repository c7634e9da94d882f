"""Spark's Python worker daemon (`spark.python.daemon.module`), importing pyspark from the
installed package instead of the archives Spark puts on the workers' path, and quiet about one
pandas warning that pyspark's own code raises on every batch.

Spark puts pyspark.zip, py4j's zip and the spark-core jar first on every worker's path. Each
task a worker runs calls importlib.invalidate_caches(), which makes every cached zip importer
re-read its archive's directory: the jar alone holds thousands of entries. py-spy put this
at about 40% of the Python workers' time in a live batch. The installed package is the same
release, so it is used when it is importable; otherwise the path stays as Spark set it.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path


def _is_spark_archive(entry: str) -> bool:
    name = Path(entry).name
    return name == "pyspark.zip" or (name.startswith("py4j-") and name.endswith(".zip")) or name.endswith(".jar")


def main() -> None:
    # pyspark's Arrow serializer concatenates the frames the state function returns, and pandas
    # 2.2 warns about their all-null columns on every batch; the workers this daemon forks inherit it.
    warnings.filterwarnings("ignore", category=FutureWarning,
                            message="The behavior of DataFrame concatenation with empty or all-NA entries")
    saved, cached = list(sys.path), dict(sys.path_importer_cache)
    sys.path[:] = [entry for entry in sys.path if not _is_spark_archive(entry)]
    # Finding this module already cached an importer per archive, and invalidate_caches()
    # visits every cached importer, on the path or not.
    for entry in [entry for entry in sys.path_importer_cache if _is_spark_archive(entry.split(".jar/")[0])]:
        del sys.path_importer_cache[entry]
    try:
        from pyspark import daemon
    except ImportError:
        sys.path[:] = saved
        sys.path_importer_cache.update(cached)
        from pyspark import daemon
    daemon.manager()


if __name__ == "__main__":
    main()

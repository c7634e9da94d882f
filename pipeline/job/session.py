"""The job's Spark session: where its jars and Python come from, its state store, its memory."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from pipeline.core.settings import PROJECT_ROOT, JobSettings, jvm_bytes

SPARK_JARS_DIR = PROJECT_ROOT / ".cache" / "jars" / "spark"
STATE_JAR = PROJECT_ROOT / ".cache" / "jars" / "energy" / "energy-state.jar"  # jvm/, built by scripts/bootstrap.sh
SPARK_LOG_CONFIG = Path(__file__).with_name("spark-log4j2.properties")
STATE_STORE_PROVIDER_CONF = "spark.sql.streaming.stateStore.providerClass"
TRACK_KEYS_CONF = "spark.sql.streaming.stateStore.rocksdb.trackTotalNumberOfRows"
ROCKSDB_PROVIDER = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"


def store_counts_keys(job: JobSettings) -> bool:
    """Whether the state store counts its keys (TRACK_KEYS_CONF): not under the JVM operator,
    which reads each household's state before writing it, so counting would read it once more."""
    return job.state_operator != "jvm"


def spark_session(job: JobSettings, app_name: str = "energy-monitor-stream"):
    from pyspark.sql import SparkSession

    jars = sorted(str(p) for p in SPARK_JARS_DIR.glob("*.jar"))
    if not jars:
        raise RuntimeError(f"no Kafka connector jars in {SPARK_JARS_DIR}: run `make deps` first")
    if STATE_JAR.is_file():
        jars.append(str(STATE_JAR))
    elif job.state_operator == "jvm":
        raise RuntimeError(f"no state operator jar {STATE_JAR}: run `make deps` first")
    # Workers must run this interpreter (it has pandas and pyarrow), not whatever python3 is on
    # PATH, and the Spark UI binds to SPARK_LOCAL_IP: both are read from the environment only.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", job.spark_bind_address)
    builder = (SparkSession.builder.appName(app_name).master(job.spark_master)
               .config("spark.jars", ",".join(jars))
               .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={SPARK_LOG_CONFIG}")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.shuffle.partitions", job.shuffle_partitions)
               .config("spark.driver.memory", job.spark_driver_memory)
               .config("spark.executor.memory", job.spark_executor_memory)
               # The state off the heap (docs/decisions/0013-rocksdb-state-store.md).
               .config(STATE_STORE_PROVIDER_CONF, ROCKSDB_PROVIDER)
               .config("spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled", "true")
               .config("spark.sql.streaming.minBatchesToRetain", 20)
               # A watermark that moves makes the JVM state operator (transformWithState) ask for a
               # batch without data, which it has no timers for: one such batch after every batch.
               .config("spark.sql.streaming.noDataMicroBatches.enabled", "false")
               # No `readlink` child process per checkpoint rename (docs/decisions/0014-measured-details-of-the-job.md).
               .config("spark.sql.streaming.checkpointFileManagerClass",
                       "org.apache.spark.sql.execution.streaming.FileSystemBasedCheckpointFileManager")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.ui.port", job.spark_ui_port)
               # JVM heap, GC time, active and failed tasks of the driver and each executor,
               # served at /metrics/executors/prometheus on the UI port.
               .config("spark.ui.prometheus.enabled", "true")
               .config("spark.driver.bindAddress", job.spark_bind_address)
               .config("spark.driver.host", job.spark_driver_host)
               .config("spark.sql.adaptive.enabled", "false")
               .config("spark.python.daemon.module", "pipeline.job.worker_daemon"))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def state_memory_bytes(spark, job: JobSettings) -> int:
    """The heap the state's tasks run in: the driver's in local mode, else every executor's."""
    if job.spark_master.startswith("local"):
        return int(spark.sparkContext._jvm.java.lang.Runtime.getRuntime().maxMemory())
    executors = len(spark.sparkContext._jsc.sc().statusTracker().getExecutorInfos()) - 1  # less the driver
    name, value = job.state_memory
    return max(executors, 1) * jvm_bytes(value, name)

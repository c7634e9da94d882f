"""A single-node Apache Kafka broker in KRaft mode, run from the Maven Central jars on the JDK.

`prepare()` writes the configuration and formats the storage once; the data folder survives
restarts, so topics and offsets do too. The controller listener binds to 127.0.0.1 only.
"""
from __future__ import annotations

import base64
import logging
import shutil
import subprocess
import uuid
from pathlib import Path

from .config import PROJECT_ROOT

log = logging.getLogger(__name__)

KAFKA_JARS_DIR = PROJECT_ROOT / ".cache" / "jars" / "kafka"

_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
logger.server.name = kafka.server.KafkaServer
logger.server.level = info
"""


def server_properties(data_dir: Path, host: str, port: int, controller_port: int) -> str:
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
        f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners=PLAINTEXT://{host}:{port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        f"log.dirs={data_dir / 'logs'}",
        "num.partitions=1",
        "auto.create.topics.enable=false",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "log.retention.hours=168",
        "",
    ])


def _classpath() -> str:
    if not any(KAFKA_JARS_DIR.glob("kafka_*.jar")):
        raise RuntimeError(f"no Kafka broker jars in {KAFKA_JARS_DIR}: run `make deps` first")
    return f"{KAFKA_JARS_DIR}/*"


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("java not found on PATH: the broker needs a JDK 17")
    return java


def new_cluster_id() -> str:
    """A KRaft cluster id (base64url of a UUID). Like Kafka's own generator it never starts
    with '-', which the storage tool would read as an option."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def prepare(data_dir: Path, host: str, port: int, controller_port: int) -> list[str]:
    """Write config, format storage if new; returns the command that runs the broker."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "server.properties"
    config.write_text(server_properties(data_dir, host, port, controller_port))
    log4j = data_dir / "log4j2.properties"
    log4j.write_text(_LOG4J2)
    base = [_java(), "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}", "-cp", _classpath()]
    if not (data_dir / "logs" / "meta.properties").exists():
        result = subprocess.run(base + ["kafka.tools.StorageTool", "format", "-t", new_cluster_id(),
                                        "-c", str(config)], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"formatting Kafka storage in {data_dir} failed: {result.stderr.strip()[-500:]}")
        log.info("formatted Kafka storage in %s", data_dir)
    return base + ["kafka.Kafka", str(config)]

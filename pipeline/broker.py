"""A single-node Apache Kafka broker in KRaft mode, run from the Maven Central jars on the JDK.

`prepare()` writes the configuration and formats the storage once; the data folder survives
restarts, so topics and offsets do too. The controller listener binds to 127.0.0.1 only.
`start()` runs it and waits until it answers (the tests and the benchmark); the local stack
runs `prepare()`'s command itself and polls `is_ready()`.
"""
from __future__ import annotations

import base64
import logging
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

from .config import PROJECT_ROOT

log = logging.getLogger(__name__)

KAFKA_JARS_DIR = PROJECT_ROOT / ".cache" / "jars" / "kafka"
DEFAULT_RETENTION_BYTES = 1 << 30  # per partition

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


def server_properties(data_dir: Path, host: str, port: int, controller_port: int,
                      retention_bytes: int = DEFAULT_RETENTION_BYTES) -> str:
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
        f"log.retention.bytes={retention_bytes}",
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


def prepare(data_dir: Path, host: str, port: int, controller_port: int,
            retention_bytes: int = DEFAULT_RETENTION_BYTES) -> list[str]:
    """Write config, format storage if new; returns the command that runs the broker."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "server.properties"
    config.write_text(server_properties(data_dir, host, port, controller_port, retention_bytes))
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


def host_port(address: str) -> tuple[str, int]:
    """The first host:port of a bootstrap list."""
    host, _, port = address.split(",")[0].strip().rpartition(":")
    return host or "127.0.0.1", int(port)


def free_port() -> int:
    """A loopback port nobody listens on right now (for brokers and exporters of tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def is_ready(bootstrap: str) -> bool:
    """The broker answers a metadata request. The port is checked first, so a broker that is
    still starting costs no client connection (and no librdkafka 'Connection refused' lines)."""
    from .kafka_io import BrokerUnavailable, ensure_topics

    if not port_open(*host_port(bootstrap)):
        return False
    try:
        ensure_topics(bootstrap, {}, timeout_s=2.0)
        return True
    except BrokerUnavailable:
        return False


def start(data_dir: Path, port: int, controller_port: int, timeout_s: float = 90.0) -> tuple[subprocess.Popen, str]:
    """Run a broker on 127.0.0.1:port with its data and log (`broker.log`) in data_dir, and wait
    until it answers. Returns the process and its bootstrap address."""
    command = prepare(data_dir, "127.0.0.1", port, controller_port)
    with (data_dir / "broker.log").open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    bootstrap = f"127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while not is_ready(bootstrap):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"Kafka broker did not start (exit code {process.poll()}); "
                               f"see {data_dir / 'broker.log'}")
        time.sleep(0.5)
    return process, bootstrap


def stop(process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

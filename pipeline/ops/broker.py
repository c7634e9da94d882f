"""Apache Kafka in KRaft mode, run from the Maven Central jars on the JDK: one node, or a local
cluster of several (each a combined broker and controller, all of them voters).

`prepare()` writes a node's configuration and formats its storage once; the data folder
survives restarts, so topics and offsets do too. Controller listeners bind to 127.0.0.1 only.
`start()`/`start_cluster()` run the nodes and wait until every one is registered (the tests and
the benchmark); the local stack runs `prepare()`'s command itself, one component per node.
"""
from __future__ import annotations

import base64
import logging
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.kafka import client_config
from pipeline.core.settings import PROJECT_ROOT

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


@dataclass(frozen=True)
class Node:
    """One KRaft process (broker and controller) of a local cluster."""

    node_id: int
    host: str
    port: int
    controller_port: int
    data_dir: Path


def local_nodes(addresses: list[str], controller_port: int, data_dir: Path) -> list[Node]:
    """One node per address: node i listens on the i-th address, its controller on
    controller_port + i - 1. A single node keeps its data in data_dir itself (as before
    clusters existed); nodes of a cluster in data_dir/node-<i>."""
    nodes = []
    for i, address in enumerate(addresses, start=1):
        host, port = host_port(address)
        folder = data_dir if len(addresses) == 1 else data_dir / f"node-{i}"
        nodes.append(Node(i, host, port, controller_port + i - 1, folder))
    return nodes


def server_properties(node: Node, voters: list[Node], retention_bytes: int = DEFAULT_RETENTION_BYTES) -> str:
    """A combined broker+controller; with 3 or more voters every internal topic has 3 replicas
    and a write needs 2 in sync, so one node may be lost without losing an acknowledged record."""
    replicas = min(3, len(voters))
    min_isr = max(1, replicas - 1)
    quorum = ",".join(f"{v.node_id}@127.0.0.1:{v.controller_port}" for v in voters)
    return "\n".join([
        "process.roles=broker,controller",
        f"node.id={node.node_id}",
        f"controller.quorum.voters={quorum}",
        f"listeners=PLAINTEXT://{node.host}:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
        f"advertised.listeners=PLAINTEXT://{node.host}:{node.port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        f"log.dirs={node.data_dir / 'logs'}",
        "num.partitions=1",
        "auto.create.topics.enable=false",
        f"default.replication.factor={replicas}",
        f"min.insync.replicas={min_isr}",
        "unclean.leader.election.enable=false",
        f"offsets.topic.replication.factor={replicas}",
        "offsets.topic.num.partitions=4",
        f"transaction.state.log.replication.factor={replicas}",
        f"transaction.state.log.min.isr={min_isr}",
        f"share.coordinator.state.topic.replication.factor={replicas}",
        f"share.coordinator.state.topic.min.isr={min_isr}",
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


def prepare(node: Node, voters: list[Node], cluster_id: str,
            retention_bytes: int = DEFAULT_RETENTION_BYTES) -> list[str]:
    """Write the node's config, format its storage if new; returns the command that runs it."""
    node.data_dir.mkdir(parents=True, exist_ok=True)
    config = node.data_dir / "server.properties"
    config.write_text(server_properties(node, voters, retention_bytes))
    log4j = node.data_dir / "log4j2.properties"
    log4j.write_text(_LOG4J2)
    base = [_java(), "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}", "-cp", _classpath()]
    if not (node.data_dir / "logs" / "meta.properties").exists():
        result = subprocess.run(base + ["kafka.tools.StorageTool", "format", "-t", cluster_id,
                                        "-c", str(config)], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"formatting Kafka storage in {node.data_dir} failed: {result.stderr.strip()[-500:]}")
        log.info("formatted Kafka storage in %s", node.data_dir)
    return base + ["kafka.Kafka", str(config)]


def cluster_id(data_dir: Path) -> str:
    """The cluster id every node of data_dir is formatted with, made once and kept there."""
    path = data_dir / "cluster.id"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(new_cluster_id())
    return path.read_text().strip()


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


def start(data_dir: Path, port: int, controller_port: int, timeout_s: float = 90.0) -> tuple[subprocess.Popen, str]:
    """Run a single broker on 127.0.0.1:port with its data and log (`broker.log`) in data_dir,
    and wait until it answers. Returns the process and its bootstrap address."""
    processes, bootstrap = start_cluster(local_nodes([f"127.0.0.1:{port}"], controller_port, data_dir),
                                         timeout_s)
    return processes[0], bootstrap


def launch(node: Node, voters: list[Node], cluster: str) -> subprocess.Popen:
    """Start one node in the background, its output appended to its `broker.log`."""
    command = prepare(node, voters, cluster)
    with (node.data_dir / "broker.log").open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def start_cluster(nodes: list[Node], timeout_s: float = 90.0) -> tuple[list[subprocess.Popen], str]:
    """Run every node (a quorum forms only once most voters run, so all start before any is
    waited for) and wait until all of them are registered. Returns the processes and the
    bootstrap list."""
    cluster = cluster_id(nodes[0].data_dir.parent if len(nodes) > 1 else nodes[0].data_dir)
    processes = [launch(node, nodes, cluster) for node in nodes]
    bootstrap = ",".join(f"{n.host}:{n.port}" for n in nodes)
    deadline = time.monotonic() + timeout_s
    while live_brokers(bootstrap) < len(nodes):
        if any(p.poll() is not None for p in processes) or time.monotonic() > deadline:
            for p in processes:
                p.kill()
            raise RuntimeError(f"Kafka did not start (exit codes {[p.poll() for p in processes]}); "
                               f"see broker.log in {', '.join(str(n.data_dir) for n in nodes)}")
        time.sleep(0.5)
    return processes, bootstrap


def live_brokers(bootstrap: str) -> int:
    """How many brokers the cluster's metadata lists (0 when none answers)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    if not any(port_open(*host_port(a)) for a in bootstrap.split(",")):
        return 0
    try:
        return len(AdminClient(client_config(bootstrap)).list_topics(timeout=2.0).brokers)
    except KafkaException:
        return 0


def stop(process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

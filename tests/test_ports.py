"""pipeline/ports.py: the compose stack's published ports checked before anything starts."""
from __future__ import annotations

import os
import socket

import pytest

from pipeline.ops import ports

CONFIG = {"services": {
    "kafka": {"ports": ["127.0.0.1:9092:9092/tcp"]},
    "view": {"ports": [{"host_ip": "127.0.0.1", "published": 8501, "target": 8501}]},
    "worker": {"ports": ["4041"]},  # a container port only: nothing published on the host
    "exporter": {},
}}


def test_published_reads_short_and_long_syntax():
    assert ports.published(CONFIG) == [("kafka", "127.0.0.1", 9092), ("view", "127.0.0.1", 8501)]


@pytest.fixture
def held_port():
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_held_port_is_one_line_naming_port_service_and_holder(tmp_path, held_port):
    config = {"services": {"kafka": {"ports": [f"127.0.0.1:{held_port}:9092"]}, "view": {"ports": []}}}
    lines = ports.conflicts(config, "no-such-project", tmp_path)
    assert lines == [f"port 127.0.0.1:{held_port}, which service kafka publishes, is already in use by pid "
                     f"{os.getpid()} ({ports._command(os.getpid())}); nothing was started"]


def test_the_local_stack_holding_a_port_is_named_with_its_remedy(tmp_path, held_port):
    # This test's process stands in for a component: its session leader is in a pid file.
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "kafka-1.pid").write_text(f"{os.getsid(0)} 0\n")
    assert "this project's local stack: `energy-monitor down` frees it" in ports.describe(held_port, tmp_path)


def test_a_free_port_is_no_conflict(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    assert ports.conflicts({"services": {"kafka": {"ports": [f"127.0.0.1:{free}:9092"]}}}, "p", tmp_path) == []
    assert not ports.in_use("127.0.0.1", free)


def test_the_command_line_exits_1_with_the_lines(tmp_path, held_port, capsys, monkeypatch):
    import io
    monkeypatch.setattr("sys.stdin", io.StringIO(f"services:\n  kafka:\n    ports: ['127.0.0.1:{held_port}:9092']\n"))
    assert ports.main(["--project", "p", "--var-dir", str(tmp_path)]) == 1
    assert f"127.0.0.1:{held_port}, which service kafka publishes" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("services: [unclosed"))
    assert ports.main(["--project", "p"]) == 2
    assert "not YAML" in capsys.readouterr().err


def test_the_cli_imports_without_the_development_dependencies():
    """The app's images install the runtime dependencies only: no PyYAML there."""
    import subprocess
    import sys

    blocker = ("import sys\n"
               "class Block:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] in ('yaml', 'pytest', 'kafka', 'grafana_foundation_sdk'):\n"
               "            raise ImportError('blocked: ' + name)\n"
               "sys.meta_path.insert(0, Block())\n"
               "import pipeline.cli, pipeline.ops.ports, pipeline.ops.stack\n"
               "print(pipeline.ops.ports.describe(1, __import__('pathlib').Path('var')))\n")
    result = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip(), result.stderr

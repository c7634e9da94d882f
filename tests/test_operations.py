"""Operations that hold for months: safe process control, bounded logs, streaming importers,
alerts that reach someone. Real processes, files and services; nothing is simulated."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, isolated_stack, run_cli, wait_for
from pipeline.ops import processes
from pipeline.ingest.importers import convert
from pipeline.ops.processes import PidFile


def alive(pid: int) -> bool:
    return processes.start_ticks(pid) is not None


def test_a_pid_file_naming_an_unrelated_live_process_is_not_signalled(tmp_path):
    unrelated = subprocess.Popen(["sleep", "300"])
    try:
        settings = isolated_stack(tmp_path)
        run_dir = Path(settings.stack.var_dir) / "run"
        run_dir.mkdir(parents=True)
        ticks = processes.start_ticks(unrelated.pid)
        # Same pid, another process's start time.
        (run_dir / "view.pid").write_text(f"{unrelated.pid} {ticks - 1} {processes.boot_id()}\n")
        # Left from before a reboot: same pid and start tick, another boot.
        (run_dir / "producer.pid").write_text(f"{unrelated.pid} {ticks} 00000000-0000-0000-0000-000000000000\n")
        # And older formats (pid only; pid and ticks without a boot).
        (run_dir / "exporter.pid").write_text(f"{unrelated.pid}\n")
        (run_dir / "stream.pid").write_text(f"{unrelated.pid} {ticks}\n")
        assert PidFile(run_dir / "producer.pid").running() is None
        assert PidFile(run_dir / "stream.pid").running() is None
        first = run_cli(settings, "down")
        assert "stale pid file" in first.stdout and alive(unrelated.pid)
        second = run_cli(settings, "down")
        assert second.returncode == 0 and "stale" not in second.stdout and alive(unrelated.pid)
        assert list(run_dir.glob("*.pid")) == []
    finally:
        unrelated.kill()
        unrelated.wait()


def test_stop_ends_the_whole_session_and_twice_is_clean(tmp_path):
    log_file = tmp_path / "log" / "worker.log"
    leader = processes.spawn(["sh", "-c", "sleep 300 & sleep 300 & echo children started; wait"],
                             log_file, 1 << 20, 2)
    pid_file = PidFile(tmp_path / "run" / "worker.pid")
    pid_file.write(leader.pid)
    wait_for("the children", lambda: len(processes.session_members(leader.pid)) >= 3, 10, 0.1)
    children = [p for p in processes.session_members(leader.pid) if p != leader.pid]
    assert pid_file.running() == leader.pid
    assert processes.stop(pid_file, grace_s=5) == "stopped"
    leader.wait(5)
    wait_for("the children to end", lambda: not any(alive(p) for p in children), 10, 0.1)
    assert processes.stop(pid_file) == "not running"


def test_orphans_of_a_dead_leader_are_stopped(tmp_path):
    leader = processes.spawn(["sh", "-c", "sleep 300 & sleep 300 & wait"], tmp_path / "orphans.log", 1 << 20, 2)
    pid_file = PidFile(tmp_path / "orphans.pid")
    pid_file.write(leader.pid)
    wait_for("the children", lambda: len(processes.session_members(leader.pid)) >= 3, 10, 0.1)
    children = [p for p in processes.session_members(leader.pid) if p != leader.pid]
    leader.kill()
    leader.wait()
    assert all(alive(p) for p in children)
    assert processes.stop(pid_file) == "stopped 2 leftover processes"
    wait_for("the orphans to end", lambda: not any(alive(p) for p in children), 10, 0.1)


def test_a_log_stays_under_its_cap_while_the_component_writes_past_it(tmp_path):
    log_file = tmp_path / "chatty.log"
    cap, backups = 64 * 1024, 2
    writer = ("import sys\n"
              "for i in range(20000): sys.stdout.write(f'line {i:06d} ' + 'x' * 40 + '\\n')\n")
    process = processes.spawn([sys.executable, "-c", writer], log_file, cap, backups)
    process.wait(30)
    files = wait_for("the last rotation", lambda: sorted(tmp_path.glob("chatty.log*")) if
                     "line 019999" in log_file.read_text() else None, 10, 0.1)
    assert [f.name for f in files] == ["chatty.log", "chatty.log.1", "chatty.log.2"]
    assert all(f.stat().st_size <= cap for f in files)
    written = 20000 * len("line 000000 " + "x" * 40 + "\n")
    assert written > 10 * cap  # it wrote far past the cap; only the newest 3 files are kept
    assert log_file.read_text().splitlines()[-1].startswith("line 019999")


def test_a_port_held_by_another_process_is_reported(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_cli(isolated_stack(tmp_path), "up", "view", check=False, extra_env={"VIEW_PORT": str(port)})
    assert result.returncode == 1
    assert f"port {port} is already in use by pid {os.getpid()}" in result.stderr
    assert "Traceback" not in result.stderr


def test_compose_renders_the_receiver_and_alertmanager_accepts_it(tmp_path):
    from test_compose import compose_config

    url = "https://hooks.example.com/services/T0/B1?token=a&b=c|d"
    config = compose_config(tmp_path, ALERT_WEBHOOK_URL=url)
    for name, service in config["services"].items():
        assert service["logging"] == {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}}, name
    alertmanager = config["services"]["alertmanager"]
    assert alertmanager["environment"]["ALERT_WEBHOOK_URL"] == url
    assert config["services"]["exporter"]["environment"]["ALERT_WEBHOOK_URL"] == url
    rendered = tmp_path / "alertmanager.yml"
    subprocess.run(["sh", str(ROOT / "monitoring" / "alertmanager-run.sh"), "--render-only",
                    str(ROOT / "monitoring" / "alertmanager.yml"), str(rendered)],
                   env={"ALERT_WEBHOOK_URL": url, "PATH": "/usr/bin:/bin"}, check=True)
    check = subprocess.run(["amtool", "check-config", str(rendered)], capture_output=True, text=True)
    assert check.returncode == 0 and "SUCCESS" in check.stdout, check.stdout + check.stderr
    receivers = yaml.safe_load(rendered.read_text())["receivers"]
    assert [c["url"] for r in receivers for c in r["webhook_configs"]] == [url, "http://127.0.0.1:9099/watchdog"]


def test_without_a_receiver_the_renderer_says_so(tmp_path):
    result = subprocess.run(["sh", str(ROOT / "monitoring" / "alertmanager-run.sh"), "--render-only",
                             str(ROOT / "monitoring" / "alertmanager.yml"), str(tmp_path / "am.yml")],
                            env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert result.returncode == 0 and "alerts reach nobody" in result.stderr


@pytest.mark.parametrize("fmt,content,expect", [
    ("lcl", b"LCLid,DateTime,KWH/hh (per half hour)\nMAC000002,2012-10-12 00:30:00.0000000, 0.1\n"
            b"MAC000002,2012-10-12 01:00:00.0000000, \xff\xfe\nMAC000002,2012-10-12 01:30:00.0000000, 0.2\n",
     {"published": 2, "skipped": [(3, "not UTF-8")]}),
    ("lcl", b"\xef\xbb\xbfLCLid,DateTime,KWH/hh (per half hour)\nMAC000002,2012-10-12 00:30:00.0000000, 0.1\n",
     {"published": 1, "skipped": []}),
    ("lcl", b"LCLid,stdorToU,DateTime,KWH/hh (per half hour) \nMAC000002,Std,2012-10-12 00:30:00.0000000, 0.1\n"
            b"MAC000002,Std,2012-10-12 01:00:00.0000000,Null\n",
     {"published": 1, "skipped": [(3, "unreadable time or value")]}),
    ("lcl", b"date,value\n2012-10-12,0.1\n", {"published": 0, "skipped": [(1, "no LCL header")]}),
    ("uci", b"\xef\xbb\xbfDate;Time;Global_active_power\n16/12/2006;17:24:00;4.216\n16/12/2006;17:25:00;\xff\n"
            b"16/12/2006;17:26:00;?\n",
     {"published": 1, "skipped": [(3, "not UTF-8"), (4, "missing value")]}),
])
def test_importers_handle_encoding_bom_and_layouts_with_line_numbers(tmp_path, fmt, content, expect):
    path = tmp_path / f"data.{fmt}.csv"
    path.write_bytes(content)
    items = list(convert(path, fmt))
    assert sum(i.value is not None for i in items) == expect["published"]
    skipped = [(i.line_no, i.skipped) for i in items if i.skipped]
    assert len(skipped) == len(expect["skipped"])
    for (line, why), (want_line, want_why) in zip(skipped, expect["skipped"]):
        assert line == want_line and want_why in why
    assert items[-1].end_offset == len(content) or expect["published"] == 0

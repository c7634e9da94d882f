"""`energy-monitor produce` stopped by a signal accounts for every reading it sent."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest

from helpers import ROOT, settings_env
from pipeline.core.kafka import read_topic

pytestmark = [pytest.mark.kafka]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_producer_counts_every_reading_it_sent(make_settings, sig):
    settings = make_settings(households=2_000)
    # Unpaced, so the signal lands while deliveries are being acknowledged: an interrupt raised
    # inside a delivery callback once lost that record from the counts.
    producer = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "produce", "--no-pacing"],
                                env=settings_env(settings), cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(4)
        producer.send_signal(sig)
        output, _ = producer.communicate(timeout=60)
    finally:
        if producer.poll() is None:
            producer.kill()
            producer.wait()
    summary = re.findall(r"sent (\d+), acknowledged (\d+), failed (\d+), unacknowledged (\d+)", output)
    assert summary, output[-2000:]
    sent, acknowledged, failed, unacknowledged = map(int, summary[-1])
    assert producer.returncode == 0, output[-2000:]
    assert sent > 0 and acknowledged == sent and failed == 0 and unacknowledged == 0, summary
    in_topic = sum(1 for _ in read_topic(settings.kafka.bootstrap_servers, settings.kafka.readings_topic, stop_at_end=True,
                                         idle_timeout_s=10))
    assert in_topic == sent

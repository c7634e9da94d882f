"""The Streamlit alert view: streamlit.testing against a real topic, and headless Chromium."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from streamlit.testing.v1 import AppTest

from helpers import ROOT, free_port, run_cli, settings_env
from pipeline import alert_view
from pipeline.kafka_io import ReadingProducer, ensure_topics

pytestmark = [pytest.mark.kafka]

SCREENSHOTS = ROOT / "var" / "test-artifacts"


def alert(alert_id: str, household: str, start: str, kwh: float, mode: str = "demo") -> dict:
    return {"alert_id": alert_id, "household_id": household, "window_start": start,
            "window_end": start.replace(":00Z", ":59Z"), "kwh": kwh, "threshold_kwh": 0.05,
            "rule": "kwh>0.05 over 1 minute", "mode": mode, "detected_at": "2026-07-02T14:01:00Z"}


def publish_alerts(settings, alerts: list[dict]) -> None:
    ensure_topics(settings.bootstrap_servers, {settings.alerts_topic: 1})
    producer = ReadingProducer(settings.bootstrap_servers, settings.alerts_topic)
    for doc in alerts:
        producer.send(doc["household_id"], json.dumps(doc))
    assert producer.flush(30) == 0


SAMPLE = [alert("a1", "H001", "2026-07-02T14:00:00Z", 0.061),
          alert("a2", "H002", "2026-07-02T14:00:15Z", 0.072),
          alert("a1", "H001", "2026-07-02T14:00:00Z", 0.061),  # re-delivered after a restart
          alert("a3", "H001", "2026-07-02T14:00:30Z", 2.5, mode="prod")]


MALFORMED = [
    None,  # a tombstone
    b"\xff\xfe not utf-8",
    b"not json {",
    b"[1, 2, 3]",
    json.dumps({**alert("m1", "H009", "2026-07-02T14:00:00Z", 0.1), "household_id": None}).encode(),
    json.dumps({k: v for k, v in alert("m2", "H009", "2026-07-02T14:00:00Z", 0.1).items()
                if k != "household_id"}).encode(),
    json.dumps({**alert("m3", "H009", "2026-07-02T14:00:00Z", 0.1), "household_id": 9}).encode(),
    json.dumps({**alert("m4", "H009", "2026-07-02T14:00:00Z", 0.1), "window_start": "noon"}).encode(),
    json.dumps({**alert("m5", "H009", "2026-07-02T14:00:00Z", 0.1), "kwh": "lots"}).encode(),
]


def publish_mixed(settings) -> None:
    """SAMPLE's alerts with every malformed record kind between them."""
    ensure_topics(settings.bootstrap_servers, {settings.alerts_topic: 1})
    producer = ReadingProducer(settings.bootstrap_servers, settings.alerts_topic)
    for doc, bad in zip(SAMPLE + [None] * len(MALFORMED), MALFORMED):
        if doc is not None:
            producer.send(doc["household_id"], json.dumps(doc))
        producer.send("H009", bad)
    assert producer.flush(30) == 0


def test_malformed_records_are_counted_and_the_alerts_around_them_shown(monkeypatch, make_settings):
    settings = make_settings(view_group="view-test-malformed")
    publish_mixed(settings)

    feed = alert_view.AlertFeed(settings.bootstrap_servers, settings.alerts_topic, "feed-test-malformed")
    for _ in range(20):
        feed.poll()
        if feed.unreadable == len(MALFORMED):
            break
    assert sorted(feed.frame()["alert_id"]) == ["a1", "a2", "a3"]
    assert feed.unreadable == len(MALFORMED)

    at = run_until(app(monkeypatch, settings), lambda a: len(a.table) > 0 and len(a.warning) > 0)
    assert not at.exception
    assert sorted(at.table[0].value["alert_id"]) == ["a1", "a2", "a3"]
    assert f"{len(MALFORMED)} unreadable records" in at.warning[0].value

    result = run_cli(settings, "alerts", "--from-beginning", "--timeout", "3")
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    assert [a["alert_id"] for a in printed] == [a["alert_id"] for a in SAMPLE]
    assert result.stderr.count("unreadable record at partition") == len(MALFORMED)
    assert f"{len(MALFORMED)} unreadable records skipped" in result.stderr


def app(monkeypatch, settings) -> AppTest:
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    return AppTest.from_file(alert_view.__file__, default_timeout=30)


def run_until(at: AppTest, done, attempts: int = 30) -> AppTest:
    for _ in range(attempts):
        at.run()
        if done(at):
            return at
        time.sleep(0.5)
    return at


def test_renders_deduplicated_alerts_newest_first(monkeypatch, make_settings):
    settings = make_settings(view_group="view-test-dedup")
    publish_alerts(settings, SAMPLE)
    at = run_until(app(monkeypatch, settings), lambda a: len(a.table) > 0)
    assert not at.exception
    table = at.table[0].value
    assert sorted(table["alert_id"]) == ["a1", "a2", "a3"]
    assert at.metric[0].value == "3"

    at.multiselect[0].select("H001").run()
    assert sorted(at.table[0].value["alert_id"]) == ["a1", "a3"]
    at.multiselect[1].select("prod").run()
    assert list(at.table[0].value["alert_id"]) == ["a3"]


def test_empty_topic_says_no_alerts_yet(monkeypatch, make_settings):
    settings = make_settings(view_group="view-test-empty")
    ensure_topics(settings.bootstrap_servers, {settings.alerts_topic: 1})
    at = app(monkeypatch, settings)
    at.run()
    assert not at.exception
    assert "No alerts yet" in at.info[0].value
    assert len(at.table) == 0


def test_unreachable_kafka_is_reported(monkeypatch, make_settings):
    settings = make_settings(bootstrap_servers=f"127.0.0.1:{free_port()}", view_group="view-test-down")
    at = app(monkeypatch, settings)
    at.run()
    assert not at.exception
    assert "Kafka is unreachable" in at.error[0].value


def test_in_headless_chromium(make_settings, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    settings = make_settings(view_group="view-test-browser")
    publish_alerts(settings, SAMPLE)
    server = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "view"], env=settings_env(settings),
                              stdout=(tmp_path / "view.log").open("wb"), stderr=subprocess.STDOUT)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                driver.get(f"http://127.0.0.1:{settings.view_port}")
                break
            except Exception:
                assert time.monotonic() < deadline, (tmp_path / "view.log").read_text()
                time.sleep(1)
        rows = WebDriverWait(driver, 60).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "table tbody tr") or False)
        texts = " ".join(r.text for r in rows)
        assert len(rows) == 3 and "H001" in texts and "H002" in texts
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        time.sleep(1)  # let the charts draw before the picture
        driver.save_screenshot(str(SCREENSHOTS / "alert_view.png"))
        assert (SCREENSHOTS / "alert_view.png").stat().st_size > 10_000
    finally:
        driver.quit()
        server.terminate()
        server.wait(30)

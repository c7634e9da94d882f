"""The alert view's four pages over a history written by a real run: streamlit.testing, and
headless Chromium (screenshots in var/test-artifacts/)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from helpers import ROOT, free_port, publish, records, run_cli, run_job_once, settings_env, wait_for
from pipeline.view import app as alert_view
from pipeline.core.history import AlertQuery, HistoryStore
from pipeline.core.incidents import incidents
from pipeline.core.settings import with_values
from pipeline.core.kafka import ReadingProducer, ensure_topics
from pipeline.ingest.simulator import Simulator

pytestmark = [pytest.mark.kafka]

SCREENSHOTS = ROOT / "var" / "test-artifacts"
T0 = 1_783_000_800  # 2026-07-02T14:00:00Z


def archive(settings, tmp_path, until) -> None:
    """Run `energy-monitor archive` until `until()` holds."""
    archiver = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "archive"], env=settings_env(settings),
                                stdout=(tmp_path / "archiver.log").open("ab"), stderr=subprocess.STDOUT)
    try:
        wait_for("the archiver to catch up", until, 120, 1)
    finally:
        archiver.terminate()
        archiver.wait(60)


def history_ids(settings) -> list[str]:
    return list(HistoryStore(settings.history.history_root).alerts().alert_id)


@pytest.fixture
def written(make_settings, spark, tmp_path):
    """A history from a real run: 12 households, 30 minutes of demo readings, the job, the archiver."""
    settings = make_settings(run_mode="demo", history_flush_seconds=0.5)
    lines = [line for _, line in Simulator(12, 15, 10.0, 3, T0).lines(120)]
    publish(settings, lines)
    run_job_once(spark, settings)
    alerts = records(settings, settings.kafka.alerts_topic)
    assert len(alerts) > 20
    archive(settings, tmp_path, lambda: len(history_ids(settings)) == len({a["alert_id"] for a in alerts}))
    return settings, lines, alerts


def app(monkeypatch, settings, page: str, **query) -> AppTest:
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    at = AppTest.from_file(alert_view.__file__, default_timeout=30)
    at.query_params.update(query)
    at.run()
    if page != alert_view.PAGES[0]:
        at.switch_page(f"pages/{alert_view.PAGE_FILES[page][0]}").run()
    assert not at.exception, at.exception
    return at


def charts(at: AppTest) -> list:
    return at.get("vega_lite_chart")


def chart_layers(chart) -> list[tuple[str, dict, pd.DataFrame]]:
    """A layered chart's (mark, encoding, data) per layer, as Streamlit sent them."""
    from streamlit import dataframe_util

    data = {d.name: dataframe_util.convert_arrow_bytes_to_pandas_df(d.data.data) for d in chart.proto.datasets}
    spec = json.loads(chart.proto.spec)
    return [(layer["mark"]["type"], layer["encoding"], data.get(layer.get("data", {}).get("name")))
            for layer in spec.get("layer", [spec])]


@pytest.mark.spark
def test_pages_on_a_real_history(monkeypatch, written):
    settings, lines, alerts = written
    newest_first = sorted({a["alert_id"]: a for a in alerts}.values(),
                          key=lambda a: (a["window_start"], a["household_id"], a["kind"]), reverse=True)

    page = app(monkeypatch, settings, "Live alerts")
    live = page.table[1].value
    assert list(live["alert_id"]) == [a["alert_id"] for a in newest_first][:alert_view.TABLE_ROWS]
    shown = page.table[0].value
    stored = incidents(HistoryStore(settings.history.history_root).alerts(AlertQuery(limit=alert_view.TABLE_ROWS)))
    assert len(shown) == len(stored) and shown["alerts"].astype(int).sum() == len(live)
    fired = [set(kinds.split(" + ")) for kinds in shown["kinds"]]
    assert set().union(*fired) == {"threshold", "baseline"}
    for kinds, why in zip(fired, shown["why"]):
        assert ("its usual" in why) == ("baseline" in kinds) and ("over the fixed 0.05 kWh" in why) == ("threshold" in kinds)

    top = app(monkeypatch, settings, "Top households")
    counts = pd.Series([a["household_id"] for a in newest_first]).value_counts()
    shown = top.dataframe[0].value
    assert dict(zip(shown.household_id, shown.alerts)) == {h: counts[h] for h in shown.household_id}
    assert list(shown.alerts) == sorted(counts, reverse=True)[:len(shown)] and charts(top)

    assert charts(app(monkeypatch, settings, "Heatmap"))

    household = app(monkeypatch, settings, "Household")
    busiest = counts.sort_index().idxmax()
    assert household.subheader[0].value == busiest and charts(household)
    quiet = counts.index[-1]
    assert app(monkeypatch, settings, "Household", household=quiet).subheader[0].value == quiet != busiest
    assert app(monkeypatch, settings, "Live alerts", household=quiet).subheader[0].value == quiet  # /?household=
    latest = household.table[0].value
    mine = [ln.split(",") for ln in lines if ln.split(",")[1] == busiest][-20:][::-1]
    assert [round(v, 6) for v in latest.kwh] == [round(float(kwh), 6) for _, _, kwh in mine]
    assert f"{sum(a['household_id'] == busiest for a in newest_first)} alerts in these 24 h" in \
        household.caption[-1].value
    band_is_what_each_alert_was_scored_against(charts(household)[0], [a for a in newest_first if a["household_id"] == busiest])


def band_is_what_each_alert_was_scored_against(chart, alerts: list[dict]) -> None:
    """The Household chart's band layer holds, at each baseline alert's window, the alert's own
    baseline and threshold; its alert marks are told apart by kind."""
    layers = {(mark, encoding["y"]["field"]): (encoding, frame) for mark, encoding, frame in chart_layers(chart)}
    band_encoding, band = layers[("area", "baseline_kwh")]
    assert band_encoding["y2"]["field"] == "baseline_threshold_kwh"
    by_end = band.assign(window_end=pd.to_datetime(band.window_end, utc=True)).set_index("window_end")
    scored = [a for a in alerts if a["kind"] == "baseline"]
    assert scored
    for alert in scored:
        row = by_end.loc[pd.Timestamp(alert["window_end"])]
        assert row.baseline_threshold_kwh == pytest.approx(alert["threshold_kwh"], rel=1e-9), alert
        assert row.baseline_kwh == pytest.approx(alert["baseline_kwh"], rel=1e-9), alert
    point_encoding, points = layers[("point", "kwh")]
    assert point_encoding["shape"]["field"] == point_encoding["color"]["field"] == "kind"
    assert set(points.kind) == {a["kind"] for a in alerts}


def test_every_page_says_so_when_the_history_is_empty(monkeypatch, make_settings):
    settings = make_settings()
    for page in alert_view.PAGES:
        at = app(monkeypatch, settings, page)
        assert at.info and ("No alerts in the history yet" in at.info[0].value
                            or "No data in the history yet" in at.info[0].value), page
        assert not at.error and not at.table


def unreachable_s3() -> dict[str, str]:
    """An object store that refuses connections: a closed local port."""
    return {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}


def test_every_page_reports_an_unreachable_store(monkeypatch, make_settings):
    settings = make_settings(history_root="s3a://energy/history")
    for name, value in unreachable_s3().items():
        monkeypatch.setenv(name, value)
    for page in alert_view.PAGES:
        at = app(monkeypatch, settings, page)
        assert "cannot be read" in at.error[0].value and "s3a://energy/history" in at.error[0].value, page
    result = run_cli(settings, "history", check=False)
    assert result.returncode == 1 and "cannot open s3a://energy/history/alerts" in result.stderr
    assert "Traceback" not in result.stderr


def test_malformed_alert_records_are_counted_and_skipped(make_settings, tmp_path):
    settings = make_settings(history_metrics_port=free_port(), history_flush_seconds=0.5)
    good = [{"alert_id": f"a{i}", "household_id": "H001", "window_start": f"2026-07-02T14:0{i}:00Z",
             "window_end": f"2026-07-02T14:0{i + 1}:00Z", "kwh": 0.07, "threshold_kwh": 0.05,
             "rule": "kwh>0.05 over 1 minute", "mode": "demo", "detected_at": "2026-07-02T14:02:00Z"} for i in range(3)]
    malformed = [None, b"\xff\xfe not utf-8", b"not json {", b"[1, 2, 3]",
                 json.dumps({**good[0], "household_id": None}).encode(),
                 json.dumps({**good[0], "window_start": "noon"}).encode(),
                 json.dumps({**good[0], "kwh": "lots"}).encode()]
    ensure_topics(settings.kafka.bootstrap_servers, settings.kafka.topics, **settings.kafka.topic_replication)
    producer = ReadingProducer(settings.kafka.bootstrap_servers, settings.kafka.alerts_topic)
    delivered = good + good  # each alert twice, as the at-least-once sink may
    for i, bad in enumerate(malformed):
        producer.send("H001", bad)
        if i < len(delivered):
            producer.send("H001", json.dumps(delivered[i]))
    assert producer.flush(30) == 0

    def skipped() -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{settings.history.history_metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return next(float(ln.split()[-1]) for ln in text.splitlines()
                    if ln.startswith('energy_history_skipped_records_total{table="alerts"}'))

    archive(settings, tmp_path, lambda: history_ids(settings) == ["a0", "a1", "a2"] and skipped() == len(malformed))

    result = run_cli(settings, "alerts", "--from-beginning", "--timeout", "3")
    assert [json.loads(line)["alert_id"] for line in result.stdout.splitlines()] == [a["alert_id"] for a in delivered]
    assert result.stderr.count("unreadable record at partition") == len(malformed)


def browse(settings, tmp_path, shows: dict[str, str], name: str, extra_env: dict | None = None,
           household: str | None = None) -> None:
    """Open the view in headless Chromium, visit each page at its own address, wait until the
    page shows what `shows` names (a CSS selector, or `text:` and a phrase), screenshot it. With
    `household`, then check that the root address opens the first page at its own address, open
    `/household?household=` that household (and the root's old `?household=`) and check the
    Household page shows it with its band."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    tmp_path.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "view"],
                              env={**settings_env(settings), **(extra_env or {})},
                              stdout=(tmp_path / "view.log").open("wb"), stderr=subprocess.STDOUT)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    wait = WebDriverWait(driver, 60)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def shown(what: str):
        if what.startswith("text:"):
            return what[5:] in driver.find_element(By.TAG_NAME, "body").text
        return driver.find_elements(By.CSS_SELECTOR, what) or False

    def visit(page: str, what: str, picture: str, path: str | None = None) -> None:
        driver.get(f"{address}/{path if path is not None else alert_view.PAGE_FILES[page][1]}")
        wait.until(lambda d: d.find_elements(By.TAG_NAME, "h1") and page in d.find_element(By.TAG_NAME, "h1").text)
        wait.until(lambda _d: shown(what))
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "Traceback" not in body and "Page not found" not in body, body[:300]
        time.sleep(1.5)  # let the charts draw before the picture
        picture_path = SCREENSHOTS / f"view-{name}{picture}.png"
        driver.save_screenshot(str(picture_path))
        assert picture_path.stat().st_size > 10_000

    address = f"http://127.0.0.1:{settings.view.view_port}"
    try:
        wait_for("the view to answer", lambda: _opened(driver, address), 60, 1)
        for page, what in shows.items():
            visit(page, what, page.lower().replace(" ", "-"))
        if household:
            visit(alert_view.PAGES[0], shows[alert_view.PAGES[0]], "root", path="")
            wait.until(lambda d: d.current_url.endswith(f"/{alert_view.PAGE_FILES[alert_view.PAGES[0]][1]}"))
            for path, picture in ((f"household?household={household}", "household-by-address"),
                                  (f"?household={household}", "household-by-old-address")):
                visit("Household", "text:shaded: the baseline band", picture, path)
                wait.until(lambda d: household in [h.text for h in d.find_elements(By.TAG_NAME, "h3")])
                assert f"/household?household={household}" in driver.current_url
    finally:
        driver.quit()
        server.terminate()
        server.wait(30)


def _opened(driver, url: str) -> bool:
    try:
        driver.get(url)
        return True
    except Exception:  # the server is still starting: selenium raises its own connection errors
        return False


@pytest.mark.spark
def test_in_headless_chromium(written, tmp_path):
    settings, _lines, alerts = written
    quietest = pd.Series([a["household_id"] for a in alerts]).value_counts().index[-1]
    browse(settings, tmp_path, {"Live alerts": "text:× its usual ", "Top households": ".vega-embed",
                                "Heatmap": ".vega-embed", "Household": ".vega-embed"}, "", household=quietest)


def test_in_headless_chromium_empty_and_unreachable(make_settings, tmp_path):
    settings = make_settings()
    empty = {page: "text:in the history yet" for page in alert_view.PAGES}
    browse(settings, tmp_path / "empty", empty, "empty-")
    unreachable = with_values(settings, history_root="s3a://energy/history")
    browse(unreachable, tmp_path / "unreachable", {page: "text:cannot be read" for page in alert_view.PAGES},
           "unreachable-", unreachable_s3())


def test_the_live_table_is_the_one_grouping_newest_first_with_its_slot_hours():
    from pipeline.core.settings import load_settings

    prod = load_settings({"RUN_MODE": "prod"}).baseline
    stamp = lambda minute: pd.Timestamp(f"2026-07-02T02:{minute:02d}:00Z")
    alerts = pd.DataFrame({
        "household_id": ["H001", "H001", "H002"], "kind": ["threshold", "baseline", "baseline"],
        "window_start": [stamp(0), stamp(15), stamp(3)], "window_end": [stamp(15), stamp(30), stamp(18)],
        "kwh": [2.2, 1.54, 0.9], "threshold_kwh": [2.0, 0.8, 0.5], "baseline_kwh": [None, 0.41, 0.3]})
    table = alert_view.incident_table(alerts, prod)
    assert list(table.household_id) == ["H002", "H001"] and list(table.kinds) == ["baseline", "threshold + baseline"]
    assert table.why[1] == "3.76× its usual 0.41 kWh for 02:00–03:00; over the fixed 2 kWh for 30 minutes"
    assert list(table.columns) == alert_view.INCIDENT_COLUMNS
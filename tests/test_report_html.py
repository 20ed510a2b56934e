"""report.html of `mbrec analyze -o DIR`, opened in a real browser: headless Chromium (Debian's
chromium and chromium-driver) driven by selenium."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIX = ROOT / "fixtures"
MB = 1_000_000


def analyze_to(tmp_path, fixture: str, *extra) -> pathlib.Path:
    out = tmp_path / fixture
    traces = sorted(str(p) for p in (FIX / fixture).glob("*.mbrec"))
    res = subprocess.run([sys.executable, "-m", "mbrec", "analyze", *traces, "-o", str(out),
                          "--no-plots", "-q", *extra], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return out / "report.html"


def test_report_is_self_contained_and_small(tmp_path):
    page = analyze_to(tmp_path, "ab")
    text = page.read_text()
    assert page.stat().st_size < 5 * MB
    # nothing is fetched: no external script, stylesheet or image
    for needle in ('src="http', "src='http", 'href="http', "<link", "import("):
        assert needle not in text
    for section in ("Summary", "Per host", "Where the time went", "Latency CDFs",
                    "Network latency (L_NET)", "Per-flow metrics", "Request explorer"):
        assert f">{section}</h2>" in text


def test_single_host_report_says_why_parts_are_missing(tmp_path):
    out = tmp_path / "one"
    res = subprocess.run([sys.executable, "-m", "mbrec", "analyze", str(FIX / "ab" / "a.mbrec"),
                          "-o", str(out), "--no-plots", "-q"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    text = (out / "report.html").read_text()
    assert "No requests to explore" in text and "No L_NET" in text


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver  # a test dependency (setup.py extras "test")
    chromium = shutil.which("chromium")
    driver_bin = shutil.which("chromedriver")
    if not chromium or not driver_bin:
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium "
                    "chromium-driver; `make setup` installs them)")
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,2400"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(driver_bin), options=opts)
    yield drv
    drv.quit()


def test_report_in_headless_chromium(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    page = analyze_to(tmp_path, "ab")
    browser.get(page.as_uri())
    WebDriverWait(browser, 60).until(
        lambda d: d.execute_script("return document.body.dataset.ready === '1'"
                                   " || document.getElementById('plot-status').textContent"))
    assert browser.find_element(By.ID, "plot-status").text == ""
    # tables with data
    for cls, min_rows in (("inputs", 2), ("alignment", 2), ("latency", 5), ("flows", 10)):
        rows = browser.find_elements(By.CSS_SELECTOR, f"table.{cls} tbody tr")
        assert len(rows) >= min_rows, cls
    # every plot drawn, with data points
    plots = browser.find_elements(By.CSS_SELECTOR, "div.plot")
    ids = [p.get_attribute("id") for p in plots]
    assert {"breakdown", "cdf-a", "cdf-b", "lnet", "series", "waterfall"} <= set(ids)
    for pid in ids:
        n = browser.execute_script(
            "const d = document.getElementById(arguments[0]).data || [];"
            "return d.reduce((s, t) => s + ((t.x || []).length), 0);", pid)
        assert n > 0, f"plot {pid} has no data"
        assert browser.find_elements(By.CSS_SELECTOR, f"#{pid} svg.main-svg"), pid
    # the flow metrics over time: another flow, other curves
    def series():
        return browser.execute_script(
            "const d = document.getElementById('series'); return [d.layout.title.text, d.data[1].y]")
    first = series()
    Select(browser.find_element(By.ID, "series-flow")).select_by_index(1)
    assert series()[0] != first[0] and series()[1] != first[1]
    # the explorer: another request, another waterfall
    def waterfall():
        return (browser.execute_script("return document.getElementById('waterfall').data[0].x"),
                browser.find_element(By.ID, "req-info").text)
    slowest = waterfall()
    Select(browser.find_element(By.ID, "pick")).select_by_value("median")
    median = waterfall()
    assert median != slowest and median[1] != slowest[1]
    assert sum(median[0]) < sum(slowest[0])  # the median request is faster than the slowest
    Select(browser.find_element(By.ID, "flow")).select_by_index(3)
    by_flow = waterfall()
    flow_label = browser.find_element(By.ID, "flow").get_attribute("value")
    assert by_flow != median and flow_label == "2"
    assert browser.find_element(By.ID, "flow").text.split("\n")[3].split(" (")[0] in by_flow[1]
    Select(browser.find_element(By.ID, "pick")).select_by_value("slowest")
    browser.execute_script("window.scrollTo(0, 0)")
    shot = pathlib.Path(os.environ.get("MBREC_SCREENSHOT_DIR", tmp_path)) / "report-ab.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_partitioned_analysis_writes_the_report_too(tmp_path):
    page = analyze_to(tmp_path, "ab", "--partitions", "2")
    text = page.read_text()
    assert text.count('<table class="latency">') == 2  # both hosts' tables
    # the network part is drawn, or the page says why it is missing
    assert '<div class="plot" id="lnet">' in text or "<p>No L_NET: " in text

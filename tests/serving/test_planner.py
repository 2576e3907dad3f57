"""The planner's page in a real headless Chromium (Debian's package, driven by Playwright) against
the running Serve app: picks on the map and in the table, selection both ways, the CSV against
the API's answer, every error message, keyboard use, phone width, and a server still loading.

Screenshots land in $QUANYU_TEST_ARTIFACTS/planner (default .quanyu/test-artifacts/planner)."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests
from mlflow import MlflowClient

from jobs.tracking import REPO
from models.registry import set_alias
from serving.families import wait_until
from tests.serving.conftest import ADMIN, KEY

CHROMIUM = Path("/usr/bin/chromium")
ARTEFACTS = Path(os.environ.get("QUANYU_TEST_ARTIFACTS", REPO / ".quanyu" / "test-artifacts")) / "planner"
# what a browser needs on a machine with no way out (and no reason to try)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail("the planner's tests need Debian's Chromium at /usr/bin/chromium: `make test` installs it "
                    "(apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield launched
        launched.close()


class Planner:
    """One browser tab on the page, with the key entered, recording every host it talks to."""

    def __init__(self, browser, url: str, key: str = KEY, width: int = 1280, height: int = 800) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.hosts: set[str] = set()
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("request", lambda request: self.hosts.add(urlparse(request.url).netloc))
        self.page.goto(url)
        self.page.get_by_label("Your Quanyu API key").fill(key)
        self.page.get_by_role("button", name="Use this key").click()

    def ask(self, city: str, k: int, min_distance_km: float | None = None, max_rent: float | None = None) -> None:
        page = self.page
        page.get_by_label("City").fill(city)
        page.get_by_label("Stores to open").fill(str(k))
        page.get_by_label("Minimum distance between stores (km)").fill("" if min_distance_km is None else str(min_distance_km))
        page.get_by_label("Maximum rent (CNY per m² per month)").fill("" if max_rent is None else str(max_rent))
        page.get_by_role("button", name="Recommend sites").click()

    def message(self) -> str:
        box = self.page.locator("#message")
        box.wait_for(state="visible")
        return box.inner_text()

    def shot(self, name: str) -> Path:
        path = ARTEFACTS / name
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def planner(browser, server):
    base, _, _ = server
    opened = Planner(browser, f"{base}/planner")
    opened.page.locator("#city-list option").first.wait_for(state="attached")
    yield opened
    opened.close()
    assert not opened.errors, opened.errors


def api_answer(base: str, body: dict) -> dict:
    got = requests.post(f"{base}/v1/location/recommend", json=body, headers={"Authorization": f"Bearer {KEY}"},
                        timeout=30)
    assert got.status_code == 200, got.text
    return got.json()


def test_the_page_ships_everything_it_needs_and_nothing_is_fetched_from_elsewhere(server, planner):
    base, _, _ = server
    page = requests.get(f"{base}/planner", timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text
    for name in ("planner.js", "planner.css"):
        asset = requests.get(f"{base}/planner/{name}", timeout=10)
        assert asset.status_code == 200 and "https://" not in asset.text.replace("http://www.w3.org/2000/svg", "")
    for probe in ("..%2Fapp.py", "__init__.py", "%2e%2e%2f%2e%2e%2fpyproject.toml"):
        assert requests.get(f"{base}/planner/{probe}", timeout=10).status_code == 404
    planner.ask("Shanghai", 2)
    planner.page.locator("#picks tbody tr.pick-row").nth(1).wait_for()
    assert planner.hosts == {urlparse(base).netloc}


def test_picks_are_numbered_on_the_map_and_listed_with_reasons_and_selection_goes_both_ways(server, planner):
    base, _, _ = server
    page = planner.page
    planner.ask("Shanghai", 3, min_distance_km=1)
    rows = page.locator("#picks tbody tr.pick-row")
    rows.nth(2).wait_for()
    answer = api_answer(base, {"city": "Shanghai", "k": 3, "min_distance_km": 1.0, "objective": "net_gain"})
    markers = page.locator("svg#map g.pick")
    assert markers.count() == 3 and rows.count() == 3
    assert [markers.nth(i).text_content() for i in range(3)] == ["1", "2", "3"]
    assert [rows.nth(i).get_attribute("data-site") for i in range(3)] == [p["site_id"] for p in answer["picks"]]
    assert page.locator("svg#map .cell").count() == answer["candidates"]
    assert page.locator("svg#map .store").count() >= 1
    reasons = page.locator("#picks tbody tr.reasons").first.locator("li")
    assert [reasons.nth(i).inner_text() for i in range(3)] == answer["picks"][0]["reasons"]
    provenance = page.locator("#provenance").inner_text()
    assert f"Model version {answer['model_version']}" in provenance and answer["data_date"] in provenance
    assert "CNY per year" in page.locator("#legend").inner_text()

    second = answer["picks"][1]["site_id"]
    rows.nth(1).click()  # a row lights up its cell and its marker
    assert "selected" in page.locator(f'svg#map .cell[data-site="{second}"]').get_attribute("class")
    assert "selected" in page.locator(f'svg#map g.pick[data-site="{second}"]').get_attribute("class")
    third = answer["picks"][2]["site_id"]
    markers.nth(2).click()  # and a marker lights up its row
    assert "selected" in rows.nth(2).get_attribute("class")
    assert "selected" not in rows.nth(1).get_attribute("class")
    planner.shot("picks-1280x800.png")
    assert page.locator("#map").bounding_box()["width"] > 500
    assert third in page.locator(f'svg#map g.pick[data-site="{third}"]').get_attribute("aria-label")


def test_the_csv_download_is_the_api_s_answer(server, planner):
    base, _, _ = server
    planner.ask("Beijing", 4, max_rent=1000)
    planner.page.locator("#picks tbody tr.pick-row").nth(3).wait_for()
    with planner.page.expect_download() as download:
        planner.page.get_by_role("button", name="Download the picks (CSV)").click()
    text = Path(download.value.path()).read_text(encoding="utf-8")
    assert download.value.suggested_filename.endswith(".csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    answer = api_answer(base, {"city": "Beijing", "k": 4, "max_rent": 1000.0, "objective": "net_gain"})
    assert [r["site_id"] for r in rows] == [p["site_id"] for p in answer["picks"]]
    for row, pick in zip(rows, answer["picks"]):
        assert int(row["rank"]) == pick["rank"]
        for column in ("lat", "lon", "predicted_revenue", "cannibalisation", "net_gain", "rent_per_sqm_month"):
            assert float(row[column]) == pytest.approx(pick[column], rel=1e-9), column
        assert [row["reason_1"], row["reason_2"], row["reason_3"]] == pick["reasons"]
        assert row["model_version"] == answer["model_version"] and row["data_date"] == answer["data_date"]
        assert row["city"] == "Beijing" and row["objective"] == "net_gain"


def test_each_error_gets_a_message_that_says_what_to_do(server, browser, planner):
    page = planner.page
    planner.ask("Shanghai", 2)
    page.locator("#picks tbody tr.pick-row").nth(1).wait_for()
    planner.ask("Atlantis", 3)
    assert planner.message().startswith("Unknown city 'Atlantis'. Cities with candidate sites: Beijing, Shanghai")
    planner.ask("Shanghai", 3, max_rent=0)
    text = planner.message()
    assert text.startswith("Only 0 of Shanghai's") and "relax the minimum distance / the maximum rent" in text
    planner.shot("error-impossible.png")
    planner.ask("Shanghai", 0)
    assert planner.message() == "Stores to open: a whole number from 1 to 50."
    planner.ask("Shanghai", 3, min_distance_km=500)
    assert planner.message() == "Minimum distance: a number of kilometres from 0 to 100."
    assert page.locator("#result").is_hidden()  # the earlier picks do not answer these questions

    base, _, _ = server
    wrong = Planner(browser, f"{base}/planner", key="not-the-key")
    try:
        assert wrong.message() == "The API key was refused. Enter it again."
        assert wrong.page.get_by_label("Your Quanyu API key").is_visible()
    finally:
        wrong.close()


def test_the_page_works_from_the_keyboard(planner):
    page = planner.page
    page.get_by_label("City").fill("Shanghai")
    page.get_by_label("Stores to open").fill("2")
    page.get_by_label("Stores to open").press("Enter")  # the form submits from a field
    rows = page.locator("#picks tbody tr.pick-row")
    rows.nth(1).wait_for()
    rows.nth(0).focus()
    page.keyboard.press("Tab")  # the next focusable row
    page.keyboard.press("Enter")
    assert "selected" in rows.nth(1).get_attribute("class")
    marker = page.locator("svg#map g.pick").first
    marker.focus()
    page.keyboard.press("Enter")
    assert "selected" in rows.nth(0).get_attribute("class")
    for field in ("City", "Stores to open", "Minimum distance between stores (km)",
                  "Maximum rent (CNY per m² per month)", "Net revenue gain", "Residents reached"):
        assert page.get_by_label(field).count() == 1, field


def test_readable_on_a_phone(browser, server):
    base, _, _ = server
    phone = Planner(browser, f"{base}/planner", width=390, height=844)
    try:
        phone.page.locator("#city-list option").first.wait_for(state="attached")
        phone.ask("Beijing", 3)
        phone.page.locator("#picks tbody tr.pick-row").nth(2).wait_for()
        width = phone.page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"the page scrolls sideways at phone width: {width}"
        assert phone.page.locator("#map").bounding_box()["width"] <= 390
        phone.shot("picks-phone-390.png")
    finally:
        phone.close()
    assert not phone.errors, phone.errors


def test_a_server_still_loading_says_so_and_the_page_carries_on_when_it_is_ready(browser, server):
    """A second app whose families follow an alias that does not exist yet: the page says the
    server is still loading and retries by itself; once the alias exists, the picks arrive."""
    from serving import app

    base, uri, _ = server
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QUANYU_API_KEYS", KEY)
        patch.setenv("QUANYU_ADMIN_KEYS", ADMIN)
        app.run({"tracking_uri": uri, "alias": "planner-e2e", "poll_seconds": 60}, name="planner-loading",
                prefix="/loading")
    client = MlflowClient(uri)
    waiting = None
    try:
        assert wait_until(lambda: requests.get(f"{base}/loading/healthz", timeout=5).status_code == 200, 120, 1.0)
        # every kind of route answers 503 with what to do, the batched ones included
        auth = {"Authorization": f"Bearer {KEY}"}
        for path, body in [("/v1/demand/forecast", {"store_id": "S1", "sku_ids": ["K1"]}),
                           ("/v1/location/invocations", {"dataframe_records": [{"city": "Shanghai"}]}),
                           ("/v1/demand/invocations", {"dataframe_records": [{"store_id": "S1"}]})]:
            got = requests.post(f"{base}/loading{path}", json=body, headers=auth, timeout=30)
            family = path.split("/")[2]
            assert got.status_code == 503, (path, got.status_code, got.text)
            assert got.json()["detail"].startswith(f"quanyu-{family} has no loaded version yet"), got.text
            assert got.json()["detail"].endswith("retry shortly"), got.text
        waiting = Planner(browser, f"{base}/loading/planner")
        text = waiting.message()
        assert text.startswith("The server is still loading the location model") and "Trying again every" in text
        waiting.shot("still-loading.png")
        set_alias("location", client.get_model_version_by_alias("quanyu-location", "champion").version,
                  "planner-e2e", client)
        reloaded = requests.post(f"{base}/loading/v1/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"},
                                 timeout=60)
        assert reloaded.status_code == 200, reloaded.text
        waiting.page.locator("#city-list option").first.wait_for(state="attached")  # the page retried by itself
        assert waiting.page.locator("#message").is_hidden()
        waiting.ask("Shanghai", 2)
        waiting.page.locator("#picks tbody tr.pick-row").nth(1).wait_for()
        assert waiting.page.locator("svg#map g.pick").count() == 2
        assert not waiting.errors, waiting.errors
    finally:
        if waiting is not None:
            waiting.close()
        app.delete("planner-loading")
        client.delete_registered_model_alias("quanyu-location", "planner-e2e")

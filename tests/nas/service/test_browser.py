"""The web UI in a real browser: Debian's headless Chromium driven by Selenium through Debian's
chromium-driver (nothing is downloaded). Log in, start a search from the form, watch it update
live, see the Pareto plot, choose a trial by latency budget, export it and download it.

Screenshots of the search page and of the front are saved to runs/test-artifacts/.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.nas.service.conftest import Served, search_config, start_service
from tests.services import wait_for

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = REPO / "runs" / "test-artifacts"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (scripts/env.sh installs them)",
)


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    service = start_service(tmp_path_factory.mktemp("ui") / "runs")
    yield service
    service.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,800",
    ):
        options.add_argument(flag)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads)})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.execute_cdp_cmd(
        "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    driver.downloads = downloads  # type: ignore[attr-defined]
    yield driver
    driver.quit()


def test_log_in_search_watch_choose_export_download(ui: Served, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 300)
    browser.get(ui.url + "/")
    wait.until(seen.presence_of_element_located((By.ID, "token")))
    browser.find_element(By.ID, "token").send_keys("wrong")
    browser.find_element(By.ID, "login").click()
    assert (
        "That is not the token."
        in wait.until(seen.presence_of_element_located((By.ID, "message"))).text
    )
    browser.find_element(By.ID, "token").send_keys(ui.token)
    browser.find_element(By.ID, "login").click()
    config = wait.until(seen.presence_of_element_located((By.ID, "config")))

    # A bad config is refused with the field and what is allowed, on the page.
    config.clear()
    config.send_keys("search: {sampler: cmaes}")
    browser.find_element(By.ID, "submit-search").click()
    wait.until(seen.text_to_be_present_in_element((By.ID, "message"), "search.sampler = 'cmaes'"))

    browser.execute_script(
        "document.getElementById('config').value = arguments[0]", search_config("ui")
    )
    browser.find_element(By.ID, "submit-search").click()
    wait.until(seen.url_contains("/searches/ui"))
    browser.execute_script("window.notReloaded = true")
    wait.until(seen.text_to_be_present_in_element((By.ID, "progress-text"), "3/3 trials"))
    wait.until(seen.text_to_be_present_in_element((By.ID, "state"), "finished"))
    assert browser.execute_script("return window.notReloaded === true"), (
        "updates came live, no reload"
    )
    plot = wait.until(
        seen.presence_of_element_located((By.CSS_SELECTOR, "#plot .scatterlayer .point"))
    )
    assert plot is not None
    wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, "#front tbody tr")))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "service-search.png"))
    browser.find_element(By.ID, "plot").screenshot(str(ARTIFACTS / "service-front.png"))

    browser.find_element(By.ID, "budget").send_keys("1000")
    browser.find_element(By.CSS_SELECTOR, "#pick button").click()
    wait.until(seen.text_to_be_present_in_element((By.ID, "pick-result"), "accuracy"))
    browser.find_element(By.LINK_TEXT, "open it").click()
    wait.until(seen.presence_of_element_located((By.ID, "export-button"))).click()
    link = wait.until(
        seen.element_to_be_clickable((By.CSS_SELECTOR, "#exports li.finished a.download"))
    )
    link.click()
    # Chromium writes NAME.crdownload and renames it NAME.zip once the download is whole.
    archives = wait_for(
        lambda: list(browser.downloads.glob("*.zip")), 60, "the downloaded archive", interval=0.2
    )
    assert len(archives) == 1 and archives[0].stat().st_size > 1000

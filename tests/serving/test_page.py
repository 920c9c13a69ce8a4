"""The page at /, in a real browser (headless Chromium driven by Selenium): it lists the adapters, and its
playground generates a prompt with two models side by side, streaming."""

import shutil
from pathlib import Path

import pytest
from .servers import Alone, served

pytestmark = pytest.mark.slow  # a browser

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture
def browser():
    if not (Path(CHROMIUM).is_file() and Path(DRIVER).is_file()):
        pytest.skip(f"no headless browser: install Debian's chromium and chromium-driver ({CHROMIUM}, {DRIVER})")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-background-networking",
                     "--disable-component-update", "--no-first-run"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)  # told where: it downloads nothing
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_the_page_lists_the_adapters_and_generates_with_two_side_by_side(browser, tmp_path, many_adapters, tiny_model):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    root = tmp_path / "store"
    for name in ("a00", "a01"):
        shutil.copytree(many_adapters / name, root / name)
    with served(store=str(root)) as running:
        browser.get(running.url + "/")
        wait = WebDriverWait(browser, 30)
        rows = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#models tbody tr") or None)
        assert [r.get_attribute("data-model") for r in rows] == [str(tiny_model), "a00", "a01"]
        assert "(base)" in rows[0].text

        Select(browser.find_element(By.ID, "left")).select_by_value("a01")
        Select(browser.find_element(By.ID, "right")).select_by_value(str(tiny_model))
        for field, value in (("prompt", "The cat"), ("max-tokens", "15"), ("temperature", "0")):
            element = browser.find_element(By.ID, field)
            element.clear()
            element.send_keys(value)
        browser.find_element(By.ID, "generate").click()
        for side in ("left", "right"):
            wait.until(lambda d: d.find_element(By.ID, f"out-{side}").get_attribute("data-done") == "true")
        left = browser.find_element(By.ID, "out-left").get_attribute("textContent")
        right = browser.find_element(By.ID, "out-right").get_attribute("textContent")
    alone = Alone(root, tiny_model)
    assert left == alone("a01", "The cat", 15)
    assert right == alone(None, "The cat", 15)
    assert left != right
    assert browser.find_element(By.ID, "label-left").text == "a01"

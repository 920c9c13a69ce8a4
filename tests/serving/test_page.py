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
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
    ):
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
            wait.until(lambda d, side=side: d.find_element(By.ID, f"out-{side}").get_attribute("data-done") == "true")
        left = browser.find_element(By.ID, "out-left").get_attribute("textContent")
        right = browser.find_element(By.ID, "out-right").get_attribute("textContent")
    alone = Alone(root, tiny_model)
    assert left == alone("a01", "The cat", 15)
    assert right == alone(None, "The cat", 15)
    assert left != right
    assert browser.find_element(By.ID, "label-left").text == "a01"


def test_the_page_lists_every_adapter_when_figures_are_missing_or_a_manifest_is_damaged(
    browser, tmp_path, trained_adapters, tiny_model
):
    """A null perplexity and a damaged manifest used to stop the table at that row and leave both selects
    empty (the script threw on `toFixed` of null)."""
    import json

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from toolkit.modeling.fingerprints import file_sha256

    root = tmp_path / "store"
    for name in ("poems", "quickstart"):
        shutil.copytree(trained_adapters / name, root / name)
    # poems' metrics miss the adapted figure (recorded in its manifest as the file it is: the adapter stays sound).
    metrics = root / "poems" / "metrics.json"
    figures = json.loads(metrics.read_text())
    base_perplexity = figures["base"]["perplexity"]
    figures["adapted"]["perplexity"] = None
    metrics.write_text(json.dumps(figures))
    manifest = json.loads((root / "poems" / "manifest.json").read_text())
    manifest["files"]["metrics.json"] = {"sha256": file_sha256(metrics), "bytes": metrics.stat().st_size}
    (root / "poems" / "manifest.json").write_text(json.dumps(manifest))
    damaged = json.loads((root / "quickstart" / "manifest.json").read_text())
    damaged["created"] = 12345
    (root / "quickstart" / "manifest.json").write_text(json.dumps(damaged))
    models = [str(tiny_model), "poems", "quickstart"]
    with served(store=str(root)) as running:
        assert running.call("GET", "/v1/models").body["data"][1]["adapted_perplexity"] is None
        browser.get(running.url + "/")
        wait = WebDriverWait(browser, 30)
        rows = wait.until(lambda d: (r := d.find_elements(By.CSS_SELECTOR, "#models tbody tr")) and len(r) == 3 and r)
        assert [r.get_attribute("data-model") for r in rows] == models
        assert f"{base_perplexity:.2f} \u2192 ?" in rows[1].text
        assert "damaged" in rows[2].text and "created" in rows[2].text
        for side in ("left", "right"):
            assert [o.get_attribute("value") for o in Select(browser.find_element(By.ID, side)).options] == models

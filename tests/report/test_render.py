"""ftbench.report.render: report.html as a browser draws it."""

import shutil

import pytest

from ftbench.common import config, paths
from ftbench.stages import report

from .fabricate import fabricate_stage_outputs


@pytest.mark.skipif(
    not shutil.which("chromedriver"), reason="chromium-driver not installed (.ci/run installs it)"
)
def test_html_report_renders_in_headless_chromium(project):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    p = config.load()
    fabricate_stage_outputs(p)
    report.run(p)
    options = webdriver.ChromeOptions()
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
    ):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(paths.REPORT_HTML.resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)"
        )
        rows = driver.execute_script("return document.querySelectorAll('table tbody tr').length")
        headings = driver.execute_script(
            "return Array.from(document.querySelectorAll('h2')).map(h => h.textContent)"
        )
    finally:
        driver.quit()
    assert len(images) == 3 and all(images)  # two Pareto figures and the loss curves, all decoded
    assert rows > 20 and "Quality" in headings and "Provenance" in headings

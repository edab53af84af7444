"""The recipe report in a real browser (Debian's Chromium through playwright): it renders whole
from the one file, fetching nothing."""

from __future__ import annotations

import os
import shutil

import pytest
import yaml

from edgefusion.recipe.report import write_report
from edgefusion.recipe.run import run_recipe
from edgefusion.toy.dataset import write_toy_dataset

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the review extra)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on PATH: `make test` installs it (apt-get install chromium)"
)


def test_the_report_renders_offline_in_chromium(tmp_path, write_recipe):
    images = write_toy_dataset(tmp_path / "web", kind="web", n=40, size=32, progress=False)
    pipeline = {"input": str(images), "stages": [{"stage": "ingest"}, {"stage": "dedup"}]}
    recipe = write_recipe(
        yaml.safe_dump({"stages": [{"name": "curated", "kind": "data", "config": pipeline}]})
    )
    run_recipe(recipe, tmp_path / "out", echo=lambda line: None)
    report = write_report(tmp_path / "out")

    with sync_api.sync_playwright() as playwright:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium's sandbox refuses root
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        page = browser.new_page()
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.goto(report.as_uri())
        page.wait_for_load_state("load")
        assert page.title().startswith("Recipe report")
        assert page.locator("h3", has_text="Data ladder").is_visible()
        sizes = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.complete, i.naturalWidth])")
        browser.close()
    assert sizes and all(complete and width > 0 for complete, width in sizes)  # every image decoded
    assert all(url.startswith(("file://", "data:")) for url in requested), requested

"""The Dagster UI, driven by a real browser: materialize one model type by clicking, as the README says.

Playwright drives Debian's Chromium (`/usr/bin/chromium`, installed by `scripts/test` where it can
use apt; never downloaded by Playwright). Without it the test is skipped, saying why.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path

import pytest

from .live import cli, graphql, new_home, serving

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
RUNS = """query Runs($model: String!) { runsOrError(filter: {tags: [{key: "dagster/partition", value: $model}]})
  { ... on Runs { results { runId status } } } }"""

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM}: scripts/test installs Debian's package where apt is usable",
                allow_module_level=True)


def _dismiss_welcome(page) -> None:
    """A first visit may show Dagster's community dialog; a user would click Skip."""
    with contextlib.suppress(playwright.TimeoutError):
        page.get_by_role("button", name="Skip").click(timeout=8000)


def _wait_for_run(url: str, model: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = graphql(url, RUNS, {"model": model})["runsOrError"]["results"]
        if runs and runs[0]["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            return runs[0]
        time.sleep(2)
    raise TimeoutError(f"no finished run of {model} within {timeout:.0f} s")


def test_materialize_one_model_type_by_clicking_then_read_it_in_the_ui(tmp_path: Path) -> None:
    home = new_home(tmp_path)
    assert cli(home, "seed-demo", "--days", "60", "--units", "4").returncode == 0
    with serving(home) as url, playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        # README, *What you see in the UI*: Jobs -> retrain_model_job -> Materialize all, one partition
        page.goto(f"{url}/locations/retraining_pipelines/jobs/retrain_model_job", wait_until="networkidle")
        _dismiss_welcome(page)
        page.get_by_role("button", name="Materialize all").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text("Select a partition or create one").click()
        page.keyboard.type("disease")
        page.get_by_role("menuitem").filter(has_text="disease").last.click()
        page.keyboard.press("Escape")
        dialog.get_by_role("button", name="Launch 1 run").click()
        assert _wait_for_run(url, "disease")["status"] == "SUCCESS"

        page.goto(f"{url}/assets/validation_metrics", wait_until="networkidle")
        metadata = page.locator("table").filter(has_text="disease_served_accuracy")
        playwright.expect(metadata).to_contain_text("promoted")
        playwright.expect(metadata).to_contain_text("1.0.0")
        page.get_by_role("button", name="Plots").click()
        playwright.expect(page.get_by_text("disease_accuracy").first).to_be_visible()

        page.goto(f"{url}/assets/validation_metrics?view=checks", wait_until="networkidle")
        playwright.expect(page.get_by_text("promotion_gate").first).to_be_visible()

        page.goto(f"{url}/automation", wait_until="networkidle")
        playwright.expect(page.get_by_text("retrain_climate_optimizer_weekly_job1").first).to_be_visible()
        playwright.expect(page.get_by_text("drift_sensor").first).to_be_visible()
        browser.close()

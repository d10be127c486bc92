"""`kedro viz` as a user opens it: the server's API and the page in a real headless browser.

One `kedro viz run` serves this project for the module (about 15 s to start). The browser is
Debian's chromium (`/usr/bin/chromium`, installed through apt by scripts/setup.sh) driven by
Playwright; no browser is ever downloaded. Every request that does not go to the local server
(Google Fonts, the upgrade check) is aborted, so an offline network cannot stall rendering.

Set PERSONA_SHOPPERS_VIZ_SCREENSHOT=<path> to also copy the screenshot there (that is how
docs/img/kedro_viz.png was made).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from persona_shoppers.pipeline_registry import STAGES

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Datasets a user looks for first, with the kedro-viz layer conf/base/catalog.yml gives them.
KEY_DATASETS = {
    "raw_events": "raw",
    "enriched_sessions": "intermediate",
    "buyers": "primary",
    "buyer_features": "feature",
    "vq_vae_model": "persona_models",
    "persona_assignments": "personas",
    "shop_persona_distributions": "personas",
    "sft_traces_stage2": "model_input",
    "sft_model": "models",
    "simulated_sessions": "model_output",
    "ab_test_results": "reporting",
}
# The layer bands in data-flow order; kedro viz drops them all if the layers form a cycle.
LAYERS = [
    "raw",
    "intermediate",
    "primary",
    "feature",
    "persona_models",
    "personas",
    "model_input",
    "models",
    "model_output",
    "reporting",
]
START_TIMEOUT_S = 180


def _free_port() -> int:
    """A free port at most 49151 (kedro viz refuses higher ones)."""
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(20000, 49100)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-49100")


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def viz_url() -> Iterator[str]:
    """`kedro viz run` on this project, in its own process group; its URL while it runs."""
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "kedro", "viz", "run", "--host", "127.0.0.1"]
    command += ["--port", str(_free_port()), "--no-browser"]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # kedro viz starts a child server: stop the whole group
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    try:
        url = None
        deadline = time.monotonic() + START_TIMEOUT_S
        while url is None and time.monotonic() < deadline and process.poll() is None:
            # The port moves up when busy: read the one it reports.
            found = re.search(r"running at\s+(http://127\.0\.0\.1:\d+)", "".join(lines))
            if found:
                try:
                    _get_json(found.group(1) + "/api/main")
                    url = found.group(1)
                except OSError:
                    pass
            time.sleep(0.5)
        if url is None:
            pytest.fail("kedro viz did not start:\n" + "".join(lines)[-3000:])
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="module")
def registry() -> dict:
    """The project's own pipelines, to compare with what kedro viz shows."""
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(ROOT)
    from persona_shoppers.pipeline_registry import register_pipelines

    return register_pipelines()


def _names(api: dict, types: tuple[str, ...] = ("data",)) -> set[str]:
    return {n["name"] for n in api["nodes"] if n["type"] in types}


@pytest.mark.integration
def test_api_lists_every_stage_with_its_datasets_and_layers(viz_url: str, registry: dict):
    main = _get_json(viz_url + "/api/main")
    assert {"__default__", *STAGES} <= {p["id"] for p in main["pipelines"]}
    assert main["layers"] == LAYERS
    layers = {n["name"]: n.get("layer") for n in main["nodes"] if n["type"] == "data"}
    for dataset, layer in KEY_DATASETS.items():
        assert layers.get(dataset) == layer, dataset
    for stage in STAGES:
        api = _get_json(f"{viz_url}/api/pipelines/{stage}")
        expected = {d for d in registry[stage].datasets() if not d.startswith("params:")}
        assert _names(api) == expected, stage
        assert _names(api, ("task",)) == {n.name for n in registry[stage].nodes}, stage


@pytest.mark.integration
def test_browser_shows_pipelines_datasets_and_layers(viz_url: str, tmp_path: Path):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed: run scripts/setup.sh as root")
    from playwright.sync_api import sync_playwright

    shown = "Array.from(document.querySelectorAll('.pipeline-node__text')).map(e => e.textContent)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 2000})
            # No first-visit tour; nothing but the local server is reached.
            page.add_init_script(
                "localStorage.setItem('KedroViz', JSON.stringify({showFeatureHints: false}))"
            )
            page.route(
                "**/*",
                lambda route: (
                    route.continue_() if route.request.url.startswith(viz_url) else route.abort()
                ),
            )
            page.goto(viz_url)
            page.wait_for_selector(".pipeline-node", timeout=60_000)
            dismiss = page.get_by_text("Dismiss")  # the offline "Kedro-Viz None is here!" banner
            if dismiss.count():
                dismiss.first.click()

            assert set(KEY_DATASETS) <= set(page.evaluate(shown))
            assert page.locator(".pipeline-layer-name").all_inner_texts() == LAYERS
            screenshot = tmp_path / "kedro_viz.png"
            page.screenshot(path=screenshot)

            selector = page.locator("[data-test=kedro-pipeline-selector]")
            selector.locator(".dropdown__label").click()
            # textContent, not innerText: the menu may still be opening (hidden text is "").
            options = [o.strip() for o in selector.locator(".menu-option").all_text_contents()]
            assert set(STAGES) <= set(options)
            selector.locator(".dropdown__label").click()
            # Each stage, chosen in the selector, draws exactly its own nodes and datasets.
            for stage in STAGES:
                api = _get_json(f"{viz_url}/api/pipelines/{stage}")
                expected = sorted(_names(api, ("task", "data")))
                selector.locator(".dropdown__label").click()
                selector.locator(".menu-option", has_text=re.compile(f"^{stage}$")).click()
                page.wait_for_function(
                    f"JSON.stringify({shown}.sort()) === JSON.stringify({json.dumps(expected)})",
                    timeout=20_000,
                )
                assert selector.locator(".dropdown__label").inner_text() == stage
        finally:
            browser.close()

    png = screenshot.read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000  # a drawn graph, not a blank page
    if os.environ.get("PERSONA_SHOPPERS_VIZ_SCREENSHOT"):
        shutil.copy(screenshot, os.environ["PERSONA_SHOPPERS_VIZ_SCREENSHOT"])

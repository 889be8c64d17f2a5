"""A real agentmon (enricher -> chDB, SQLite registry, the API on a real port) and a real
browser: Playwright driving the Debian chromium. Without chromium the tests skip on a
developer's machine and FAIL in CI (CI=true)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from agentmon.config import Settings
from enricher.service import Enricher
from registry_api.app import create_app
from registry_api.store.migrate import upgrade_registry
from tests.conftest import _in_ci

API_KEY = "ui-test-key"
CHROMIUM = os.environ.get("AGENTMON_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[3] / "docs" / "screenshots"


class ApiServer:
    """create_app served by uvicorn on a free port, in a thread."""

    def __init__(self, settings: Settings) -> None:
        self.server = uvicorn.Server(uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=0, log_level="warning", timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.client = httpx.Client(base_url=self.url, timeout=10)
        return self

    def __exit__(self, *_) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def agentmon(tmp_path, chdb_url, clickhouse_database) -> Iterator[tuple[Enricher, ApiServer]]:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    upgrade_registry(url)
    settings = Settings(data_dir=tmp_path / "data", registry_url=url, grpc_port=0, http_port=0,
                        clickhouse_url=chdb_url, clickhouse_database=clickhouse_database,
                        hold_seconds=3.0, registry_refresh_seconds=0.2, api_key=API_KEY)
    enricher = Enricher(settings)
    enricher.start()
    try:
        with ApiServer(settings) as api:
            yield enricher, api
    finally:
        enricher.stop(timeout=5)


@pytest.fixture(scope="session")
def browser():
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        message = f"chromium is not installed at {CHROMIUM} (apt-get install chromium)"
        if _in_ci():
            pytest.fail(message + ": required in CI", pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, agentmon):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-GB", timezone_id="UTC",
                                  base_url=agentmon[1].url)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()  # closes the live streams before the server stops


@pytest.fixture
def screenshot_dir(tmp_path) -> Path:
    """docs/screenshots when AGENTMON_UPDATE_SCREENSHOTS=1 (to refresh the README's), else a temp dir."""
    if os.environ.get("AGENTMON_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    return tmp_path

"""/docs and /redoc render in headless Chromium with nothing fetched but from the server.

Chromium comes from the system (Debian's `chromium`), driven by Playwright's Python
package. Without it the tests skip, unless BILLFOLD_REQUIRE_CHROMIUM=1 (CI) makes that a
failure."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.http.served import served

CHROMIUM = os.environ.get("BILLFOLD_CHROMIUM") or shutil.which("chromium")
REQUIRE_CHROMIUM = os.environ.get("BILLFOLD_REQUIRE_CHROMIUM") == "1"
# Operations the pages must list, as each page shows them.
PATHS = ["/v1/entitlements/check", "/v1/events", "/v1/customers/{external_id}/grants"]
SUMMARIES = ["Check", "Report Usage", "Create Grant"]


@pytest.fixture(scope="module")
def server(sqlite_url: str) -> Iterator[str]:
    with served(sqlite_url) as base:
        yield base


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    if CHROMIUM is None:
        message = "Chromium not found (Debian: apt-get install chromium); browser tests skipped"
        if REQUIRE_CHROMIUM:
            pytest.fail(f"Chromium is required (BILLFOLD_REQUIRE_CHROMIUM=1): {message}")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                # Nothing resolves but the server's own address.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


def render(chromium: object, url: str, wait_for: str) -> tuple[str, list[str]]:
    """The page's text once `wait_for` shows, and every URL it asked for off the server."""
    from playwright.sync_api import Browser, Route

    assert isinstance(chromium, Browser)
    server = urlsplit(url).netloc
    elsewhere: list[str] = []

    def only_the_server(route: Route) -> None:
        where = urlsplit(route.request.url)
        if where.netloc == server or where.scheme in ("blob", "data"):  # no network
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    context = chromium.new_context(service_workers="block")
    try:
        context.route("**/*", only_the_server)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        page.wait_for_selector(wait_for, state="attached", timeout=30_000)
        text = page.inner_text("body")
        assert not errors, errors
        return text, elsewhere
    finally:
        context.close()


def test_swagger_ui_lists_the_operations_offline(chromium: object, server: str) -> None:
    text, elsewhere = render(chromium, server + "/docs", ".opblock-summary")
    assert elsewhere == []
    for path in PATHS:
        assert path.replace("{", "").replace("}", "") in text.replace("{", "").replace("}", "")
    for summary in SUMMARIES:
        assert summary in text


def test_redoc_lists_the_operations_offline(chromium: object, server: str) -> None:
    text, elsewhere = render(chromium, server + "/redoc", "text=Report Usage")
    assert elsewhere == []
    for summary in SUMMARIES:
        assert summary in text

"""Browser-test helpers: the app on a port, Debian's Chromium, and waits that work under
the app's Content-Security-Policy."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# The flags that work headless on these machines (no GPU, no sandbox inside containers).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# `pytestmark = needs_chromium` in a module whose every test drives the browser.
needs_chromium = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}"),
]


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """The WSGI app on a free loopback port, threaded; yields its base URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def launch(playwright: Any) -> Any:
    """Debian's Chromium, headless, through Playwright."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def log_in(page: Any, base: str, path: str, username: str, password: str) -> None:
    """Open `path`, answer the login form it redirects to, and land back on `path`."""
    page.goto(f"{base}{path}")
    assert "/login" in page.url, f"{path} did not ask for a login"
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}{path}")


def wait_until(page: Any, expression: str, timeout_ms: int = 15_000) -> None:
    """Poll a JS expression until it is truthy. Playwright's wait_for_function evaluates its
    predicate with eval inside the page, which the CSP (no 'unsafe-eval') refuses."""
    for _ in range(max(1, timeout_ms // 50)):
        if page.evaluate(expression):
            return
        page.wait_for_timeout(50)
    raise AssertionError(f"still false after {timeout_ms} ms: {expression}")


def csp_violations(page: Any) -> list[str]:
    """A list that fills with the page's Content-Security-Policy complaints."""
    found: list[str] = []
    page.on(
        "console",
        lambda msg: found.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    return found

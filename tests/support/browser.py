"""Browser-test helpers that work under the app's Content-Security-Policy."""

from __future__ import annotations

from typing import Any


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

"""Review page latency: a scripted browser reviewer clears a queue of 12-megapixel photos.

Every item is decided with the keyboard ("1": the top suggestion) in headless Chromium; the
time from the keydown to the next photo painted (decoded, then one animation frame) is
measured in the page. Run once on localhost and once through an emulated 100 Mbit link
(CDP Network.emulateNetworkConditions). The reviewer looks at each photo for --think-ms
before deciding, as a person does (that is the time the page has to read ahead).

    PYTHONPATH=$PWD python benchmarks/review_latency.py --items 300
    PYTHONPATH=/work/main python benchmarks/review_latency.py --items 300 --label before

Photos are generated once into --photos (distinct content each, so no copy is shared).
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

log = logging.getLogger("review_latency")
CHROMIUM = "/usr/bin/chromium"
LABELS = ["Naja_philippinensis", "Trimeresurus_flavomaculatus", "Boiga_dendrophila"]
USERNAME, PASSWORD = "bench", "bench-reviewer-pw"
MBIT = 1_000_000 / 8  # bytes per second

# In the page: the keydown starts a clock; the photo's next src, decoded and painted, stops it.
PROBE = r"""
(() => {
  window.__lat = [];
  window.__rtt = [];
  let t0 = null;
  document.addEventListener("keydown", () => { t0 = performance.now(); }, true);
  const photo = document.getElementById("photo");
  new MutationObserver(() => {
    if (t0 === null || !photo.getAttribute("src")) return;
    const start = t0; t0 = null;
    const done = () => requestAnimationFrame(() => {
      window.__lat.push(performance.now() - start);
      // The round trip of the decision itself (POST to the next item's JSON), for the split.
      const posts = performance.getEntriesByType("resource")
        .filter((e) => /decision\.json/.test(e.name));
      window.__rtt.push(posts.length ? posts[posts.length - 1].duration : 0);
      performance.clearResourceTimings();
    });
    (photo.complete && photo.naturalWidth ? Promise.resolve() : photo.decode()).then(done, done);
  }).observe(photo, { attributes: true, attributeFilter: ["src"] });
})();
"""


def make_photos(folder: Path, count: int, width: int = 4000, height: int = 3000) -> None:
    """`count` distinct 12-megapixel JPEGs (smooth texture plus grain, like a field photo)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    small = rng.integers(40, 200, size=(height // 16, width // 16, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))
    for i in range(count):
        path = folder / f"IMG_{i:04d}.jpg"
        if path.exists():
            continue
        shifted = np.roll(base, shift=(i * 37) % height, axis=0).copy()
        y, x = (i * 131) % (height - 400), (i * 211) % (width - 400)
        shifted[y : y + 400, x : x + 400] = rng.integers(0, 255, size=3, dtype=np.uint8)
        grain = rng.normal(0, 5, size=(height, width // 4, 1)).repeat(4, axis=1)
        img = np.clip(shifted + grain, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(path, quality=90)


def build_queue(work: Path, photos: Path) -> Any:
    """A scored job over the photos, every photo routed to review, and a reviewer."""
    from service import users
    from service.db import session_scope
    from service.jobs import create_job
    from service.migrate import upgrade
    from service.models import Role
    from service.registry import add_model
    from service.scanning import run_scan
    from service.scoring import score_chunk
    from service.settings import Settings
    from tests.support.models import make_model_folder
    from workers.tasks import run_model

    url = f"sqlite:///{work / 'herpscore.db'}"
    upgrade(url)
    settings = Settings(
        data_dir=work / "data",
        database_url=url,
        allowed_roots=[photos.parent],
        broker_url="memory://",
        review_threshold=0.99,
        secret_key=secrets.token_hex(32),  # the app refuses a weak key
    )
    model_dir = make_model_folder(work / "model", labels=LABELS, scale=5.0)
    with session_scope(url) as session:
        add_model(session, settings, model_dir, name="bench", activate=True)
        job_id = create_job(session, settings, photos.name).id
        users.create_user(session, USERNAME, PASSWORD, Role.REVIEWER)
    chunks: list[int] = []
    run_scan(settings, job_id, chunks.extend)
    for chunk_id in chunks:
        score_chunk(settings, chunk_id, run_model)
    return settings


def serve(settings: Any) -> tuple[str, Any]:
    from werkzeug.serving import make_server

    from service.web import create_app

    server = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server


def review(
    url: str, items: int, mbit: float | None, think_ms: int
) -> tuple[list[float], list[float]]:
    """Log in, then decide `items` items; keypress-to-painted-photo and decision round-trip
    times in ms."""
    from playwright.sync_api import sync_playwright

    from tests.support.browser import wait_until  # polls: the CSP refuses wait_for_function

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_context(viewport={"width": 1366, "height": 768}).new_page()
        page.set_default_timeout(60_000)
        if mbit:
            cdp = page.context.new_cdp_session(page)
            cdp.send("Network.enable")
            cdp.send(
                "Network.emulateNetworkConditions",
                {
                    "offline": False,
                    "latency": 2,
                    "downloadThroughput": mbit * MBIT,
                    "uploadThroughput": mbit * MBIT,
                },
            )
        page.goto(f"{url}/review")
        page.fill("input[name=username]", USERNAME)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{url}/review")
        wait_until(page, "document.getElementById('photo').naturalWidth > 0")
        page.evaluate(PROBE)
        for i in range(items):
            page.wait_for_timeout(think_ms)
            wait_until(page, "!document.getElementById('review').hasAttribute('aria-busy')")
            page.keyboard.press("1")
            if i == items - 1:
                break  # the last decision leaves an empty queue: no photo to paint
            wait_until(page, f"window.__lat.length > {i}")
        times: list[float] = page.evaluate("window.__lat")
        trips: list[float] = page.evaluate("window.__rtt")
        browser.close()
    return times, trips


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 1)

    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": pct(0.95),
        "max_ms": round(ordered[-1], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--think-ms", type=int, default=400)
    parser.add_argument("--photos", type=Path, default=Path("/tmp/herpscore-review-bench/photos"))
    parser.add_argument("--label", default="after")
    parser.add_argument("--out", type=Path, default=None, help="append the result as JSON here")
    parser.add_argument("--links", default="local,100", help="local and/or Mbit values")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    t = time.monotonic()
    make_photos(args.photos, args.items)
    log.info("photos ready (%.0f s)", time.monotonic() - t)
    results: dict[str, Any] = {"label": args.label, "items": args.items, "think_ms": args.think_ms}
    for link in args.links.split(","):
        with tempfile.TemporaryDirectory(prefix="review-bench-") as tmp:
            t = time.monotonic()
            settings = build_queue(Path(tmp), args.photos)
            log.info("queue built (%.0f s)", time.monotonic() - t)
            url, server = serve(settings)
            try:
                mbit = None if link == "local" else float(link)
                times, trips = review(url, args.items, mbit, args.think_ms)
            finally:
                server.shutdown()
            from service.db import dispose_engines

            dispose_engines()
        results[link] = summary(times)
        results[link]["decision_round_trip"] = summary(trips)
        log.info("all times: %s", [round(x) for x in times])
        log.info("round trips: %s", [round(x) for x in trips])
        log.info("%s %s: %s", args.label, link, results[link])
    print(json.dumps(results))
    if args.out:
        with args.out.open("a", encoding="utf-8") as out:
            out.write(json.dumps(results) + "\n")


if __name__ == "__main__":
    main()

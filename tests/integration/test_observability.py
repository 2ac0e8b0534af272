"""/healthz, /readyz and /metrics through the Flask test client (SQLite and PostgreSQL), and
the Prometheus multiprocess mode across real processes."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from flask.testing import FlaskClient

from service.db import session_scope
from service.exports import ExportOptions, create_export
from service.models import Annotation, Decision, Role, RunStatus, TrainingRun, utcnow
from service.settings import Settings
from service.web import create_app
from tests.integration.test_review import seed_queue

Headers = dict[str, str]
ROOT = Path(__file__).resolve().parents[2]


def client_for(settings: Settings) -> FlaskClient:
    app = create_app(settings)
    app.testing = True
    return app.test_client()


def sample(text: str, name: str, labels: str = "") -> float:
    """The value of one sample in a Prometheus text exposition."""
    pattern = re.escape(name + (f"{{{labels}}}" if labels else "")) + r" (\S+)"
    found = re.search(rf"^{pattern}$", text, re.M)
    assert found, f"{name}{{{labels}}} not in:\n{text}"
    return float(found.group(1))


def test_healthz_is_public_and_checks_nothing(api_client: FlaskClient) -> None:
    response = api_client.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_readyz_checks_the_database_and_the_broker(
    api_client: FlaskClient, api_settings: Settings, tmp_path: Path
) -> None:
    ready = api_client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ok", "database": "ok", "broker": "ok"}

    no_broker = client_for(api_settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"}))
    response = no_broker.get("/readyz")
    assert response.status_code == 503
    assert response.get_json() == {
        "status": "unavailable",
        "database": "ok",
        "broker": "unavailable",
    }

    gone = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'x.db'}"
    no_db = client_for(api_settings.model_copy(update={"database_url": gone}))
    assert no_db.get("/readyz").get_json()["database"] == "unavailable"


def test_metrics_need_a_key_unless_made_public(
    api_client: FlaskClient, api_settings: Settings, auth: Callable[[Role], Headers]
) -> None:
    assert api_client.get("/metrics").status_code == 401
    response = api_client.get("/metrics", headers=auth(Role.VIEWER))
    assert response.status_code == 200 and response.mimetype == "text/plain"
    public = client_for(api_settings.model_copy(update={"metrics_public": True}))
    assert public.get("/metrics").status_code == 200


def test_metrics_report_jobs_backlog_decisions_queues_and_worker_counts(
    api_client: FlaskClient, api_settings: Settings, auth: Callable[[Role], Headers]
) -> None:
    from service.monitoring import BATCH_SECONDS, count_outcomes

    seeded = seed_queue(api_settings.db_url, count=3)
    with session_scope(api_settings.db_url) as session:
        image_id = seeded.image_ids[0]
        for decision, undone in ((Decision.LABEL, None), (Decision.UNKNOWN, utcnow())):
            session.add(Annotation(image_id=image_id, reviewer="ana", decision=decision,
                                   undone_at=undone))  # fmt: skip
        export = create_export(session, ExportOptions.from_settings(api_settings))
        session.add(TrainingRun(export_id=export.id, status=RunStatus.QUEUED, params={}))
    before = api_client.get("/metrics", headers=auth(Role.VIEWER)).get_data(as_text=True)
    count_outcomes([None, None, "corrupt", None])
    BATCH_SECONDS.observe(0.2)
    text = api_client.get("/metrics", headers=auth(Role.VIEWER)).get_data(as_text=True)
    assert sample(text, "herpscore_jobs", 'status="done"') == 1
    assert sample(text, "herpscore_review_backlog") == 3
    assert sample(text, "herpscore_queue_depth", 'queue="inference"') == 0
    scored = sample(text, "herpscore_images_scored_total")
    assert scored - sample(before, "herpscore_images_scored_total") == 3
    assert sample(text, "herpscore_images_failed_total", 'reason="corrupt"') >= 1
    assert sample(text, "herpscore_batch_seconds_count") >= 1
    assert sample(text, "herpscore_training_runs", 'status="queued"') == 1
    assert sample(text, "herpscore_decisions", 'decision="label"') == 1
    assert 'decision="unknown"' not in text  # an undone decision is not counted


def test_multiprocess_mode_adds_up_every_process(api_settings: Settings, tmp_path: Path) -> None:
    """Two worker processes count into PROMETHEUS_MULTIPROC_DIR; a third (the web) sums them."""
    folder = tmp_path / "prom"
    folder.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder), "PYTHONPATH": str(ROOT)}
    work = "from service.monitoring import count_outcomes; count_outcomes([None, None, 'corrupt'])"
    for _ in range(2):
        subprocess.run([sys.executable, "-c", work], env=env, check=True, timeout=60)
    render = (
        "import sys; from service.monitoring import render_metrics; "
        "from service.settings import Settings; "
        f"s = Settings(database_url={api_settings.db_url!r}, broker_url='memory://'); "
        "sys.stdout.write(render_metrics(s)[0].decode())"
    )
    out = subprocess.run(
        [sys.executable, "-c", render], env=env, check=True, timeout=60, capture_output=True
    ).stdout.decode()
    assert sample(out, "herpscore_images_scored_total") == 4
    assert sample(out, "herpscore_images_failed_total", 'reason="corrupt"') == 2
    # One file per process (the web's own too), named by host and pid: containers that
    # share the folder reuse pids.
    files = [f.name for f in folder.glob("counter_*.db")]
    assert len(files) == 3 and all(f"_{socket.gethostname()}-" in f for f in files), files

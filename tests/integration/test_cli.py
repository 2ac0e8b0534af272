"""The CLI and the embedded mode (SQLite + filesystem broker, a worker started by the CLI)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.broker import UNREACHABLE_BROKER
from tests.support.models import make_model_folder
from tests.support.photos import PH_SNAKES, make_photo_folder


def run_cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.fixture()
def embedded_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERPSCORE_")}
    env.update(
        HERPSCORE_DATA_DIR=str(tmp_path / "data"),
        HERPSCORE_ALLOWED_ROOTS=f"{tmp_path / 'photos'},{PH_SNAKES}",
        HERPSCORE_CHUNK_SIZE="16",
    )
    assert run_cli(env, "init").returncode == 0
    model = make_model_folder(tmp_path / "model", labels=["red", "green", "blue"])
    added = run_cli(env, "models", "add", str(model), "--activate")
    assert added.returncode == 0, added.stderr
    return env


@pytest.mark.slow
def test_embedded_mode_scores_a_folder_end_to_end(embedded_env, tmp_path):
    folder = make_photo_folder(tmp_path / "photos" / "survey", count=20)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = run_cli(embedded_env, "score", str(folder), "--with-worker", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)  # stdout holds the summary only: worker logs go to stderr
    assert summary["status"] == "done"
    assert (summary["total"], summary["scored"], summary["failed"]) == (21, 20, 1)
    csv_out = run_cli(embedded_env, "results", str(summary["job_id"]), "--format", "csv")
    lines = csv_out.stdout.strip().splitlines()
    assert lines[0].startswith("image_id,rel_path") and len(lines) == 22
    as_json = json.loads(
        run_cli(embedded_env, "results", str(summary["job_id"]), "--format", "json").stdout
    )
    assert {r["label"] for r in as_json if r["status"] == "scored"} == {"red", "green", "blue"}


def test_score_wait_without_a_worker_stops_and_says_what_to_run(embedded_env, tmp_path):
    """Nothing consumes the queue: `--wait` must not wait forever, nor leave the job queued."""
    folder = make_photo_folder(tmp_path / "photos" / "survey", count=3)
    waited = run_cli(embedded_env, "score", str(folder), "--wait", timeout=120)
    assert waited.returncode == 2, waited.stderr[-3000:]
    assert "no worker consumes the scan, inference queues" in waited.stderr
    assert "herpscore up" in waited.stderr and "--with-worker" in waited.stderr
    assert "Traceback" not in waited.stderr and waited.stdout == ""
    job = json.loads(run_cli(embedded_env, "jobs", "show", "1").stdout)
    assert job["status"] == "cancelled"  # a stack started later must not run it unasked


def test_results_of_an_unfinished_job_say_so_on_stderr(embedded_env, tmp_path):
    folder = make_photo_folder(tmp_path / "photos" / "survey", count=3)
    assert run_cli(embedded_env, "score", str(folder)).returncode == 0  # queued, no worker
    partial = run_cli(embedded_env, "results", "1")
    assert partial.returncode == 0, partial.stderr
    assert partial.stdout.startswith("image_id,rel_path")
    assert "job 1 is queued, not finished" in partial.stderr


def test_cli_errors_are_clear_and_non_zero(embedded_env, tmp_path):
    outside = run_cli(embedded_env, "score", "/etc")
    assert outside.returncode == 2
    assert "outside the allowed roots" in outside.stderr and "Traceback" not in outside.stderr
    missing = run_cli(embedded_env, "results", "999")
    assert missing.returncode == 2 and "job 999 does not exist" in missing.stderr
    assert missing.stdout == ""  # no CSV header before the error
    bad_model = run_cli(embedded_env, "models", "add", str(tmp_path))
    assert bad_model.returncode == 2 and "lacks model.onnx" in bad_model.stderr
    bad_arg = run_cli(embedded_env, "score", str(tmp_path), "--threshold", "7")
    assert bad_arg.returncode == 2 and "Traceback" not in bad_arg.stderr
    bad_setting = run_cli({**embedded_env, "HERPSCORE_CHUNK_SIZE": "zero"}, "jobs", "list")
    assert bad_setting.returncode == 2 and "chunk_size" in bad_setting.stderr


def test_score_with_the_broker_down_records_the_job_and_says_it_waits(embedded_env, tmp_path):
    folder = make_photo_folder(tmp_path / "photos" / "survey", count=2)
    down = {**embedded_env, "HERPSCORE_BROKER_URL": UNREACHABLE_BROKER}
    result = run_cli(down, "score", str(folder), "--json")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    job_id = json.loads(result.stdout)["job_id"]
    assert f"job {job_id} recorded and waiting for the broker" in result.stderr
    shown = json.loads(run_cli(embedded_env, "jobs", "show", str(job_id)).stdout)
    assert shown["status"] == "queued"


@pytest.mark.slow
@pytest.mark.skipif(not PH_SNAKES.is_dir(), reason=f"real photos not present at {PH_SNAKES}")
def test_ph_snakes_test_split_gets_210_predictions(embedded_env):
    result = run_cli(
        embedded_env, "score", str(PH_SNAKES / "test"), "--with-worker", "--json", timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["status"], summary["total"], summary["scored"]) == ("done", 210, 210)


@contextmanager
def running_up(env: dict[str, str], log: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    """`herpscore up` on a free port, once its web app answers /api/v1/health."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with log.open("w") as err, subprocess.Popen(
        [sys.executable, "-m", "service.cli", "up", "--port", str(port)],
        env=env, stderr=err, stdout=subprocess.DEVNULL,
    ) as up:  # fmt: skip
        try:
            deadline = time.monotonic() + 90  # until it is up; not a speed check
            while time.monotonic() < deadline:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=2)
                    break
                except OSError:
                    assert up.poll() is None, log.read_text()
                    time.sleep(0.5)
            yield up, port
        finally:
            if up.poll() is None:
                up.kill()


def test_up_serves_with_waitress_and_says_how_to_create_the_first_admin(
    embedded_env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "up.log"
    with running_up(embedded_env, log) as (up, port):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=10) as r:
            assert r.status == 200
            assert r.headers["Server"] == "waitress"  # not Werkzeug's development server
        up.terminate()
        up.wait(timeout=60)
    assert "`herpscore users create NAME --role admin`" in log.read_text()


def test_no_first_admin_hint_once_a_user_exists(
    embedded_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from service.cli.stack import _hint_if_no_user
    from service.settings import Settings

    settings = Settings(data_dir=Path(embedded_env["HERPSCORE_DATA_DIR"]), database_url=None)
    _hint_if_no_user(settings)
    assert "users create NAME --role admin" in capsys.readouterr().err
    created = subprocess.run(
        [sys.executable, "-m", "service.cli", "users", "create", "ada", "--role", "admin",
         "--password-stdin"],
        env=embedded_env, input="a long enough password\n", capture_output=True, text=True,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    _hint_if_no_user(settings)
    assert capsys.readouterr().err == ""


def test_up_stops_its_workers_when_terminated(embedded_env: dict[str, str], tmp_path: Path) -> None:
    """SIGTERM (kill, timeout, a service manager) must not leave the workers running."""
    log = tmp_path / "up.log"
    with running_up(embedded_env, log) as (up, _port):
        found = re.search(r"worker pids ([\d, ]+);", log.read_text())
        assert found, log.read_text()
        pids = [int(p) for p in found.group(1).split(",")]
        assert len(pids) == 2  # the scoring worker and the scan/maintenance worker
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0  # waitress stops cleanly, then the workers stop
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


def test_idle_queues_sees_a_live_worker_and_a_broker_that_is_down(tmp_path: Path) -> None:
    """What `score --wait` relies on: a live worker's queues are not idle, others are."""
    import time

    from service.consumers import idle_queues
    from service.embedded import embedded_worker
    from service.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", broker_url=None)  # the filesystem broker
    assert idle_queues(settings, ["scan", "inference"]) == ["scan", "inference"]
    with embedded_worker(settings, pools=(("tasks", ("scan",), 1),)):
        deadline = time.monotonic() + 120  # until the worker is up; not a speed check
        while (idle := idle_queues(settings, ["scan", "inference"])) != ["inference"]:
            assert idle == ["scan", "inference"] and time.monotonic() < deadline
    down = Settings(data_dir=tmp_path / "data", broker_url="redis://127.0.0.1:9/0")
    assert idle_queues(down, ["scan"]) is None  # unknown: the caller goes on waiting


def test_retrain_without_torch_is_refused_up_front(sqlite_url, make_settings):
    from click.testing import CliRunner
    from sqlalchemy import func, select

    from service.cli import main, settings_env
    from service.db import session_scope
    from service.models import TrainingRun

    settings = make_settings(sqlite_url, training_available=False)
    out = CliRunner(env=settings_env(settings)).invoke(main, ["retrain", "--force"])
    assert out.exit_code == 2, out.output
    assert out.stderr.startswith("error: Retraining needs PyTorch, which is not installed")
    assert "herpscore[train]" in out.stderr and "Traceback" not in out.output
    with session_scope(sqlite_url) as session:
        assert session.scalar(select(func.count()).select_from(TrainingRun)) == 0

"""One private herpscore for the loop simulation: worker, scoring, oracle reviews, retraining.

Everything goes through the product's own paths: jobs are scanned and scored by a real
Celery worker (`celery -A workers worker`), reviews are decisions posted to the review API
(`/api/v1/review/...`) with a reviewer's key, and retraining is `retrain --force`'s check
(export + a training run on the worker's `training` queue) followed by the promotion gate.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import select

from service import apikeys, registry, retraining
from service.db import dispose_engines, session_scope
from service.embedded import settings_env
from service.exports import TEST_SET_FILE, TestSet, exports_root, get_export
from service.jobs import create_job, get_job
from service.migrate import upgrade
from service.models import (
    Image,
    JobStatus,
    Prediction,
    ReviewItem,
    ReviewStatus,
    Role,
    RunStatus,
    utcnow,
)
from service.promotion import classification_scores
from service.settings import Settings
from service.tasks_client import SCAN_TASK, TRAIN_TASK, enqueue

log = logging.getLogger("loop_sim")

# Label of a photo: the oracle reads it from the folder the photo sits in.
Oracle = Callable[[str], str]
QUEUES = "scan,inference,maintenance,export,training"


def folder_oracle(path: str) -> str:
    """The true label of a photo: the name of the folder it sits in."""
    return Path(path).parent.name


class Stack:
    """A herpscore instance of its own (database, broker, registry) with one worker."""

    def __init__(self, settings: Settings, log_path: Path, timeout: float = 3600.0) -> None:
        self.settings = settings
        self.log_path = log_path
        self.timeout = timeout
        self.worker: subprocess.Popen[bytes] | None = None
        self._client: FlaskClient | None = None
        self._headers: dict[str, str] = {}

    # ------------------------------------------------------------ life cycle

    def __enter__(self) -> Stack:
        self.settings.ensure_dirs()
        upgrade(self.settings.db_url)
        self.start_worker()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_worker()
        dispose_engines()

    def start_worker(self) -> None:
        """`celery -A workers worker` on every queue, one process (the cores are shared)."""
        env = dict(os.environ)
        env.update(settings_env(self.settings))
        cmd = [
            sys.executable, "-m", "celery", "--quiet", "-A", "workers", "worker",
            "-Q", QUEUES, "--concurrency", "1", "--loglevel", "INFO",
            "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.worker = subprocess.Popen(
                cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def stop_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            os.killpg(self.worker.pid, signal.SIGTERM)
            try:
                self.worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.worker.pid, signal.SIGKILL)
                self.worker.wait(timeout=30)
        self.worker = None

    def _wait(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not done():
            if self.worker is None or self.worker.poll() is not None:
                raise RuntimeError(f"the worker died while waiting for {what}: {self.log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} took over {self.timeout:.0f} s: {self.log_path}")
            time.sleep(0.5)

    # ------------------------------------------------------------ models and the test set

    def add_model(self, folder: Path, name: str) -> int:
        """Register a model folder and make it the active version."""
        with session_scope(self.settings.db_url) as session:
            return registry.add_model(session, self.settings, folder, name=name, activate=True).id

    def active_model(self) -> tuple[int, Path]:
        with session_scope(self.settings.db_url) as session:
            model = registry.require_active_model(session)
            return model.id, Path(model.path)

    def pin_test_set(self, folder: Path, items: list[dict[str, str]]) -> None:
        """Make `items` (paths relative to `folder`) the frozen test set the gate judges on.

        A team pins an export's verified test split; the simulation's test split is the
        data set's own, verified by its folders, so it is written in the same form directly.
        """
        test_set = TestSet(0, str(folder), items, True, utcnow().isoformat(timespec="seconds"))
        target = exports_root(self.settings) / TEST_SET_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(asdict(test_set), indent=1) + "\n", encoding="utf-8")

    # ------------------------------------------------------------ score, review, retrain

    def score(self, folder: Path) -> int:
        """Score a folder with the active model through the worker; every prediction is
        routed to review (threshold 1), so the queue holds the whole pool."""
        with session_scope(self.settings.db_url) as session:
            job_id = create_job(session, self.settings, str(folder), threshold=1.0).id
        enqueue(self.settings, SCAN_TASK, [job_id])

        def done() -> bool:
            with session_scope(self.settings.db_url) as session:
                job = get_job(session, job_id)
                if job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
                    raise RuntimeError(f"job {job_id} ended {job.status.value}")
                return job.status == JobStatus.DONE

        self._wait(done, f"job {job_id}")
        return job_id

    def client(self) -> FlaskClient:
        """The web app's test client and an oracle reviewer's API key."""
        if self._client is None:
            from service.web import create_app

            with session_scope(self.settings.db_url) as session:
                _, key = apikeys.create_key(session, "oracle", Role.REVIEWER)
            self._client = create_app(self.settings).test_client()
            self._headers = {"X-API-Key": key}
        return self._client

    def _decide(self, item_id: int, label: str) -> dict[str, Any]:
        reply = self.client().post(
            f"/api/v1/review/items/{item_id}/decision",
            json={"decision": "label", "label": label},
            headers=self._headers,
        )
        if reply.status_code != 201:
            raise RuntimeError(f"decision on item {item_id}: {reply.status_code} {reply.json}")
        return dict(reply.json["annotation"])  # type: ignore[index]

    def review_queue(self, job_id: int, count: int, oracle: Oracle) -> list[dict[str, Any]]:
        """The oracle works `count` items in the order `GET /review/next` serves them."""
        decided = []
        for _ in range(count):
            reply = self.client().get(
                "/api/v1/review/next", query_string={"job_id": job_id}, headers=self._headers
            )
            item = reply.json["item"]  # type: ignore[index]
            if item is None:
                break
            decided.append(self._decide(item["id"], oracle(item["image"]["path"])))
        return decided

    def pending_items(self, job_id: int) -> dict[int, str]:
        """{review item id: image path} of the job's undecided items."""
        with session_scope(self.settings.db_url) as session:
            rows = session.execute(
                select(ReviewItem.id, Image.path)
                .join(Image, Image.id == ReviewItem.image_id)
                .where(ReviewItem.job_id == job_id, ReviewItem.status == ReviewStatus.PENDING)
                .order_by(ReviewItem.id)
            ).all()
        return {item_id: path for item_id, path in rows}

    def review_items(self, items: Sequence[int], oracle: Oracle) -> list[dict[str, Any]]:
        """The oracle decides these items (by id, through the same decision endpoint)."""
        paths = self.item_paths(items)
        return [self._decide(item_id, oracle(paths[item_id])) for item_id in items]

    def item_paths(self, items: Sequence[int]) -> dict[int, str]:
        """{review item id: image path} of these items."""
        with session_scope(self.settings.db_url) as session:
            rows = session.execute(
                select(ReviewItem.id, Image.path)
                .join(Image, Image.id == ReviewItem.image_id)
                .where(ReviewItem.id.in_(list(items)))
            ).all()
        return {item_id: path for item_id, path in rows}

    def review_random(
        self, job_id: int, count: int, oracle: Oracle, rng: random.Random
    ) -> list[dict[str, Any]]:
        """The oracle decides `count` undecided items drawn at random."""
        pending = sorted(self.pending_items(job_id))
        return self.review_items(rng.sample(pending, min(count, len(pending))), oracle)

    def pending_predictions(self, job_id: int) -> list[tuple[int, str, list[Any]]]:
        """(review item id, predicted label, top-k) of the job's undecided items."""
        with session_scope(self.settings.db_url) as session:
            rows = session.execute(
                select(ReviewItem.id, Prediction.label, Prediction.topk)
                .join(Prediction, Prediction.id == ReviewItem.prediction_id)
                .where(ReviewItem.job_id == job_id, ReviewItem.status == ReviewStatus.PENDING)
                .order_by(ReviewItem.id)
            ).all()
        return [(item_id, label, list(topk)) for item_id, label, topk in rows]

    def review_ordered(
        self, job_id: int, count: int, oracle: Oracle, order: str
    ) -> list[dict[str, Any]]:
        """The oracle decides the first `count` items of another order (see `alternative_order`)."""
        chosen = alternative_order(self.pending_predictions(job_id), order)[:count]
        return self.review_items(chosen, oracle)

    def retrain(self) -> dict[str, Any]:
        """`herpscore retrain --force`: export, train on the worker, let the gate decide."""
        with session_scope(self.settings.db_url) as session:
            check = retraining.retrain_check(session, self.settings, force=True, trigger="manual")
        if check.run_id is None:
            raise RuntimeError(f"no training run: {check.reason}")
        run_id = check.run_id
        enqueue(self.settings, TRAIN_TASK, [run_id])
        state: dict[str, Any] = {}

        def done() -> bool:
            with session_scope(self.settings.db_url) as session:
                run = retraining.get_run(session, run_id)
                if run.status in (RunStatus.DONE, RunStatus.FAILED):
                    state.update(retraining.run_to_dict(run, full=True))
                    export = get_export(session, run.export_id) if run.export_id else None
                    state["export_splits"] = ((export and export.counts) or {}).get("splits")
                    return True
                return False

        self._wait(done, f"training run {run_id}")
        if state["status"] != RunStatus.DONE.value:
            raise RuntimeError(f"training run {run_id} failed: {state['error']}")
        return state


def _margin(topk: list[Any]) -> float:
    probs = [float(p) for _, p in topk]
    return probs[0] - (probs[1] if len(probs) > 1 else 0.0)


def _entropy(topk: list[Any]) -> float:
    probs = [float(p) for _, p in topk]
    rest = max(0.0, 1.0 - sum(probs))  # the mass beyond the top k, as one bucket
    return -sum(p * math.log(p) for p in [*probs, rest] if p > 0)


def alternative_order(rows: list[tuple[int, str, list[Any]]], order: str) -> list[int]:
    """Item ids in a candidate queue order, to compare with the one the queue serves.

    margin: smallest top-1 minus top-2 first; entropy: highest first; balanced: round-robin
    over the predicted labels, each label's items by margin, so every class gets looked at.
    """
    if order == "margin":
        return [r[0] for r in sorted(rows, key=lambda r: (_margin(r[2]), r[0]))]
    if order == "entropy":
        return [r[0] for r in sorted(rows, key=lambda r: (-_entropy(r[2]), r[0]))]
    if order == "balanced":
        by_label: dict[str, list[tuple[int, str, list[Any]]]] = {}
        for row in sorted(rows, key=lambda r: (_margin(r[2]), r[0])):
            by_label.setdefault(row[1], []).append(row)
        ranked = [
            (rank, _margin(row[2]), row[0])
            for group in by_label.values()
            for rank, row in enumerate(group)
        ]
        return [item_id for _, _, item_id in sorted(ranked)]
    raise ValueError(f"unknown order {order!r}")


def score_on_test(
    settings: Settings, model_dir: Path, paths: list[str], truth: list[str]
) -> dict[str, Any]:
    """A model's top-1 and macro-F1 on the test photos, through the served path (as the gate)."""
    from workers.training_tasks import label_predictor

    predicted = list(label_predictor(settings)(model_dir, paths))
    return classification_scores(truth, predicted)

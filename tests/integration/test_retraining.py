"""Scheduled retraining and the promotion gate: the check, a run, publish, promote or refuse."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from service import registry, retraining
from service.db import session_scope
from service.errors import InvalidState
from service.models import AuditEntry, ModelStatus, ModelVersion, Role, RunStatus, TrainingRun
from service.promotion import promote_run
from service.settings import Settings
from tests.integration.test_exports import COLOURS, export, label_all, make_survey, score_folder
from tests.support.broker import queued_messages
from tests.support.models import make_model_folder
from workers.training_tasks import label_predictor

GOOD = [f"{c}_snake" for c in COLOURS]  # class i follows colour channel i: always right
WORSE = ["red_snake", "blue_snake", "green_snake"]  # green and blue swapped: 1/3 right


@pytest.fixture()
def lite(sqlite_url: str, make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    settings = make_settings(
        sqlite_url,
        retrain_min_new_labels=10,
        export_min_per_class=2,
        training_backbone="mobilenet_v3_small",
        training_weights="none",
        training_size=32,
        training_epochs_stage1=1,
        training_epochs_stage2=1,
        training_batch_size=16,
        training_min_per_class=1,
        training_int8=False,
        training_extra_args="--parity-images 4 --patience 1",
    )
    return settings


def activate(settings: Settings, folder: Path) -> int:
    with session_scope(settings.db_url) as session:
        return registry.add_model(session, settings, folder, activate=True).id


def check(settings: Settings, force: bool = False) -> retraining.CheckResult:
    with session_scope(settings.db_url) as session:
        return retraining.retrain_check(session, settings, force=force)


def fake_fit(labels: list[str]) -> retraining.Fitter:
    """A stand-in for training.fit.main: a model whose accuracy the test chooses."""

    def fit(argv: list[str]) -> Path:
        out = Path(argv[argv.index("--out") + 1])
        (out / "run").mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(
            json.dumps({"val": {"n": 1, "top1": 1.0, "macro": {"f1": 1.0}}})
        )
        return make_model_folder(out / "model", labels=labels, seed=len(out.name))

    return fit


def test_check_waits_for_enough_new_labels(
    lite: Settings, photos_root: Path, tmp_path: Path
) -> None:
    activate(lite, make_model_folder(tmp_path / "m", labels=GOOD))
    images = score_folder(lite, str(make_survey(photos_root / "s", sites=3, per_colour=2)))
    ids = sorted(images.items())
    label_all(lite, dict(ids[:9]))
    result = check(lite)
    assert not result.started and result.new_labels == 9 and result.needed == 10
    label_all(lite, dict(ids[9:10]))
    result = check(lite)
    assert result.started and result.run_id and result.export_id
    assert not check(lite).started  # one run at a time
    with session_scope(lite.db_url) as session:
        run = session.get(TrainingRun, result.run_id)
        assert run and run.status == RunStatus.QUEUED and run.trigger == "schedule"
        assert run.params["backbone"] == "mobilenet_v3_small"

    # After a run, only labels newer than its export count again.
    run = retraining.run_training(lite, result.run_id, fake_fit(GOOD), label_predictor(lite))
    assert run is not None and run.status == RunStatus.DONE
    assert check(lite).new_labels == 0
    label_all(lite, dict(ids[10:13]))
    later = check(lite)
    assert not later.started and later.new_labels == 3
    assert check(lite, force=True).started


@pytest.mark.parametrize(
    ("active_labels", "candidate_labels", "promoted"),
    [(WORSE, GOOD, True), (GOOD, WORSE, False)],
)
def test_gate_promotes_better_and_refuses_worse(
    lite: Settings,
    photos_root: Path,
    tmp_path: Path,
    active_labels: list[str],
    candidate_labels: list[str],
    promoted: bool,
) -> None:
    settings = lite.model_copy(update={"auto_promote": True})
    old = activate(settings, make_model_folder(tmp_path / "active", labels=active_labels))
    label_all(settings, score_folder(settings, str(make_survey(photos_root / "s", sites=6))))
    export(settings, min_per_class=2)  # the first export with a test split: frozen
    run_id = check(settings).run_id
    assert run_id is not None
    run = retraining.run_training(
        settings, run_id, fake_fit(candidate_labels), label_predictor(settings)
    )
    assert run is not None and run.status == RunStatus.DONE
    decision = run.promotion
    assert decision is not None and decision["test_set"]["export_id"] == 1
    good, worse = (decision["candidate"], decision["active"])[:: 1 if promoted else -1]
    assert good["macro_f1"] == 1.0 and worse["macro_f1"] == pytest.approx(1 / 3)
    assert decision["passed"] is promoted and decision["promoted"] is promoted
    with session_scope(settings.db_url) as session:
        active = registry.require_active_model(session)
        assert active.id == (run.model_version_id if promoted else old)
        candidate = session.get(ModelVersion, run.model_version_id)
        assert candidate and candidate.source == f"training:{run_id}"
        if promoted:  # and a rollback goes back to the old version
            assert registry.rollback(session, actor="test").id == old
        else:
            with pytest.raises(InvalidState, match="did not pass"):
                promote_run(session, run_id, actor="admin")
            assert promote_run(session, run_id, actor="admin", force=True).status == (
                ModelStatus.ACTIVE
            )
        promoter = "retraining" if promoted else "admin"
        audited = session.scalars(
            select(AuditEntry).where(AuditEntry.action != "model.activate").order_by(AuditEntry.id)
        )
        assert [(e.actor, e.action, e.target) for e in audited] == [
            (promoter, "model.promote", f"model:{run.model_version_id}"),
            *([("test", "model.rollback", f"model:{old}")] if promoted else []),
        ]


def test_failed_training_is_recorded(lite: Settings, photos_root: Path, tmp_path: Path) -> None:
    activate(lite, make_model_folder(tmp_path / "m", labels=GOOD))
    label_all(lite, score_folder(lite, str(make_survey(photos_root / "s", sites=3))))
    run_id = check(lite).run_id
    assert run_id is not None

    def broken(argv: list[str]) -> Path:
        from service.errors import BadInput

        raise BadInput("these classes have fewer than 5 usable training images")

    assert retraining.run_training(lite, run_id, broken, label_predictor(lite)) is None
    with session_scope(lite.db_url) as session:
        run = session.get(TrainingRun, run_id)
        assert run and run.status == RunStatus.FAILED and "fewer than 5" in (run.error or "")
    assert check(lite).started  # a failed run does not reset the count of new labels


@pytest.mark.slow
@pytest.mark.torch
def test_scheduled_run_trains_publishes_and_records(
    lite: Settings, photos_root: Path, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    from workers.training_tasks import fit_model

    activate(lite, make_model_folder(tmp_path / "m", labels=GOOD))
    label_all(lite, score_folder(lite, str(make_survey(photos_root / "s", sites=6, per_colour=3))))
    result = check(lite)
    assert result.started and result.run_id
    run = retraining.run_training(lite, result.run_id, fit_model, label_predictor(lite))
    assert run is not None and run.status == RunStatus.DONE, run and run.error
    assert run.run_dir and (Path(run.run_dir) / "run" / "metrics.csv").is_file()
    assert run.metrics and run.metrics["val"]["n"] > 0 and "calibration" in run.metrics
    # The linear probe was trained too, and the better of the two on validation published.
    selection = run.metrics["selection"]
    assert set(selection["val"]) == {"probe", "fine-tune"}
    published = selection["val"][selection["published"]]
    assert run.metrics["val"]["top1"] == published["top1"]
    decision = run.promotion
    assert decision and decision["candidate"] and decision["active"]
    assert decision["promoted"] is False  # auto_promote is off by default
    with session_scope(lite.db_url) as session:
        model = session.get(ModelVersion, run.model_version_id)
        assert model and model.status == ModelStatus.CANDIDATE
        assert model.source == f"training:{run.id}" and sorted(model.labels) == sorted(GOOD)
        assert session.scalar(select(func.count()).select_from(TrainingRun)) == 1
        assert model.meta["training"]["data"]["export_id"] == str(result.export_id)
        assert model.meta["selection"]["published"] == selection["published"]


# --- the HTTP API ---


def test_api_exports_training_and_rollback(
    api_client: FlaskClient,
    auth: Callable[[Role], dict[str, str]],
    api_settings: Settings,
    active_model: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin, viewer = auth(Role.ADMIN), auth(Role.VIEWER)

    assert api_client.post("/api/v1/exports", json={}, headers=viewer).status_code == 403
    bad = api_client.post("/api/v1/exports", json={"val_fraction": 0.9}, headers=admin)
    assert bad.status_code == 400 and bad.get_json()["error"] == "bad_input"
    created = api_client.post("/api/v1/exports", json={"min_per_class": 3}, headers=admin)
    assert created.status_code == 202, created.get_json()
    export = created.get_json()
    assert export["status"] == "queued" and export["options"]["min_per_class"] == 3
    assert export["queued"] is True
    assert queued_messages(api_settings) == [("herpscore.export", [export["id"]])]
    listed = api_client.get("/api/v1/exports", headers=viewer).get_json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == export["id"]
    assert api_client.get("/api/v1/exports/test-set", headers=viewer).get_json() == {
        "test_set": None
    }
    pin = api_client.post(f"/api/v1/exports/{export['id']}/pin-test-set", headers=admin)
    assert pin.status_code == 409  # not finished

    not_due = api_client.post("/api/v1/training/retrain", json={}, headers=admin)
    assert not_due.status_code == 200 and not not_due.get_json()["started"]
    forced = api_client.post("/api/v1/training/retrain", json={"force": True}, headers=admin)
    assert forced.status_code == 202 and forced.get_json()["started"]
    run_id = forced.get_json()["run_id"]
    assert forced.get_json()["queued"] is True
    assert queued_messages(api_settings)[-1] == ("herpscore.train", [run_id])
    runs = api_client.get("/api/v1/training/runs", headers=viewer).get_json()
    assert runs["items"][0]["id"] == run_id and runs["items"][0]["status"] == "queued"
    run = api_client.get(f"/api/v1/training/runs/{run_id}", headers=viewer).get_json()
    assert run["trigger"] == "manual" and run["params"]["backbone"]
    promote = api_client.post(f"/api/v1/training/runs/{run_id}/promote", json={}, headers=admin)
    assert promote.status_code == 409  # no candidate yet

    assert api_client.post("/api/v1/models/rollback", headers=admin).status_code == 409
    with session_scope(api_settings.db_url) as session:
        second = registry.add_model(
            session, api_settings, make_model_folder(tmp_path / "m2", seed=5), activate=True
        ).id
    assert second != active_model
    assert api_client.post("/api/v1/models/rollback", headers=viewer).status_code == 403
    back = api_client.post("/api/v1/models/rollback", headers=admin)
    assert back.status_code == 200 and back.get_json()["id"] == active_model


# --- the admin UI ---


def test_admin_pages_show_exports_runs_and_the_gate(
    api_app: Flask,
    api_settings: Settings,
    active_model: int,
    photos_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.integration.test_admin_ui import log_in_session, make_user

    api_app.config["WTF_CSRF_ENABLED"] = False
    settings = api_settings
    label_all(settings, score_folder(settings, str(make_survey(photos_root / "s", sites=6))))
    export(settings, min_per_class=2)
    run_id = check(settings, force=True).run_id
    assert run_id is not None

    def fit_with_plots(argv: list[str]) -> Path:
        folder = fake_fit(GOOD)(argv)
        out = folder.parent
        (out / "run" / "metrics.csv").write_text(
            "stage,epoch,lr,train_loss,train_acc,val_loss,val_acc,seconds\n"
            "1,0,0.003,1.0,0.5,0.9,0.6,1.5\n"
        )
        (out / "confusion_val.png").write_bytes(b"\x89PNG\r\n\x1a\n")
        return folder

    retraining.run_training(settings, run_id, fit_with_plots, label_predictor(settings))
    client = api_app.test_client()
    log_in_session(client, make_user(settings, Role.VIEWER))
    page = client.get("/training").get_data(as_text=True)
    assert f"#{run_id}" in page and "passed" in page
    page = client.get(f"/training/{run_id}").get_data(as_text=True)
    assert "Promotion decision" in page and "macro-F1" in page and "0.003" in page
    assert "significance level 0.05 over all classes (Holm)" in page
    assert "Promote the candidate" not in page  # viewers see no admin buttons
    plot = client.get(f"/training/{run_id}/plots/confusion_val.png")
    assert plot.status_code == 200 and plot.mimetype == "image/png"
    plot.close()
    assert client.get(f"/training/{run_id}/plots/metrics.json").status_code == 404
    assert "site-grouped" in client.get("/exports").get_data(as_text=True)
    assert client.post("/exports").status_code == 403

    log_in_session(client, make_user(settings, Role.ADMIN))
    assert "Promote the candidate" in client.get(f"/training/{run_id}").get_data(as_text=True)
    assert client.post("/exports", data={"min_per_class": "4"}).status_code == 303
    assert queued_messages(settings)[-1][0] == "herpscore.export"
    assert re.search(r"Export \d+ queued\.", client.get("/exports").get_data(as_text=True))
    assert client.post(f"/training/{run_id}/promote").status_code == 303
    with session_scope(settings.db_url) as session:
        assert registry.require_active_model(session).source == f"training:{run_id}"
    assert client.post("/training/rollback").status_code == 303
    with session_scope(settings.db_url) as session:
        assert registry.require_active_model(session).id == active_model


# --- the command line ---


def test_cli_export_retrain_training_and_rollback(
    lite: Settings, photos_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from service.cli import main, settings_env

    first = activate(lite, make_model_folder(tmp_path / "m", labels=GOOD))
    label_all(lite, score_folder(lite, str(make_survey(photos_root / "s", sites=3))))
    runner = CliRunner(env=settings_env(lite))

    out = runner.invoke(main, ["export", "--min-per-class", "2", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["counts"]["total"] == 27
    out = runner.invoke(main, ["export", "--val-frac", "0.9"])
    assert out.exit_code == 2 and "val-frac" in out.output  # a usage error, no traceback
    out = runner.invoke(main, ["retrain"])
    assert out.exit_code == 0 and "training run 1 queued" in out.output
    out = runner.invoke(main, ["training", "list"])
    assert out.exit_code == 0 and "queued" in out.output
    out = runner.invoke(main, ["training", "show", "1"])
    assert json.loads(out.output)["trigger"] == "manual"
    out = runner.invoke(main, ["training", "promote", "1"])
    assert out.exit_code == 2 and "no candidate" in out.output
    out = runner.invoke(main, ["models", "rollback"])
    assert out.exit_code == 2 and "no earlier active model" in out.output
    activate(lite, make_model_folder(tmp_path / "m2", labels=WORSE, seed=5))
    out = runner.invoke(main, ["models", "rollback"])
    assert out.exit_code == 0 and f"model version {first}" in out.output

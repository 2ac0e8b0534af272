"""Sites and the species table through the API, the admin pages and the CLI."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from service.cli import main
from service.models import Role
from service.settings import Settings
from tests.integration.test_admin_ui import log_in_session, make_user

Auth = Callable[[Role], dict[str, str]]
SPECIES_CSV = (
    "label,common_name,medically_significant,lookalike_group,review_threshold\n"
    "Naja_philippinensis,Philippine cobra,yes,cobra-like,0.9\n"
    "Ptyas_carinata,Keeled rat snake,no,cobra-like,\n"
)


def test_model_labels_fill_the_species_table(
    api_client: FlaskClient, auth: Auth, active_model: int
) -> None:
    body = api_client.get("/api/v1/species", headers=auth(Role.VIEWER)).get_json()
    naja = next(s for s in body["items"] if s["label"] == "Naja_philippinensis")
    assert (naja["scientific_name"], naja["genus"], naja["medically_significant"]) == (
        "Naja philippinensis", "Naja", False,
    )  # fmt: skip


def test_species_import_export_and_edit(api_client: FlaskClient, auth: Auth) -> None:
    headers = {**auth(Role.ADMIN), "Content-Type": "text/csv"}
    response = api_client.post("/api/v1/species/import", data=SPECIES_CSV, headers=headers)
    assert response.get_json() == {"imported": 2}
    exported = api_client.get("/api/v1/species.csv", headers=auth(Role.VIEWER))
    text = exported.get_data(as_text=True)
    assert (
        "Naja_philippinensis,Naja philippinensis,Naja,,Philippine cobra,yes,cobra-like,0.9" in text
    )
    edit = {"genus": "Ptyas", "medically_significant": False, "review_threshold": 0.8}
    saved = api_client.put("/api/v1/species/Ptyas_carinata", json=edit, headers=auth(Role.ADMIN))
    assert saved.status_code == 200 and saved.get_json()["review_threshold"] == 0.8
    # Bad input: 4xx with the error body, and nothing half-imported.
    bad = "label,medically_significant\nBoiga_dendrophila,yes\nX,maybe\n"
    response = api_client.post("/api/v1/species/import", data=bad, headers=headers)
    assert response.status_code == 400 and "line 3" in response.get_json()["message"]
    listed = api_client.get("/api/v1/species", headers=auth(Role.VIEWER)).get_json()
    assert "Boiga_dendrophila" not in {s["label"] for s in listed["items"]}
    wrong = api_client.post("/api/v1/species/import", data=SPECIES_CSV, headers=auth(Role.ADMIN))
    assert wrong.status_code == 400  # not text/csv
    denied = api_client.put("/api/v1/species/X", json={}, headers=auth(Role.REVIEWER))
    assert denied.status_code == 403


def test_sites_api(api_client: FlaskClient, auth: Auth) -> None:
    body = {"latitude": 14.6, "longitude": 121.0, "utc_offset": "+08:00",
            "clock_correction_seconds": -90}  # fmt: skip
    saved = api_client.put("/api/v1/sites/quezon", json=body, headers=auth(Role.ADMIN))
    assert saved.status_code == 200
    assert saved.get_json()["utc_offset_minutes"] == 480
    listed = api_client.get("/api/v1/sites", headers=auth(Role.VIEWER)).get_json()
    assert [s["name"] for s in listed["items"]] == ["quezon"]
    for bad in ({"latitude": 91}, {"utc_offset": "8 hours"}, {"colour": "red"}):
        response = api_client.put("/api/v1/sites/x", json=bad, headers=auth(Role.ADMIN))
        assert response.status_code == 400 and response.get_json()["error"] == "bad_input"
    assert api_client.delete("/api/v1/sites/quezon", headers=auth(Role.ADMIN)).status_code == 204
    gone = api_client.delete("/api/v1/sites/quezon", headers=auth(Role.ADMIN))
    assert gone.status_code == 404


def test_admin_pages_edit_sites_and_species(
    api_app: Flask, api_settings: Settings, active_model: int
) -> None:
    api_app.config["WTF_CSRF_ENABLED"] = False
    client = api_app.test_client()
    log_in_session(client, make_user(api_settings, Role.ADMIN))
    form = {"name": "samar", "latitude": "12.0", "longitude": "125.0", "utc_offset": "+08:00",
            "clock_correction_seconds": "30", "notes": ""}  # fmt: skip
    assert client.post("/sites", data=form).status_code == 303
    assert "samar" in client.get("/sites").get_data(as_text=True)
    bad = client.post("/sites", data={**form, "latitude": "north"}, follow_redirects=True)
    assert "latitude must be a number" in bad.get_data(as_text=True)  # a flash, not a 500
    upload = {"file": (io.BytesIO(SPECIES_CSV.encode()), "species.csv")}
    assert client.post("/species/import", data=upload).status_code == 303
    page = client.get("/species").get_data(as_text=True)
    assert "Philippine cobra" in page and "badge venom" in page
    log_in_session(client, make_user(api_settings, Role.VIEWER))
    assert client.post("/sites", data=form).status_code == 403


def test_cli_species_and_sites(api_settings: Settings, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HERPSCORE_DATABASE_URL", api_settings.db_url)
    monkeypatch.setenv("HERPSCORE_DATA_DIR", str(api_settings.data_dir))
    runner = CliRunner()
    source = tmp_path / "species.csv"
    source.write_text(SPECIES_CSV, encoding="utf-8")
    result = runner.invoke(main, ["species", "import", str(source)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["species", "export"])
    assert "Philippine cobra,yes,cobra-like,0.9" in result.stdout
    result = runner.invoke(main, ["sites", "set", "quezon", "--utc-offset", "+08:00"])
    assert result.exit_code == 0
    assert "offset +08:00" in runner.invoke(main, ["sites", "list"]).stdout
    result = runner.invoke(main, ["sites", "set", "quezon", "--lat", "95"])
    assert result.exit_code == 2 and "latitude" in result.stderr
    source.write_text("label,venom\nX,yes\n", encoding="utf-8")
    result = runner.invoke(main, ["species", "import", str(source)])
    assert result.exit_code == 2 and "unknown species CSV columns: venom" in result.stderr


def test_exchange_formats_download(
    api_client: FlaskClient, auth: Auth, active_model: int, api_settings: Settings, photos_root
) -> None:
    from tests.integration.test_admin_ui import score_folder
    from tests.support.photos import make_photo_folder

    make_photo_folder(photos_root / "survey", count=4)
    job_id = score_folder(api_settings, "survey")
    url = f"/api/v1/jobs/{job_id}/results.csv"
    md = api_client.get(f"{url}?format=megadetector", headers=auth(Role.VIEWER))
    assert md.status_code == 200 and md.get_json()["info"]["format_version"] == "1.4"
    assert "results.megadetector.json" in md.headers["Content-Disposition"]
    refused = api_client.get(f"{url}?format=camtrap-dp", headers=auth(Role.VIEWER))
    assert refused.status_code == 400 and refused.get_json()["error"] == "bad_input"
    rows = api_client.get(f"/api/v1/jobs/{job_id}/predictions", headers=auth(Role.VIEWER))
    for name in {r["site"] for r in rows.get_json()["items"]}:
        body = {"latitude": 14.6, "longitude": 121.0, "utc_offset": "+08:00"}
        api_client.put(f"/api/v1/sites/{name}", json=body, headers=auth(Role.ADMIN))
    package = api_client.get(f"{url}?format=camtrap-dp", headers=auth(Role.VIEWER))
    assert package.status_code == 200 and package.mimetype == "application/zip"
    import zipfile

    names = zipfile.ZipFile(io.BytesIO(package.get_data())).namelist()
    assert sorted(names) == ["datapackage.json", "deployments.csv", "media.csv", "observations.csv"]

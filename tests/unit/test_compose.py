"""docker-compose.yml: the structural facts the production stack relies on, checked offline.

No Docker here: these tests read the file with PyYAML and hold it against the code (queue
names, settings fields, the app factory, the health route). Schema validation and
`docker compose config` are run by hand; see docs/deploy.md.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

from service.settings import Settings  # noqa: E402
from service.tasks_client import QUEUES  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
APP_SERVICES = ("migrate", "web", "worker-inference", "worker-scan", "worker-training", "beat")
LONG_RUNNING = ("web", "worker-inference", "worker-scan", "worker-training", "beat")
NEEDS_PHOTOS = ("web", "worker-inference", "worker-scan", "worker-training")
NEEDS_DATA = ("migrate", "web", "worker-inference", "worker-scan", "worker-training")
DATA_DIR = "/var/lib/herpscore"
EXPECTED_ENV = {
    "HERPSCORE_DATABASE_URL": "postgresql+psycopg://herpscore:herpscore@postgres:5432/herpscore",
    "HERPSCORE_BROKER_URL": "redis://redis:6379/0",
    "HERPSCORE_DATA_DIR": DATA_DIR,
    "HERPSCORE_ALLOWED_ROOTS": "/photos",
}
_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR:?error}` and `$$`, with `env` as the shell."""
    env = env or {}

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if env.get(name):
            return env[name]
        if op and op.endswith("?"):
            raise KeyError(f"{name} is required: {arg}")
        return arg if op and op.endswith("-") else ""

    return _VAR.sub(one, value.replace("$$", "\0")).replace("\0", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def command(service: dict[str, Any]) -> list[str]:
    cmd = service["command"]
    return [interpolate(str(a)) for a in (cmd if isinstance(cmd, list) else cmd.split())]


def option(cmd: list[str], *names: str) -> str | None:
    """The value of `--name=value`, `--name value` or `-Q value` in a command line."""
    for i, arg in enumerate(cmd):
        for name in names:
            if arg == name:
                return cmd[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def mounts(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Volumes by target, short syntax normalised to the long one."""
    out = {}
    for vol in service.get("volumes", []):
        if isinstance(vol, str):
            source, target, *mode = vol.split(":")
            vol = {"source": source, "target": target, "read_only": mode == ["ro"]}
        out[vol["target"]] = vol
    return out


def test_the_stack_has_exactly_its_services(services: dict[str, Any]) -> None:
    assert set(services) == {"postgres", "redis", *APP_SERVICES}
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")


def test_state_lives_in_named_volumes(compose: dict[str, Any], services: dict[str, Any]) -> None:
    named = set(compose["volumes"])
    for name in ("postgres", "redis", *NEEDS_DATA, "beat"):
        for vol in mounts(services[name]).values():
            if not vol["source"].startswith(("/", ".", "$")):
                assert vol["source"] in named, f"{name}: volume {vol['source']} is not declared"
    assert "/var/lib/postgresql/data" in mounts(services["postgres"])


def test_databases_have_healthchecks(services: dict[str, Any]) -> None:
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    assert services["redis"]["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_everything_waits_for_healthy_databases_and_the_migration(
    services: dict[str, Any], name: str
) -> None:
    depends = services[name]["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["redis"]["condition"] == "service_healthy"


def test_migrate_is_a_one_shot_upgrade(services: dict[str, Any]) -> None:
    migrate = services["migrate"]
    assert command(migrate) == ["herpscore", "db", "upgrade"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_share_the_common_environment(
    compose: dict[str, Any], services: dict[str, Any], name: str
) -> None:
    common = compose["x-common"]["environment"]
    env = services[name]["environment"]
    assert {k: env.get(k) for k in common} == common
    assert {k: interpolate(env[k]) for k in EXPECTED_ENV} == EXPECTED_ENV
    assert env["HERPSCORE_SECRET_KEY"].startswith("${HERPSCORE_SECRET_KEY:?")
    with pytest.raises(KeyError, match="HERPSCORE_SECRET_KEY"):
        interpolate(env["HERPSCORE_SECRET_KEY"])


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_herpscore_variable_is_a_valid_setting(
    services: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = services[name]["environment"]
    fields = {f"HERPSCORE_{field}".upper() for field in Settings.model_fields}
    unknown = {k for k in env if k.startswith("HERPSCORE_")} - fields
    assert not unknown, f"{name}: not fields of service.settings.Settings: {sorted(unknown)}"
    for key in [k for k in os.environ if k.startswith("HERPSCORE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("HERPSCORE_"):
            monkeypatch.setenv(key, interpolate(str(value), {"HERPSCORE_SECRET_KEY": "s3cret"}))
    settings = Settings()  # the values parse, as the containers will parse them
    assert settings.data_dir == Path(DATA_DIR)
    assert settings.allowed_roots == [Path("/photos")]
    assert not settings.is_embedded_broker


@pytest.mark.parametrize("name", APP_SERVICES)
def test_home_is_writable_and_nothing_runs_as_root(
    compose: dict[str, Any], services: dict[str, Any], name: str
) -> None:
    service = services[name]
    home = service["environment"]["HOME"]
    writable = set(service.get("tmpfs", [])) | set(mounts(service))
    assert home in writable, f"{name}: HOME {home} must be writable (onnxruntime, gunicorn)"
    assert "USER 10001" in compose["x-build"]["dockerfile_inline"]


@pytest.mark.parametrize("name", ["postgres", "redis", *APP_SERVICES])
def test_no_service_runs_as_root(services: dict[str, Any], name: str) -> None:
    user = str(services[name].get("user", "root"))
    assert user.split(":")[0] not in ("", "0", "root"), f"{name} runs as root"


@pytest.mark.parametrize("name", NEEDS_PHOTOS)
def test_photos_are_mounted_read_only(services: dict[str, Any], name: str) -> None:
    photos = mounts(services[name])["/photos"]
    assert photos["read_only"] is True
    assert photos["source"] == "${HERPSCORE_PHOTOS:-./photos}"


def test_photos_are_never_writable(services: dict[str, Any]) -> None:
    for name, service in services.items():
        vol = mounts(service).get("/photos")
        assert vol is None or vol["read_only"] is True, name


@pytest.mark.parametrize("name", NEEDS_DATA)
def test_the_data_volume_is_shared(services: dict[str, Any], name: str) -> None:
    assert mounts(services[name])[DATA_DIR]["source"] == "herpscore-data"


def test_web_is_gunicorn_on_the_app_factory(services: dict[str, Any]) -> None:
    web = services["web"]
    cmd = command(web)
    assert cmd[0] == "gunicorn"
    assert cmd[-1] == "service.web:create_app()"
    assert option(cmd, "--bind", "-b") == "0.0.0.0:8000"
    assert 2 <= int(option(cmd, "--workers", "-w") or 0) <= 4
    assert [interpolate(p).split(":")[-1] for p in web["ports"]] == ["8000"]
    assert "http://127.0.0.1:8000/api/v1/health" in " ".join(web["healthcheck"]["test"])


def test_the_web_command_names_a_real_factory_and_route() -> None:
    # The API blueprint alone: the whole app (admin UI) is slow to import, and only the
    # factory's name and the health route's path matter here.
    from flask import Flask

    from service.web import IdConverter, create_app
    from service.web.api import bp

    assert not [
        p for p in inspect.signature(create_app).parameters.values() if p.default is p.empty
    ]
    app = Flask(__name__)
    app.url_map.converters["id"] = IdConverter
    app.register_blueprint(bp)
    assert "/api/v1/health" in {r.rule for r in app.url_map.iter_rules()}


def _celery(services: dict[str, Any], name: str) -> list[str]:
    cmd = command(services[name])
    assert cmd[:3] == ["celery", "-A", "workers"], name
    assert importlib.util.find_spec("workers") is not None
    return cmd


def test_workers_consume_every_queue_and_only_real_ones(services: dict[str, Any]) -> None:
    inference = _celery(services, "worker-inference")
    scan = _celery(services, "worker-scan")
    training = _celery(services, "worker-training")
    assert inference[3] == scan[3] == training[3] == "worker"
    # Scoring has its cores to itself: a scan never takes a slot that would be scoring.
    assert option(inference, "-Q", "--queues") == "inference"
    assert set((option(scan, "-Q", "--queues") or "").split(",")) == {"scan", "maintenance"}
    assert set((option(training, "-Q", "--queues") or "").split(",")) == {"training", "export"}
    consumed = {
        q for cmd in (inference, scan, training) for q in (option(cmd, "-Q") or "").split(",")
    }
    assert consumed == set(QUEUES)


def test_inference_uses_every_core_with_one_ort_thread(services: dict[str, Any]) -> None:
    worker = services["worker-inference"]
    concurrency = option(command(worker), "--concurrency", "-c")
    assert concurrency == "auto" or int(concurrency or 0) == 0
    assert worker["environment"]["HERPSCORE_WORKER_THREADS"] == "1"


def test_training_runs_one_process_on_the_train_image(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    training = services["worker-training"]
    assert option(command(training), "--concurrency", "-c") == "1"
    assert training["build"]["args"]["EXTRAS"] == "train"
    for name in ("migrate", "web", "worker-inference", "beat"):
        assert "train" not in str(services[name]["build"].get("args", {})), name
    assert training["image"] != services["web"]["image"]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "train" in extras["optional-dependencies"]


def test_the_image_is_python_311_slim_with_gunicorn(compose: dict[str, Any]) -> None:
    dockerfile = compose["x-build"]["dockerfile_inline"]
    assert dockerfile.startswith("FROM python:3.11-slim\n")
    assert "ARG EXTRAS" in dockerfile
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    has_gunicorn = any(re.match(r"gunicorn\b", d) for d in deps)
    assert has_gunicorn or re.search(r"pip install [^\n]*gunicorn", dockerfile)


def test_beat_keeps_its_schedule_on_a_volume(services: dict[str, Any]) -> None:
    beat = services["beat"]
    cmd = _celery(services, "beat")
    assert cmd[3] == "beat"
    schedule = option(cmd, "--schedule", "-s")
    assert schedule is not None
    assert any(schedule.startswith(target + "/") for target in mounts(beat))
    assert "replicas" not in beat.get("deploy", {})  # one scheduler, never two


def test_the_embedded_workers_consume_every_queue_once_with_scoring_alone() -> None:
    from service.cli import EMBEDDED_WORKERS

    consumed = [q for _, queues, _ in EMBEDDED_WORKERS for q in queues]
    assert sorted(consumed) == sorted(QUEUES)  # each queue exactly once
    assert [queues for name, queues, _ in EMBEDDED_WORKERS if "inference" in queues] == [
        ("inference",)
    ]


def test_the_commented_gpu_worker_is_a_valid_service_once_uncommented(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/deploy.md tells the reader to uncomment it: it must then be a working service."""
    lines = COMPOSE_FILE.read_text(encoding="utf-8").splitlines()
    start = lines.index("  # worker-inference-gpu:")
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("  #"))
    lines[start:end] = ["  " + line[4:] for line in lines[start:end]]
    gpu = yaml.safe_load("\n".join(lines))["services"]["worker-inference-gpu"]
    cmd = command(gpu)
    assert option(cmd, "-Q", "--queues") == "inference"
    hostname = option(cmd, "--hostname") or ""
    assert hostname.split("@")[0] + "@" in " ".join(gpu["healthcheck"]["test"])
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert mounts(gpu)["/photos"]["read_only"] and DATA_DIR in mounts(gpu)
    fields = {f"HERPSCORE_{field}".upper() for field in Settings.model_fields}
    assert not {k for k in gpu["environment"] if k.startswith("HERPSCORE_")} - fields
    for key in [k for k in os.environ if k.startswith("HERPSCORE_")]:
        monkeypatch.delenv(key)
    for key, value in gpu["environment"].items():
        if key.startswith("HERPSCORE_"):
            monkeypatch.setenv(key, interpolate(str(value), {"HERPSCORE_SECRET_KEY": "s3cret"}))
    settings = Settings()  # the values parse
    assert settings.inference_device == "auto" and not settings.is_embedded_broker

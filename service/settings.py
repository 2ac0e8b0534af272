"""The one settings class: every HERPSCORE_* environment variable is read here and nowhere else."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_EXTENSIONS = ("jpg", "jpeg", "png", "tif", "tiff", "webp")


def _split_list(value: Any) -> Any:
    """Accept a JSON-free, comma (or os.pathsep) separated string for list settings."""
    if isinstance(value, str):
        parts = [p.strip() for chunk in value.split(os.pathsep) for p in chunk.split(",")]
        return [p for p in parts if p]
    return value


class Settings(BaseSettings):
    """herpscore configuration; defaults give the embedded mode (SQLite + filesystem broker)."""

    model_config = SettingsConfigDict(env_prefix="HERPSCORE_", extra="ignore")

    data_dir: Path = Field(
        default=Path("herpscore-data"), description="Where embedded state lives."
    )
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite.")
    broker_url: str | None = Field(default=None, description="Celery broker; default filesystem.")
    registry_dir: Path | None = Field(default=None, description="Model registry folder.")
    thumbnails_dir: Path | None = None
    allowed_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="Folders that jobs may read (comma separated)."
    )
    image_extensions: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_EXTENSIONS)
    )
    review_threshold: float = Field(default=0.6, ge=0.0, le=1.0)
    review_labels: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Labels always sent to review (venomous species)."
    )
    venom_alert: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="A medically significant species at or above this anywhere in the top-k "
        "sends the photo to review, whatever the top-1 says.",
    )
    lookalike_margin: float = Field(
        default=0.3,
        ge=0.0,
        le=1.0,
        description="Top-1 and top-2 in one look-alike group closer than this go to review.",
    )
    site_depth: int = Field(
        default=1, ge=1, le=10, description="Which folder level under a job's folder is the site."
    )
    top_k: int = Field(default=5, ge=1, le=50)
    chunk_size: int = Field(default=256, ge=1, le=10_000, description="Most images per score task.")
    chunk_megabytes: int = Field(
        default=256, ge=1, description="A score task also closes at this many MB of files."
    )
    batch_size: int = Field(default=8, ge=1, le=256)
    worker_threads: int = Field(default=1, ge=1, description="ONNX Runtime threads per process.")
    decode_threads: int = Field(default=2, ge=1, description="Decode threads per worker process.")
    worker_concurrency: int = Field(default=0, ge=0, description="0 = one process per core.")
    max_image_pixels: int = Field(default=120_000_000, ge=1)
    max_file_bytes: int = Field(default=256 * 1024 * 1024, ge=1)
    broker_visibility_timeout: int = Field(default=3600, ge=1)
    chunk_lease_seconds: int = Field(default=900, ge=5)
    stalled_check_seconds: float = Field(default=60.0, gt=0)
    secret_key: str = Field(default="", description="Flask session key; generated if empty.")
    web_host: str = "127.0.0.1"
    web_port: int = 8000
    # Exports, scheduled retraining and the promotion gate (service/exports.py, retraining.py).
    export_min_per_class: int = Field(default=10, ge=1, description="Smaller classes are dropped.")
    export_val_fraction: float = Field(default=0.15, ge=0.0, le=0.5)
    export_test_fraction: float = Field(default=0.15, ge=0.0, le=0.5)
    export_include_confident: float | None = Field(
        default=None, gt=0.0, le=1.0, description="Also export predictions at least this sure."
    )
    export_hardlinks: bool = Field(
        default=True,
        description="Hard-link photos that are already read-only into exports; others are "
        "copied. An original's permissions are never changed.",
    )
    retrain_min_new_labels: int = Field(default=50, ge=1)
    retrain_interval_seconds: float = Field(default=24 * 3600.0, gt=0)
    retrain_stale_seconds: float = Field(
        default=2 * 3600.0, gt=0, description="A run silent this long is taken as dead."
    )
    auto_promote: bool = False
    promotion_recall_margin: float = Field(default=0.05, ge=0.0, le=1.0)
    training_backbone: str = "efficientnet_lite0"
    training_weights: str = "default"
    training_size: int = Field(default=224, ge=32, le=1024)
    training_epochs_stage1: int = Field(default=6, ge=0)
    training_epochs_stage2: int = Field(default=10, ge=0)
    training_batch_size: int = Field(default=32, ge=1)
    training_min_per_class: int = Field(default=5, ge=1)
    training_int8: bool = True
    training_extra_args: str = Field(
        default="", description="More `python -m training fit` options, shell-quoted."
    )

    @field_validator("allowed_roots", "image_extensions", "review_labels", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("image_extensions")
    @classmethod
    def _normalise_extensions(cls, value: list[str]) -> list[str]:
        return sorted({v.lower().lstrip(".") for v in value if v.strip()})

    @cached_property
    def data_path(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_path / 'herpscore.db'}"

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or "filesystem://localhost//"

    @property
    def broker_folder(self) -> Path:
        return self.data_path / "broker"

    @property
    def models_path(self) -> Path:
        return (self.registry_dir or self.data_path / "models").expanduser().resolve()

    @property
    def thumbnails_path(self) -> Path:
        return (self.thumbnails_dir or self.data_path / "thumbnails").expanduser().resolve()

    @property
    def resolved_roots(self) -> list[Path]:
        """Allowed roots with symlinks resolved; empty means no folder may be scored."""
        return [p.expanduser().resolve() for p in self.allowed_roots]

    @property
    def is_embedded_broker(self) -> bool:
        return self.celery_broker_url.startswith("filesystem://")

    def flask_secret(self) -> str:
        """The configured secret key, or one generated once and kept in the data folder.

        Every web process of one installation must sign sessions with the same key.
        """
        if self.secret_key:
            return self.secret_key
        path = self.data_path / "secret_key"
        if not path.exists():
            import secrets

            self.data_path.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(secrets.token_hex(32), encoding="utf-8")
            tmp.chmod(0o600)
            try:
                os.link(tmp, path)  # atomic, and loses to a concurrent creator
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return path.read_text(encoding="utf-8").strip()

    def ensure_dirs(self) -> None:
        """Create the local folders that the embedded mode writes to."""
        self.data_path.mkdir(parents=True, exist_ok=True)
        self.models_path.mkdir(parents=True, exist_ok=True)
        if self.is_embedded_broker:
            for sub in ("in", "processed", "control"):
                (self.broker_folder / sub).mkdir(parents=True, exist_ok=True)


def get_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, with explicit overrides (tests, CLI flags)."""
    return Settings(**overrides)

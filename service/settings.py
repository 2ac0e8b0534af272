"""The one settings class: every HERPSCORE_* environment variable is read here and nowhere else."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_EXTENSIONS = ("jpg", "jpeg", "png", "tif", "tiff", "webp")
MIN_SECRET_KEY_LENGTH = 32


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
        default=Path("herpscore-data"),
        description="SQLite file, broker folders, registry, thumbnails, exports.",
    )
    database_url: str | None = Field(
        default=None,
        description="e.g. postgresql+psycopg://user@host/db; default SQLite in the data dir.",
    )
    broker_url: str | None = Field(
        default=None,
        description="e.g. redis://host:6379/0; default a filesystem broker in the data dir.",
    )
    registry_dir: Path | None = Field(
        default=None, description="Model registry folder; default `<data dir>/models`."
    )
    thumbnails_dir: Path | None = Field(
        default=None, description="Thumbnail cache folder; default `<data dir>/thumbnails`."
    )
    allowed_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Folders that jobs may read, symlinks resolved; none means no folder.",
    )
    image_extensions: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_EXTENSIONS),
        description="File extensions a scan picks up (comma separated, case-insensitive).",
    )
    review_threshold: float = Field(
        default=0.6,
        ge=0.0,
        le=1.0,
        description="Calibrated top-1 confidence below which a prediction is reviewed.",
    )
    review_labels: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Labels always sent to review (venomous species)."
    )
    venom_alert: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="A medically significant species at or above this probability, at any "
        "rank, sends the photo to review, whatever the top-1 says.",
    )
    review_order: Literal[
        "confidence", "margin", "balanced", "stratified", "mixed", "coverage", "adaptive"
    ] = Field(
        default="adaptive",
        description="The order a finished job's review queue serves its items (venom risk "
        "always first; while a job scores, lowest confidence first): while some predicted "
        "label has fewer than 10 human labels, a random sample of the job's 30 % smallest "
        "top-1/top-2 margins first, then balanced (adaptive); turns across the predicted "
        "labels, each label's smallest margin and a random item alternating (mixed); the "
        "same with margin only (balanced) or random only (stratified); lowest top-1 first "
        "(confidence); smallest margin first (margin); each label's two smallest margins in "
        "turns, then the rest at random (coverage). See docs/experiments/loop.md.",
    )
    lookalike_margin: float = Field(
        default=0.3,
        ge=0.0,
        le=1.0,
        description="Top-1 and top-2 in one look-alike group closer than this go to review.",
    )
    burst_window_seconds: float = Field(
        default=10.0,
        ge=0.0,
        le=3600.0,
        description="Photos of one site taken this close together (and alike) form a burst; "
        "0 turns bursts off.",
    )
    burst_max_distance: int = Field(
        default=10,
        ge=0,
        le=64,
        description="Most bits two photos' 64-bit perceptual hashes may differ by in a burst.",
    )
    site_depth: int = Field(
        default=1, ge=1, le=10, description="Which folder level under a job's folder is the site."
    )
    top_k: int = Field(
        default=5,
        ge=1,
        le=50,
        description="Suggestions kept per prediction; every label at or above the venom "
        "alert is kept too, wherever it ranks.",
    )
    chunk_size: int = Field(
        default=256,
        ge=1,
        le=10_000,
        description="Most images per score task (chunks grow to it from 8).",
    )
    chunk_megabytes: int = Field(
        default=256, ge=1, description="A score task also closes at this many MB of files."
    )
    batch_size: int = Field(default=8, ge=1, le=256, description="ONNX Runtime batch.")
    worker_threads: int = Field(default=1, ge=1, description="ONNX Runtime threads per process.")
    decode_threads: int | None = Field(
        default=None,
        ge=0,
        description="Decode threads per scoring process; 0 decodes in the scoring thread, in "
        "turn with inference. Unset: 0 on the CPU with a process per core (threads would only "
        "take turns with inference on that core), 2 on a GPU or with fewer processes than "
        "cores (HERPSCORE_WORKER_CONCURRENCY).",
    )
    inference_device: Literal["auto", "cpu"] = Field(
        default="auto",
        description="auto: ONNX Runtime's CUDA provider when installed (onnxruntime-gpu) "
        "and working, else the CPU; cpu: always the CPU.",
    )
    serve_int8: bool = Field(
        default=False,
        description="Score with the model's model.int8.onnx where its accuracy gate passed "
        "(CPU only; else model.onnx).",
    )
    worker_concurrency: int = Field(default=0, ge=0, description="0 = one process per core.")
    max_image_pixels: int = Field(
        default=120_000_000, ge=1, description="Larger images fail as too_many_pixels, undecoded."
    )
    max_file_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1, description="Larger files fail as file_too_large."
    )
    max_decoded_megabytes: int = Field(
        default=384,
        ge=1,
        description="Largest decoded image (width x height x bytes per pixel of its mode); "
        "larger ones fail as too_many_pixels before any pixel is decoded.",
    )
    worker_max_memory_megabytes: int = Field(
        default=2048,
        ge=0,
        description="A worker process past this resident size is replaced after its task "
        "(Celery's worker_max_memory_per_child); 0 = never.",
    )
    worker_kill_memory_megabytes: int = Field(
        default=4096,
        ge=0,
        description="A worker process past this resident size while it scores a chunk is "
        "killed at once (SIGKILL from a watchdog thread): the chunk is split and the file "
        "that did it fails alone as killed_worker; 0 = no hard ceiling.",
    )
    broker_visibility_timeout: int = Field(
        default=3600, ge=1, description="Seconds before Redis redelivers an unacknowledged task."
    )
    broker_key_prefix: str = Field(
        default="",
        max_length=200,
        description="Redis broker: a prefix for every key, so stacks can share one database.",
    )
    chunk_lease_seconds: int = Field(
        default=900, ge=5, description="A chunk not done by then is sent again by the scheduler."
    )
    stalled_check_seconds: float = Field(
        default=10.0, gt=0, description="How often the scheduler looks for lost work."
    )
    secret_key: str = Field(
        default="",
        description="Flask session key; generated if empty. The web app refuses a weak one "
        f"(under {MIN_SECRET_KEY_LENGTH} characters or under 8 distinct ones).",
    )
    # Security (docs/security.md).
    cookie_secure: bool = Field(
        default=False, description="Send the session cookie over HTTPS only (on behind TLS)."
    )
    login_rate_limit: str = Field(
        default="10 per 15 minutes",
        description="Failed UI logins allowed per client address and per username; after "
        "that, logins answer 429 until the window passes.",
    )
    api_auth_rate_limit: str = Field(
        default="30 per minute",
        description="Failed API-key checks (401s) allowed per client address before 429s.",
    )
    rate_limit_key_prefix: str = Field(
        default="herpscore", description="Prefix of the limiter's keys in its store."
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Largest request body the web app reads."
    )
    # Observability (docs/observability.md).
    metrics_public: bool = Field(
        default=False,
        description="Serve /metrics to anyone; otherwise it needs an API key (viewer or up).",
    )
    log_json: bool = Field(default=False, description="Log JSON lines instead of text.")
    web_host: str = Field(default="127.0.0.1", description="Address `herpscore up` listens on.")
    web_port: int = Field(default=8000, description="Port `herpscore up` listens on.")
    # Exports, scheduled retraining and the promotion gate (service/exports.py, retraining.py).
    export_min_per_class: int = Field(default=10, ge=1, description="Smaller classes are dropped.")
    export_val_fraction: float = Field(
        default=0.15, ge=0.0, le=0.5, description="Share of each class exported as val."
    )
    export_test_fraction: float = Field(
        default=0.15, ge=0.0, le=0.5, description="Share of each class exported as test."
    )
    export_include_confident: float | None = Field(
        default=None, gt=0.0, le=1.0, description="Also export predictions at least this sure."
    )
    export_hardlinks: bool = Field(
        default=True,
        description="Hard-link photos that are already read-only into exports; others are "
        "copied. An original's permissions are never changed.",
    )
    retrain_min_new_labels: int = Field(
        default=50, ge=1, description="New verified labels needed before a scheduled retrain."
    )
    retrain_interval_seconds: float = Field(
        default=24 * 3600.0, gt=0, description="How often the scheduler checks for a retrain."
    )
    retrain_stale_seconds: float = Field(
        default=2 * 3600.0, gt=0, description="A run silent this long is taken as dead."
    )
    auto_promote: bool = Field(
        default=False, description="Activate a candidate that passes the gate without an admin."
    )
    promotion_recall_margin: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Largest per-class recall drop the gate ignores; for a medically "
        "significant species any larger drop blocks the candidate, for other classes only a "
        "significant one (see promotion_recall_alpha).",
    )
    promotion_recall_alpha: float = Field(
        default=0.05,
        gt=0.0,
        le=1.0,
        description="Significance level of the gate's per-class recall test: a drop beyond the "
        "margin blocks only if the exact one-sided sign test on the class's test photos the two "
        "models disagree on gives a p-value below it (after promotion_recall_correction).",
    )
    promotion_recall_correction: Literal["holm", "none"] = Field(
        default="holm",
        description="How the per-class recall tests share alpha: holm tests all classes as one "
        "family (Holm's step-down, family-wise error at most alpha), none tests each class at "
        "alpha, which refuses equally good candidates more often the more classes there are.",
    )
    training_backbone: str = Field(
        default="efficientnet_lite0", description="Backbone of scheduled retraining."
    )
    training_weights: str = Field(
        default="default", description="Start weights: default (offline ImageNet), none or a path."
    )
    training_size: int | None = Field(
        default=None,
        ge=32,
        le=1024,
        description="Input side; unset: the fit's default, 288 for efficientnet_lite0 and the "
        "native size for the other backbones.",
    )
    training_epochs_stage1: int = Field(
        default=6,
        ge=0,
        description="Epochs of the frozen-backbone stage when it trains by epochs "
        "(`--stage1 epochs` in the extra args); the default stage 1 is a linear probe.",
    )
    training_epochs_stage2: int = Field(
        default=10, ge=0, description="Epochs of the fine-tuning stage."
    )
    training_batch_size: int = Field(default=32, ge=1, description="Training batch size.")
    training_min_per_class: int = Field(
        default=5, ge=1, description="Training stops if a class has fewer images."
    )
    training_int8: bool = Field(
        default=True, description="Build and gate an INT8 model beside the FP32 one."
    )
    training_extra_args: str = Field(
        default="", description="More `python -m training fit` options, shell-quoted."
    )
    label_errors: Literal["holdout", "kfold", "off"] = Field(
        default="holdout",
        description="Suspect labels after each training run, from out-of-sample "
        "probabilities: holdout = the run's val/test predictions; kfold = also every "
        "training image by K-fold probes (one more feature pass); off = none.",
    )
    label_errors_max: int = Field(
        default=1000, ge=1, le=100_000, description="Most suspect labels kept per training run."
    )
    display_copies_when_scoring: bool = Field(
        default=True,
        description="Scoring workers make the review page's display copies of routed photos.",
    )
    thumbnails_when_scoring: bool = Field(
        default=True,
        description="Scoring workers write every scored photo's 256 px thumbnail, cut from "
        "the image decoded for the model; off: the maintenance queue renders it when first "
        "shown.",
    )
    training_available: bool | None = Field(
        default=None,
        description="Whether a training worker with torch exists; unset: torch importable here.",
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
    def worker_processes(self) -> int:
        """How many processes a worker runs: worker_concurrency, or one per core."""
        return self.worker_concurrency or os.cpu_count() or 1

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

    @property
    def rate_limit_storage_uri(self) -> str:
        """Redis when the broker is Redis (limits shared by every web process), else memory."""
        url = self.celery_broker_url
        return url if url.startswith(("redis://", "rediss://")) else "memory://"

    def weak_secret_key(self) -> str | None:
        """Why the configured secret key is too weak to sign sessions, or None."""
        key = self.secret_key
        if key and (len(key) < MIN_SECRET_KEY_LENGTH or len(set(key)) < 8):
            return (
                f"HERPSCORE_SECRET_KEY is weak: use at least {MIN_SECRET_KEY_LENGTH} random "
                "characters, e.g. python3 -c 'import secrets; print(secrets.token_hex(32))'"
            )
        return None

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

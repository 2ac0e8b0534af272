"""A run's surroundings: its folder and args.json, its log file, seeds, malloc and device."""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger("training")


def build_run_dir(args: argparse.Namespace) -> Path:
    """OUT/run with args.json (the seed is among the args)."""
    args.out = args.out.expanduser().resolve()
    run_dir = args.out / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "args.json").write_text(json.dumps(jsonable(vars(args)), indent=2) + "\n")
    return run_dir


@contextmanager
def run_log(run_dir: Path) -> Iterator[None]:
    """Copy log records to OUT/run/train.log (appended on resume) for the duration of a run."""
    handler = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    if previous > logging.INFO or previous == logging.NOTSET:
        root.setLevel(logging.INFO)
    log.info("run folder %s", run_dir)
    try:
        yield
    except Exception:
        log.exception("training failed")
        raise
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch from one number."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def tune_malloc() -> None:
    """Keep glibc from mapping and unmapping big activation buffers on every step (2-3x on CPU)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_max = -1, -4
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, 1 << 30)


def build_device(args: argparse.Namespace) -> torch.device:
    """The torch device of --device, with --threads applied."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(args.device)


def jsonable(values: dict[str, Any]) -> dict[str, Any]:
    """argparse values as JSON: paths become strings."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}

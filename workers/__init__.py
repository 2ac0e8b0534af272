"""Celery workers of herpscore: `celery -A workers worker -Q scan,inference`."""

from workers.celery_app import app

__all__ = ["app"]

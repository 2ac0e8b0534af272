"""Alembic migrations of the herpscore database."""

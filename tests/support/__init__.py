"""Helpers the tests share: tiny models, generated photos."""

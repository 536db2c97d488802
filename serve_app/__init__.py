"""The lensops Ray Serve application (``serve run serve_app:build_app`` / ``serve deploy``)."""

from serve_app.app import build_app

__all__ = ["build_app"]

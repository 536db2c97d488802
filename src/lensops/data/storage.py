"""Local paths and ``s3://`` URIs behind one pyarrow filesystem interface.

S3 settings come from the standard AWS environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``) and ``AWS_ENDPOINT_URL`` for
S3-compatible stores such as MinIO. The same filesystem object is handed to Ray Data, so
the driver and the workers read through identical settings.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.fs as pafs


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def s3_filesystem() -> pafs.S3FileSystem:
    return pafs.S3FileSystem(
        endpoint_override=os.environ.get("AWS_ENDPOINT_URL") or None,
        region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    )


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Split a location into (filesystem, path on that filesystem)."""
    if is_s3(uri):
        return s3_filesystem(), uri.removeprefix("s3://").rstrip("/")
    return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())


def join(base: str, *parts: str) -> str:
    """Join path segments the way the base location expects (``/`` for both)."""
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def fs_path(uri: str) -> str:
    """The path of a location on the filesystem that :func:`resolve` returns for it."""
    return uri.removeprefix("s3://")


def to_uri(fs: pafs.FileSystem, path: str) -> str:
    """Inverse of :func:`resolve`: the user-facing location of a filesystem path."""
    return f"s3://{path}" if isinstance(fs, pafs.S3FileSystem) else path


def visible_files(fs: pafs.FileSystem, root: str) -> list[tuple[str, list[str]]]:
    """Every file under ``root`` at any depth, as (path on ``fs``, parts of its path relative to
    ``root``); names starting with a dot, and whatever lies under them, are left out."""
    found = []
    for entry in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        relative = entry.path[len(root) :].strip("/").split("/")
        if entry.type == pafs.FileType.File and not any(part.startswith(".") for part in relative):
            found.append((entry.path, relative))
    return found


def beside(path: str, base: str) -> str:
    """A path from a manifest: kept when absolute (or ``s3://``), else joined to ``base``."""
    return path if is_s3(path) or path.startswith("/") else join(base, path)


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as stream:
        return stream.read()

"""Read: the files of a dataset, from an ImageFolder tree or a manifest.csv, local or ``s3://``.

The result is one row per file, ``path`` (a local path or ``s3://`` URI) and ``label``, plus any
extra manifest columns (a regression target, a group id, ...).
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import pyarrow.fs as pafs

from lensops.data import storage

LICENSE = "LICENSE"
"""A dataset's licence file: at its root, never read as an image (images sit in class folders)."""
NOT_STATED = "not stated"


def list_files(source: str) -> pd.DataFrame:
    """Rows of (path, label, extra manifest columns) for a folder tree or a manifest.csv."""
    fs, root = storage.resolve(source)
    if root.endswith(".csv"):
        return _read_manifest(fs, root)
    return _scan_folder(fs, root)


def read_licence(source: str) -> str:
    """The first line of the ``LICENSE`` file at a folder's root or beside a manifest."""
    fs, root = storage.resolve(source)
    folder = root.rsplit("/", 1)[0] if root.endswith(".csv") else root
    try:
        text = storage.read_bytes(fs, storage.join(folder, LICENSE)).decode()
    except (OSError, UnicodeDecodeError):
        return NOT_STATED
    return next((line.strip() for line in text.splitlines() if line.strip()), NOT_STATED)


def _scan_folder(fs: pafs.FileSystem, root: str) -> pd.DataFrame:
    info = fs.get_file_info(root)
    if info.type != pafs.FileType.Directory:
        raise FileNotFoundError(f"no image folder at {storage.to_uri(fs, root)}")
    rows = [
        {"path": storage.to_uri(fs, path), "label": relative[0]}
        for path, relative in storage.visible_files(fs, root)
        if len(relative) >= 2
    ]
    if not rows:
        raise FileNotFoundError(f"no images under {storage.to_uri(fs, root)}: expected <root>/<class>/<image>")
    return pd.DataFrame(rows)


def _read_manifest(fs: pafs.FileSystem, path: str) -> pd.DataFrame:
    with fs.open_input_stream(path) as stream:
        table = pd.read_csv(stream)
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: manifest needs columns path,label; missing {sorted(missing)}")
    table["path"] = beside_manifest(fs, path, table["path"])
    table["label"] = table["label"].astype(str)
    return table


def beside_manifest(fs: pafs.FileSystem, manifest: str, paths: Iterable[str]) -> list[str]:
    """The locations a manifest's file column names: relative paths are beside the manifest;
    an empty cell stays empty (a missing file, reported where the files are read)."""
    base = storage.to_uri(fs, manifest.rsplit("/", 1)[0])
    return [storage.beside(p, base) if p else "" for p in paths]

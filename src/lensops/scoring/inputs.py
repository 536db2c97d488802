"""What a batch job scores: every image file under a folder or ``s3://`` prefix, or in a manifest.

Unlike a training dataset, nothing needs labels: files may sit at any depth, and the folder
each sits in (relative to the root; for a manifest's file outside it, its absolute folder) is
kept as a column, so class folders, where present, travel along. Under a folder, files count
by suffix (:data:`IMAGE_SUFFIXES`); hidden files and others (a ``manifest.csv``, notes) are
left out. A manifest lists files itself: a ``.csv``
with a ``path`` column or a ``.txt`` with one path per line, relative to the manifest.
"""

from __future__ import annotations

import io

import pandas as pd
import pyarrow.fs as pafs

from lensops.data import storage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
MANIFEST_SUFFIXES = (".csv", ".txt")


def list_inputs(source: str) -> pd.DataFrame:
    """One row per file to score: ``path`` (local path or ``s3://`` URI) and ``folder``."""
    fs, root = storage.resolve(source)
    if root.endswith(MANIFEST_SUFFIXES):
        base = storage.to_uri(fs, root.rsplit("/", 1)[0])
        paths = [storage.beside(p, base) for p in _manifest_paths(fs, root)]
    else:
        base = storage.to_uri(fs, root)
        paths = _scan(fs, root)
    if not paths:
        raise FileNotFoundError(f"no image files in {source} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return pd.DataFrame({"path": paths, "folder": [_folder(p, base) for p in paths]})


def _scan(fs: pafs.FileSystem, root: str) -> list[str]:
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"no folder at {storage.to_uri(fs, root)}")
    paths = [storage.to_uri(fs, path) for path, _ in storage.visible_files(fs, root)]
    return sorted(path for path in paths if path.lower().endswith(IMAGE_SUFFIXES))


def _manifest_paths(fs: pafs.FileSystem, path: str) -> list[str]:
    text = storage.read_bytes(fs, path).decode()
    if path.endswith(".txt"):
        return [line.strip() for line in text.splitlines() if line.strip()]
    table = pd.read_csv(io.StringIO(text))
    if "path" not in table.columns:
        raise ValueError(f"{path}: a manifest needs a 'path' column; it has {list(table.columns)}")
    return [str(p) for p in table["path"]]


def _folder(path: str, base: str) -> str:
    relative = path[len(base) :].strip("/") if path.startswith(base) else path
    return relative.rsplit("/", 1)[0] if "/" in relative else ""

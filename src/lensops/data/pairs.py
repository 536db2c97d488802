"""Examples made of several files: a before and an after image of one place and their change mask.

Read from a manifest (one column per file, e.g. ``before,after,mask``, plus an optional
``group``) or a folder tree whose leaf folders each hold one example as ``before.<ext>``,
``after.<ext>`` and ``mask.<ext>``. In a tree ``<root>/<scene>/<tile>/...`` the scene names the
group; in ``<root>/<tile>/...`` each tile is its own group. Chips cut from one scene overlap or
touch, so splits go by group (:mod:`lensops.data.splits`): a scene is never in two splits.

Inspection reads the files of every example together and keeps or skips the example as one:
each image must pass the image rules (:func:`lensops.data.images.check_image`), the images and
the mask must have the same size, the two images the same bands, and the mask only the values
0 and 1 (or 0 and 255). The example's ``label`` says whether its mask marks any change. A TIFF
that Pillow cannot decode (a multi-band GeoTIFF of reflectances) is read with rasterio, when
the ``geo`` extra is installed, under the same rules.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import pandas as pd
import pyarrow.fs as pafs

from lensops.config import DataConfig
from lensops.data import rasters, storage
from lensops.data.images import ImageCheck, Issue, load_image
from lensops.data.reading import map_rows, read_file
from lensops.data.sources import beside_manifest
from lensops.data.splits import GROUP
from lensops.model.masks import change_class
from lensops.progress import tracked

MASK_VALUES = ({0, 1}, {0, 255})
"""A mask is binary in one of these encodings (0 and 1, or 0 and 255 as image editors write it)."""


def list_examples(source: str, names: tuple[str, ...]) -> pd.DataFrame:
    """Rows of (``path`` naming the example, one column of file locations per name, ``group``,
    extra manifest columns); a missing file is an empty location, reported by inspection."""
    fs, root = storage.resolve(source)
    table = _read_manifest(fs, root, names) if root.endswith(".csv") else _scan_folder(fs, root, names)
    table[GROUP] = table[GROUP].astype(str)
    return table


def _read_manifest(fs: pafs.FileSystem, path: str, names: tuple[str, ...]) -> pd.DataFrame:
    with fs.open_input_stream(path) as stream:
        table = pd.read_csv(stream, dtype={GROUP: str}, keep_default_na=False)
    missing = set(names) - set(table.columns)
    if missing:
        raise ValueError(f"{path}: a manifest of examples needs columns {','.join(names)}; missing {sorted(missing)}")
    for name in names:
        table[name] = beside_manifest(fs, path, table[name].astype(str))
    table.insert(0, "path", table[names[0]])
    if GROUP not in table.columns:
        table[GROUP] = table["path"]
    return table


def _scan_folder(fs: pafs.FileSystem, root: str, names: tuple[str, ...]) -> pd.DataFrame:
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"no folder of examples at {storage.to_uri(fs, root)}")
    examples: dict[tuple[str, ...], dict[str, str]] = defaultdict(dict)
    for path, relative in storage.visible_files(fs, root):
        stem = PurePosixPath(relative[-1]).stem
        if len(relative) >= 2 and stem in names:
            examples[tuple(relative[:-1])][stem] = storage.to_uri(fs, path)
    if not examples:
        expected = "/".join(f"{n}.<ext>" for n in names)
        raise FileNotFoundError(f"no examples under {storage.to_uri(fs, root)}: expected <root>/<tile>/{{{expected}}}")
    rows = [
        {
            "path": storage.to_uri(fs, storage.join(root, *folder)),
            **{name: files.get(name, "") for name in names},
            GROUP: folder[0] if len(folder) >= 2 else "/".join(folder),
        }
        for folder, files in sorted(examples.items())
    ]
    return pd.DataFrame(rows)


def inspect_examples(examples: pd.DataFrame, names: tuple[str, ...], cfg: DataConfig) -> pd.DataFrame:
    """Adds ``label``, ``sha256`` (over all the example's files), ``width``, ``height``, ``issue``
    and ``detail`` to every example row; the last of ``names`` is the mask."""
    fs, _ = storage.resolve(cfg.source)
    kwargs = {"fs": fs, "names": names, "min_side": cfg.min_side, "max_pixels": cfg.max_pixels}
    batches = map_rows(examples, _inspect_batch, kwargs, cfg).iter_batches(batch_format="pandas", batch_size=None)
    inspected = pd.concat(tracked(batches, len(examples), "validating examples"), ignore_index=True)
    return inspected.sort_values("path").reset_index(drop=True)


def _inspect_batch(
    batch: pd.DataFrame, fs: pafs.FileSystem, names: tuple[str, ...], min_side: int, max_pixels: int
) -> pd.DataFrame:
    results = [inspect_example(fs, row, names, min_side, max_pixels) for row in batch.to_dict("records")]
    return pd.concat([batch.reset_index(drop=True), pd.DataFrame(results)], axis=1)


@dataclass(frozen=True)
class _Picture:
    """What inspection needs of one file: its size, its bands and, for the mask, its pixels."""

    size: tuple[int, int]
    """(width, height)."""
    bands: str
    pixels: np.ndarray | None = None
    """The mask's values ((H, W) for one band); None for an image, whose pixels inspection never reads."""


def inspect_example(fs: pafs.FileSystem, row: dict, names: tuple[str, ...], min_side: int, max_pixels: int) -> dict:
    """One example's inspection result; the first problem found is its issue."""
    digest = hashlib.sha256()
    pictures: dict[str, _Picture] = {}
    for name in names:
        problem = _read_into(fs, row[name], name, digest, pictures, (min_side, max_pixels), name == names[-1])
        if problem:
            return _skipped(*problem)
    issue = _mismatch(pictures, names)
    if issue:
        return _skipped(*issue)
    width, height = pictures[names[0]].size
    label = change_class(pictures[names[-1]].pixels)
    return {"label": label, "sha256": digest.hexdigest(), "width": width, "height": height, "issue": None, "detail": ""}


def _read_into(
    fs: pafs.FileSystem,
    uri: str,
    name: str,
    digest: hashlib._Hash,
    pictures: dict[str, _Picture],
    limits: tuple[int, int],
    is_mask: bool,
) -> tuple[Issue, str] | None:
    """Read and check one file of an example into ``pictures`` (with its pixels if it is the
    mask; ``limits`` are the min side and max pixels); (issue, detail) when it fails."""
    if not uri:
        return Issue.MISSING_FILE, f"no {name} file"
    data, error = read_file(fs, uri)
    if data is None:
        return Issue.UNREADABLE, f"{name}: {error}"
    check, picture = _picture(data, *limits, is_mask)
    if picture is None:
        return check.issue or Issue.UNREADABLE, f"{name}: {check.detail}"
    digest.update(hashlib.sha256(data).digest())
    pictures[name] = picture
    return None


def _picture(data: bytes, min_side: int, max_pixels: int, is_mask: bool) -> tuple[ImageCheck, _Picture | None]:
    """The file as Pillow decodes it, or as rasterio does a TIFF that Pillow cannot."""
    check, image = load_image(data, min_side, max_pixels)
    if image is not None:
        with image:
            return check, _Picture(image.size, "".join(image.getbands()), np.asarray(image) if is_mask else None)
    if check.issue is Issue.NOT_IMAGE and rasters.is_tiff(data) and rasters.available():
        check, raster = rasters.check_raster(data, min_side, max_pixels)
        if raster is not None:
            bands = f"{raster.data.shape[0]} bands of {raster.data.dtype}"
            mask = raster.data[0] if raster.data.shape[0] == 1 else raster.data
            return check, _Picture((raster.shape[1], raster.shape[0]), bands, mask if is_mask else None)
    return check, None


def _mismatch(pictures: dict[str, _Picture], names: tuple[str, ...]) -> tuple[Issue, str] | None:
    """Why the files of one example do not fit together, if they do not."""
    *inputs, mask_name = names
    sizes = {name: pictures[name].size for name in names}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{name} {w}x{h}" for name, (w, h) in sizes.items())
        return Issue.MISMATCHED, f"sizes differ: {listed}"
    bands = {name: pictures[name].bands for name in inputs}
    if len(set(bands.values())) > 1:
        listed = ", ".join(f"{name} {b}" for name, b in bands.items())
        return Issue.MISMATCHED, f"bands differ: {listed}"
    values = set(np.unique(pictures[mask_name].pixels).tolist())
    if not any(values <= allowed for allowed in MASK_VALUES):
        shown = ", ".join(str(v) for v in sorted(values)[:6])
        return Issue.BAD_MASK, f"{mask_name} is not binary: values {shown}"
    return None


def _skipped(issue: Issue, detail: str) -> dict:
    return {"label": "", "sha256": "", "width": 0, "height": 0, "issue": issue.value, "detail": detail}

"""GeoTIFF rasters read and written with their georeference (needs the ``geo`` extra: rasterio).

A :class:`Raster` is a (bands, H, W) array with what places it on the ground: its CRS, the
affine transform from pixel (col, row) to map (x, y), the nodata value and the band
descriptions. Bands are chosen by 1-based index or by description, e.g. ``B4,B3,B2,B8``.
rasterio is imported inside the functions, so lensops imports without it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from lensops.data.images import ImageCheck, Issue

if TYPE_CHECKING:
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.io import DatasetReader, DatasetWriter

BLOCK = 256
"""Tile side of the GeoTIFFs written; rasters smaller than this on a side are written in strips."""


class RasterError(ValueError):
    """A raster that cannot be used as asked (a missing band, rasters on different grids); the
    message says which file and what differs."""


@dataclass(frozen=True)
class Raster:
    data: np.ndarray
    """(bands, H, W)."""
    crs: CRS | None
    transform: Affine
    nodata: float | None = None
    descriptions: tuple[str | None, ...] = ()
    """One per band (None where the file names none); empty: no names."""

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return self.data.shape[1], self.data.shape[2]

    def window(self, row: int, col: int, height: int, width: int) -> Raster:
        """The ``height`` x ``width`` pixels from (``row``, ``col``), georeferenced where they lie."""
        window = self.data[:, row : row + height, col : col + width]
        return replace(self, data=window, transform=shifted(self.transform, row, col))


def shifted(transform: Affine, row: int, col: int) -> Affine:
    """The transform of a grid whose pixel (0, 0) is pixel (``row``, ``col``) of ``transform``'s."""
    return transform @ type(transform).translation(col, row)


def georeferenced(
    data: np.ndarray,
    crs: str,
    origin: tuple[float, float],
    pixel: float,
    nodata: float | None = None,
    descriptions: tuple[str | None, ...] = (),
) -> Raster:
    """A north-up raster of ``data`` whose top-left corner lies at ``origin`` (x, y) in ``crs``
    (e.g. ``EPSG:32633``), with square pixels of ``pixel`` map units."""
    rasterio = _rasterio()
    transform = rasterio.transform.Affine(pixel, 0.0, origin[0], 0.0, -pixel, origin[1])
    return Raster(data, rasterio.crs.CRS.from_user_input(crs), transform, nodata, descriptions)


def read_raster(path: Path | str, bands: str | Sequence[int | str] | None = None) -> Raster:
    """The raster at ``path`` (a local file), all its bands or those named by ``bands``:
    1-based indexes and/or descriptions, as a sequence or a comma-separated string."""
    rasterio = _rasterio()
    try:
        with rasterio.open(path) as source:
            return _read(source, bands, path)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterError(f"{path}: {exc}") from None


def read_bytes(data: bytes, bands: str | Sequence[int | str] | None = None, name: str = "raster") -> Raster:
    """:func:`read_raster` of a file's bytes (an upload, a file read from S3)."""
    rasterio = _rasterio()
    try:
        with rasterio.MemoryFile(data) as memory, memory.open() as source:
            return _read(source, bands, name)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterError(f"{name}: not a raster: {exc}") from None


TIFF_MAGIC = (b"II*\x00", b"MM\x00*")


def is_tiff(data: bytes) -> bool:
    return data[:4] in TIFF_MAGIC


def check_raster(
    data: bytes, min_side: int, max_pixels: int, bands: str | Sequence[int | str] | None = None
) -> tuple[ImageCheck, Raster | None]:
    """A raster file's verdict by the image rules (its size, checked before its pixels are
    read), and the raster with ``bands`` when it passes: the multi-band twin of
    :func:`lensops.data.images.load_image`."""
    rasterio = _rasterio()
    try:
        with rasterio.MemoryFile(data) as memory, memory.open() as source:
            check = ImageCheck(width=source.width, height=source.height, format=source.driver)
            if source.width * source.height > max_pixels:
                detail = f"{source.width}x{source.height} exceeds {max_pixels} pixels"
                return check.model_copy(update={"issue": Issue.TOO_LARGE, "detail": detail}), None
            if min(source.width, source.height) < min_side:
                detail = f"{source.width}x{source.height} is under {min_side} px on a side"
                return check.model_copy(update={"issue": Issue.TOO_SMALL, "detail": detail}), None
            return check, _read(source, bands, "raster")
    except (rasterio.errors.RasterioIOError, RasterError) as exc:
        return ImageCheck(format="GTiff", issue=Issue.UNREADABLE, detail=str(exc)[:200]), None


def _read(source: DatasetReader, bands: str | Sequence[int | str] | None, name: Path | str) -> Raster:
    indexes = band_indexes(source.descriptions, bands, name)
    return Raster(
        data=source.read(indexes),
        crs=source.crs,
        transform=source.transform,
        nodata=source.nodata,
        descriptions=tuple(source.descriptions[i - 1] for i in indexes),
    )


def band_indexes(
    descriptions: Sequence[str | None], bands: str | Sequence[int | str] | None, path: Path | str = "raster"
) -> list[int]:
    """1-based indexes of ``bands`` among bands with these ``descriptions`` (matched without
    regard to case); all bands when ``bands`` is None."""
    count = len(descriptions)
    if bands is None:
        return list(range(1, count + 1))
    wanted = [b.strip() for b in bands.split(",")] if isinstance(bands, str) else [str(b) for b in bands]
    by_name = {d.lower(): i for i, d in enumerate(descriptions, 1) if d}
    indexes = [int(b) if b.isdigit() else by_name.get(b.lower(), 0) for b in wanted]
    missing = [b for b, i in zip(wanted, indexes, strict=True) if not 1 <= i <= count]
    if missing:
        available = ", ".join(f"{i}" + (f" ({d})" if d else "") for i, d in enumerate(descriptions, 1))
        raise RasterError(f"{path} has no band {', '.join(missing)}; its bands: {available}")
    return indexes


def valid_mask(raster: Raster) -> np.ndarray:
    """(H, W) bool: True where no band holds the nodata value or NaN."""
    invalid = np.isnan(raster.data) if raster.data.dtype.kind == "f" else np.zeros(raster.data.shape, bool)
    if raster.nodata is not None:
        invalid |= raster.data == raster.nodata
    return ~invalid.any(axis=0)


def write_raster(path: Path, raster: Raster) -> Path:
    """Write ``raster`` as a deflate-compressed GeoTIFF (tiled when both sides reach
    :data:`BLOCK`), with its CRS, transform, nodata and band descriptions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _rasterio().open(path, "w", **_profile(raster)) as sink:
        _write(sink, raster)
    return path


def to_bytes(raster: Raster) -> bytes:
    """:func:`write_raster` into memory: the GeoTIFF file's bytes."""
    with _rasterio().MemoryFile() as memory:
        with memory.open(**_profile(raster)) as sink:
            _write(sink, raster)
        return memory.read()


def _profile(raster: Raster) -> dict[str, object]:
    bands, height, width = raster.data.shape
    profile = {
        "driver": "GTiff",
        "count": bands,
        "height": height,
        "width": width,
        "dtype": raster.data.dtype.name,
        "crs": raster.crs,
        "transform": raster.transform,
        "nodata": raster.nodata,
        "compress": "deflate",
    }
    if min(height, width) >= BLOCK:
        profile |= {"tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK}
    return profile


def _write(sink: DatasetWriter, raster: Raster) -> None:
    sink.write(raster.data)
    for index, description in enumerate(raster.descriptions, 1):
        if description:
            sink.set_band_description(index, description)


@dataclass(frozen=True)
class Place:
    """Where a raster lies on the map: its CRS, transform and size in pixels."""

    crs: CRS
    transform: Affine
    width: int
    height: int


def place_of(data: bytes) -> Place | None:
    """The georeference of a file's bytes (read from its header); None when it is no raster
    rasterio reads or carries no CRS."""
    if not (is_tiff(data) and available()):
        return None
    rasterio = _rasterio()
    try:
        with rasterio.MemoryFile(data) as memory, memory.open() as source:
            return Place(source.crs, source.transform, source.width, source.height) if source.crs else None
    except rasterio.errors.RasterioIOError:
        return None


def available() -> bool:
    """Whether rasterio (the ``geo`` extra) is installed."""
    return importlib.util.find_spec("rasterio") is not None


def _rasterio() -> ModuleType:
    try:
        import rasterio
    except ImportError as exc:
        raise RuntimeError("GeoTIFF rasters need the optional extra: pip install 'lensops[geo]'") from exc
    return rasterio

"""Cut a georeferenced before/after pair and its change mask into tiles, and put mask tiles
back together into one raster of the scene.

:func:`chip` writes ``<out>/<scene>/<tile>/{before,after,mask}.tif``, the folder tree that
:mod:`lensops.data.pairs` reads with the scene as the group, so overlapping tiles of one scene
never fall into two splits. Every tile is a GeoTIFF on the scene's grid (its CRS, the window's
transform), so what a model says about a tile goes back onto the map, and :func:`stitch`
rebuilds the scene from the tiles.

Windows of ``size`` px start every ``stride`` px along rows and columns; where the last one
would run past the edge it is shifted back to end at the edge (overlapping its neighbour more),
so the tiles cover the whole scene. A window is kept when at least ``min_valid`` of its pixels
are valid (no band nodata or NaN) at both dates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from lensops.data.rasters import Raster, RasterError, read_raster, shifted, valid_mask, write_raster

MASK_FILE = "mask.tif"
UNCOVERED = 255
"""What :func:`stitch` writes (and declares nodata) where no tile lies."""


@dataclass(frozen=True)
class ChipSummary:
    scene: Path
    """The folder the tiles went into."""
    written: int
    dropped: int
    """Windows left out for too few valid pixels."""
    size: int
    min_valid: float

    def line(self) -> str:
        dropped = f"dropped {self.dropped} windows with under {self.min_valid:.0%} valid pixels"
        return f"{self.scene}: wrote {self.written} tiles of {self.size} px; {dropped}"


def chip(
    before: Path,
    after: Path,
    mask: Path | None,
    out_dir: Path,
    size: int = 256,
    stride: int | None = None,
    min_valid: float = 0.9,
    bands: str | Sequence[int | str] | None = None,
    scene: str | None = None,
) -> ChipSummary:
    """Tiles of ``size`` px every ``stride`` px (default: ``size``, no overlap) of the pair and
    its mask, into ``out_dir/<scene>`` (default scene: :func:`scene_name` of ``before``); the
    mask tiles hold 0 and 1, the images the bands chosen by ``bands`` (default all)."""
    sources = {"before": Path(before), "after": Path(after), **({"mask": Path(mask)} if mask else {})}
    rasters = {name: read_raster(path, None if name == "mask" else bands) for name, path in sources.items()}
    _check_fit(rasters, sources)
    if "mask" in rasters:
        rasters["mask"] = _binary(rasters["mask"])
    height, width = rasters["before"].shape
    if min(height, width) < size:
        raise RasterError(f"{before} is {height}x{width} px, smaller than one tile of {size} px")
    valid = valid_mask(rasters["before"]) & valid_mask(rasters["after"])
    folder = out_dir / (scene or scene_name(Path(before)))
    written = dropped = 0
    for row in offsets(height, size, stride or size):
        for col in offsets(width, size, stride or size):
            if valid[row : row + size, col : col + size].mean() < min_valid:
                dropped += 1
                continue
            for name, raster in rasters.items():
                write_raster(folder / f"r{row:06d}_c{col:06d}" / f"{name}.tif", raster.window(row, col, size, size))
            written += 1
    return ChipSummary(folder, written, dropped, size, min_valid)


def scene_name(before: Path) -> str:
    """The scene a before raster shows: its file's stem, or its folder's name when the stem is
    just ``before`` (``scene_7/before.tif``)."""
    return before.resolve().parent.name if before.stem.lower() == "before" else before.stem


def offsets(length: int, size: int, stride: int) -> list[int]:
    """Starts of the windows along one side of ``length`` px, the last moved back to end at the edge."""
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


def _check_fit(rasters: dict[str, Raster], sources: dict[str, Path]) -> None:
    """Refuse rasters off the before raster's grid, dates with different bands, masks of several bands."""
    reference = _grid(rasters["before"])
    for name, raster in rasters.items():
        for key, value in _grid(raster).items():
            if value != reference[key]:
                pair = f"{name} {sources[name]} and before {sources['before']}"
                raise RasterError(f"{pair} differ in {key}: {value} vs {reference[key]}")
    counts = {name: raster.data.shape[0] for name, raster in rasters.items()}
    if counts["before"] != counts["after"]:
        raise RasterError(
            f"before has {counts['before']} bands, after {counts['after']}: select the same bands of both"
        )
    if counts.get("mask", 1) != 1:
        raise RasterError(f"mask {sources['mask']} has {counts['mask']} bands; a change mask has one")


def _grid(raster: Raster) -> dict[str, object]:
    return {"CRS": raster.crs, "transform": tuple(raster.transform)[:6], "shape (H, W)": raster.shape}


def _binary(mask: Raster) -> Raster:
    """The mask as uint8 0/1: 1 where it holds anything but 0 or its nodata."""
    changed = (mask.data != 0) & valid_mask(mask)
    return replace(mask, data=changed.astype(np.uint8), nodata=None)


def mask_files(paths: Iterable[Path]) -> list[Path]:
    """The files among ``paths`` and, for each folder among them, the :data:`MASK_FILE` files under it."""
    return [found for path in paths for found in (sorted(path.rglob(MASK_FILE)) if path.is_dir() else [path])]


def stitch(tiles: Sequence[Path], out: Path) -> Path:
    """Write ``out``: one single-band uint8 GeoTIFF over the union of the mask ``tiles`` (on one
    grid: same CRS and pixel size). Where tiles overlap the largest value wins (changed over
    unchanged); where none lies it holds :data:`UNCOVERED`, its nodata."""
    if not tiles:
        raise RasterError("no mask tiles to stitch")
    masks = {Path(path): read_raster(path) for path in tiles}
    first, reference = next(iter(masks.items()))
    places = {path: _place(path, tile, first, reference) for path, tile in masks.items()}
    top, left = (min(place[axis] for place in places.values()) for axis in (0, 1))
    bottom = max(row + masks[path].shape[0] for path, (row, _) in places.items())
    right = max(col + masks[path].shape[1] for path, (_, col) in places.items())
    scene = np.zeros((bottom - top, right - left), np.uint8)
    covered = np.zeros(scene.shape, bool)
    for path, (row, col) in places.items():
        height, width = masks[path].shape
        region = (slice(row - top, row - top + height), slice(col - left, col - left + width))
        np.maximum(scene[region], masks[path].data[0], out=scene[region])
        covered[region] = True
    scene[~covered] = UNCOVERED
    transform = shifted(reference.transform, top, left)
    return write_raster(out, Raster(scene[None], reference.crs, transform, UNCOVERED))


def _place(path: Path, tile: Raster, first: Path, reference: Raster) -> tuple[int, int]:
    """(row, col) of the tile's top-left pixel on the grid of the ``reference`` tile."""
    if tile.data.shape[0] != 1 or tile.data.dtype.kind not in "biu":
        raise RasterError(f"{path} is not a mask tile: {tile.data.shape[0]} bands of {tile.data.dtype}")
    if tile.crs != reference.crs:
        raise RasterError(f"{path} is in CRS {tile.crs}, {first} in {reference.crs}")
    pixel, reference_pixel = (tile.transform.a, tile.transform.e), (reference.transform.a, reference.transform.e)
    if pixel != reference_pixel:
        raise RasterError(f"{path} has pixels of {pixel}, {first} of {reference_pixel}: tiles share one resolution")
    col, row = ~reference.transform @ (tile.transform.c, tile.transform.f)
    if max(abs(col - round(col)), abs(row - round(row))) > 1e-6:
        raise RasterError(f"{path} is not on the pixel grid of {first}: it starts at pixel ({row:.3f}, {col:.3f})")
    return round(row), round(col)

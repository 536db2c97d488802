"""GeoTIFF rasters, chipping a pair into georeferenced tiles and stitching mask tiles back,
on small rasters (96 x 96 px, 32 px tiles) written to a temporary folder."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from lensops import cli
from lensops.data import change_synthetic, samples
from lensops.data.chipping import ChipSummary, chip, mask_files, offsets, scene_name, stitch
from lensops.data.pairs import list_examples
from lensops.data.rasters import Raster, RasterError, georeferenced, read_raster, valid_mask, write_raster

SIDE = 96
CRS = "EPSG:32633"
ORIGIN = (500_000.0, 4_000_000.0)
PIXEL = 10.0
NODATA = -9999.0
BANDS = ("B4", "B3", "B2", "B8")
NAMES = ("before", "after", "mask")


def _write(
    path: Path,
    data: np.ndarray,
    crs: str = CRS,
    origin: tuple[float, float] = ORIGIN,
    pixel: float = PIXEL,
    nodata: float | None = None,
    descriptions: tuple[str, ...] = (),
) -> Path:
    return write_raster(path, georeferenced(data, crs, origin, pixel, nodata, descriptions))


def _image(seed: int, shape: tuple[int, int] = (SIDE, SIDE)) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 0.5, (4, *shape)).astype(np.float32)


def _mask(shape: tuple[int, int] = (SIDE, SIDE)) -> np.ndarray:
    """A square of change straddling tile borders, and a diagonal line."""
    mask = np.zeros((1, *shape), np.uint8)
    mask[0, 20:50, 25:70] = 1
    np.fill_diagonal(mask[0], 1)
    return mask


@pytest.fixture
def scene(tmp_path: Path) -> dict[str, Path]:
    """A pair with its mask; the after image has no data in its 6 easternmost columns."""
    after = _image(2)
    after[:, :, -6:] = NODATA
    images = {"before": _image(1), "after": after}
    paths = {
        name: _write(tmp_path / "scene" / f"{name}.tif", data, nodata=NODATA, descriptions=BANDS)
        for name, data in images.items()
    }
    return paths | {"mask": _write(tmp_path / "scene" / "mask.tif", _mask())}


def _chip(scene: dict[str, Path], out: Path, **kwargs: object) -> ChipSummary:
    options = {"size": 32, "min_valid": 0.0} | kwargs
    return chip(scene["before"], scene["after"], scene["mask"], out, **options)  # type: ignore[arg-type]


def _tiles(out: Path) -> list[str]:
    return sorted(path.name for path in out.glob("*/*"))


# ---- rasters ---------------------------------------------------------------------------------


def test_a_raster_reads_back_with_its_georeference_bands_and_nodata(scene: dict[str, Path]) -> None:
    raster = read_raster(scene["before"])

    assert raster.data.shape == (4, SIDE, SIDE) and raster.data.dtype == np.float32
    np.testing.assert_array_equal(raster.data, _image(1))
    assert str(raster.crs) == CRS
    assert tuple(raster.transform)[:6] == (PIXEL, 0.0, ORIGIN[0], 0.0, -PIXEL, ORIGIN[1])
    assert raster.nodata == NODATA
    assert raster.descriptions == BANDS


@pytest.mark.parametrize("bands", ["B8,B4", "b8, 1", [4, 1], ["B8", "B4"]])
def test_bands_are_chosen_by_description_or_one_based_index(scene: dict[str, Path], bands: object) -> None:
    raster = read_raster(scene["before"], bands)  # type: ignore[arg-type]

    np.testing.assert_array_equal(raster.data, _image(1)[[3, 0]])
    assert raster.descriptions == ("B8", "B4")


@pytest.mark.parametrize("missing", ["B5", "5", "0"])
def test_a_missing_band_is_refused_naming_the_bands_there_are(scene: dict[str, Path], missing: str) -> None:
    with pytest.raises(RasterError) as error:
        read_raster(scene["before"], f"B4,{missing}")

    assert str(error.value) == f"{scene['before']} has no band {missing}; its bands: 1 (B4), 2 (B3), 3 (B2), 4 (B8)"


def test_a_pixel_is_invalid_where_any_band_is_nodata_or_nan() -> None:
    data = np.ones((2, 2, 3), np.float32)
    data[0, 0, 0], data[1, 1, 2] = NODATA, np.nan
    raster = Raster(data, None, None, NODATA)  # type: ignore[arg-type]

    assert valid_mask(raster).tolist() == [[False, True, True], [True, True, False]]


def test_large_rasters_are_written_tiled_and_compressed(tmp_path: Path) -> None:
    import rasterio

    small = _write(tmp_path / "small.tif", _mask())
    large = _write(tmp_path / "large.tif", _mask((256, 512)))

    with rasterio.open(small) as a, rasterio.open(large) as b:
        assert (a.profile["tiled"], b.profile["tiled"]) == (False, True)
        assert b.block_shapes == [(256, 256)]
        assert a.compression.value == b.compression.value == "DEFLATE"


def test_without_rasterio_the_error_says_which_extra_to_install(
    scene: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "rasterio", None)

    with pytest.raises(RuntimeError, match=r"pip install 'lensops\[geo\]'"):
        read_raster(scene["before"])


# ---- chipping --------------------------------------------------------------------------------


def test_windows_start_every_stride_and_the_last_ends_at_the_edge() -> None:
    assert offsets(96, 32, 32) == [0, 32, 64]
    assert offsets(96, 32, 24) == [0, 24, 48, 64]
    assert offsets(100, 32, 32) == [0, 32, 64, 68]
    assert offsets(32, 32, 8) == [0]


def test_tiles_are_cut_every_stride_with_overlap(scene: dict[str, Path], tmp_path: Path) -> None:
    plain, overlapping = tmp_path / "plain", tmp_path / "overlapping"

    assert _chip(scene, plain).written == 9
    assert _chip(scene, overlapping, stride=24).written == 16
    starts = ("000000", "000024", "000048", "000064")
    assert _tiles(overlapping) == sorted(f"r{r}_c{c}" for r in starts for c in starts)
    assert {p.name for p in (overlapping / "scene").glob("*/*.tif")} == set(f"{n}.tif" for n in NAMES)


def test_each_tile_is_its_window_of_the_scene_in_place(scene: dict[str, Path], tmp_path: Path) -> None:
    _chip(scene, tmp_path / "tiles", stride=24)
    whole = {name: read_raster(path) for name, path in scene.items()}

    for folder in (tmp_path / "tiles" / "scene").iterdir():
        row, col = (int(part[1:]) for part in folder.name.split("_"))
        for name in NAMES:
            tile = read_raster(folder / f"{name}.tif")
            assert tile.crs == whole[name].crs
            assert tuple(tile.transform)[:6] == (PIXEL, 0, ORIGIN[0] + col * PIXEL, 0, -PIXEL, ORIGIN[1] - row * PIXEL)
            np.testing.assert_array_equal(tile.data, whole[name].data[:, row : row + 32, col : col + 32])
        assert read_raster(folder / "mask.tif").data.dtype == np.uint8
        assert read_raster(folder / "after.tif").descriptions == BANDS


def test_min_valid_drops_the_windows_over_the_nodata_strip(scene: dict[str, Path], tmp_path: Path) -> None:
    summary = _chip(scene, tmp_path / "strict", min_valid=0.9)

    assert (summary.written, summary.dropped) == (6, 3)
    assert not [name for name in _tiles(tmp_path / "strict") if name.endswith("c000064")]
    assert _chip(scene, tmp_path / "lenient", min_valid=0.8).written == 9  # 26 of 32 columns valid


def test_chosen_bands_are_the_bands_of_the_tiles(scene: dict[str, Path], tmp_path: Path) -> None:
    _chip(scene, tmp_path / "tiles", bands="B8,B4")

    tile = read_raster(tmp_path / "tiles" / "scene" / "r000032_c000000" / "before.tif")
    assert tile.descriptions == ("B8", "B4")
    np.testing.assert_array_equal(tile.data, _image(1)[[3, 0], 32:64, 0:32])


def test_a_mask_of_0_and_255_becomes_0_and_1(scene: dict[str, Path], tmp_path: Path) -> None:
    _write(scene["mask"], _mask() * 255)
    _chip(scene, tmp_path / "tiles")

    np.testing.assert_array_equal(
        read_raster(tmp_path / "tiles/scene/r000000_c000032/mask.tif").data, _mask()[:, :32, 32:64]
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"crs": "EPSG:32634"}, "differ in CRS: EPSG:32634 vs EPSG:32633"),
        (
            {"origin": (ORIGIN[0] + 5, ORIGIN[1])},
            "differ in transform: (10.0, 0.0, 500005.0, 0.0, -10.0, 4000000.0)"
            " vs (10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)",
        ),
        ({"pixel": 20.0}, "differ in transform: (20.0, 0.0, 500000.0, 0.0, -20.0, 4000000.0)"),
        ({"shape": (SIDE, 64)}, "differ in shape (H, W): (96, 64) vs (96, 96)"),
    ],
)
def test_rasters_off_the_before_grid_are_refused_naming_the_difference(
    scene: dict[str, Path], tmp_path: Path, change: dict, message: str
) -> None:
    grid = {key: value for key, value in change.items() if key != "shape"}
    _write(scene["after"], _image(2, change.get("shape", (SIDE, SIDE))), **grid)

    with pytest.raises(RasterError) as error:
        _chip(scene, tmp_path / "tiles")

    assert str(error.value).startswith(f"after {scene['after']} and before {scene['before']} {message}")
    assert not (tmp_path / "tiles").exists()


def test_a_mask_of_several_bands_and_dates_of_different_bands_are_refused(
    scene: dict[str, Path], tmp_path: Path
) -> None:
    _write(scene["mask"], np.concatenate([_mask(), _mask()]))
    with pytest.raises(RasterError, match="has 2 bands; a change mask has one"):
        _chip(scene, tmp_path / "tiles")
    _write(scene["after"], _image(2)[:3])
    with pytest.raises(RasterError, match="before has 4 bands, after 3"):
        _chip(scene, tmp_path / "tiles")


def test_the_scene_is_the_file_stem_or_the_folder_of_a_before_file(tmp_path: Path) -> None:
    assert scene_name(tmp_path / "S2_2020-06.tif") == "S2_2020-06"
    assert scene_name(tmp_path / "lake" / "before.tif") == "lake"


# ---- stitching -------------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [32, 24, 20])
def test_stitched_mask_tiles_are_the_scene_mask_in_its_place(
    scene: dict[str, Path], tmp_path: Path, stride: int
) -> None:
    _chip(scene, tmp_path / "tiles", stride=stride)

    stitched = read_raster(stitch(mask_files([tmp_path / "tiles"]), tmp_path / "stitched.tif"))

    original = read_raster(scene["mask"])
    np.testing.assert_array_equal(stitched.data, original.data)
    assert stitched.crs == original.crs and stitched.transform == original.transform


def test_overlapping_tiles_stitch_to_changed_and_uncovered_pixels_to_nodata(tmp_path: Path) -> None:
    changed, unchanged = np.ones((1, 4, 4), np.uint8), np.zeros((1, 4, 4), np.uint8)
    tiles = [
        _write(tmp_path / "a.tif", changed),
        _write(tmp_path / "b.tif", unchanged, origin=(ORIGIN[0] + 2 * PIXEL, ORIGIN[1] - 2 * PIXEL)),
    ]

    stitched = read_raster(stitch(tiles, tmp_path / "stitched.tif"))

    assert stitched.data[0].tolist() == [
        [1, 1, 1, 1, 255, 255],
        [1, 1, 1, 1, 255, 255],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [255, 255, 0, 0, 0, 0],
        [255, 255, 0, 0, 0, 0],
    ]
    assert stitched.nodata == 255


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"crs": "EPSG:32634"}, "is in CRS EPSG:32634, "),
        ({"pixel": 20.0}, "has pixels of (20.0, -20.0), "),
        ({"origin": (ORIGIN[0] + 5, ORIGIN[1])}, "is not on the pixel grid of "),
    ],
)
def test_tiles_of_another_crs_resolution_or_grid_are_not_stitched(tmp_path: Path, change: dict, message: str) -> None:
    tiles = [_write(tmp_path / "a.tif", _mask()), _write(tmp_path / "b.tif", _mask(), **change)]

    with pytest.raises(RasterError) as error:
        stitch(tiles, tmp_path / "stitched.tif")

    assert str(error.value).startswith(f"{tiles[1]} {message}{tiles[0]}")


# ---- generated rasters, the pairs reader and the command -------------------------------------


def test_generated_rasters_are_4_band_scenes_in_utm_that_chip_into_pair_examples(tmp_path: Path) -> None:
    assert samples.write_change_rasters(tmp_path / "rasters", scenes=2, size=SIDE, seed=0) == 2
    first, second = (tmp_path / "rasters" / f"scene000-00{i}" for i in (0, 1))

    before, after = read_raster(second / "before.tif"), read_raster(second / "after.tif")
    assert before.data.shape == (4, SIDE, SIDE) and before.descriptions == ("B4", "B3", "B2", "B8")
    assert str(before.crs) == "EPSG:32633" and before.transform.a == 10 and before.nodata == after.nodata
    assert read_raster(first / "before.tif").transform.c != before.transform.c
    assert valid_mask(after)[:, -6:].sum() == 0 and valid_mask(after)[:, :-6].all()
    assert valid_mask(read_raster(first / "after.tif")).all()
    expected = change_synthetic.scene_pair(np.random.default_rng([0, 1]), SIDE)
    np.testing.assert_array_equal(read_raster(second / "mask.tif").data[0], expected.mask.astype(np.uint8))
    np.testing.assert_array_equal(before.data, expected.before)

    for folder in (first, second):
        chip(folder / "before.tif", folder / "after.tif", folder / "mask.tif", tmp_path / "tiles", size=32)
    examples = list_examples(str(tmp_path / "tiles"), NAMES)

    assert examples["group"].value_counts().to_dict() == {"scene000-000": 9, "scene000-001": 6}
    assert examples["mask"].str.endswith("/mask.tif").all() and examples["before"].str.endswith(".tif").all()


def _lensops(monkeypatch: pytest.MonkeyPatch, *args: object) -> int | str | None:
    """Run the command in this process; its exit code."""
    monkeypatch.setattr(sys, "argv", ["lensops", *map(str, args)])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    return exited.value.code


def test_the_commands_write_scenes_chip_them_and_stitch_the_masks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rasters, tiles, stitched = tmp_path / "rasters", tmp_path / "tiles", tmp_path / "stitched.tif"
    scene = rasters / "scene000-001"
    chip_args = [scene / "before.tif", scene / "after.tif", tiles, "--mask", scene / "mask.tif", "--size", 32]
    commands = [
        ["sample-data", rasters, "--source", "change", "--geotiff", "--count", 2, "--size", 24],
        ["chip", *chip_args, "--stride", 16, "--bands", "B4,B3,B2"],
        ["stitch", stitched, tiles],
    ]

    assert [_lensops(monkeypatch, *command) for command in commands] == [0, 0, 0]

    dropped = "dropped 5 windows with under 90% valid pixels"
    assert capsys.readouterr().out.splitlines() == [
        f"wrote 2 change scenes as GeoTIFFs to {rasters}",
        f"{tiles / 'scene000-001'}: wrote 20 tiles of 32 px; {dropped}",
        f"stitched 20 tiles into {stitched}",
    ]
    assert read_raster(tiles / "scene000-001/r000000_c000000/before.tif").descriptions == ("B4", "B3", "B2")
    scene_mask, mask = read_raster(stitched), read_raster(scene / "mask.tif")
    np.testing.assert_array_equal(scene_mask.data, mask.data[:, :, :80])  # the 6 px strip drops the last column
    assert scene_mask.transform == mask.transform


def test_a_command_given_mismatched_rasters_ends_with_one_line(
    scene: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(scene["after"], _image(2), crs="EPSG:32634")

    assert _lensops(monkeypatch, "chip", scene["before"], scene["after"], tmp_path) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: after {scene['after']} and before {scene['before']} differ in CRS: EPSG:32634 vs EPSG:32633"
    ]

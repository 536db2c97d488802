"""Preprocessing: one spec, identical numbers on every path; augmentations keep uint8 CHW."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from lensops.config import AugmentConfig, PreprocessConfig
from lensops.model.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PreprocessSpec,
    augmentation,
    decode,
    image_to_uint8,
    normalizer,
    raster_to_uint8,
    to_uint8,
)

SPEC = PreprocessSpec(image_size=32, resize_size=36, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def encoded(mode: str, fmt: str, width: int = 60, height: int = 45, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    shape = (height, width) if mode == "L" else (height, width, 3)
    image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), "L" if mode == "L" else "RGB")
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def random_uint8(seed: int = 0, size: int = 32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=generator)


IMAGES = {
    "grayscale_png": ("L", "PNG"),
    "rgb_png": ("RGB", "PNG"),
    "rgb_jpeg": ("RGB", "JPEG"),
    "palette_png": ("P", "PNG"),
    "rgba_png": ("RGBA", "PNG"),
}


def served_input(data: bytes, spec: PreprocessSpec) -> torch.Tensor:
    """What the network gets from an upload: uint8 from the CPU tier, normalised by the forward path."""
    return normalizer(spec)(torch.from_numpy(to_uint8(data, spec))[None])


def torchvision_eval(resize: int, crop: int) -> v2.Compose:
    """The eval transform of torchvision's classification references, on a PIL image."""
    return v2.Compose(
        [
            v2.Resize(resize),
            v2.CenterCrop(crop),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


@pytest.mark.parametrize("kind", list(IMAGES))
def test_the_served_input_equals_torchvision_eval_transforms_exactly(kind: str) -> None:
    data = encoded(*IMAGES[kind])

    served = served_input(data, SPEC)
    with Image.open(io.BytesIO(data)) as img:
        reference = torchvision_eval(36, 32)(img.convert("RGB"))[None]

    assert served.shape == (1, 3, 32, 32)
    assert served.dtype == torch.float32
    assert torch.equal(served, reference)


@pytest.mark.parametrize(
    ("width", "height", "resize", "crop"),
    [(45, 60, 36, 32), (301, 217, 128, 128), (20, 30, 64, 64), (50, 40, 33, 40), (37, 90, 37, 40)],
)
def test_every_geometry_equals_torchvision_with_its_padding(width: int, height: int, resize: int, crop: int) -> None:
    """Tall and wide uploads, upsampling, and crops larger than the resized image (padded with
    zeros, an odd margin split as torchvision splits it)."""
    data = encoded("RGB", "PNG", width, height)
    spec = PreprocessSpec(image_size=crop, resize_size=resize, mean=IMAGENET_MEAN, std=IMAGENET_STD)

    with Image.open(io.BytesIO(data)) as img:
        reference = torchvision_eval(resize, crop)(img.convert("RGB"))[None]

    assert torch.equal(served_input(data, spec), reference)


def test_a_three_band_raster_gets_the_pixels_of_the_same_rgb_image() -> None:
    pixels = np.random.default_rng(3).integers(0, 256, (3, 45, 60), dtype=np.uint8)
    spec = SPEC.model_copy(update={"band_ranges": ((0.0, 255.0),) * 3})

    from_raster = raster_to_uint8(pixels.astype(np.float32), np.ones((45, 60), bool), spec)

    assert np.array_equal(from_raster, image_to_uint8(Image.fromarray(pixels.transpose(1, 2, 0)), spec))


@pytest.mark.parametrize("kind", list(IMAGES))
def test_to_uint8_gives_a_channels_first_uint8_array(kind: str) -> None:
    array = to_uint8(encoded(*IMAGES[kind]), SPEC)

    assert isinstance(array, np.ndarray)
    assert array.shape == (3, 32, 32)
    assert array.dtype == np.uint8


def test_grayscale_is_expanded_to_three_equal_channels() -> None:
    array = to_uint8(encoded("L", "PNG"), SPEC)

    assert np.array_equal(array[0], array[1])
    assert np.array_equal(array[0], array[2])
    assert decode(encoded("L", "PNG")).mode == "RGB"


def test_normalisation_uses_the_spec_mean_and_std() -> None:
    data = encoded("RGB", "PNG")
    spec = SPEC.model_copy(update={"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)})

    expected = torch.from_numpy(to_uint8(data, spec)).float()[None] / 255 * 2 - 1

    torch.testing.assert_close(served_input(data, spec), expected)


def test_resize_then_centre_crop_keeps_the_middle() -> None:
    # A 64x48 image with a white centre square on black: the crop sees the square centred.
    pixels = np.zeros((48, 64, 3), np.uint8)
    pixels[16:32, 24:40] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    spec = PreprocessSpec(image_size=48, resize_size=48, mean=IMAGENET_MEAN, std=IMAGENET_STD)

    array = to_uint8(buffer.getvalue(), spec)

    assert array.shape == (3, 48, 48)
    assert np.array_equal(array[:, 16:32, 16:32], np.full((3, 16, 16), 255, np.uint8))
    assert array[:, :16].max() == 0
    assert array[:, :, :16].max() == 0


def test_resolve_fills_defaults_from_the_backbone_and_the_crop_size() -> None:
    spec = PreprocessSpec.resolve(PreprocessConfig(image_size=96))

    assert spec == PreprocessSpec(image_size=96, resize_size=96, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    backbone = PreprocessSpec.resolve(
        PreprocessConfig(image_size=96), default_mean=(0.5, 0.5, 0.5), default_std=(0.25, 0.25, 0.25)
    )
    assert (backbone.mean, backbone.std) == ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def test_resolve_keeps_values_that_are_set() -> None:
    cfg = PreprocessConfig(image_size=96, resize_size=110, mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))

    spec = PreprocessSpec.resolve(cfg, default_mean=(0.5, 0.5, 0.5))

    assert spec == PreprocessSpec(image_size=96, resize_size=110, mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))


def test_a_spec_is_frozen_and_round_trips_through_json() -> None:
    assert PreprocessSpec.model_validate_json(SPEC.model_dump_json()) == SPEC
    with pytest.raises(ValueError, match="frozen"):
        SPEC.image_size = 64


def test_augmentation_with_every_probability_and_strength_zero_is_the_identity() -> None:
    cfg = AugmentConfig(
        hflip=0.0,
        vflip=0.0,
        rotation_degrees=0.0,
        brightness=0.0,
        contrast=0.0,
        saturation=0.0,
        hue=0.0,
        blur_prob=0.0,
        noise_std=0.0,
    )
    transform = augmentation(cfg)

    for seed in range(5):
        image = random_uint8(seed)
        assert torch.equal(transform(image), image)


def test_every_augmentation_keeps_shape_and_uint8() -> None:
    cfg = AugmentConfig(
        hflip=0.5,
        vflip=0.5,
        rotation_degrees=15,
        brightness=0.2,
        contrast=0.2,
        saturation=0.2,
        hue=0.05,
        blur_prob=0.5,
        noise_std=4.0,
    )
    transform = augmentation(cfg)

    for seed in range(5):
        out = transform(random_uint8(seed))
        assert out.shape == (3, 32, 32)
        assert out.dtype == torch.uint8


def test_a_certain_horizontal_flip_mirrors_the_image() -> None:
    image = random_uint8()

    out = augmentation(AugmentConfig(hflip=1.0))(image)

    assert torch.equal(out, image.flip(-1))


def test_noise_changes_pixels_but_stays_in_range_and_close() -> None:
    image = torch.full((3, 32, 32), 128, dtype=torch.uint8)
    torch.manual_seed(0)

    out = augmentation(AugmentConfig(hflip=0.0, noise_std=8.0))(image)

    assert out.dtype == torch.uint8
    difference = out.int() - image.int()
    assert (difference != 0).float().mean() > 0.8
    assert difference.float().std().item() == pytest.approx(8.0, rel=0.1)


def test_noise_saturates_instead_of_wrapping_around() -> None:
    black = torch.zeros((3, 16, 16), dtype=torch.uint8)
    white = torch.full((3, 16, 16), 255, dtype=torch.uint8)
    noisy = augmentation(AugmentConfig(hflip=0.0, noise_std=50.0))

    assert noisy(black).float().mean() < 40
    assert noisy(white).float().mean() > 215


def test_sixteen_bit_grayscale_keeps_its_high_byte_instead_of_saturating() -> None:
    values = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG")
    spec = PreprocessSpec(image_size=64, resize_size=64, mean=IMAGENET_MEAN, std=IMAGENET_STD)

    array = to_uint8(buffer.getvalue(), spec)

    high_byte = (values >> 8).astype(np.uint8)
    assert array.dtype == np.uint8
    assert all(np.array_equal(channel, high_byte) for channel in array)

"""What makes one image acceptable: the single rule that training data and service uploads share.

:func:`check_image` decides which training files are skipped; :func:`load_served_image` adds
what the service asks of an upload, and batch scoring asks the same of every file. So neither
the service nor a batch job accepts what training would reject.
"""

from __future__ import annotations

import io
import warnings
from enum import StrEnum

from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel


class Issue(StrEnum):
    NOT_IMAGE = "not_image"
    UNREADABLE = "unreadable"
    TRUNCATED = "truncated"
    TOO_SMALL = "too_small"
    TOO_LARGE = "too_large"
    DUPLICATE = "duplicate"
    CONFLICTING_LABELS = "conflicting_labels"
    UNSUPPORTED_FORMAT = "unsupported_format"
    MISSING_FILE = "missing_file"
    MISMATCHED = "mismatched"
    BAD_MASK = "bad_mask"


SERVED_FORMATS = frozenset({"PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF"})
"""Formats the service and batch scoring take; others decode in Pillow but are refused."""


class ImageCheck(BaseModel):
    width: int = 0
    height: int = 0
    format: str = ""
    issue: Issue | None = None
    detail: str = ""


def check_image(data: bytes, min_side: int, max_pixels: int) -> ImageCheck:
    """Decode fully and judge one image; size limits are checked before pixels are decoded."""
    check, image = load_image(data, min_side, max_pixels)
    if image is not None:
        image.close()
    return check


def load_image(data: bytes, min_side: int, max_pixels: int) -> tuple[ImageCheck, Image.Image | None]:
    """:func:`check_image`'s verdict, and the decoded image when it passes (the caller closes
    it), so that an accepted file is decoded once."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        return ImageCheck(issue=Issue.NOT_IMAGE, detail="no image format recognised"), None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return ImageCheck(issue=Issue.TOO_LARGE, detail=str(exc)[:200]), None
    check = _judge(image, min_side, max_pixels)
    if check.issue is not None:
        image.close()
        return check, None
    return check, image


def _judge(image: Image.Image, min_side: int, max_pixels: int) -> ImageCheck:
    width, height, fmt = *image.size, image.format or ""
    if width * height > max_pixels:
        detail = f"{width}x{height} exceeds {max_pixels} pixels"
        return ImageCheck(width=width, height=height, issue=Issue.TOO_LARGE, detail=detail)
    try:
        image.load()
    except OSError as exc:
        issue = Issue.TRUNCATED if "truncated" in str(exc).lower() else Issue.UNREADABLE
        return ImageCheck(width=width, height=height, issue=issue, detail=str(exc)[:200])
    except (SyntaxError, ValueError) as exc:
        return ImageCheck(width=width, height=height, issue=Issue.UNREADABLE, detail=str(exc)[:200])
    if min(width, height) < min_side:
        detail = f"{width}x{height} is smaller than {min_side} px on a side"
        return ImageCheck(width=width, height=height, issue=Issue.TOO_SMALL, detail=detail)
    return ImageCheck(width=width, height=height, format=fmt)


def load_served_image(
    data: bytes, min_side: int, max_side: int, max_pixels: int
) -> tuple[ImageCheck, Image.Image | None]:
    """:func:`load_image` plus the serving limits: the longest side and the accepted formats."""
    check, image = load_image(data, min_side, max_pixels)
    if image is None:
        return check, None
    if max(check.width, check.height) > max_side:
        detail = f"{check.width}x{check.height} exceeds {max_side} px on a side"
        check = check.model_copy(update={"issue": Issue.TOO_LARGE, "detail": detail})
    elif check.format not in SERVED_FORMATS:
        detail = f"{check.format} images are not accepted; use {', '.join(sorted(SERVED_FORMATS))}"
        check = check.model_copy(update={"issue": Issue.UNSUPPORTED_FORMAT, "detail": detail})
    if check.issue is not None:
        image.close()
        return check, None
    return check, image

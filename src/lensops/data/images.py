"""What makes one image acceptable: the single rule that training data and service uploads share.

:func:`check_image` decides which training files are skipped and which uploads the service
rejects, so the service never accepts what training would reject.
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


class ImageCheck(BaseModel):
    width: int = 0
    height: int = 0
    format: str = ""
    issue: Issue | None = None
    detail: str = ""


def check_image(data: bytes, min_side: int, max_pixels: int) -> ImageCheck:
    """Decode fully and judge one image; size limits are checked before pixels are decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        return ImageCheck(issue=Issue.NOT_IMAGE, detail="no image format recognised")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return ImageCheck(issue=Issue.TOO_LARGE, detail=str(exc)[:200])
    with img:
        width, height, fmt = *img.size, img.format or ""
        if width * height > max_pixels:
            detail = f"{width}x{height} exceeds {max_pixels} pixels"
            return ImageCheck(width=width, height=height, issue=Issue.TOO_LARGE, detail=detail)
        try:
            img.load()
        except OSError as exc:
            truncated = "truncated" in str(exc).lower()
            issue = Issue.TRUNCATED if truncated else Issue.UNREADABLE
            return ImageCheck(width=width, height=height, issue=issue, detail=str(exc)[:200])
        except (SyntaxError, ValueError) as exc:
            return ImageCheck(width=width, height=height, issue=Issue.UNREADABLE, detail=str(exc)[:200])
    if min(width, height) < min_side:
        detail = f"{width}x{height} is smaller than {min_side} px on a side"
        return ImageCheck(width=width, height=height, issue=Issue.TOO_SMALL, detail=detail)
    return ImageCheck(width=width, height=height, format=fmt)

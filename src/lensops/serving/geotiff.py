"""An answer's image as a GeoTIFF on the upload's map grid (``POST /predict?format=geotiff``).

A task whose answers carry an image over the model's input (``Task.answer_image``: a change
mask) can answer a georeferenced upload with that image as a GeoTIFF. The model saw the upload
resized and centre-cropped (:func:`lensops.model.preprocess.model_view`); the GeoTIFF's
transform is the upload's, moved to the crop and scaled to the model's pixels, so the image
lies where the model looked, in the upload's CRS.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from lensops.data import rasters
from lensops.model.artifact import ModelSpec
from lensops.model.preprocess import model_view
from lensops.serving.errors import ApiError


def require_image_answer(spec: ModelSpec) -> str:
    """The answer field to send as a GeoTIFF; 422 ``geotiff_unavailable`` when there is none."""
    if spec.task.answer_image is None:
        raise ApiError("geotiff_unavailable", f"a {spec.model.task} model answers no image: ask for JSON")
    return spec.task.answer_image


def answer_geotiff(answer: dict, spec: ModelSpec, upload: bytes) -> bytes:
    """The ``answer``'s image as GeoTIFF bytes placed by the georeference of ``upload``."""
    place = rasters.place_of(upload)
    if place is None:
        raise ApiError("geotiff_unavailable", "the upload carries no georeference: send GeoTIFFs with a CRS")
    with Image.open(io.BytesIO(base64.b64decode(answer[require_image_answer(spec)]))) as image:
        pixels = np.asarray(image)
    from affine import Affine  # rasterio's own, installed with it (the geo extra)

    left, top, per_x, per_y = model_view(place.width, place.height, spec.preprocess)
    transform = place.transform @ Affine.translation(left, top) @ Affine.scale(per_x, per_y)
    return rasters.to_bytes(rasters.Raster(pixels[None], place.crs, transform))

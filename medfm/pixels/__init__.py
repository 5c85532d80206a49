"""The decode-once pixel cache: ``medfm prepare`` decodes every image once into uint8 Zarr pixels.

Every backbone then reads pre-decoded squares and does its own resize/normalise on the batch
tensor (``batch_transform``), instead of re-decoding PNG/JPEG/DICOM files per backbone.
"""

from medfm.pixels.prepare import PIXEL_FORMAT, PIXEL_FORMAT_VERSION, PrepareResult, run_prepare
from medfm.pixels.read import PixelCache, batch_transform, find_pixel_cache

__all__ = ["PIXEL_FORMAT", "PIXEL_FORMAT_VERSION", "PixelCache", "PrepareResult", "batch_transform",
           "find_pixel_cache", "run_prepare"]

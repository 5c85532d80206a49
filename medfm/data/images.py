"""Decoding image files, one reader per file suffix (a registry, so DICOM/NIfTI slot in)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from medfm.errors import MedfmError

ImageReader = Callable[[Path], Image.Image]
READERS: dict[str, ImageReader] = {}


def reader(*suffixes: str):
    def wrap(fn: ImageReader) -> ImageReader:
        for s in suffixes:
            READERS[s] = fn
        return fn

    return wrap


@reader(".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
def read_pil(path: Path) -> Image.Image:
    with Image.open(path) as img:
        img.load()  # decode now, so a truncated file fails here and not later
        if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit / float TIFF and PNG: scale, never clip
            return grey_to_uint8(np.asarray(img, dtype=np.float64))
        return img


@reader(".dcm", ".dicom")
def read_dicom_file(path: Path) -> Image.Image:
    from medfm.data.medical import read_dicom

    return read_dicom(path)


@reader(".nii", ".nii.gz")
def read_nifti_file(path: Path) -> Image.Image:
    from medfm.data.medical import read_nifti

    return read_nifti(path)


def grey_to_uint8(arr: np.ndarray, lo: float | None = None, hi: float | None = None) -> Image.Image:
    """A float grey image scaled linearly so [lo, hi] (default: its min and max) maps to 0..255.

    Values outside an explicit [lo, hi] (a DICOM window) saturate; without one the full range is
    kept, so 12/16-bit data never wraps or clips. A constant image becomes black.
    """
    arr = np.asarray(arr, dtype=np.float64)
    lo = float(np.nanmin(arr)) if lo is None else lo
    hi = float(np.nanmax(arr)) if hi is None else hi
    scaled = np.zeros_like(arr) if hi <= lo else np.clip((arr - lo) / (hi - lo), 0.0, 1.0)
    return to_pil(np.rint(np.nan_to_num(scaled) * 255).astype(np.uint8))


def image_suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def is_image_file(path: Path) -> bool:
    return image_suffix(path) in READERS


class ImageReadError(MedfmError):
    """An image that cannot be decoded; ``reason`` says why without repeating the path."""

    def __init__(self, path: Path, reason: str, fix: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}", fix)


def read_image(path: Path) -> Image.Image:
    suffix = image_suffix(path)
    if suffix not in READERS:
        raise ImageReadError(path, f"medfm cannot read '{suffix}' files", f"convert it to one of {', '.join(sorted(READERS))}")
    try:
        return READERS[suffix](path)
    except FileNotFoundError:
        raise ImageReadError(path, "file not found", "check the path column of the manifest") from None
    except Exception as exc:  # PIL raises many types for corrupt data; all mean the same to a user
        raise ImageReadError(
            path,
            f"unreadable or corrupt image ({type(exc).__name__}: {exc})",
            "replace or remove this file and its manifest row",
        ) from None


def to_pil(array: np.ndarray) -> Image.Image:
    """A uint8 HxW (grey) or HxWx3 (RGB) array as a PIL image."""
    return Image.fromarray(np.ascontiguousarray(array))

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
        return img


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

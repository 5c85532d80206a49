"""DICOM and NIfTI pixels as display images, done the way a radiologist's viewer does it.

DICOM (pydicom): stored values -> modality LUT (RescaleSlope/Intercept, in float so 16-bit data
never wraps) -> VOI LUT sequence, else the first WindowCenter/Width, else the full data range ->
MONOCHROME1 inverted (so bone is always bright) -> 8-bit grey. NIfTI (nibabel): a 2-D image, or
the middle axial slice of a volume (``read_nifti_slice`` picks any slice), min/max scaled.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from medfm.data.images import grey_to_uint8, to_pil


def dicom_to_float(ds) -> tuple[np.ndarray, float | None, float | None]:
    """Pixel data after the modality and VOI transforms, and the [lo, hi] display range (None = data range)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    arr = ds.pixel_array
    if getattr(ds, "NumberOfFrames", 1) not in (None, 1, "1") and arr.ndim >= 3 and ds.get("SamplesPerPixel", 1) == 1:
        raise ValueError(f"multi-frame DICOM ({ds.NumberOfFrames} frames); medfm reads single-frame images")
    arr = apply_modality_lut(arr, ds).astype(np.float64)
    if "VOILUTSequence" in ds:
        arr = np.asarray(apply_voi_lut(arr, ds), dtype=np.float64)
        return arr, None, None
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is not None and width is not None:
        c = float(center[0] if _multi(center) else center)
        w = float(width[0] if _multi(width) else width)
        if w > 0:
            return arr, c - w / 2, c + w / 2
    return arr, None, None


def _multi(v) -> bool:
    return hasattr(v, "__len__") and not isinstance(v, (str, bytes))


def read_dicom(path: Path) -> Image.Image:
    import pydicom

    ds = pydicom.dcmread(path)
    if ds.get("SamplesPerPixel", 1) == 3:  # colour DICOM (RGB / YBR): pydicom converts to RGB
        arr = ds.pixel_array
        if arr.dtype != np.uint8:
            return to_pil(np.asarray(grey_to_uint8(arr.mean(-1))))
        return to_pil(arr)
    arr, lo, hi = dicom_to_float(ds)
    img = np.asarray(grey_to_uint8(arr, lo, hi))
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        img = 255 - img
    return to_pil(img)


@lru_cache(maxsize=8)
def _volume(path: str) -> np.ndarray:
    """The voxel array of one NIfTI file (a few kept, as slice datasets read many slices per volume)."""
    import nibabel as nib

    return np.asarray(nib.load(path).get_fdata(dtype=np.float32))


def nifti_depth(path: Path) -> int:
    """Number of axial slices (last spatial axis) without reading the voxels."""
    import nibabel as nib

    shape = nib.load(str(path)).shape
    return int(shape[2]) if len(shape) >= 3 else 1


def nifti_slice(path: Path, index: int | None = None) -> np.ndarray:
    vol = _volume(str(path))
    if vol.ndim == 2:
        return vol
    if vol.ndim > 3:
        vol = vol[..., 0] if vol.ndim == 4 else vol.reshape(vol.shape[:3])
    k = vol.shape[2] // 2 if index is None else index
    if not 0 <= k < vol.shape[2]:
        raise ValueError(f"slice {k} is outside the volume's {vol.shape[2]} axial slices")
    return np.rot90(vol[:, :, k])  # NIfTI is x-right, y-anterior: rotate so anterior is up


def read_nifti(path: Path, index: int | None = None) -> Image.Image:
    return grey_to_uint8(nifti_slice(path, index))


def stack_slices(paths: list[Path], index: int) -> Image.Image:
    """One axial slice from each of 3 co-registered volumes (e.g. T1, T2, FLAIR) as the R, G, B channels."""
    chans = [np.asarray(grey_to_uint8(nifti_slice(p, index))) for p in paths]
    if len(chans) == 1:
        return to_pil(chans[0])
    return to_pil(np.stack(chans, axis=-1))

"""Reading a pixel cache in extract: find a matching one, stream its rows, preprocess on the device.

``batch_transform`` is the backbone's own eval preprocessing (timm ``create_transform`` /
open_clip ``image_transform``) redone on a batch tensor: resize the N×N square to
``img_size / crop_pct`` (antialiased, the backbone's interpolation), centre-crop ``img_size``,
scale to [0, 1], normalise with the backbone's mean/std. On the original file the PIL transform
resizes the shorter side to ``img_size / crop_pct`` and centre-crops; the pixel square is the
centre square of that same image, so both see the same region, resampled once (PIL) or twice
(PIL to N, then torch). Features agree closely but not bit-for-bit (tolerance: README).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from medfm.cache.kinds import PIXELS
from medfm.cache.store import StoreReader
from medfm.data import Dataset
from medfm.errors import MedfmError
from medfm.paths import cache_root

# how `medfm prepare` makes its squares (in every pixel cache's fingerprint inputs): the crop policy's geometry
RESIZE_POLICY = "shorter side to N (PIL bicubic, antialiased), centre crop N x N"

# torch's antialiased resize knows bilinear and bicubic; timm's other names map to the closest one
_MODES = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "bilinear", "lanczos": "bicubic", "box": "bilinear"}


def scale_size(data_config: dict, img_size: int) -> int:
    """The shorter side the backbone's transform resizes to before its centre crop."""
    return math.floor(img_size / float(data_config.get("crop_pct") or 1.0))


def reproducible(data_config: dict) -> bool:
    """Whether the backbone's preprocessing crops the centre (so a centre square holds its input)."""
    return data_config.get("resize_mode", "shortest") in ("shortest", "center")


def pixel_choice(requested: str | None, spec, say=None) -> str | None:
    """Which pixel cache extract may read: ``requested`` (a path, 'none', or None = auto) checked against
    the spec's resize policy. Pixel caches hold centre squares made by the crop policy (``RESIZE_POLICY``),
    which have lost what ``--resize squash`` (the whole image, squashed) and ``pad`` (the unscaled image
    on black) need, and were resized to N, not to a ``--resize-size``: such runs decode the files, and an
    explicit pixel cache is refused."""
    if not spec.default_preprocessing:
        name = spec.policy_name
        if requested not in (None, "none"):
            raise MedfmError(f"--pixels {requested} holds centre-cropped squares, which the {name} resize policy "
                             "cannot be made from", "drop --pixels (or pass --pixels none): the images are decoded")
        if say:
            say(f"resize policy {name}: decoding the image files (pixel caches hold centre-cropped squares)")
        return "none"
    return requested if (requested or reproducible(spec.data_config)) else "none"


def batch_transform(data_config: dict, img_size: int):
    """uint8 ``[B, N, N, 3]`` (any device) -> normalised float ``[B, 3, img_size, img_size]``."""
    if not reproducible(data_config):
        raise MedfmError(f"the pixel cache cannot reproduce resize_mode={data_config['resize_mode']!r}",
                         "run extract with --pixels none for this backbone")
    resize_to = scale_size(data_config, img_size)
    mode = _MODES.get(str(data_config.get("interpolation", "bicubic")), "bicubic")
    std = torch.tensor(data_config["std"], dtype=torch.float32).view(1, 3, 1, 1)
    scale = 1.0 / (255.0 * std)  # (x / 255 - mean) / std  ==  x * scale - shift, one fused pass
    shift = torch.tensor(data_config["mean"], dtype=torch.float32).view(1, 3, 1, 1) / std
    top = (resize_to - img_size) // 2

    def apply(pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2)
        if x.shape[-1] != resize_to:
            x = torch.nn.functional.interpolate(x.float(), size=(resize_to, resize_to), mode=mode, antialias=True,
                                                align_corners=False).clamp_(0, 255)
        x = x[..., top:top + img_size, top:top + img_size].contiguous()  # crop before converting: less to convert
        return x.float().mul_(scale.to(x.device)).sub_(shift.to(x.device))

    return apply


class PixelCache(StoreReader):
    """A finished pixel cache: rows of uint8 squares per split, read in row ranges, every chunk verified."""

    KIND = PIXELS

    def __init__(self, path: str | Path):
        super().__init__(path)
        self.size = int(self.meta["size"])

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    def check_dataset(self, dataset: Dataset) -> None:
        """Refuse pixels of another dataset, split or content (identity includes the split sha256)."""
        if self.meta["fingerprint_inputs"].get("resize") != RESIZE_POLICY:
            raise MedfmError(f"pixel cache {self.path} was not made by the crop policy ({RESIZE_POLICY})",
                             "rerun `medfm prepare`, or use --pixels none")
        if self.meta["fingerprint_inputs"]["dataset"] != dataset.identity:
            raise MedfmError(f"pixel cache {self.path} was prepared from a different dataset or split",
                             f"rerun `medfm prepare --dataset {dataset.name}` with the same options, or use --pixels none")

    def batches(self, split: str, ranges: list[tuple[int, int]], prefetch: int = 2):
        """uint8 tensors for each ``(lo, hi)`` row range, in order, read ``prefetch`` ranges ahead."""
        arr = self.data(split, "images")  # whole chunks, each checked against its digest
        with ThreadPoolExecutor(max_workers=1) as pool:
            futures = [pool.submit(arr.__getitem__, slice(lo, hi)) for lo, hi in ranges[:prefetch]]
            for k in range(len(ranges)):
                data = futures[k].result()
                futures[k] = None  # drop the reference: memory stays at prefetch batches
                if k + prefetch < len(ranges):
                    lo, hi = ranges[k + prefetch]
                    futures.append(pool.submit(arr.__getitem__, slice(lo, hi)))
                yield torch.from_numpy(np.ascontiguousarray(data))


def find_pixel_cache(dataset: Dataset, need: int, explicit: str | None) -> PixelCache | None:
    """The pixel cache extract should read: ``explicit`` (a path, or 'none'), else the smallest finished
    default-location cache of this dataset whose side is at least ``need`` (never upsampled pixels)."""
    if explicit == "none":
        return None
    if explicit:
        cache = PixelCache(explicit)
        cache.check_dataset(dataset)
        return cache
    best = None
    for path in sorted((cache_root() / dataset.name).glob("pixels-*px-*.zarr")):
        try:
            cache = PixelCache(path)
        except MedfmError:
            continue
        inputs = cache.meta["fingerprint_inputs"]
        if cache.size >= need and inputs["dataset"] == dataset.identity and inputs.get("resize") == RESIZE_POLICY:
            if best is None or cache.size < best.size:
                best = cache
    return best

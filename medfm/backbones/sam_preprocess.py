"""The SAM family's own image preprocessing, which timm's resize-and-crop cannot express.

SAM and MobileSAM (``SamPredictor.set_image``: ``ResizeLongestSide`` then ``Sam.preprocess``)
resize the longest side to the model size, normalise with ``pixel_mean``/``pixel_std`` on the
0-255 scale and pad bottom/right with zeros to a square. LiteMedSAM (``CVPR24_LiteMedSAM_infer.py``)
resizes the longest side to 256 with OpenCV's ``INTER_AREA``, min-max scales the whole image to
[0, 1] and pads bottom/right with zeros. MedSAM (``MedSAM_Inference.py``) squashes to 1024×1024
with a cubic resize and min-max scales. ``data_config`` records which of these a backbone uses.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

# resize_mode values of a data_config handled here
LONGEST_PAD = "longest_pad"  # longest side -> size (aspect kept), zeros padded bottom/right
SQUASH = "squash"  # both sides -> size
MINMAX = "minmax"  # normalisation: (x - min) / (max - min) over the whole image, not mean/std


def _longest_side_shape(h: int, w: int, size: int) -> tuple[int, int]:
    """SAM's ``ResizeLongestSide.get_preprocess_shape`` (and LiteMedSAM's ``resize_longest_side``)."""
    scale = size / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def _resize(img: Image.Image, h: int, w: int, interpolation: str) -> Image.Image:
    if (img.height, img.width) == (h, w):
        return img
    if interpolation == "area":  # OpenCV INTER_AREA: area averaging when shrinking, interpolation when enlarging
        shrink = h <= img.height and w <= img.width
        return img.resize((w, h), Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR)
    return img.resize((w, h), Image.Resampling[interpolation.upper()])


class SamTransform:
    """PIL RGB image -> float ``[3, size, size]`` as the SAM-family authors prepare it (see module doc)."""

    def __init__(self, data_config: dict, size: int):
        self.size = size
        self.resize_mode = data_config["resize_mode"]
        self.interpolation = data_config["interpolation"]
        self.minmax = data_config.get("normalize") == MINMAX
        self.mean = torch.tensor(data_config["mean"], dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(data_config["std"], dtype=torch.float32).view(3, 1, 1)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        if self.resize_mode == LONGEST_PAD:
            h, w = _longest_side_shape(img.height, img.width, self.size)
        else:
            h = w = self.size
        a = np.asarray(_resize(img, h, w, self.interpolation), dtype=np.float32)  # uint8 values, as the authors'
        x = torch.from_numpy(a.copy()).permute(2, 0, 1) / 255.0
        if self.minmax:
            x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-8)
        else:
            x = (x - self.mean) / self.std
        return torch.nn.functional.pad(x, (0, self.size - w, 0, self.size - h))  # zeros after normalising

    def __repr__(self) -> str:
        norm = "min-max" if self.minmax else "mean/std"
        return f"SamTransform({self.resize_mode}, {self.size} px, {self.interpolation}, {norm})"

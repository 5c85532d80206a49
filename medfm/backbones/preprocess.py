"""Resize policies: how an image becomes the model's square input, one registry for every backbone.

A policy is geometry only (resize, centre crop, pad); normalisation comes from the backbone's
``data_config`` (its mean/std, or with ``--norm dataset`` the train split's, see ``medfm.backbones.norm``).
``--resize`` picks one for any backbone:

- ``crop`` (default, today's): the backbone's own eval transform (timm ``create_transform`` /
  open_clip ``image_transform``: shorter side to ``img_size / crop_pct``, centre crop). For the SAM
  family "its own" is the authors' longest-side-and-pad or squash, which are registered here as
  policies too (``sam_family_policy`` picks one from the ``data_config``), so those models run
  through the same ``policy_transform`` as ``squash`` and ``pad``.
- ``crop`` with ``--resize-size S``: torchvision's ``Resize(S)`` (shorter side, bilinear), ``CenterCrop(img_size)``
  (study 3's preprocessing), a policy of its own (``crop_shorter``).
- ``squash`` (study 1): ``Resize((S, S))`` ignoring the aspect ratio, then ``CenterCrop(img_size)``.
- ``pad`` (MedMNIST+): the original pixels, unscaled, centred on a black canvas of the input size
  (black in pixel space, before normalisation); an image larger than the input is first downscaled
  on its longest side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from medfm.registry import Registry

MINMAX = "minmax"  # data_config["normalize"]: (x - min) / (max - min) over the whole image, not mean/std
SQUASH_RATIO = 256 / 224  # study 1: Resize 256 -> CenterCrop 224 (params.json)


@dataclass(frozen=True)
class ResizePolicy:
    """Declarative geometry: resize (both sides, or the longest side), optional centre crop, optional pad."""

    summary: str  # recorded in the cache fingerprint and the run identity
    source: str  # where the recipe comes from (code location)
    own: bool = False  # the backbone's own eval transform (timm / open_clip), not built here
    fit: str = "both"  # "both": both sides to the target (aspect ignored); "longest" / "shorter": that side to
    # the target, aspect kept
    target: str = "input"  # "input": the model's img_size; "resize_size": --resize-size S (squash)
    upscale: bool = True  # "longest": enlarge an image smaller than the target too (False: only shrink)
    centre_crop: bool = False  # crop the centre img_size x img_size after the resize
    pad: str | None = None  # "centre" or "bottom_right": where the image sits on the img_size canvas
    pad_in: str = "pixels"  # "pixels": black before normalising; "normalised": zeros after (SAM)
    interpolation: str | None = None  # None: the backbone's; else fixed by the recipe

    def identity(self, name: str, img_size: int, resize_size: int | None, interpolation: str) -> dict:
        ident = {"policy": name, "summary": self.summary, "img_size": img_size, "interpolation": interpolation}
        if self.target == "resize_size":
            ident["resize_size"] = resize_size
        return ident


RESIZE_POLICIES: Registry[ResizePolicy] = Registry("resize policy", "medfm extract --help")
RESIZE_POLICIES.add("crop", ResizePolicy(
    own=True, summary="the backbone's own eval transform: shorter side to img_size / crop_pct, centre crop",
    source="timm.data.create_transform(is_training=False); open_clip.image_transform(is_train=False)"))
RESIZE_POLICIES.add("squash", ResizePolicy(
    fit="both", target="resize_size", centre_crop=True, interpolation="bilinear",
    summary="both sides to S (aspect ignored, PIL bilinear), centre crop img_size",
    source="study 1 @02db977 defaults/bases.py:L66-74 (Resize((256, 256)): torchvision's default bilinear; "
           "CenterCrop 224; params.json)"))
RESIZE_POLICIES.add("crop_shorter", ResizePolicy(  # `--resize crop --resize-size S`
    fit="shorter", target="resize_size", centre_crop=True, interpolation="bilinear",
    summary="shorter side to S (aspect kept, PIL bilinear), centre crop img_size",
    source="torchvision Resize(S) (default bilinear) + CenterCrop(img_size); study 3 (GuanghuiFU/medical_dino_eval) "
           "utils.py:L22-30: Resize(256), CenterCrop(224)"))
RESIZE_POLICIES.add("pad", ResizePolicy(
    fit="longest", upscale=False, pad="centre", pad_in="pixels",
    summary="original pixels unscaled (longest side shrunk to img_size only if larger), centred on black",
    source="MedMNIST+ (Doerrich et al. 2024): images zero-padded to the model's input size, not upsampled"))
# the SAM family's own preprocessing (what `crop`, "the backbone's own", means for them; sam_preprocess.py)
RESIZE_POLICIES.add("sam_longest_pad", ResizePolicy(
    fit="longest", upscale=True, pad="bottom_right", pad_in="normalised",
    summary="longest side to img_size, zeros padded bottom/right after normalising",
    source="segment_anything ResizeLongestSide + Sam.preprocess; LiteMedSAM resize_longest_side + pad"))
RESIZE_POLICIES.add("sam_squash", ResizePolicy(
    fit="both", summary="both sides to img_size (aspect ignored)", source="MedSAM_Inference.py (cubic resize to 1024)"))
USER_POLICIES = ("crop", "squash", "pad")  # --resize values; `crop` with --resize-size is crop_shorter, and the
# sam_* ones are what `crop` means for the SAM family
LONGEST_PAD = "longest_pad"  # data_config["resize_mode"] of SAM / MobileSAM / LiteMedSAM


def sam_family_policy(data_config: dict) -> str | None:
    """The SAM family's own policy (longest side + pad, or MedSAM's min-max squash), else None (timm / open_clip)."""
    if data_config.get("resize_mode") == LONGEST_PAD:
        return "sam_longest_pad"
    return "sam_squash" if data_config.get("normalize") == MINMAX else None


def default_resize_size(img_size: int) -> int:
    return round(img_size * SQUASH_RATIO)


def _resize(img: Image.Image, h: int, w: int, interpolation: str) -> Image.Image:
    if (img.height, img.width) == (h, w):
        return img
    if interpolation == "area":  # OpenCV INTER_AREA: area averaging when shrinking, interpolation when enlarging
        shrink = h <= img.height and w <= img.width
        return img.resize((w, h), Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR)
    return img.resize((w, h), Image.Resampling[interpolation.upper()])


def _longest_side_shape(h: int, w: int, size: int) -> tuple[int, int]:
    """SAM's ``ResizeLongestSide.get_preprocess_shape`` (and LiteMedSAM's ``resize_longest_side``)."""
    scale = size / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


class PolicyGeometry:
    """PIL RGB image -> PIL image of the input size: a policy's resize, centre crop and pixel-space padding.

    It is the first step of the policy's transform (``policy_transform``) and what a fine-tune's
    augmentation starts from, so augmentation always sees the pixels the model would see.
    """

    def __init__(self, policy: ResizePolicy, size: int, interpolation: str, resize_size: int | None = None):
        self.policy, self.size, self.interpolation = policy, size, interpolation
        self.side = (resize_size or default_resize_size(size)) if policy.target == "resize_size" else size

    def _shape(self, h: int, w: int) -> tuple[int, int]:
        if self.policy.fit == "both":
            return self.side, self.side
        if self.policy.fit == "shorter":  # torchvision Resize(int)'s output size
            short, long = min(h, w), max(h, w)
            new_long = int(self.side * long / short)
            return (self.side, new_long) if h <= w else (new_long, self.side)
        if not self.policy.upscale and max(h, w) <= self.side:
            return h, w
        return _longest_side_shape(h, w, self.side)

    def resized(self, img: Image.Image) -> Image.Image:
        """The image after resize and centre crop, before any padding."""
        img = _resize(img, *self._shape(img.height, img.width), self.interpolation)
        if self.policy.centre_crop:  # torchvision CenterCrop's rounding (study 1 calls it)
            top, left = int(round((img.height - self.size) / 2.0)), int(round((img.width - self.size) / 2.0))
            img = img.crop((left, top, left + self.size, top + self.size))
        return img

    def __call__(self, img: Image.Image) -> Image.Image:
        img = self.resized(img)
        if self.policy.pad is None or self.policy.pad_in != "pixels":
            return img
        canvas = Image.new(img.mode, (self.size, self.size))  # black
        top, left = pad_offsets(self.policy, self.size, img.height, img.width)
        canvas.paste(img, (left, top))
        return canvas

    def __repr__(self) -> str:
        return f"PolicyGeometry({self.policy.summary}; {self.size} px, {self.interpolation})"


def pad_offsets(policy: ResizePolicy, size: int, h: int, w: int) -> tuple[int, int]:
    """(top, left) of an h x w image on the size x size canvas."""
    return ((size - h) // 2, (size - w) // 2) if policy.pad == "centre" else (0, 0)


class MinMax:
    """(x - min) / (max - min) over the whole image (MedSAM, LiteMedSAM), instead of mean/std."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - x.min()) / (x.max() - x.min()).clamp_min(1e-8)

    def __repr__(self) -> str:
        return "MinMax()"


class PadNormalised:
    """Zeros around a normalised tensor up to size x size (SAM pads after normalising)."""

    def __init__(self, policy: ResizePolicy, size: int):
        self.policy, self.size = policy, size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        top, left = pad_offsets(self.policy, self.size, h, w)
        return torch.nn.functional.pad(x, (left, self.size - w - left, top, self.size - h - top))

    def __repr__(self) -> str:
        return f"PadNormalised({self.policy.pad}, {self.size} px)"


def policy_transform(policy: ResizePolicy, size: int, data_config: dict, resize_size: int | None = None):
    """PIL RGB image -> float ``[3, size, size]``: geometry, ``ToTensor``, the backbone's normalisation
    (mean/std, or min-max), then SAM's padding of the normalised image where the policy pads there.

    Plain torchvision steps after the geometry, so a policy's transform reads like study 1's
    ``Compose([Resize, CenterCrop, ToTensor, Normalize])`` and augmentation can go before ``ToTensor``.
    """
    from torchvision import transforms as T

    interpolation = policy.interpolation or str(data_config["interpolation"])
    norm = MinMax() if data_config.get("normalize") == MINMAX else T.Normalize(data_config["mean"], data_config["std"])
    steps = [PolicyGeometry(policy, size, interpolation, resize_size), T.ToTensor(), norm]
    if policy.pad and policy.pad_in == "normalised":
        steps.append(PadNormalised(policy, size))
    return T.Compose(steps)

"""Training data: per-modality augmentation, and order that survives resume and torchrun.

Everything random about the data is a pure function of (seed, epoch, sample index): the sampler's
permutation is seeded by (seed, epoch) (``DistributedSampler`` semantics), and each sample's
augmentation is drawn from a generator seeded by (seed, epoch, index). So a run resumed at an
epoch boundary, or split over torchrun processes, sees exactly the images an uninterrupted
single-process run sees, whatever the number of loader workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from medfm.backbones import Backbone, augmentable_geometry, to_rgb
from medfm.data.base import Split
from medfm.data.zoo import DATASETS
from medfm.extract.loader import SplitImages, collate
from medfm.registry import Registry

GREY_MODALITIES = ("chest x-ray", "abdominal CT", "ultrasound", "retinal OCT", "mammography", "MRI")


@dataclass(frozen=True)
class Augmentation:
    """Train-time augmentation; ``colour_jitter`` is brightness/contrast(/saturation) strength."""

    crop_scale: float = 0.8  # RandomResizedCrop scale=(crop_scale, 1)
    hflip: bool = True
    vflip: bool = False
    rotation: float = 10.0  # degrees, +-
    colour_jitter: float = 0.0


AUGMENTATIONS: Registry[Augmentation] = Registry("augmentation policy", "medfm finetune --help")
AUGMENTATIONS.add("none", Augmentation(crop_scale=1.0, hflip=False, rotation=0.0))
AUGMENTATIONS.add("default", Augmentation())
AUGMENTATIONS.add("grey", Augmentation())  # x-ray, CT, ultrasound, OCT: geometry only, no colour
# orientation-free images: any flip, bigger rotations, colour jitter (stain / lighting / camera)
AUGMENTATIONS.add("dermoscopy", Augmentation(vflip=True, rotation=20.0, colour_jitter=0.2))
AUGMENTATIONS.add("microscopy", Augmentation(vflip=True, rotation=20.0, colour_jitter=0.1))
AUGMENTATIONS.add("fundus", Augmentation(crop_scale=0.85, vflip=False, rotation=15.0, colour_jitter=0.1))
MODALITY_POLICY = {"dermoscopy": "dermoscopy", "pathology": "microscopy", "blood smear microscopy": "microscopy",
                   "kidney cortex microscopy": "microscopy", "fundus": "fundus"}


def policy_for(name: str, dataset_name: str, colour_jitter: float | None) -> tuple[str, Augmentation]:
    """The augmentation policy: ``auto`` picks by the dataset's modality (grey ones get no colour jitter)."""
    if name == "auto":
        base = dataset_name.split("_")[0] if dataset_name not in DATASETS else dataset_name
        modality = DATASETS.get(base).modality if base in DATASETS else ""
        name = MODALITY_POLICY.get(modality, "grey" if modality in GREY_MODALITIES else "default")
    aug = AUGMENTATIONS.get(name)
    if colour_jitter is not None:
        from dataclasses import replace

        aug = replace(aug, colour_jitter=colour_jitter)
    return name, aug


def train_transform(backbone: Backbone, aug: Augmentation):
    """Augmented transform with the backbone's own normalisation and interpolation."""
    from torchvision import transforms as T

    cfg = backbone.spec.data_config
    size = backbone.spec.img_size
    interp = T.InterpolationMode(cfg["interpolation"]) if cfg["interpolation"] in ("bilinear", "bicubic", "nearest") \
        else T.InterpolationMode.BICUBIC
    steps = [to_rgb, *augmentable_geometry(backbone.spec)]  # --resize squash/pad: augment what the model sees
    if aug == AUGMENTATIONS.get("none"):
        return backbone.transform  # deterministic: exactly the extract stage's preprocessing
    steps.append(T.RandomResizedCrop(size, scale=(aug.crop_scale, 1.0), interpolation=interp))
    if aug.hflip:
        steps.append(T.RandomHorizontalFlip())
    if aug.vflip:
        steps.append(T.RandomVerticalFlip())
    if aug.rotation:
        steps.append(T.RandomRotation(aug.rotation, interpolation=T.InterpolationMode.BILINEAR))
    if aug.colour_jitter:
        j = aug.colour_jitter
        steps.append(T.ColorJitter(brightness=j, contrast=j, saturation=j))
    steps += [T.ToTensor(), T.Normalize(cfg["mean"], cfg["std"])]
    return T.Compose(steps)


class SeededImages(SplitImages):
    """A split's images whose random transform draws from a generator seeded by (seed, epoch, index)."""

    def __init__(self, split: Split, transform, indices: list[int], seed: int):
        super().__init__(split, transform, indices)
        self.seed, self.epoch = seed, 0

    def __getitem__(self, k: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + self.epoch * 10_007 + self.indices[k]) % (2**63))
            x, i, err = super().__getitem__(k)
        return x, i, err


class BalancedDistributedSampler(DistributedSampler):
    """``DistributedSampler`` whose epoch draws ``n`` indices with equal probability per class."""

    def __init__(self, dataset, labels: np.ndarray, **kw):
        super().__init__(dataset, **kw)
        counts = np.bincount(labels)
        self.weights = torch.as_tensor(1.0 / counts[labels], dtype=torch.double)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        idx = torch.multinomial(self.weights, len(self.weights), replacement=True, generator=g).tolist()
        idx += idx[: self.total_size - len(idx)]
        return iter(idx[self.rank : self.total_size : self.num_replicas])


def train_loader(ds: SeededImages, labels: np.ndarray, per_rank_batch: int, balanced: bool, seed: int,
                 rank: int, world: int, workers: int, pin: bool, generator: torch.Generator) -> DataLoader:
    kind = BalancedDistributedSampler if balanced else DistributedSampler
    extra = {"labels": labels} if balanced else {}
    sampler = kind(ds, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=False, **extra)
    return DataLoader(ds, batch_size=per_rank_batch, sampler=sampler, num_workers=workers, collate_fn=collate,
                      pin_memory=pin, generator=generator, prefetch_factor=2 if workers else None)


def eval_loader(split: Split, transform, rank: int, world: int, batch: int, workers: int, pin: bool) -> DataLoader:
    """This rank's share of a split, padded (by repeating) to equal length on every rank."""
    n = len(split)
    per = math.ceil(n / world)
    idx = list(range(n)) + list(range(per * world - n))
    mine = idx[rank * per : (rank + 1) * per]
    return DataLoader(SplitImages(split, transform, mine), batch_size=batch, shuffle=False, num_workers=workers,
                      collate_fn=collate, pin_memory=pin, prefetch_factor=2 if workers else None)

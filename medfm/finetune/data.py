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
from medfm.errors import MedfmError
from medfm.extract.loader import SplitImages, collate
from medfm.registry import Registry

GREY_MODALITIES = ("chest x-ray", "abdominal CT", "ultrasound", "retinal OCT", "mammography", "MRI")


@dataclass(frozen=True)
class Augmentation:
    """Train-time augmentation; ``colour_jitter`` is brightness/contrast(/saturation) strength.

    ``order`` lists the random steps in the order they run. With ``on_preprocessed`` they run on the
    eval preprocessing's output (after its resize and crop, before ``ToTensor``/``Normalize``), as
    study 1 crops and flips its 224 crop; otherwise the crop draws from the raw image (medfm's policies).
    """

    crop_scale: float = 0.8  # RandomResizedCrop scale=(crop_scale, crop_scale_max)
    hflip: bool = True
    vflip: bool = False
    rotation: float = 10.0  # degrees, +-
    colour_jitter: float = 0.0
    crop_scale_max: float = 1.0
    saturation: float | None = None  # ColorJitter saturation [colour_jitter]
    hue: float = 0.0
    jitter_p: float = 1.0  # probability that the colour jitter is applied (RandomApply)
    on_preprocessed: bool = False
    interpolation: str | None = None  # the crop's resampling [the backbone's]
    order: tuple[str, ...] = ("crop", "hflip", "vflip", "rotation", "jitter")


AUGMENTATIONS: Registry[Augmentation] = Registry("augmentation policy", "medfm finetune --help")
AUGMENTATIONS.add("none", Augmentation(crop_scale=1.0, hflip=False, rotation=0.0))
AUGMENTATIONS.add("default", Augmentation())
AUGMENTATIONS.add("grey", Augmentation())  # x-ray, CT, ultrasound, OCT: geometry only, no colour
# orientation-free images: any flip, bigger rotations, colour jitter (stain / lighting / camera)
AUGMENTATIONS.add("dermoscopy", Augmentation(vflip=True, rotation=20.0, colour_jitter=0.2))
AUGMENTATIONS.add("microscopy", Augmentation(vflip=True, rotation=20.0, colour_jitter=0.1))
AUGMENTATIONS.add("fundus", Augmentation(crop_scale=0.85, vflip=False, rotation=15.0, colour_jitter=0.1))
# study 1's train_transforms (params.json @02db977, every dataset), built in BaseSet.get_trans_list's order
# (defaults/bases.py:L63-158): Resize 256 -> CenterCrop 224 (the eval preprocessing, --resize), then
# RandomResizedCrop(224, scale=(0.8, 1.2), bilinear, default ratio 3/4..4/3) on the crop (L83-87; a drawn
# scale above 1 cannot fit, so torchvision retries and after 10 misses keeps the whole crop),
# RandomVerticalFlip(0.5) (L89-91), RandomHorizontalFlip(0.5) (L93-95), and
# RandomApply([ColorJitter(brightness=0.2, contrast=0.2, saturation=0.1, hue=0.1)], p=0.8) (L103-111);
# rotation, grayscale, blur, affine, perspective, solarize and erasing have "apply": false.
AUGMENTATIONS.add("study1", Augmentation(crop_scale=0.8, crop_scale_max=1.2, hflip=True, vflip=True, rotation=0.0,
                                         colour_jitter=0.2, saturation=0.1, hue=0.1, jitter_p=0.8,
                                         on_preprocessed=True, interpolation="bilinear",
                                         order=("crop", "vflip", "hflip", "jitter")))
MODALITY_POLICY = {"dermoscopy": "dermoscopy", "pathology": "microscopy", "blood smear microscopy": "microscopy",
                   "kidney cortex microscopy": "microscopy", "fundus": "fundus"}
TO_TENSOR_STEPS = ("ToTensor", "MaybeToTensor", "PILToTensor", "ToImage")


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


def _random_steps(aug: Augmentation, size: int, interp) -> list:
    """The policy's random transforms, in ``aug.order``."""
    from torchvision import transforms as T

    made = {"crop": T.RandomResizedCrop(size, scale=(aug.crop_scale, aug.crop_scale_max), interpolation=interp)}
    if aug.hflip:
        made["hflip"] = T.RandomHorizontalFlip()
    if aug.vflip:
        made["vflip"] = T.RandomVerticalFlip()
    if aug.rotation:
        made["rotation"] = T.RandomRotation(aug.rotation, interpolation=T.InterpolationMode.BILINEAR)
    if aug.colour_jitter or aug.hue or aug.saturation:
        j = aug.colour_jitter
        jitter = T.ColorJitter(brightness=j, contrast=j, saturation=j if aug.saturation is None else aug.saturation,
                               hue=aug.hue)
        made["jitter"] = jitter if aug.jitter_p >= 1 else T.RandomApply([jitter], p=aug.jitter_p)
    return [made[k] for k in aug.order if k in made]


def _flat(transform) -> list:
    from torchvision import transforms as T

    if isinstance(transform, T.Compose):
        return [s for t in transform.transforms for s in _flat(t)]
    return [transform]


def train_transform(backbone: Backbone, aug: Augmentation):
    """Augmented transform with the backbone's own normalisation and interpolation."""
    from torchvision import transforms as T

    cfg = backbone.spec.data_config
    size = backbone.spec.img_size
    name = aug.interpolation or cfg["interpolation"]
    interp = T.InterpolationMode(name) if name in ("bilinear", "bicubic", "nearest") else T.InterpolationMode.BICUBIC
    if aug == AUGMENTATIONS.get("none"):
        return backbone.transform  # deterministic: exactly the extract stage's preprocessing
    if aug.on_preprocessed:
        steps = _flat(backbone.transform)
        at = next((i for i, s in enumerate(steps) if type(s).__name__ in TO_TENSOR_STEPS), None)
        if at is None:
            raise MedfmError(f"{backbone.spec.entry.name}'s preprocessing has no ToTensor step to augment before",
                             "use another --augment policy")
        return T.Compose(steps[:at] + _random_steps(aug, size, interp) + steps[at:])
    # --resize squash/pad: the random steps act on what the model would see (the squashed crop, the padded
    # canvas); crop: on the whole image, as before policies existed
    steps = [to_rgb, *augmentable_geometry(backbone.spec), *_random_steps(aug, size, interp)]
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
                 rank: int, world: int, workers: int, pin: bool, generator: torch.Generator,
                 drop_last: bool = False, shuffle: bool = True) -> DataLoader:
    """``shuffle=False``: every epoch visits the rows in the split's order (study 3's train loader)."""
    kind = BalancedDistributedSampler if balanced else DistributedSampler
    extra = {"labels": labels} if balanced else {}
    sampler = kind(ds, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=False, **extra)
    return DataLoader(ds, batch_size=per_rank_batch, sampler=sampler, num_workers=workers, collate_fn=collate,
                      pin_memory=pin, generator=generator, prefetch_factor=2 if workers else None, drop_last=drop_last)


def eval_loader(split: Split, transform, rank: int, world: int, batch: int, workers: int, pin: bool) -> DataLoader:
    """This rank's share of a split, padded (by repeating) to equal length on every rank."""
    n = len(split)
    per = math.ceil(n / world)
    idx = list(range(n)) + list(range(per * world - n))
    mine = idx[rank * per : (rank + 1) * per]
    return DataLoader(SplitImages(split, transform, mine), batch_size=batch, shuffle=False, num_workers=workers,
                      collate_fn=collate, pin_memory=pin, prefetch_factor=2 if workers else None)

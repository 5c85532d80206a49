"""What a dataset is to medfm: named splits of (id, label, image) plus the facts a probe needs.

Readers (MedMNIST ``.npz``, CSV manifests, image folders, ...) all produce a ``Dataset``; nothing
downstream knows which reader made it. ``identity`` is what the cache fingerprint hashes, so two
datasets with the same identity must yield the same samples, labels and splits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from PIL import Image

SPLITS = ("train", "val", "test")


class ImageSource(Protocol):
    """Random access to the images of one split."""

    def __len__(self) -> int: ...

    def load(self, i: int) -> Image.Image:
        """Decode image ``i``; raise with a message naming the file on failure."""
        ...

    def describe(self, i: int) -> str:
        """Where image ``i`` comes from, for error messages (file and row)."""
        ...


@dataclass
class Split:
    ids: list[str]
    labels: np.ndarray  # [N] int64 class index, or [N, C] uint8 for multilabel
    images: ImageSource

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Dataset:
    name: str
    task: str  # binary | multiclass | multilabel
    classes: list[str]
    headline_metric: str
    splits: dict[str, Split]
    identity: dict  # hashed into the cache fingerprint: content, never location
    notes: list[str] = field(default_factory=list)  # e.g. how a missing split was made
    source: str = ""  # where it was read from (provenance only, not part of the identity)
    skipped: list[str] = field(default_factory=list)  # rows dropped by --skip-bad, each "file (row): why"
    duplicates: list = field(default_factory=list)  # DuplicateGroup: identical images under two names (data/duplicates.py)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def summary(self) -> dict:
        """Counts per split and class, as stored with the cache and printed by the CLI."""
        out = {}
        for name, split in self.splits.items():
            if self.task == "multilabel":
                counts = (split.labels == 1).sum(axis=0).astype(int).tolist()  # IGNORE (255) is not a positive
            else:
                counts = np.bincount(split.labels, minlength=self.num_classes).astype(int).tolist()
            out[name] = {"n": len(split), "per_class": dict(zip(self.classes, counts))}
        return out

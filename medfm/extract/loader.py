"""Feeding images to a backbone: decode + preprocess in DataLoader workers, in the order given.

A file that fails to decode does not kill the worker with a traceback: the batch carries the
error message back and the main process stops with one line naming the file (and manifest line).
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader, Dataset

from medfm.data.base import Split
from medfm.data.images import ImageReadError


class SplitImages(Dataset):
    def __init__(self, split: Split, transform, indices: list[int]):
        self.split, self.transform, self.indices = split, transform, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        i = self.indices[k]
        try:
            return self.transform(self.split.images.load(i)), i, ""
        except ImageReadError as exc:
            return None, i, f"{self.split.images.describe(i)}: {exc.reason}"
        except Exception as exc:
            return None, i, f"{self.split.images.describe(i)}: cannot preprocess ({type(exc).__name__}: {exc})"


def collate(batch):
    errors = [e for _, _, e in batch if e]
    images = None if errors else torch.stack([x for x, _, _ in batch])
    return images, [i for _, i, _ in batch], errors


def default_workers(device: torch.device) -> int:
    cpus = os.cpu_count() or 1
    # On CPU the model itself uses every core; one decoding worker keeps the pipeline fed.
    return min(8, cpus) if device.type == "cuda" else min(2, max(cpus - 1, 0))


def make_loader(split: Split, transform, indices: list[int], batch_size: int, workers: int, device: torch.device):
    return DataLoader(
        SplitImages(split, transform, indices),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )

"""MedMNIST ``.npz`` files (v2 28 px and MedMNIST+ 64/128/224 px): keys ``{split}_{images,labels}``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medfm.data.base import SPLITS, Dataset, Split
from medfm.data.duplicates import find_groups, resolve, row_digests
from medfm.data.images import to_pil
from medfm.errors import MedfmError


class ArrayImages:
    """Images held in one uint8 array ``[N, H, W]`` or ``[N, H, W, 3]``."""

    def __init__(self, array: np.ndarray, file: Path, key: str, rows: np.ndarray | None = None):
        self.array, self.file, self.key = array, file, key
        self.rows = rows  # the file's row of each image, when some rows were dropped (--duplicates drop)

    def __len__(self) -> int:
        return len(self.array)

    def load(self, i: int):
        return to_pil(self.array[i])

    def describe(self, i: int) -> str:
        return f"{self.file} [{self.key}][{i if self.rows is None else int(self.rows[i])}]"


def read_medmnist(path: Path, name: str, task: str, classes: list[str], headline_metric: str,
                  duplicates: str = "warn") -> Dataset:
    """The official splits of a MedMNIST file; identical image rows are a duplicate group (``duplicates`` policy)."""
    if not path.is_file():
        raise MedfmError(
            f"dataset file {path} not found",
            "download it from https://zenodo.org/records/10519652 or point --data-root / $MEDFM_DATA at its folder",
        )
    try:
        npz = np.load(path)
        keys = set(npz.files)
    except Exception as exc:
        raise MedfmError(f"{path}: not a readable .npz file ({exc})", "re-download it") from None
    arrays = {}
    for split in SPLITS:
        img_key, lab_key = f"{split}_images", f"{split}_labels"
        missing = [k for k in (img_key, lab_key) if k not in keys]
        if missing:
            raise MedfmError(
                f"{path}: missing key(s) {', '.join(missing)} (found {', '.join(sorted(keys))})",
                "a MedMNIST file holds {train,val,test}_{images,labels}",
            )
        images, labels = npz[img_key], npz[lab_key]
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
            raise MedfmError(
                f"{path}: {img_key} has shape {images.shape} dtype {images.dtype}",
                "expected uint8 [N, H, W] (grey) or [N, H, W, 3] (RGB)",
            )
        if len(labels) != len(images):
            raise MedfmError(f"{path}: {len(images)} {img_key} but {len(labels)} {lab_key}", "the file is damaged")
        arrays[split] = (images, _check_labels(labels, task, len(classes), path, lab_key))
    from medfm.backbones.weights import sha256_file  # here: importing medfm.backbones imports torch

    label_text = {s: [",".join(map(str, np.atleast_1d(v))) if task == "multilabel" else classes[int(v)] for v in lab]
                  for s, (_, lab) in arrays.items()}
    groups = find_groups({s: row_digests(img) for s, (img, _) in arrays.items()}, label_text,
                         lambda s, i: f"{path.name} [{s}_images][{i}]")
    decided = resolve(groups, duplicates, str(path), name)
    splits = {}
    for split, (images, labels) in arrays.items():
        keep = np.setdiff1d(np.arange(len(images)), sorted(decided.drop.get(split, ())))
        rows = None
        if len(keep) < len(images):
            images, labels, rows = images[keep], labels[keep], keep
        ids = [f"{split}/{i}" for i in keep]  # ids name the official rows, so they skip the dropped ones
        splits[split] = Split(ids, labels, ArrayImages(images, path, f"{split}_images", rows))
    identity = {"reader": "medmnist", "file": path.name, "sha256": sha256_file(path)}
    if decided.summary:
        identity["duplicates"] = decided.summary
    ds = Dataset(name, task, list(classes), headline_metric, splits, identity, [decided.note] if decided.note else [])
    ds.duplicates = groups
    return ds


def _check_labels(labels: np.ndarray, task: str, num_classes: int, path: Path, key: str) -> np.ndarray:
    labels = np.asarray(labels)
    if task == "multilabel":
        if labels.ndim != 2 or labels.shape[1] != num_classes or not np.isin(labels, (0, 1)).all():
            raise MedfmError(f"{path}: {key} must be 0/1 of shape [N, {num_classes}], got {labels.shape}", "re-download it")
        return labels.astype(np.uint8)
    labels = labels.reshape(len(labels), -1)
    if labels.shape[1] != 1:
        raise MedfmError(f"{path}: {key} has shape {labels.shape}, expected [N] or [N, 1]", "re-download it")
    labels = labels[:, 0].astype(np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        raise MedfmError(
            f"{path}: {key}[{bad[0]}] = {labels[bad[0]]} is outside the class range 0..{num_classes - 1} "
            f"({len(bad)} such rows)",
            "check that the file matches this dataset's registry entry (`medfm datasets`)",
        )
    return labels

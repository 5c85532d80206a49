"""Datasets: ``create_dataset(name_or_path)`` is the one door.

``name_or_path`` is a registry name (``pneumoniamnist``, ``pneumoniamnist_224``, ``busi``) found
under the data root, or a path: a CSV manifest, a folder holding ``labels.csv``, or an image
folder with one sub-folder per class.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from medfm.data.base import SPLITS, Dataset, Split
from medfm.data.manifest import build_dataset, folder_rows, read_csv_rows
from medfm.data.medmnist import read_medmnist
from medfm.data.zoo import DATASETS, DatasetEntry
from medfm.errors import MedfmError
from medfm.metrics import check_metric_for_task
from medfm.paths import require_data_root

MEDMNIST_SIZE = re.compile(r"^(?P<base>[a-z]+mnist)_(?P<size>64|128|224)$")


def _read_medmnist(entry: DatasetEntry, path: Path, seed: int) -> Dataset:
    return read_medmnist(path, entry.name, entry.task, list(entry.classes), entry.headline_metric)


def _read_manifest(entry: DatasetEntry, path: Path, seed: int) -> Dataset:
    classes = list(entry.classes) if entry.classes else None
    ds = build_dataset(entry.name, path.parent, read_csv_rows(path), path, classes, entry.headline_metric, seed)
    ds.identity["file"] = path.name
    return ds


READERS = {"medmnist": _read_medmnist, "manifest": _read_manifest}


def looks_like_path(name: str) -> bool:
    return "/" in name or name.endswith(".csv") or name.startswith((".", "~"))


def lookup_entry(name: str) -> DatasetEntry:
    m = MEDMNIST_SIZE.match(name)
    if m and m["base"] in DATASETS and name not in DATASETS:
        base = DATASETS.get(m["base"])
        return replace(base, name=name, location=f"{name}.npz")
    return DATASETS.get(name)


def create_dataset(name_or_path: str, data_root: str | Path | None = None, seed: int = 0, metric: str | None = None) -> Dataset:
    """Read a dataset (registry name or path) with its splits; ``seed`` drives any split medfm makes."""
    if looks_like_path(name_or_path) or (Path(name_or_path).exists() and name_or_path not in DATASETS):
        ds = _from_path(Path(name_or_path).expanduser(), seed)
    else:
        entry = lookup_entry(name_or_path)
        path = require_data_root(data_root) / entry.location
        ds = READERS[entry.reader](entry, path, seed)
        ds.identity = {"name": entry.name, **ds.identity}
        ds.source = str(path)
    if metric:
        check_metric_for_task(metric, ds.task)
        ds.headline_metric = metric
    return ds


def _from_path(path: Path, seed: int) -> Dataset:
    if path.is_file() and path.suffix.lower() == ".csv":
        ds = build_dataset(path.parent.name, path.parent, read_csv_rows(path), path, seed=seed)
    elif path.is_dir() and (path / "labels.csv").is_file():
        ds = build_dataset(path.name, path, read_csv_rows(path / "labels.csv"), path / "labels.csv", seed=seed)
    elif path.is_dir():
        ds = build_dataset(path.name, path, folder_rows(path), None, seed=seed)
    else:
        raise MedfmError(
            f"dataset path {path} does not exist" if not path.exists() else f"{path} is neither a CSV manifest nor a folder",
            "give a registry name (`medfm datasets`), a CSV manifest (path,label[,split]) or an image folder",
        )
    ds.source = str(path.resolve())
    return ds


__all__ = ["DATASETS", "SPLITS", "Dataset", "Split", "create_dataset"]

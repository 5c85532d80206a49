"""CSV manifests (``path,label[,split]``) and image folders (one sub-folder per class).

Both become the same list of rows, validated in one place: every problem names the file and row.
Without a split column medfm makes a seeded stratified train/val/test split; with one that lacks
``val``, it carves val out of train. Either way the policy is part of the dataset identity, so
every cache (and every probe of it) sees the same split.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfm.data.base import SPLITS, Dataset, Split
from medfm.data.images import is_image_file, read_image
from medfm.data.splits import stratified_partition
from medfm.errors import MedfmError

SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
DEFAULT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}
VAL_FROM_TRAIN = 0.15


@dataclass
class Row:
    path: str  # as written in the manifest, relative to its folder
    label: str
    split: str | None
    line: int  # 1-based line in the manifest, for error messages


class FileImages:
    def __init__(self, root: Path, rows: list[Row], manifest: Path | None):
        self.root, self.rows, self.manifest = root, rows, manifest

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, i: int):
        return read_image(self.root / self.rows[i].path)

    def describe(self, i: int) -> str:
        where = f" (line {self.rows[i].line} of {self.manifest})" if self.manifest else ""
        return f"{self.root / self.rows[i].path}{where}"


def read_csv_rows(path: Path) -> list[Row]:
    if not path.is_file():
        raise MedfmError(f"manifest {path} not found", "check --dataset / --data-root")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = {(h or "").strip().lower(): h for h in reader.fieldnames or []}
        missing = [c for c in ("path", "label") if c not in header]
        if missing:
            raise MedfmError(
                f"{path}: missing column(s) {', '.join(missing)} (header is {', '.join(reader.fieldnames or [])})",
                "a manifest needs columns path,label and optionally split",
            )
        rows = []
        for rec in reader:
            line = reader.line_num
            p, lab = (rec[header["path"]] or "").strip(), (rec[header["label"]] or "").strip()
            if not p or not lab:
                raise MedfmError(f"{path} line {line}: empty {'path' if not p else 'label'}", "fill it in or delete the row")
            split = None
            if "split" in header:
                raw = (rec[header["split"]] or "").strip().lower()
                if raw and raw not in SPLIT_ALIASES:
                    raise MedfmError(
                        f"{path} line {line}: split {raw!r} is not train, val or test", "fix the split column"
                    )
                split = SPLIT_ALIASES.get(raw)  # empty: checked against the other rows in _split
            rows.append(Row(p, lab, split, line))
    if not rows:
        raise MedfmError(f"{path}: the manifest has no rows", "add path,label rows")
    return rows


def folder_rows(root: Path) -> list[Row]:
    """Rows of an image folder: each immediate sub-folder is a class, its images (recursively) the samples."""
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise MedfmError(
            f"{root}: no class sub-folders and no labels.csv",
            "lay the folder out as <class>/<image> or add a labels.csv manifest (path,label[,split])",
        )
    rows = []
    for d in classes:
        files = sorted(p for p in d.rglob("*") if p.is_file() and is_image_file(p))
        if not files:
            raise MedfmError(f"{d}: class folder holds no images", "remove the folder or add images")
        rows += [Row(str(p.relative_to(root)), d.name, None, 0) for p in files]
    return rows


def build_dataset(
    name: str,
    root: Path,
    rows: list[Row],
    manifest: Path | None,
    classes: list[str] | None = None,
    headline_metric: str = "roc_auc",
    seed: int = 0,
) -> Dataset:
    where = (lambda r: f"{manifest} line {r.line}") if manifest else (lambda r: str(root / r.path))
    missing = [r for r in rows if not (root / r.path).is_file()]
    if missing:
        r = missing[0]
        raise MedfmError(
            f"{where(r)}: image {root / r.path} does not exist ({len(missing)} of {len(rows)} listed files are missing)",
            "fix the path column (paths are relative to the manifest's folder)",
        )
    if classes is None:
        found = {r.label for r in rows}
        numeric = all(lab.lstrip("-").isdigit() for lab in found)
        classes = sorted(found, key=int) if numeric else sorted(found)
    index = {c: i for i, c in enumerate(classes)}
    for r in rows:
        if r.label not in index:
            raise MedfmError(
                f"{where(r)}: label {r.label!r} is not one of this dataset's classes ({', '.join(classes)})",
                "fix the label, or use --dataset with the manifest path to let medfm infer the classes",
            )
    labels = np.array([index[r.label] for r in rows], dtype=np.int64)
    empty = [c for c, n in zip(classes, np.bincount(labels, minlength=len(classes))) if n == 0]
    if empty:
        raise MedfmError(f"{manifest or root}: class(es) {', '.join(empty)} have no images", "add images or drop the class")

    parts, policy = _split(rows, labels, seed, manifest or root)
    splits = {
        s: Split([rows[i].path for i in idx], labels[idx], FileImages(root, [rows[i] for i in idx], manifest))
        for s, idx in parts.items()
    }
    digest = hashlib.sha256()
    for r, lab in zip(rows, labels):
        digest.update(f"{r.path}\t{lab}\t{r.split}\t{(root / r.path).stat().st_size}\n".encode())
    identity = {"reader": "manifest" if manifest else "folder", "rows_sha256": digest.hexdigest(), "split": policy}
    task = "binary" if len(classes) == 2 else "multiclass"
    notes = [policy["description"]]
    return Dataset(name, task, list(classes), headline_metric, splits, identity, notes)


def _split(rows: list[Row], labels: np.ndarray, seed: int, source: Path) -> tuple[dict[str, np.ndarray], dict]:
    given = [r.split for r in rows]
    if all(s is None for s in given):
        parts = stratified_partition(labels, DEFAULT_FRACTIONS, seed)
        desc = f"no split column: stratified 70/15/15 train/val/test split, seed {seed}"
        return parts, {"policy": "stratified", "fractions": DEFAULT_FRACTIONS, "seed": seed, "description": desc}
    if any(s is None for s in given):
        r = next(r for r in rows if r.split is None)
        raise MedfmError(f"{source} line {r.line}: empty split while other rows have one", "fill in the split column")
    given_arr = np.array(given)
    if not (given_arr == "test").any() or not (given_arr == "train").any():
        raise MedfmError(f"{source}: the split column needs both train and test rows", "fix the split column")
    parts = {s: np.flatnonzero(given_arr == s) for s in SPLITS}
    if len(parts["val"]):
        return parts, {"policy": "official", "description": "official split from the manifest"}
    train = parts["train"]
    carved = stratified_partition(labels[train], {"train": 1 - VAL_FROM_TRAIN, "val": VAL_FROM_TRAIN}, seed)
    parts["train"], parts["val"] = train[carved["train"]], train[carved["val"]]
    desc = f"official train/test split; val = stratified {VAL_FROM_TRAIN:.0%} of train, seed {seed}"
    return parts, {"policy": "official+val_from_train", "val_fraction": VAL_FROM_TRAIN, "seed": seed, "description": desc}

"""CSV manifests (``path,label[,split]``) and image folders (one sub-folder per class).

Both become the same list of rows, validated in one place: every problem names the file and row.
Without a split column medfm makes a seeded stratified train/val/test split; with one that lacks
``val``, it carves val out of train. Either way the policy is part of the dataset identity, so
every cache (and every probe of it) sees the same split.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfm.data.base import SPLITS, Dataset, Split
from medfm.data.content import ALGORITHM, hash_files
from medfm.data.duplicates import USER_DEFAULT, find_groups, resolve
from medfm.data.images import is_image_file, read_image
from medfm.data.splits import partition
from medfm.data.tables import open_csv
from medfm.errors import MedfmError

SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
DEFAULT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}
VAL_FROM_TRAIN = 0.15


RESERVED_COLUMNS = ("path", "label", "split", "patient")


@dataclass
class Row:
    path: str  # as written in the manifest, relative to its folder
    label: str  # class name ("" for multilabel rows, whose labels are ``targets``)
    split: str | None
    line: int  # 1-based line in the manifest, for error messages
    group: str | None = None  # patient / lesion / subject id: rows of one group never straddle splits
    targets: tuple[int, ...] | None = None  # multilabel 0/1 (or IGNORE) per class
    source: Path | None = None  # the file this row was read from, when not the manifest (e.g. CBIS-DDSM's CSVs)
    frame: int | None = None  # slice index inside a volume (NIfTI slice datasets)


@dataclass(frozen=True)
class SplitPlan:
    """How medfm makes the splits a dataset does not give: fractions, seed, stratified or plain random."""

    fractions: tuple[tuple[str, float], ...] = tuple(DEFAULT_FRACTIONS.items())
    seed: int = 0
    stratified: bool = True
    val_fraction: float = VAL_FROM_TRAIN  # carved from train when only train/test are given


def where(row: Row, manifest: Path | None, root: Path) -> str:
    src = row.source or manifest
    return f"{src} line {row.line}" if src else str(root / row.path)


class FileImages:
    def __init__(self, root: Path, rows: list[Row], manifest: Path | None):
        self.root, self.rows, self.manifest = root, rows, manifest

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, i: int):
        return read_image(self.root / self.rows[i].path)

    def describe(self, i: int) -> str:
        r = self.rows[i]
        src = r.source or self.manifest
        where = f" (line {r.line} of {src})" if src else ""
        return f"{self.root / r.path}{where}"


def read_csv_rows(path: Path) -> list[Row]:
    """Rows of a ``path,label[,split][,patient]`` manifest, or a multilabel one: ``path`` plus one 0/1 column per label."""
    rows, _ = read_manifest(path)
    return rows


def read_manifest(path: Path) -> tuple[list[Row], list[str] | None]:
    """Rows and, for a multilabel manifest, its label columns (the classes, in column order)."""
    with open_csv(path, f"manifest {path} not found", "check --dataset / --data-root") as table:
        header = table.columns
        label_cols = [h for h in table.fields if h.strip().lower() not in RESERVED_COLUMNS] if "label" not in header else []
        multilabel = "path" in header and len(label_cols) >= 2
        table.require(("path",) if multilabel else ("path", "label"),
                      "a manifest needs columns path,label (or path plus one 0/1 column per label) and optionally split, patient")
        rows = []
        for line, rec in table.records():
            p = (rec[header["path"]] or "").strip()
            lab = "" if multilabel else (rec[header["label"]] or "").strip()
            if not p or (not lab and not multilabel):
                raise MedfmError(f"{path} line {line}: empty {'path' if not p else 'label'}", "fill it in or delete the row")
            targets = None
            if multilabel:
                vals = [(rec[c] or "").strip() for c in label_cols]
                bad = [c for c, v in zip(label_cols, vals) if v not in ("0", "1", "0.0", "1.0")]
                if bad:
                    raise MedfmError(f"{path} line {line}: column {bad[0]} is {rec[bad[0]]!r}, not 0 or 1",
                                     "a multilabel manifest holds 0/1 in every label column")
                targets = tuple(int(float(v)) for v in vals)
            split = None
            if "split" in header:
                raw = (rec[header["split"]] or "").strip().lower()
                if raw and raw not in SPLIT_ALIASES:
                    raise MedfmError(
                        f"{path} line {line}: split {raw!r} is not train, val or test", "fix the split column"
                    )
                split = SPLIT_ALIASES.get(raw)  # empty: checked against the other rows in _split
            group = (rec[header["patient"]] or "").strip() or None if "patient" in header else None
            rows.append(Row(p, lab, split, line, group, targets))
    if not rows:
        raise MedfmError(f"{path}: the manifest has no rows", "add path,label rows")
    return rows, ([c.strip() for c in label_cols] if multilabel else None)


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
    *,
    task: str | None = None,
    plan: SplitPlan | None = None,
    images=FileImages,
    skip_bad: bool = False,
    check_images: bool | None = None,
    duplicates: str = USER_DEFAULT,
    rehash: bool = False,
    allow_missing_class: bool = False,
) -> Dataset:
    """Validate rows (files exist, labels known, no empty class), split them, and make the Dataset.

    Every problem names the file and row. With ``skip_bad`` a bad row (file missing, label unknown,
    image unreadable: every image is decoded once to find out) is dropped instead, and listed in
    ``Dataset.skipped`` and on the log; nothing is ever dropped silently.

    The identity covers every image's bytes (``content.hash_files``; ``rehash`` reads them all
    again). Identical images under two names are a duplicate group, handled by the ``duplicates``
    policy (``duplicates.py``); a path listed twice is an error under ``error``. A class that
    training does not see is an error unless ``allow_missing_class`` (then part of the identity).
    """
    plan = plan or SplitPlan(seed=seed)
    multilabel = task == "multilabel" or rows[0].targets is not None
    skipped: list[str] = []

    def bad(r: Row, problem: str, fix: str) -> None:
        if not skip_bad:
            raise MedfmError(f"{where(r, manifest, root)}: {problem}", fix)
        skipped.append(f"{root / r.path} ({where(r, manifest, root)}): {problem}")

    missing = [r for r in rows if not (root / r.path).exists()]
    if missing and not skip_bad:
        r = missing[0]
        raise MedfmError(
            f"{where(r, manifest, root)}: image {root / r.path} does not exist ({len(missing)} of {len(rows)} listed files are missing)",
            "fix the path column (paths are relative to the manifest's folder), or pass --skip-bad to skip such rows",
        )
    for r in missing:
        bad(r, "file does not exist", "")
    rows = [r for r in rows if (root / r.path).exists()] if missing else rows
    if multilabel:
        if classes is None:
            raise MedfmError(f"{manifest or root}: a multilabel dataset needs its label names", "add a header row")
    else:
        if classes is None:
            classes = _infer_classes(rows, manifest, root)
        index = {c: i for i, c in enumerate(classes)}
        for r in rows:
            if r.label not in index:
                bad(r, f"label {r.label!r} is not one of this dataset's classes ({', '.join(classes)})",
                    "fix the label, or use --dataset with the manifest path to let medfm infer the classes")
        rows = [r for r in rows if r.label in index]
    if skip_bad if check_images is None else check_images:
        rows = _decodable(rows, root, manifest, images, skipped)
    if not rows:
        raise MedfmError(f"{manifest or root}: no usable rows left", "see the skipped files listed above")
    if multilabel:
        labels = np.array([r.targets for r in rows], dtype=np.uint8)
        counts = (labels == 1).sum(axis=0)
    else:
        labels = np.array([index[r.label] for r in rows], dtype=np.int64)
        counts = np.bincount(labels, minlength=len(classes))
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        raise MedfmError(f"{manifest or root}: class(es) {', '.join(empty)} have no images",
                         "add images or drop the class (a class no sample has cannot be learned or scored)")

    parts, policy = _split(rows, labels, plan, manifest or root)
    content, groups, decided = _screen_duplicates(rows, labels, parts, classes, multilabel, root, manifest, images,
                                                  duplicates, rehash)
    missing_in_train = _check_classes_seen_in_train(parts, labels, classes, multilabel, manifest or root, allow_missing_class)
    splits = {
        s: Split([_row_id(rows[i]) for i in idx], labels[idx], images(root, [rows[i] for i in idx], manifest))
        for s, idx in parts.items()
    }
    digest = hashlib.sha256()
    for r, lab, body in zip(rows, labels, content):
        lab_txt = ",".join(map(str, lab)) if multilabel else lab
        extra = f"\t{r.group}\t{r.frame}" if (r.group is not None or r.frame is not None) else ""
        digest.update(f"{r.path}\t{lab_txt}\t{r.split}\t{body}{extra}\n".encode())
    identity = {"reader": "manifest" if manifest else "folder", "rows_sha256": digest.hexdigest(), "content": ALGORITHM,
                "split": policy}
    if decided.summary:
        identity["duplicates"] = decided.summary
    if missing_in_train:
        identity["allow_missing_class"] = missing_in_train
    task = "multilabel" if multilabel else ("binary" if len(classes) == 2 else "multiclass")
    notes = [policy["description"]] + ([f"skipped {len(skipped)} bad row(s) (--skip-bad)"] if skipped else [])
    notes += [decided.note] if decided.note else []
    ds = Dataset(name, task, list(classes), headline_metric, splits, identity, notes)
    ds.skipped = skipped
    ds.duplicates = groups
    return ds


def _screen_duplicates(rows: list[Row], labels: np.ndarray, parts: dict[str, np.ndarray], classes: list[str],
                       multilabel: bool, root: Path, manifest: Path | None, images, policy: str, rehash: bool):
    """Content digests of the rows, their duplicate groups, and the policy's decision (drops applied to ``parts``)."""
    if policy == "error":
        _refuse_repeated_paths(rows, manifest, root)
    content = _content_digests(rows, root, manifest, images, rehash)
    label_text = [",".join(map(str, lab)) if multilabel else classes[lab] for lab in labels]
    groups = find_groups({s: [content[i] for i in idx] for s, idx in parts.items()},
                         {s: [label_text[i] for i in idx] for s, idx in parts.items()},
                         lambda s, k: _short_where(rows[parts[s][k]], manifest))
    decided = resolve(groups, policy, str(manifest or root))
    for s, gone in decided.drop.items():
        parts[s] = np.delete(parts[s], sorted(gone))
    return content, groups, decided


def _check_classes_seen_in_train(parts: dict[str, np.ndarray], labels: np.ndarray, classes: list[str], multilabel: bool,
                                 source: Path, allow: bool) -> list[str]:
    """Refuse a class that val/test hold but train does not (unless ``allow``); return such classes."""
    unseen = _missing_in_train(parts, labels, classes, multilabel)
    if unseen and not allow:
        raise MedfmError(f"{source}: class(es) {', '.join(unseen)} have no training images but appear in "
                         + "; ".join(f"{c}: {'/'.join(where_seen)}" for c, where_seen in unseen.items()),
                         "add training images of the class, or pass --allow-missing-class to score it anyway")
    return list(unseen)


def _short_where(r: Row, manifest: Path | None) -> str:
    src = r.source or manifest
    return f"{r.path} ({src.name} line {r.line})" if src else r.path


def _refuse_repeated_paths(rows: list[Row], manifest: Path | None, root: Path) -> None:
    """The same file (and slice) listed twice is an error naming both rows."""
    seen: dict[tuple[str, int | None], Row] = {}
    for r in rows:
        key = (os.path.normpath(r.path), r.frame)
        if key in seen:
            first = seen[key]
            raise MedfmError(f"{root / r.path} is listed twice: {where(first, manifest, root)} and {where(r, manifest, root)}",
                             "delete one of the rows (one image must not be counted twice, nor sit in two splits)")
        seen[key] = r


def _infer_classes(rows: list[Row], manifest: Path | None, root: Path) -> list[str]:
    """Class names from the labels: all integers (sorted numerically) or all names; a mix is an error."""
    numeric = [r for r in rows if r.label.lstrip("-").isdigit()]
    if numeric and len(numeric) < len(rows):
        text = next(r for r in rows if not r.label.lstrip("-").isdigit())
        raise MedfmError(f"{manifest or root}: labels mix numbers and names ({numeric[0].label!r} at "
                         f"{where(numeric[0], manifest, root)}, {text.label!r} at {where(text, manifest, root)})",
                         "write every label the same way (all class names, or all class numbers)")
    found = {r.label for r in rows}
    return sorted(found, key=int) if numeric else sorted(found)


def _content_digests(rows: list[Row], root: Path, manifest: Path | None, images, rehash: bool) -> list[str]:
    """One digest per row: its file's sha256 (a multi-file row, e.g. a slice of several volumes: of them all, and the slice)."""
    source = images(root, rows, manifest)
    files = [[str(Path(p).relative_to(root)) for p in source.files(i)] if hasattr(source, "files") else [r.path]
             for i, r in enumerate(rows)]
    digests = hash_files(root, [f for fs in files for f in fs], rehash)
    out = []
    for r, fs in zip(rows, files):
        if len(fs) == 1 and r.frame is None:
            out.append(digests[fs[0]])
        else:
            out.append(hashlib.sha256(f"{'+'.join(digests[f] for f in fs)}#{r.frame}".encode()).hexdigest())
    return out


def _missing_in_train(parts: dict[str, np.ndarray], labels: np.ndarray, classes: list[str], multilabel: bool) -> dict[str, list[str]]:
    """Classes with no training sample (multilabel: no positive) that val or test holds -> those splits."""
    def present(idx: np.ndarray) -> np.ndarray:
        if multilabel:
            return (labels[idx] == 1).any(axis=0) if len(idx) else np.zeros(len(classes), bool)
        return np.bincount(labels[idx], minlength=len(classes)) > 0

    train, val, test = present(parts["train"]), present(parts["val"]), present(parts["test"])
    return {c: [s for s, on in (("val", v), ("test", t)) if on]
            for c, tr, v, t in zip(classes, train, val, test) if (v or t) and not tr}


def _row_id(r: Row) -> str:
    return r.path if r.frame is None else f"{r.path}#{r.frame}"


def _decodable(rows: list[Row], root: Path, manifest: Path | None, images, skipped: list[str]) -> list[Row]:
    """Rows whose image decodes (--skip-bad): each failure is recorded, never dropped silently."""
    from medfm.ui import progress

    source, keep = images(root, rows, manifest), []
    with progress() as bar:
        task = bar.add_task("check", total=len(rows), rate="")
        for i, r in enumerate(rows):
            try:
                source.load(i)
                keep.append(r)
            except Exception as exc:  # noqa: BLE001 - every decoder failure means "skip this file"
                skipped.append(f"{source.describe(i)}: unreadable ({getattr(exc, 'reason', exc)})")
            bar.update(task, advance=1)
    return keep


def _split(rows: list[Row], labels: np.ndarray, plan: SplitPlan, source: Path) -> tuple[dict[str, np.ndarray], dict]:
    given = [r.split for r in rows]
    groups = [r.group for r in rows]
    grouped = any(g is not None for g in groups)
    fractions = dict(plan.fractions)
    if all(s is None for s in given):
        parts = partition(labels, fractions, plan.seed, groups if grouped else None, plan.stratified)
        pct = "/".join(f"{round(v * 100)}" for v in fractions.values())
        kind = "stratified" if plan.stratified and labels.ndim == 1 else "random"
        desc = (f"{'no split column: ' if not grouped else ''}{kind} {pct} {'/'.join(fractions)} split"
                f"{', grouped (patient/lesion/subject)' if grouped else ''}, seed {plan.seed}")
        policy = {"policy": kind, "fractions": fractions, "seed": plan.seed, "description": desc}
        if grouped:
            policy["grouped"] = True
        return parts, policy
    if any(s is None for s in given):
        r = next(r for r in rows if r.split is None)
        raise MedfmError(f"{r.source or source} line {r.line}: empty split while other rows have one", "fill in the split column")
    given_arr = np.array(given)
    if not (given_arr == "test").any() or not (given_arr == "train").any():
        raise MedfmError(f"{source}: the split column needs both train and test rows", "fix the split column")
    parts = {s: np.flatnonzero(given_arr == s) for s in SPLITS}
    if len(parts["val"]):
        return parts, {"policy": "official", "description": "official split, as given by the dataset's files"}
    train = parts["train"]
    frac = plan.val_fraction
    carved = partition(labels[train], {"train": 1 - frac, "val": frac}, plan.seed,
                       [groups[i] for i in train] if grouped else None, plan.stratified)
    parts["train"], parts["val"] = train[carved["train"]], train[carved["val"]]
    desc = (f"official train/test split; val = stratified {frac:.0%} of train"
            f"{' grouped (patient/lesion/subject)' if grouped else ''}, seed {plan.seed}")
    policy = {"policy": "official+val_from_train", "val_fraction": frac, "seed": plan.seed, "description": desc}
    if grouped:
        policy["grouped"] = True
    return parts, policy

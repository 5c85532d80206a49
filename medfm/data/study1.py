"""Study 1's datasets exactly as its code read them: the ``study1_code`` protocols.

Study 1 is ``sajjad-sh33/Medical-Transfer-Learning`` at commit 02db977; every ``L<n>`` below is a
line of its ``defaults/datasets.py`` unless another file is named. Given the same files on disk,
these loaders put the same images, in the same order, with the same labels, into train/val/test
as the code's ``DataSet(params, mode='train' | 'eval' | 'test')`` (``defaults/wrappers.py:L129-131``),
quirks included:

- **Shuffled row numbers** (``defaults/bases.py:L247-262``): ``idxs = list(range(N))``,
  ``random.Random(42).shuffle(idxs)`` (Python's Mersenne Twister, not numpy), val+test = the first
  ``int(N * fraction)`` of them, train the rest; val+test is then halved at ``int(len / 2)``
  (val first). A ``val_ids.json`` already in the dataset folder is used instead, as the code does
  (L256-275; regenerated when its sizes do not match). Nothing is stratified or grouped.
- **PNG first** (``defaults/bases.py:L31-36``): when ``<image without extension>.png`` exists next
  to a listed ``.jpg``, the code loads the PNG; so do these loaders.
- **CheXpert's label slices** (L53-67): ``train.csv`` sorted by Path keeps pandas' original row
  numbers as its index, and ``.loc[:k]`` / ``.loc[k:]`` slice by *label*, inclusive: the rows up to
  and including the row whose original number is ``k``. So the holdout is cut where row
  ``k = int(0.2 N) + 15`` of the CSV lands after sorting, that row is in train AND in the holdout,
  and the row numbered ``int(len(holdout) / 2)`` is in val AND in test. Where the label is absent
  from a non-monotonic index pandas raises ``KeyError`` (the code stops); so does this loader.
  The boundary rows sit in two splits: ``--duplicates warn`` (the default) keeps and reports them.

The split never depends on ``--split-seed``; the code fixes it.
"""

from __future__ import annotations

import bisect
import json
import os
import random
from pathlib import Path

from medfm.data.base import Dataset
from medfm.data.manifest import Row
from medfm.data.studies import CHEXPERT_FINDINGS, LoadContext, ddsm_list_lines, layout, read_table
from medfm.errors import MedfmError

CODE = "sajjad-sh33/Medical-Transfer-Learning@02db977"


def validation_ids(total: int, fraction: float, json_path: Path) -> tuple[list[int], list[int], str]:
    """(train, val+test) row numbers as ``BaseSet.get_validation_ids`` gives them (``defaults/bases.py:L247-276``)."""
    idxs = list(range(total))
    val_size = int(total * fraction) if fraction < 1 else int(fraction)
    train_size = total - val_size
    if json_path.is_file():
        try:
            saved = json.loads(json_path.read_text())
        except (OSError, ValueError) as exc:
            raise MedfmError(f"{json_path}: not readable JSON ({exc})", "delete it (the code would fail on it too)") from None
        if isinstance(saved, dict):
            val, train = saved["val_split"], saved["train_split"]
        else:  # a bare list of val ids (L268-271); the train order is that of the set difference, as in the code
            val, train = saved, list(set(range(total)) - set(saved))
        if len(val) == val_size and len(train) == train_size:
            return list(train), list(val), f"val/test ids from {json_path.name} (defaults/bases.py:L263-271)"
    random.Random(42).shuffle(idxs)
    return idxs[val_size:], idxs[:val_size], "random.Random(42).shuffle(range(N)) (defaults/bases.py:L258)"


def png_first(root: Path, rel: str) -> str:
    """The code loads ``<path minus its last extension>.png`` when that file exists (``defaults/bases.py:L31-36``)."""
    full = str(root / rel)
    png = ".".join(full.split(".")[:-1]) + ".png"
    if png != full and os.path.exists(png):
        try:
            return Path(png).relative_to(root).as_posix()
        except ValueError:
            return rel
    return rel


def nested(root: Path, folder: str) -> str:
    """``folder\\folder`` in the code: the nested copy when present (Kaggle's zips unpack that way), else ``folder``."""
    return f"{folder}/{folder}" if (root / folder / folder).is_dir() else folder


def _finish(ctx: LoadContext, root: Path, rows: list[Row], manifest: Path | None, description: str,
            classes: list[str] | None = None, task: str | None = None) -> Dataset:
    ds = ctx.build(root, rows, manifest, ctx.plan(), classes=classes, task=task)
    official = ds.identity["split"]["description"]
    ds.identity["split"] = {"policy": "study1_code", "code": CODE, "description": description}
    ds.notes = [description if n == official else n for n in ds.notes]
    return ds


def _halves(ids: list[int]) -> tuple[list[int], list[int]]:
    """val / test from val+test (L224-225 for ISIC, L281-282 for APTOS)."""
    half = int(len(ids) / 2)
    return ids[:half], ids[half:]


def _shuffled_rows(ctx: LoadContext, root: Path, items: list[tuple[str, str, int]], fraction: float) -> tuple[list[Row], str]:
    """Rows (path, label, csv line) in the code's train, val, test order."""
    train, holdout, how = validation_ids(len(items), fraction, root / "val_ids.json")
    val, test = _halves(holdout)
    rows = []
    for split, ids in (("train", train), ("val", val), ("test", test)):
        for i in ids:
            path, label, line = items[i]
            rows.append(Row(png_first(root, path), label, split, line, source=ctx.path))
    return rows, how


# -- APTOS 2019: train_1.csv (id_code, diagnosis) + train_images\train_images/<id>.png (L268-295) -------------

@layout("study1_aptos")
def load_aptos_study1(ctx: LoadContext) -> Dataset:
    """APTOS as the code reads it: ``train_1.csv`` (L270), 70 / 15 / 15 of shuffled row numbers (L278-282).

    ``train_1.csv`` is not the competition's ``train.csv`` (3,662 rows): most likely the training part
    of a re-split Kaggle mirror of APTOS 2019, whose zips unpack to ``train_images/train_images/``. The code's image folder
    ``'train_images\\train_images'`` (L273) holds a tab (``\\t``), so the code as published cannot open
    the mirror's images; this reads ``train_images/train_images/`` (the mirror's layout), or
    ``train_images/`` when there is no nested folder.
    """
    root = ctx.path.parent
    folder = nested(root, "train_images")
    items = []
    for line, r in read_table(ctx.path, ("id_code", "diagnosis")):
        items.append((f"{folder}/{r['id_code']}.png", _grade(r["diagnosis"], ctx.path, line), line))
    rows, how = _shuffled_rows(ctx, root, items, 0.3)
    n = len(items)
    desc = (f"study 1's code: {ctx.path.name}, {n} rows; val+test = int({n} * 0.3) = {int(n * 0.3)} of {how}, "
            f"halved (defaults/datasets.py:L278-282)")
    return _finish(ctx, root, rows, ctx.path, desc)


def _grade(value: str, path: Path, line: int) -> str:
    try:
        return str(int(float(value)))
    except ValueError:
        raise MedfmError(f"{path} line {line}: diagnosis {value!r} is not a grade 0-4", "re-download the file") from None


# -- ISIC 2019: GroundTruth one-hot CSV + ISIC_2019_Training_Input\ISIC_2019_Training_Input/<image>.jpg (L210-238) --

@layout("study1_isic")
def load_isic_study1(ctx: LoadContext) -> Dataset:
    """ISIC 2019 as the code reads it: 80 / 10 / 10 of shuffled row numbers (L221-225).

    The label of a row is the position of its non-zero among the columns after ``image`` (L214:
    ``values[:, 1:].nonzero()[1]``): MEL=0 ... SCC=7 in the official column order. A row with no
    or several non-zeros would shift every later label in the code; here it is an error. A row
    marked UNK (position 8) is a label the code's 8-class head cannot take: an error (or skipped
    with ``--skip-bad``), after the split is drawn over all rows. The code also reads the metadata
    CSV (L213) but uses nothing from it. Images: ``ISIC_2019_Training_Input\\ISIC_2019_Training_Input``
    (L216) is the nested folder on Windows; the flat one is read when there is no nested one.
    """
    root = ctx.path.parent
    folder = nested(root, "ISIC_2019_Training_Input")
    names = list(ctx.entry.classes) + ["UNK"]
    items = []
    for line, r in read_table(ctx.path, ("image",)):
        columns = list(r)[1:]
        hot = [k for k, c in enumerate(columns) if _truthy(r[c], ctx.path, line, c)]
        if len(hot) != 1:
            raise MedfmError(f"{ctx.path} line {line}: {len(hot)} non-zero label columns (the code's "
                             "values[:, 1:].nonzero() would shift every later label, defaults/datasets.py:L214)",
                             "each GroundTruth row marks exactly one class with 1.0; re-download the file")
        label = names[hot[0]] if hot[0] < len(names) else columns[hot[0]]
        items.append((f"{folder}/{r['image']}.jpg", label, line))
    rows, how = _shuffled_rows(ctx, root, items, 0.2)
    n = len(items)
    desc = (f"study 1's code: {n} rows; val+test = int({n} * 0.2) = {int(n * 0.2)} of {how}, halved "
            f"(defaults/datasets.py:L221-225)")
    return _finish(ctx, root, rows, ctx.path, desc)


def _truthy(value: str, path: Path, line: int, column: str) -> bool:
    try:
        return float(value or 0) != 0.0
    except ValueError:
        raise MedfmError(f"{path} line {line}: column {column} is {value!r}, not a number", "re-download the file") from None


# -- CheXpert: train.csv, path-sorted, pandas label slices (L51-94) ------------------------------------------

@layout("study1_chexpert")
def load_chexpert_study1(ctx: LoadContext) -> Dataset:
    """CheXpert as the code reads it (module docstring: the label slices; L53-87 for the rest).

    Labels: the last 14 columns of ``train.csv`` (L72; checked to be the 14 observations), blank
    and -1 -> 0 (U-Zeros, L71-72), a row without a positive -> No Finding = 1 (L74-76);
    multilabel (``is_multiclass = False``, L19), frontal and lateral views alike. The image is the
    Path without its first folder, under the folder holding ``train.csv`` (L82-83).
    """
    root = ctx.path.parent
    findings = list(CHEXPERT_FINDINGS["14"])
    table = read_table(ctx.path, ("Path", *findings))
    last = list(table[0][1])[-len(findings):]
    if last != findings:
        raise MedfmError(f"{ctx.path}: the last 14 columns are {', '.join(last)}; the code reads them as the 14 "
                         "observations (defaults/datasets.py:L72)", "use the official train.csv, unedited")
    items = []  # (original row number = pandas index label, Path, targets, line)
    for number, (line, r) in enumerate(table):
        targets = [_u_zeros(r[f], ctx.path, line, f) for f in findings]
        if not any(targets):
            targets[findings.index("No Finding")] = 1
        items.append((number, r["Path"], tuple(targets), line))
    paths = [it[1] for it in items]
    if len(set(paths)) != len(paths):
        raise MedfmError(f"{ctx.path}: a Path is listed twice (the code's sort would then order rows arbitrarily)",
                         "use the official train.csv, unedited")
    ordered = sorted(items, key=lambda it: it[1])  # datainfo.sort_values(by=['Path']) (L55)
    k = int(len(ordered) * 0.2) + 15  # L57
    labels = [it[0] for it in ordered]
    train = ordered[_loc_start(labels, k, ctx.path):]  # datainfo.loc[k:] (L61)
    holdout = ordered[:_loc_stop(labels, k, ctx.path)]  # datainfo.loc[:k] (L63)
    half = int(len(holdout) / 2)
    hold_labels = [it[0] for it in holdout]
    val = holdout[:_loc_stop(hold_labels, half, ctx.path)]  # data.loc[:int(len(data)/2)] (L65)
    test = holdout[_loc_start(hold_labels, half, ctx.path):]  # data.loc[int(len(data)/2):] (L67)
    rows = []
    for split, part in (("train", train), ("val", val), ("test", test)):
        for _, path, targets, line in part:
            rel = "/".join(path.split("/")[1:])  # os.path.join(root_dir, *img_path.split('/')[1:]) (L83)
            rows.append(Row(png_first(root, rel), "", split, line, targets=targets, source=ctx.path))
    desc = (f"study 1's code: train.csv sorted by Path ({len(ordered)} rows); .loc label slices at row "
            f"int({len(ordered)} * 0.2) + 15 = {k} -> holdout {len(holdout)} (val {len(val)}, test {len(test)}), "
            f"train {len(train)}; the boundary rows sit in two splits (defaults/datasets.py:L53-67)")
    ctx.notes.append("U-Zeros (blank and -1 -> 0); a row without a positive -> No Finding = 1 (defaults/datasets.py:L71-76)")
    return _finish(ctx, root, rows, None, desc, classes=findings, task="multilabel")


def _u_zeros(value: str, path: Path, line: int, column: str) -> int:
    try:
        v = float(value) if value else 0.0  # fillna(0) (L72)
    except ValueError:
        raise MedfmError(f"{path} line {line}: {column} is {value!r}, not 1, 0, -1 or blank", "re-download the file") from None
    if v not in (1.0, 0.0, -1.0):
        raise MedfmError(f"{path} line {line}: {column} is {value!r}, not 1, 0, -1 or blank", "re-download the file")
    return 1 if v == 1.0 else 0  # replace(-1, 0) (L72)


def _loc_start(labels: list[int], label: int, path: Path) -> int:
    """Position where pandas ``.loc[label:]`` starts on an index holding ``labels`` (unique)."""
    return _slice_bound(labels, label, "left", path)


def _loc_stop(labels: list[int], label: int, path: Path) -> int:
    """Position where pandas ``.loc[:label]`` stops (exclusive) — the label's row is included."""
    return _slice_bound(labels, label, "right", path)


def _slice_bound(labels: list[int], label: int, side: str, path: Path) -> int:
    """pandas ``Index.get_slice_bound``: the label's position; an absent label only on a monotonic index."""
    try:
        at = labels.index(label)
        return at if side == "left" else at + 1
    except ValueError:
        pass
    if all(a < b for a, b in zip(labels, labels[1:])):  # pandas searchsorts a monotonic index
        return (bisect.bisect_left if side == "left" else bisect.bisect_right)(labels, label)
    if all(a > b for a, b in zip(labels, labels[1:])):  # decreasing: on the reversed index, sides swapped
        rev = labels[::-1]
        return len(labels) - (bisect.bisect_right if side == "left" else bisect.bisect_left)(rev, label)
    raise MedfmError(f"{path}: study 1's code fails on this file: row {label} is not in the slice it cuts "
                     "(pandas .loc on an unsorted index raises KeyError, defaults/datasets.py:L61-67)",
                     f"use another protocol (chexpert:study) — {CODE} cannot read this train.csv either")


# -- DDSM: ddsm_raw_image_lists/{train,val,test}.txt, label = file-name prefix (L120-155) ----------------------

DDSM_LABELS = {"normal": 0, "benign": 1, "cancer": 2}  # txt_to_lbl (L131)


@layout("study1_ddsm")
def load_ddsm_study1(ctx: LoadContext) -> Dataset:
    """DDSM as the code reads it in its default 2-class, whole-image mode (``n_class=2, is_patch=False``, L104).

    Each list is ``pd.read_csv(sep=' ', header=None)`` (L122): blank lines are skipped, a line
    with a space makes pandas fail (an error here). The label is the file name up to its first
    ``_``, matched exactly (``normal`` / ``benign`` / ``cancer``; another prefix is the code's
    KeyError, an error here); benign and cancer become class 1 (L136-137, which the code names
    'Cancer', L173-176; here ``abnormal``). Images are ``ddsm_raw/<line>`` (L133), PNG first.
    """
    classes = ["normal", "abnormal"]
    rows = []
    for split, lst, line, text in ddsm_list_lines(ctx.path):
        text = text.rstrip("\r")
        if not text:
            continue
        if " " in text:
            raise MedfmError(f"{lst} line {line}: holds a space, which the code's pd.read_csv(sep=' ') cannot read "
                             "as one column (defaults/datasets.py:L122-130)", "one image path per line")
        prefix = os.path.basename(text).split("_")[0]
        if prefix not in DDSM_LABELS:
            raise MedfmError(f"{lst} line {line}: file name prefix {prefix!r} is not normal, benign or cancer "
                             "(the code's txt_to_lbl, defaults/datasets.py:L131-135)", "fix the list")
        label = classes[min(DDSM_LABELS[prefix], 1)]
        rows.append(Row(png_first(ctx.path, f"ddsm_raw/{text}"), label, split, line, source=lst))
    desc = ("study 1's code: the fixed lists ddsm_raw_image_lists/{train,val,test}.txt; normal vs benign + cancer "
            "(defaults/datasets.py:L120-155)")
    return _finish(ctx, ctx.path, rows, None, desc, classes=classes)

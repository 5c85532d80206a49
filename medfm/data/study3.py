"""Study 3's chest X-ray split exactly as its code drew it: ``chest_xray_pneumonia:study3_code``.

Study 3 is ``GuanghuiFU/medical_dino_eval`` (HEAD f2b17be); ``L<n>`` are lines of its ``utils.py``
unless another file is named. Its training set is ``BIUDataset`` over ``chest_xray/train/NORMAL``
(label 0) then ``chest_xray/train/PNEUMONIA`` (label 1) (``train_model.py:L16-19``): each folder's
``os.listdir`` order (L274-275), the whole list shuffled by Python's ``random`` seeded 1
(L7, ``train_model.py:L5``; L276), then ``torch.utils.data.random_split`` into ``int(0.8 N)`` train
and the rest val (L254-256), i.e. ``torch.randperm(N)`` from torch's default generator seeded 1
(``train_model.py:L4``). The official ``val/`` folder is never read. The test set is
``chest_xray/test/{NORMAL,PNEUMONIA}`` (``inference_biu.py:L15-20``), in the order the same shuffle
gives it (it does not change any metric).

``os.listdir`` order depends on the file system: on the same files on the same file system it is
the order the code saw, elsewhere the split differs. ``torch.randperm`` is the installed torch's.
"""

from __future__ import annotations

import os
import random

from medfm.data.base import Dataset
from medfm.data.manifest import Row
from medfm.data.studies import LoadContext, layout
from medfm.errors import MedfmError

CODE = "GuanghuiFU/medical_dino_eval@f2b17be"
CLASSES = ("NORMAL", "PNEUMONIA")  # paths_labels, train_model.py:L16-19 (dict order = label order)


def _listed(root, split: str) -> list[tuple[str, str]]:
    """(relative path, class) of ``<split>/NORMAL`` then ``<split>/PNEUMONIA``, in ``os.listdir`` order (L274-275)."""
    items = []
    for cls in CLASSES:
        folder = root / split / cls
        if not folder.is_dir():
            raise MedfmError(f"{folder} not found", "study 3's code reads chest_xray/{train,test}/{NORMAL,PNEUMONIA}/")
        items += [(f"{split}/{cls}/{name}", cls) for name in os.listdir(folder)]
    random.Random(1).shuffle(items)  # random.seed(1) at import (L7), random.shuffle(self.images) (L276)
    return items


@layout("study3_folders")
def load_chest_xray_study3(ctx: LoadContext) -> Dataset:
    import torch

    root = ctx.path
    train = _listed(root, "train")
    n_train = int(0.8 * len(train))  # L254
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(1)).tolist()  # random_split, L256
    rows = [Row(path, cls, "train", 0) for path, cls in (train[i] for i in order[:n_train])]
    rows += [Row(path, cls, "val", 0) for path, cls in (train[i] for i in order[n_train:])]
    rows += [Row(path, cls, "test", 0) for path, cls in _listed(root, "test")]
    ds = ctx.build(root, rows, None, ctx.plan())
    official = ds.identity["split"]["description"]
    desc = (f"study 3's code: train/ in os.listdir order, random.Random(1).shuffle, random_split "
            f"int(0.8 * {len(train)}) = {n_train} train / {len(train) - n_train} val by torch.randperm (seed 1); "
            f"test/ as test; val/ unused (utils.py:L251-276)")
    ds.identity["split"] = {"policy": "study3_code", "code": CODE, "description": desc}
    ds.notes = [desc if n == official else n for n in ds.notes]
    return ds

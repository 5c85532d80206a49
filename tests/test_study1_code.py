"""``<dataset>:study1_code``: the image lists of study 1's code, and its metrics.

Each test writes a tiny tree in the layout study 1's code reads (real PNG/JPEG files, CSVs with the
real column names), re-implements here, from the code (sajjad-sh33/Medical-Transfer-Learning
@02db977, ``defaults/datasets.py`` and ``defaults/bases.py``), what its ``DataSet(mode=...)``
lists, and asserts medfm's train/val/test lists are the same, in the same order, with the same
labels. The reference below imports nothing from medfm.
"""

from __future__ import annotations

import bisect
import csv
import json
import os
import random

import numpy as np
import pytest
from sklearn import metrics as skm

from medfm.data import create_dataset
from medfm.errors import MedfmError
from medfm.metrics import METRICS, compute_metrics
from tests.dataset_trees import write_csv, write_png

CHEXPERT_14 = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
               "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
               "Fracture", "Support Devices"]
ISIC_HEADER = ["image", "MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]


# -- the reference: study 1's dataset code, re-written without pandas -----------------------------------------

def ref_validation_ids(total, val_size, json_path):
    """defaults/bases.py:L247-276 (reading an existing val_ids.json; never writing one here)."""
    idxs = list(range(total))
    if val_size < 1:
        val_size = int(total * val_size)
    train_size = total - val_size
    if os.path.isfile(json_path):
        with open(json_path) as f:
            s = json.load(f)
        if isinstance(s, dict):
            val_split, train_split = s["val_split"], s["train_split"]
        else:
            val_split = s
            train_split = list(set(range(total)) - set(val_split))
        if val_size == len(val_split) and train_size == len(train_split):
            return train_split, val_split
    random.Random(42).shuffle(idxs)
    return idxs[val_size:], idxs[:val_size]


def ref_png(img_path):
    """defaults/bases.py:L31-36: a .png next to the listed file is what gets loaded."""
    png_path = ".".join(img_path.split(".")[:-1]) + ".png"
    return png_path if os.path.exists(png_path) else img_path


def ref_shuffled(root, paths, labels, fraction):
    """APTOS (L277-295) and ISIC (L220-238): modes train / eval / test."""
    train_ids, test_val_ids = ref_validation_ids(len(paths), fraction, os.path.join(root, "val_ids.json"))
    val_ids = test_val_ids[:int(len(test_val_ids) / 2)]
    test_ids = test_val_ids[int(len(test_val_ids) / 2):]
    return {mode: [(ref_png(paths[i]), labels[i]) for i in ids]
            for mode, ids in (("train", train_ids), ("val", val_ids), ("test", test_ids))}


def ref_aptos(root):
    with open(os.path.join(root, "train_1.csv")) as f:
        info = list(csv.DictReader(f))
    paths = [os.path.join(root, "train_images/train_images", r["id_code"] + ".png") for r in info]
    return ref_shuffled(root, paths, [int(r["diagnosis"]) for r in info], 0.3)


def ref_isic(root):
    with open(os.path.join(root, "ISIC_2019_Training_GroundTruth.csv")) as f:
        info = list(csv.reader(f))[1:]
    labels = [[k for k, v in enumerate(r[1:]) if float(v)][0] for r in info]  # values[:, 1:].nonzero()[1]
    paths = [os.path.join(root, "ISIC_2019_Training_Input/ISIC_2019_Training_Input", r[0] + ".jpg") for r in info]
    return ref_shuffled(root, paths, labels, 0.2)


def pandas_loc(frame, start=None, stop=None):
    """``frame.loc[start:stop]`` for a frame given as [(index label, row)], labels unique (pandas slice_locs)."""
    labels = [lab for lab, _ in frame]

    def bound(label, side):
        if label in labels:
            return labels.index(label) + (side == "right")
        if labels == sorted(labels):
            return (bisect.bisect_left if side == "left" else bisect.bisect_right)(labels, label)
        if labels == sorted(labels, reverse=True):
            pos = (bisect.bisect_right if side == "left" else bisect.bisect_left)(labels[::-1], label)
            return len(labels) - pos
        raise KeyError(label)

    lo = 0 if start is None else bound(start, "left")
    hi = len(frame) if stop is None else bound(stop, "right")
    return frame[lo:hi]


def ref_chexpert(root):
    """defaults/datasets.py:L51-87, mode train / eval / test."""
    with open(os.path.join(root, "train.csv")) as f:
        reader = csv.reader(f)
        header = next(reader)
        frame = list(enumerate(dict(zip(header, r)) for r in reader))
    frame = sorted(frame, key=lambda lr: lr[1]["Path"])  # sort_values(by=['Path']), index kept
    testval_size = int(len(frame) * 0.2) + 15
    out = {}
    for mode in ("train", "val", "test"):
        if mode == "train":
            data = pandas_loc(frame, start=testval_size)
        else:
            data = pandas_loc(frame, stop=testval_size)
            data = pandas_loc(data, stop=int(len(data) / 2)) if mode == "val" else pandas_loc(data, start=int(len(data) / 2))
        labels = []
        for _, row in data:
            lab = [0 if row[c] in ("", "-1", "-1.0") else int(float(row[c])) for c in header[-14:]]
            if sum(lab) == 0:
                lab[0] = 1
            labels.append(lab)
        paths = [os.path.join(root, *row["Path"].split("/")[1:]) for _, row in data]
        out[mode] = [(ref_png(p), lab) for p, lab in zip(paths, labels)]
    return out


def ref_ddsm(root):
    """defaults/datasets.py:L120-155, 2-class whole images."""
    txt_to_lbl = {"normal": 0, "benign": 1, "cancer": 2}
    out = {}
    for mode in ("train", "val", "test"):
        with open(os.path.join(root, "ddsm_raw_image_lists", f"{mode}.txt")) as f:
            lines = [ln.strip() for ln in f if ln.strip()]
        out[mode] = [(ref_png(os.path.join(root, "ddsm_raw", p)), min(txt_to_lbl[os.path.basename(p).split("_")[0]], 1))
                     for p in lines]
    return out


def medfm_lists(ds, root):
    return {s: [(os.path.join(str(root), i), lab.tolist() if np.ndim(lab) else int(lab))
                for i, lab in zip(ds.splits[s].ids, ds.splits[s].labels)] for s in ("train", "val", "test")}


# -- synthetic trees in the code's layouts ------------------------------------------------------------------

def aptos_tree(root, n=47):
    d = root / "aptos2019"
    ids = [f"{i:04x}c0de{i:02d}" for i in range(n)]
    grades = [i % 5 for i in range(n)]
    for i, code in enumerate(ids):
        write_png(d / "train_images" / "train_images" / f"{code}.png", 1000 + i)
    write_csv(d / "train_1.csv", ["id_code", "diagnosis"], [[c, g] for c, g in zip(ids, grades)])
    return d


def isic_tree(root, n=43):
    d = root / "isic2019"
    rows = []
    for k in range(n):
        name = f"ISIC_{k:07d}"
        write_png(d / "ISIC_2019_Training_Input" / "ISIC_2019_Training_Input" / f"{name}.jpg", 2000 + k)
        rows.append([name] + [f"{float(i == k % 8)}" for i in range(8)] + ["0.0"])
    write_png(d / "ISIC_2019_Training_Input" / "ISIC_2019_Training_Input" / "ISIC_0000005.png", 2999)  # PNG first
    write_csv(d / "ISIC_2019_Training_GroundTruth.csv", ISIC_HEADER, rows)
    return d


def chexpert_tree(root, patients=50, presorted=False):
    """Paths as in CheXpert's train.csv: a patient's later study listed first (so not sorted), both views."""
    d = root / "CheXpert-v1.0-small"
    rng = np.random.default_rng(7)
    records = []
    for p in range(1, patients + 1):
        for study in ((2, 1) if p % 3 == 0 else (1,)):
            for view in (("view1_frontal", "view2_lateral") if p % 2 else ("view1_frontal",)):
                records.append(f"CheXpert-v1.0-small/train/patient{p:05d}/study{study}/{view}.jpg")
    if presorted:
        records.sort()
    rows = []
    for k, path in enumerate(records):
        write_png(root / path, 3000 + k, mode="L")
        vals = rng.choice(["1.0", "0.0", "", "-1.0"], size=14, p=[0.3, 0.3, 0.3, 0.1]).tolist()
        vals[0] = "" if k % 4 else "1.0"
        rows.append([path, "Female", 60, "Lateral" if "lateral" in path else "Frontal", "AP"] + vals)
    write_csv(d / "train.csv", ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"] + CHEXPERT_14, rows)
    return d


def ddsm_tree(root):
    d = root / "DDSM"
    lists = {"train": [f"{c}_{k:04d}_LEFT_CC.jpg" for k, c in enumerate(["normal", "benign", "cancer"] * 5)],
             "val": [f"cases/{c}_{k:04d}_RIGHT_MLO.jpg" for k, c in enumerate(["cancer", "normal", "benign", "normal"])],
             "test": [f"{c}_{k:04d}_LEFT_MLO.jpg" for k, c in enumerate(["normal", "cancer", "benign", "normal"])]}
    for split, names in lists.items():
        for k, name in enumerate(names):
            write_png(d / "ddsm_raw" / name, 4000 + 100 * len(split) + k, mode="L")
        (d / "ddsm_raw_image_lists").mkdir(parents=True, exist_ok=True)
        (d / "ddsm_raw_image_lists" / f"{split}.txt").write_text("\n".join(names) + "\n\n")
    write_png(d / "ddsm_raw" / "normal_0000_LEFT_CC.png", 4999, mode="L")  # PNG first
    return d


# -- the lists ---------------------------------------------------------------------------------------------

def test_aptos_and_isic_lists_are_the_codes_random_42_shuffle(tmp_path):
    d = aptos_tree(tmp_path)
    ds = create_dataset("aptos2019:study1_code", data_root=tmp_path, seed=3)  # --split-seed does not move it
    assert medfm_lists(ds, d) == ref_aptos(str(d))
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [47 - 14, 7, 7]  # int(47 * 0.3) = 14, halved
    assert ds.headline_metric == "quadratic_kappa" and ds.identity["split"]["policy"] == "study1_code"
    assert ds.identity["protocol"] == "study1_code"
    (d / "train_1.csv").rename(d / "train.csv")  # the competition's file name: not what the code reads
    with pytest.raises(MedfmError, match="train_1.csv not found"):
        create_dataset("aptos2019:study1_code", data_root=tmp_path)

    d = isic_tree(tmp_path)
    ds = create_dataset("isic2019:study1_code", data_root=tmp_path)
    assert medfm_lists(ds, d) == ref_isic(str(d))
    assert any(i.endswith("ISIC_0000005.png") for s in ds.splits.values() for i in s.ids)
    assert ds.headline_metric == "recall_macro"
    # a val_ids.json left by an earlier run of the code is what the code (and medfm) use
    saved = list(range(43))
    random.Random(5).shuffle(saved)
    (d / "val_ids.json").write_text(json.dumps(saved[:8]))
    again = create_dataset("isic2019:study1_code", data_root=tmp_path)
    assert medfm_lists(again, d) == ref_isic(str(d)) != medfm_lists(ds, d)


@pytest.mark.parametrize("presorted", [False, True])
def test_chexpert_lists_are_the_codes_pandas_label_slices(tmp_path, presorted):
    d = chexpert_tree(tmp_path, presorted=presorted)
    ds = create_dataset("chexpert:study1_code", data_root=tmp_path)
    ref = ref_chexpert(str(d))
    assert medfm_lists(ds, d) == ref
    assert ds.task == "multilabel" and ds.headline_metric == "roc_auc_study1"
    shared = {p for p, _ in ref["train"]} & {p for p, _ in ref["val"] + ref["test"]}
    assert len(shared) == 1  # the row labelled int(0.2 N) + 15 is in train and in the holdout, as in the code
    assert ds.identity.get("duplicates")  # and reported as a group across splits


def test_chexpert_file_the_code_cannot_slice_is_an_error(tmp_path):
    d = chexpert_tree(tmp_path)
    with open(d / "train.csv") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    # rows k+1, k-1, k (k = int(0.2 N) + 15) first in path order: the holdout is those 3 rows, unsorted by
    # row number, and the row numbered int(3 / 2) = 1 is not among them: pandas raises KeyError
    k = int(len(body) * 0.2) + 15
    for row, prefix in ((k + 1, "Aa"), (k - 1, "Ab"), (k, "Ac")):
        body[row][0] = body[row][0].replace("train/patient", f"train/{prefix}patient")
        write_png(tmp_path / body[row][0], 5000 + row, mode="L")
    write_csv(d / "train.csv", header, body)
    with pytest.raises(KeyError):
        ref_chexpert(str(d))
    with pytest.raises(MedfmError, match="study 1's code fails on this file"):
        create_dataset("chexpert:study1_code", data_root=tmp_path)


def test_ddsm_lists_and_protocol_options_are_fixed(tmp_path):
    d = ddsm_tree(tmp_path)
    ds = create_dataset("ddsm:study1_code", data_root=tmp_path)
    assert medfm_lists(ds, d) == ref_ddsm(str(d))
    assert ds.classes == ["normal", "abnormal"] and ds.headline_metric == "roc_auc_study1"
    with pytest.raises(MedfmError, match="takes no options"):
        create_dataset("ddsm:study1_code?seed=1", data_root=tmp_path)
    (d / "ddsm_raw_image_lists" / "test.txt").write_text("Normal_0001_LEFT_MLO.jpg\n")
    with pytest.raises(MedfmError, match="prefix 'Normal'"):
        create_dataset("ddsm:study1_code", data_root=tmp_path)


# -- the metrics -------------------------------------------------------------------------------------------

def test_study1_mean_auc_scores_a_label_without_positives_0_5():
    rng = np.random.default_rng(0)
    y = (rng.random((40, 3)) < 0.4).astype(np.uint8)
    y[:, 1] = 0  # no positives
    p = rng.random((40, 3))
    per = [skm.roc_auc_score(y[:, 0], p[:, 0]), 0.5, skm.roc_auc_score(y[:, 2], p[:, 2])]
    assert METRICS.get("roc_auc_study1").fn(y, p) == pytest.approx(np.mean(per), abs=1e-9)
    assert METRICS.get("roc_auc").fn(y, p) == pytest.approx(np.mean([per[0], per[2]]))  # medfm's skips it
    y[:, 1] = 1  # positives but no negatives: the code's sklearn call raises
    assert np.isnan(METRICS.get("roc_auc_study1").fn(y, p))


def test_one_vs_one_auc_matches_sklearn_and_the_code_falls_back_to_0_5():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(4), [25, 15, 12, 8])  # unequal classes: with equal ones, macro ovo = macro ovr
    logits = rng.normal(size=(60, 4)) + 1.5 * np.eye(4)[y] * rng.random((60, 1))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ovo = skm.roc_auc_score(y, p, multi_class="ovo")
    assert METRICS.get("roc_auc_ovo").fn(y, p) == pytest.approx(ovo, abs=1e-12)
    assert METRICS.get("roc_auc_study1").fn(y, p) == pytest.approx(ovo, abs=1e-12)
    assert abs(ovo - METRICS.get("roc_auc").fn(y, p)) > 1e-6  # one-vs-rest differs on these scores
    assert METRICS.get("roc_auc_study1").fn(y[y != 3], p[y != 3]) == 0.5  # a class absent: the code's 0.5
    assert np.isnan(METRICS.get("roc_auc_ovo").fn(y[y != 3], p[y != 3]))
    out = compute_metrics("multiclass", y, p)
    assert {"roc_auc", "roc_auc_ovo", "roc_auc_study1", "recall_macro"} <= set(out)
    pred = p.argmax(1)
    assert out["recall_macro"] == pytest.approx(skm.recall_score(y, pred, average="macro", zero_division=0))


# -- study 3 (GuanghuiFU/medical_dino_eval): chest_xray_pneumonia:study3_code ----------------------------------

def ref_study3(root):
    """utils.py:L251-276 with train_model.py:L4-5 (torch.manual_seed(1), random.seed(1)) and inference_biu.py:L15-20."""
    import torch

    def biu(split):
        random.seed(1)
        images = []
        for path, label in ((os.path.join(root, split, "NORMAL"), 0), (os.path.join(root, split, "PNEUMONIA"), 1)):
            images.extend([(os.path.join(path, img), label) for img in os.listdir(path)])
        random.shuffle(images)
        return images

    images = biu("train")
    torch.manual_seed(1)
    train_size = int(0.8 * len(images))
    train, val = torch.utils.data.random_split(images, [train_size, len(images) - train_size])
    return {"train": [images[i] for i in train.indices], "val": [images[i] for i in val.indices], "test": biu("test")}


def test_study3_chest_xray_split_is_the_codes_shuffle_and_random_split(tmp_path):
    d = tmp_path / "chest_xray"
    for split, n in (("train", 23), ("test", 9), ("val", 2)):
        for k in range(n):
            cls = "PNEUMONIA" if k % 3 else "NORMAL"
            write_png(d / split / cls / f"person{k}_{split}.jpeg", 6000 + 100 * len(split) + k, mode="L")
    ds = create_dataset("chest_xray_pneumonia:study3_code", data_root=tmp_path)
    assert medfm_lists(ds, d) == ref_study3(str(d))
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [18, 5, 9]  # the official val/ is not read
    assert ds.headline_metric == "accuracy" and ds.identity["split"]["policy"] == "study3_code"


# -- the code's normalisation: --norm protocol -------------------------------------------------------------

def test_norm_protocol_is_the_codes_own_mean_and_std_pixel_exact(tmp_path):
    """``--norm protocol`` normalises a ``:study1_code`` dataset with the numbers its class holds (DDSM (0.286,),
    (0.267,), defaults/datasets.py:L157-163; APTOS 3 channels, L246-247): the whole transform against
    torchvision's own Resize((S, S)) -> CenterCrop -> ToTensor -> Normalize, written here."""
    import torch
    from torchvision import transforms as T

    from medfm.backbones import Backbone
    from medfm.cache.fingerprint import fingerprint
    from medfm.config import FinetuneConfig
    from medfm.finetune.runner import finetune_inputs

    ddsm_tree(tmp_path)
    common = dict(backbone="mobilenetv2", weights="random", dataset="ddsm:study1_code", data_root=str(tmp_path),
                  img_size=32, resize="squash", resize_size=40, grey="red", epochs=1)
    dataset, spec = finetune_inputs(FinetuneConfig(**common, norm="protocol"))
    assert spec.data_config["mean"] == (0.286,) * 3 and spec.data_config["std"] == (0.267,) * 3
    norm = spec.data_config["norm"]
    assert (norm["kind"], norm["protocol"], norm["channels"]) == ("protocol", "ddsm:study1_code", 1)
    assert norm["code"].startswith("defaults/datasets.py:L157-163")
    img = dataset.splits["train"].images.load(0)
    ref = T.Compose([T.Resize((40, 40)), T.CenterCrop(32), T.ToTensor(), T.Normalize((0.286,) * 3, (0.267,) * 3)])
    got = Backbone(spec, torch.nn.Identity()).transform(img)
    torch.testing.assert_close(got, ref(img.convert("RGB")), rtol=0, atol=0)
    _, by_stats = finetune_inputs(FinetuneConfig(**common, norm="dataset"))
    assert fingerprint(by_stats.identity()) != fingerprint(spec.identity())  # the two modes never share a cache

    aptos_tree(tmp_path)
    _, aptos = finetune_inputs(FinetuneConfig(**{**common, "dataset": "aptos2019:study1_code", "grey": "repeat"},
                                              norm="protocol"))
    assert aptos.data_config["mean"] == (0.415, 0.221, 0.073) and aptos.data_config["std"] == (0.275, 0.150, 0.081)


def test_norm_protocol_without_declared_statistics_is_one_clear_error(tmp_path):
    from medfm.config import FinetuneConfig
    from medfm.finetune.runner import finetune_inputs

    ddsm_tree(tmp_path)
    cfg = FinetuneConfig(backbone="mobilenetv2", weights="random", dataset="ddsm:study", data_root=str(tmp_path),
                         img_size=32, norm="protocol", epochs=1)
    with pytest.raises(MedfmError, match=r"ddsm:study declares no normalisation statistics") as exc:
        finetune_inputs(cfg)
    assert "ddsm:study1_code" in exc.value.fix and "--norm dataset" in exc.value.fix


def test_datasets_present_column_names_a_protocol_whose_own_file_is_missing(tmp_path):
    """`medfm datasets`: APTOS's train.csv alone is "yes" but not for :study1_code (which reads train_1.csv);
    train_1.csv alone is only :study1_code."""
    from medfm.data.zoo import DATASETS, files_present

    aptos = DATASETS.get("aptos2019")
    assert files_present(aptos, None) == "no" and files_present(aptos, tmp_path) == "no"
    (tmp_path / "aptos2019").mkdir()
    (tmp_path / "aptos2019" / "train.csv").write_text("id_code,diagnosis\n")
    assert files_present(aptos, tmp_path) == "yes (not :study1_code)"
    (tmp_path / "aptos2019" / "train_1.csv").write_text("id_code,diagnosis\n")
    assert files_present(aptos, tmp_path) == "yes"
    (tmp_path / "aptos2019" / "train.csv").unlink()
    assert files_present(aptos, tmp_path) == "only :study1_code"

"""The studies' datasets read from tiny trees in their real on-disk layouts (real CSV columns, PNG/JPEG,
DICOM written by pydicom, NIfTI by nibabel): labels, splits and counts checked exactly."""

import csv

import numpy as np
import pytest
from dataset_trees import (APTOS_GRADES, CBIS_ROWS, CHEXPERT_OBS, HAM_CLASSES, ISIC_CLASSES, aptos_tree, amd_tree, brats_tree,
                           cbis_tree, chest_xray_tree, chexpert_tree, chexpert_value, ham_tree, idrid_tree, isic_tree,
                           write_csv, write_dicom, write_png)

from medfm.data import create_dataset
from medfm.data.images import ImageReadError
from medfm.data.splits import split_table
from medfm.errors import MedfmError
from medfm.metrics import IGNORE, roc_auc


def n_per_split(ds):
    return {s: len(sp) for s, sp in ds.splits.items()}


def label_of(ds):
    """{id: label name (or targets tuple)} over all splits."""
    out = {}
    for sp in ds.splits.values():
        for i, lab in zip(sp.ids, sp.labels):
            out[i] = tuple(int(v) for v in lab) if np.ndim(lab) else ds.classes[int(lab)]
    return out


def split_of(ds):
    return {i: s for s, sp in ds.splits.items() for i in sp.ids}


def assert_no_group_in_two_splits(ds, group_of):
    seen = {}
    for s, sp in ds.splits.items():
        for i in sp.ids:
            g = group_of(i)
            assert seen.setdefault(g, s) == s, f"group {g} in {seen[g]} and {s}"
    return seen


# -- APTOS 2019 --------------------------------------------------------------------------------------------

def test_aptos_study_protocol_random_70_15_15_seed_42(tmp_path):
    d = aptos_tree(tmp_path)
    ds = create_dataset("aptos2019", tmp_path)
    assert ds.name == "aptos2019" and ds.classes == ["0", "1", "2", "3", "4"] and ds.headline_metric == "quadratic_kappa"
    assert n_per_split(ds) == {"train": 13, "val": 4, "test": 3}  # 20 rows, largest-remainder 70/15/15, one each first
    truth = {f"train_images/{r['id_code']}.png": r["diagnosis"] for r in csv.DictReader(open(d / "train.csv"))}
    assert label_of(ds) == truth
    assert np.bincount(np.concatenate([s.labels for s in ds.splits.values()])).tolist() == np.bincount(APTOS_GRADES).tolist()
    assert ds.identity["protocol"] == "study" and ds.identity["split"]["seed"] == 42
    assert ds.identity["split"]["policy"] == "random"
    assert create_dataset("aptos2019", tmp_path, seed=7).identity == ds.identity  # the study fixes seed 42


def test_aptos_stratified_protocol_puts_every_grade_in_every_split(tmp_path):
    aptos_tree(tmp_path)
    ds = create_dataset("aptos2019:stratified", tmp_path, seed=3)
    assert ds.name == "aptos2019:stratified" and ds.identity["split"]["seed"] == 3
    for sp in ds.splits.values():
        assert sorted(set(sp.labels.tolist())) == [0, 1, 2, 3, 4]
    assert n_per_split(ds) == {"train": 9, "val": 6, "test": 5}
    assert create_dataset("aptos2019:stratified?seed=3", tmp_path).identity["split_sha256"] == ds.identity["split_sha256"]


def test_split_files_are_byte_identical_for_the_same_seed_and_differ_otherwise(tmp_path):
    aptos_tree(tmp_path)
    a = split_table(create_dataset("aptos2019:stratified", tmp_path, seed=5))
    b = split_table(create_dataset("aptos2019:stratified", tmp_path, seed=5))
    c = split_table(create_dataset("aptos2019:stratified", tmp_path, seed=6))
    assert a == b and a != c
    assert a.decode().splitlines()[0] == "split,id,label" and len(a.decode().splitlines()) == 21


# -- ISIC 2019 ----------------------------------------------------------------------------------------------

def test_isic_one_hot_ground_truth_80_10_10(tmp_path):
    isic_tree(tmp_path)
    ds = create_dataset("isic2019", tmp_path)
    assert ds.classes == ISIC_CLASSES and ds.headline_metric == "balanced_accuracy"
    assert n_per_split(ds) == {"train": 24, "val": 4, "test": 4}  # 32 = 8 x 4; one each, then 80/10/10 of 29
    labels = label_of(ds)
    for k in range(32):
        assert labels[f"ISIC_2019_Training_Input/ISIC_{k:07d}.jpg"] == ISIC_CLASSES[k // 4]


def test_isic_unk_row_is_an_unknown_label_or_skipped_and_listed(tmp_path):
    isic_tree(tmp_path, unk=True)
    with pytest.raises(MedfmError, match=r"ISIC_2019_Training_GroundTruth\.csv line 34: label 'UNK' is not one of"):
        create_dataset("isic2019", tmp_path)
    ds = create_dataset("isic2019", tmp_path, skip_bad=True)
    assert sum(n_per_split(ds).values()) == 32
    assert len(ds.skipped) == 1 and "ISIC_9999999.jpg" in ds.skipped[0] and "line 34" in ds.skipped[0]


def test_isic_grouped_protocol_keeps_each_lesion_in_one_split(tmp_path):
    d = isic_tree(tmp_path)
    lesion = {r["image"]: r["lesion_id"] or r["image"] for r in csv.DictReader(open(d / "ISIC_2019_Training_Metadata.csv"))}
    for seed in range(4):
        ds = create_dataset("isic2019:grouped", tmp_path, seed=seed)
        groups = assert_no_group_in_two_splits(ds, lambda i: lesion[i.split("/")[-1][:-4]])
        assert len(groups) == 24  # 8 classes x (one 2-image lesion + 2 single images)


# -- CBIS-DDSM -------------------------------------------------------------------------------------------------

def test_cbis_ddsm_full_mammograms_binary_mapping_and_patient_grouping(tmp_path):
    cbis_tree(tmp_path)
    ds = create_dataset("cbis_ddsm", tmp_path)
    assert ds.classes == ["benign", "malignant"] and ds.task == "binary" and ds.headline_metric == "roc_auc"
    labels = label_of(ds)
    # 12 abnormality rows, two on one mammogram -> 11 full images; test = the official test CSVs
    assert len(labels) == 11 and len(ds.splits["test"]) == 4
    p1 = [i for i in labels if "P_00001_LEFT_CC/" in i]
    assert len(p1) == 1 and labels[p1[0]] == "malignant"  # one MALIGNANT + one BENIGN abnormality -> malignant
    for i, lab in labels.items():
        patient = i.split("_")[1] + "_" + i.split("_")[2]
        pathology = {r[5] for r in CBIS_ROWS if r[2] == patient}
        expected = "malignant" if "MALIGNANT" in pathology else "benign"  # BENIGN(_WITHOUT_CALLBACK) -> benign
        assert lab == expected, (i, pathology)
    assert_no_group_in_two_splits(ds, lambda i: i.split("_")[2])
    assert sorted(np.bincount(ds.splits["test"].labels).tolist()) == [2, 2]


def test_cbis_ddsm_roi_crops_and_three_classes(tmp_path):
    cbis_tree(tmp_path)
    roi = create_dataset("cbis_ddsm?crop=roi", tmp_path)
    assert sum(n_per_split(roi).values()) == 12 and all("000001.dcm" in i for i in label_of(roi))  # trailing \n stripped
    assert roi.identity["options"]["crop"] == "roi"
    three = create_dataset("cbis_ddsm?labels=three", tmp_path)
    assert three.classes == ["benign_without_callback", "benign", "malignant"] and three.task == "multiclass"
    counts = np.bincount(np.concatenate([s.labels for s in three.splits.values()]), minlength=3).tolist()
    assert counts == [3, 3, 5]  # P_00001 (MALIGNANT + BENIGN on one image) counts once, as malignant
    mass = create_dataset("cbis_ddsm?abnormality=mass&crop=roi", tmp_path)
    assert sum(n_per_split(mass).values()) == 7
    img = roi.splits["test"].images.load(0)
    assert img.mode == "L" and img.size == (6, 6)


# -- CheXpert ----------------------------------------------------------------------------------------------------

def _chexpert_expected(path: str, policy: str, findings, fill: bool = False) -> tuple:
    p, s, v = int(path.split("patient")[1][:5]), int(path.split("study")[1][0]), int(path.split("view")[1][0])
    out = []
    for name in findings:
        val = chexpert_value(p, s, v, CHEXPERT_OBS.index(name))
        out.append({"1.0": 1, "0.0": 0, "": 0, "-1.0": {"zeros": 0, "ones": 1, "ignore": IGNORE}[policy]}[val])
    if fill and not any(out):  # the study's code: no positive at all -> "No Finding"
        out[findings.index("No Finding")] = 1
    return tuple(out)


@pytest.mark.parametrize("policy", ["zeros", "ones", "ignore"])
def test_chexpert_study_protocol_uncertainty_policies(tmp_path, policy):
    chexpert_tree(tmp_path)
    ds = create_dataset(f"chexpert?uncertain={policy}", tmp_path)
    assert ds.task == "multilabel" and ds.classes == CHEXPERT_OBS
    labels = label_of(ds)
    assert len(labels) == 40
    for path, targets in labels.items():
        assert targets == _chexpert_expected(path, policy, CHEXPERT_OBS, fill=True), path
    filled = [t for p, t in labels.items() if t != _chexpert_expected(p, policy, CHEXPERT_OBS)]
    assert filled and all(t == (1,) + (0,) * 13 for t in filled)
    values = set(np.concatenate([s.labels.ravel() for s in ds.splits.values()]).tolist())
    assert values == ({0, 1, IGNORE} if policy == "ignore" else {0, 1})


def test_chexpert_study_split_is_the_head_of_the_path_sorted_train_csv(tmp_path):
    chexpert_tree(tmp_path)
    ds = create_dataset("chexpert", tmp_path)
    where = split_of(ds)
    ordered = sorted(where)
    # 10 patients x 4 images, sorted by Path: first 10 % (patient00001) val, next 10 % (patient00002) test
    assert [where[p] for p in ordered] == ["val"] * 4 + ["test"] * 4 + ["train"] * 32
    assert all("patient00001" in p for p in ds.splits["val"].ids)
    assert_no_group_in_two_splits(ds, lambda i: i.split("/")[2])
    assert create_dataset("chexpert?frontal=true", tmp_path).splits["train"].ids == [
        i for i in ds.splits["train"].ids if "frontal" in i]


def test_chexpert_official_protocol_five_findings_on_valid_csv(tmp_path):
    chexpert_tree(tmp_path)
    ds = create_dataset("chexpert:official", tmp_path)
    assert ds.classes == ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
    assert len(ds.splits["test"]) == 4 and all("/valid/" in i for i in ds.splits["test"].ids)
    assert len(ds.splits["train"]) + len(ds.splits["val"]) == 40
    assert_no_group_in_two_splits(ds, lambda i: i.split("/")[2])
    for path, targets in label_of(ds).items():
        if "/train/" in path:
            assert targets == _chexpert_expected(path, "ones", ds.classes)  # official default: U-Ones
    assert ds.identity["options"]["uncertain"] == "ones"


def test_ignored_targets_are_masked_in_the_metric():
    y = np.array([[1, 0], [0, IGNORE], [1, 1], [0, 0]], dtype=np.uint8)
    score = np.array([[0.9, 0.1], [0.2, 0.99], [0.8, 0.9], [0.1, 0.2]])
    assert roc_auc(y, score) == 1.0  # without the mask, the ignored 0.99 would count as a false positive


# -- HAM10000, IDRiD, iChallenge-AMD, chest_xray folders, BraTS NIfTI slices ---------------------------------

def test_ham10000_full_download_groups_images_of_one_lesion(tmp_path):
    d = ham_tree(tmp_path)
    ds = create_dataset("ham10000", tmp_path)
    meta = {r["image_id"]: r for r in csv.DictReader(open(d / "HAM10000_metadata.csv"))}
    labels = label_of(ds)
    assert len(labels) == 28 and ds.classes == HAM_CLASSES
    for i, lab in labels.items():
        assert lab == meta[i.split("/")[-1][:-4]]["dx"]
    assert any("part_2" in i for i in labels)
    assert_no_group_in_two_splits(ds, lambda i: meta[i.split("/")[-1][:-4]]["lesion_id"])


def test_idrid_official_train_test_and_amd_folder_and_chest_xray_folders(tmp_path):
    idrid_tree(tmp_path)
    amd_tree(tmp_path)
    chest_xray_tree(tmp_path)
    idrid = create_dataset("idrid", tmp_path)
    assert n_per_split(idrid) == {"train": 10, "val": 5, "test": 5}
    assert all("b. Testing Set" in i for i in idrid.splits["test"].ids)
    amd = create_dataset("ichallenge_amd", tmp_path)
    assert amd.classes == ["AMD", "Non-AMD"] and np.bincount(np.concatenate([s.labels for s in amd.splits.values()])).tolist() == [3, 5]
    cxr = create_dataset("chest_xray_pneumonia", tmp_path)
    assert {s: np.bincount(sp.labels).tolist() for s, sp in cxr.splits.items()} == {
        "train": [6, 6], "val": [2, 2], "test": [3, 3]}
    assert cxr.identity["split"]["policy"] == "official"


def test_brats_nifti_slices_pick_tumour_slices_and_keep_subjects_together(tmp_path):
    brats_tree(tmp_path)
    ds = create_dataset("brats_glioma?slices=2", tmp_path)
    labels = label_of(ds)
    assert len(labels) == 14 and ds.classes == ["HGG", "LGG"]
    assert {i.split("#")[1] for i in labels} == {"1", "4"}  # the two slices with tumour, largest first
    assert all(lab == i.split("/")[0] for i, lab in labels.items())
    assert_no_group_in_two_splits(ds, lambda i: i.split("#")[0])
    img = ds.splits["train"].images.load(0)
    assert img.mode == "RGB" and img.size == (8, 8)
    flair = create_dataset("brats_glioma?slices=3&modalities=flair", tmp_path)
    assert flair.splits["train"].images.load(0).mode == "L" and len(label_of(flair)) == 21


# -- protocol / option errors ---------------------------------------------------------------------------------

def test_protocol_and_option_errors(tmp_path):
    aptos_tree(tmp_path)
    with pytest.raises(MedfmError, match=r"no protocol 'offical'.*aptos2019:study, aptos2019:stratified"):
        create_dataset("aptos2019:offical", tmp_path)
    with pytest.raises(MedfmError, match=r"no option 'uncertain'"):
        create_dataset("aptos2019?uncertain=ones", tmp_path)
    with pytest.raises(MedfmError, match=r"uncertain='maybe' is not allowed.*zeros or ones or ignore"):
        create_dataset("chexpert?uncertain=maybe", tmp_path)
    with pytest.raises(MedfmError, match=r"CheXpert-v1\.0-small/train\.csv not found"):
        create_dataset("chexpert", tmp_path)


# -- malformed inputs: each names the file and row -------------------------------------------------------------

def test_missing_csv_column_names_the_file(tmp_path):
    d = aptos_tree(tmp_path)
    write_csv(d / "train.csv", ["id_code", "grade"], [["a", 0]])
    with pytest.raises(MedfmError, match=r"train\.csv: missing column\(s\) diagnosis \(header is id_code, grade\)"):
        create_dataset("aptos2019", tmp_path)


def test_listed_file_absent_and_unknown_label_name_the_row_or_are_skipped(tmp_path):
    d = aptos_tree(tmp_path)
    rows = list(csv.reader(open(d / "train.csv")))
    rows[3][1] = "7"  # line 4: unknown grade
    (d / "train_images" / f"{rows[5][0]}.png").unlink()  # line 6: listed, absent
    write_csv(d / "train.csv", rows[0], rows[1:])
    with pytest.raises(MedfmError, match=rf"train\.csv line 6: image .*{rows[5][0]}\.png does not exist"):
        create_dataset("aptos2019", tmp_path)
    (d / "train_images" / f"{rows[5][0]}.png").write_bytes(b"")
    with pytest.raises(MedfmError, match=r"train\.csv line 4: label '7' is not one of this dataset's classes"):
        create_dataset("aptos2019", tmp_path)
    (d / "train_images" / f"{rows[5][0]}.png").unlink()
    ds = create_dataset("aptos2019", tmp_path, skip_bad=True)
    assert sum(n_per_split(ds).values()) == 18
    assert len(ds.skipped) == 2
    assert any("line 6" in s and "does not exist" in s for s in ds.skipped)
    assert any("line 4" in s and "'7'" in s for s in ds.skipped)


def test_unreadable_dicom_names_file_and_row_or_is_skipped(tmp_path):
    d = cbis_tree(tmp_path)
    first = next(csv.DictReader(open(d / "mass_case_description_test_set.csv")))
    (d / first["image file path"]).write_bytes(b"DICM but not really a DICOM file" * 4)
    ds = create_dataset("cbis_ddsm", tmp_path)
    test = ds.splits["test"]
    k = test.ids.index(first["image file path"])
    with pytest.raises(ImageReadError, match=r"000000\.dcm: unreadable or corrupt image"):
        test.images.load(k)
    assert test.images.describe(k).endswith("(line 2 of " + str(d / "mass_case_description_test_set.csv") + ")")
    skipped = create_dataset("cbis_ddsm", tmp_path, skip_bad=True)
    assert len(skipped.splits["test"]) == 3 and len(skipped.skipped) == 1
    assert "000000.dcm" in skipped.skipped[0] and "line 2" in skipped.skipped[0]


def test_empty_class_is_an_error(tmp_path):
    d = isic_tree(tmp_path)
    rows = list(csv.reader(open(d / "ISIC_2019_Training_GroundTruth.csv")))
    kept = [r for r in rows[1:] if r[ISIC_CLASSES.index("DF") + 1] != "1.0"]
    write_csv(d / "ISIC_2019_Training_GroundTruth.csv", rows[0], kept)
    with pytest.raises(MedfmError, match=r"class\(es\) DF have no images"):
        create_dataset("isic2019", tmp_path)


def test_multilabel_manifest_and_dicom_manifest(tmp_path):
    import pydicom  # noqa: F401  (the DICOM writer needs it)

    rows = []
    for i in range(12):
        write_dicom(tmp_path / "img" / f"{i}.dcm", np.full((4, 4), i * 100, dtype=np.uint16) + np.eye(4, dtype=np.uint16))
        rows.append([f"img/{i}.dcm", i % 2, (i // 2) % 2, int(i % 3 == 0), f"p{i // 2}"])
    write_csv(tmp_path / "labels.csv", ["path", "effusion", "edema", "nodule", "patient"], rows)
    ds = create_dataset(str(tmp_path))
    assert ds.task == "multilabel" and ds.classes == ["effusion", "edema", "nodule"]
    assert label_of(ds)["img/3.dcm"] == (1, 1, 1)
    assert_no_group_in_two_splits(ds, lambda i: int(i[4:-4]) // 2)
    write_csv(tmp_path / "labels.csv", ["path", "effusion", "edema"], [["img/0.dcm", 1, "maybe"]])
    with pytest.raises(MedfmError, match=r"labels\.csv line 2: column edema is 'maybe', not 0 or 1"):
        create_dataset(str(tmp_path))
    write_png(tmp_path / "x.png", 0)


def test_ddsm_as_study_1_read_it(tmp_path):
    from dataset_trees import ddsm_tree

    ddsm_tree(tmp_path)
    ds = create_dataset("ddsm", tmp_path)
    assert ds.classes == ["normal", "abnormal"] and n_per_split(ds) == {"train": 5, "val": 2, "test": 3}
    assert {s: sp.labels.tolist() for s, sp in ds.splits.items()} == {"train": [0, 1, 1, 0, 1], "val": [0, 1], "test": [1, 0, 1]}
    three = create_dataset("ddsm:three", tmp_path)
    assert three.classes == ["normal", "benign", "cancer"] and three.splits["test"].labels.tolist() == [2, 0, 1]


def test_ignored_targets_give_no_gradient_in_the_linear_probe():
    import torch
    import torch.nn.functional as F

    from medfm.targets import loss_grad

    logits = torch.tensor([[[2.0, -1.0]], [[0.5, 3.0]], [[-2.0, 0.3]]], requires_grad=True)  # 3 samples, 1 head, 2 labels
    y = torch.tensor([[1.0, 0.0], [0.0, float(IGNORE)], [1.0, 1.0]])
    known = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    per = F.binary_cross_entropy_with_logits(logits[:, 0], y.clamp(max=1), reduction="none")
    ((per * known).sum() / known.numel()).backward()  # the masked per-sample mean loss, by autograd
    grad = loss_grad(logits.detach(), y, "multilabel")  # the linear probe's closed-form gradient
    assert torch.allclose(grad, logits.grad, atol=1e-6)
    assert grad[1, 0, 1] == 0  # the ignored target contributes nothing


def test_grouped_partition_never_splits_a_group_and_stays_stratified():
    from medfm.data.splits import grouped_partition

    rng = np.random.default_rng(0)
    groups = rng.integers(0, 120, 600)
    group_label = rng.integers(0, 3, 120)
    labels = group_label[groups]
    fractions = {"train": 0.7, "val": 0.15, "test": 0.15}
    parts = grouped_partition(labels, groups.tolist(), fractions, seed=3)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(600))
    owner = {}
    for name, idx in parts.items():
        for g in set(groups[idx].tolist()):
            assert owner.setdefault(g, name) == name
        assert set(labels[idx].tolist()) == {0, 1, 2}
    n_groups = {name: len(set(groups[idx].tolist())) for name, idx in parts.items()}
    assert abs(n_groups["train"] / sum(n_groups.values()) - 0.7) < 0.05
    again = grouped_partition(labels, groups.tolist(), fractions, seed=3)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)

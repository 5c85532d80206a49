"""Dataset readers on the real files in ../shared/data, and their error messages on broken input."""

import shutil

import numpy as np
import pytest

from medfm.data import create_dataset
from medfm.errors import MedfmError


def counts(ds, split):
    return np.bincount(ds.splits[split].labels, minlength=ds.num_classes).tolist()


def test_pneumoniamnist_reads_the_documented_counts(data_root):
    ds = create_dataset("pneumoniamnist", data_root)
    assert ds.task == "binary" and ds.classes == ["normal", "pneumonia"] and ds.headline_metric == "roc_auc"
    # counts from ../shared/data/SOURCES.md (the official split sizes)
    assert counts(ds, "train") == [1214, 3494]
    assert counts(ds, "val") == [135, 389]
    assert counts(ds, "test") == [234, 390]
    img = ds.splits["train"].images.load(0)
    assert img.size == (28, 28) and img.mode == "L"


def test_breastmnist_counts(data_root):
    ds = create_dataset("breastmnist", data_root)
    assert [counts(ds, s) for s in ("train", "val", "test")] == [[147, 399], [21, 57], [42, 114]]


def test_busi_manifest_makes_a_recorded_stratified_split(data_root):
    ds = create_dataset("busi", data_root)
    total = sum(np.array(counts(ds, s)) for s in ("train", "val", "test"))
    assert total.tolist() == [437, 210, 133]  # benign, malignant, normal (SOURCES.md)
    ids = [set(ds.splits[s].ids) for s in ("train", "val", "test")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert ds.identity["split"]["policy"] == "stratified" and ds.identity["split"]["seed"] == 0
    again = create_dataset("busi", data_root)
    assert again.splits["test"].ids == ds.splits["test"].ids
    other_seed = create_dataset("busi", data_root, seed=1)
    assert other_seed.splits["test"].ids != ds.splits["test"].ids
    assert other_seed.identity != ds.identity  # so caches of the two splits never mix


def test_busi_as_image_folder_has_the_manifests_labels(data_root):
    manifest = create_dataset("busi", data_root)
    folder = create_dataset(str(data_root / "busi" / "images"), duplicates="warn")  # BUSI holds one identical pair (tests/test_dataset_identity.py)
    by_path = {}
    for split in manifest.splits.values():
        for i, lab in zip(split.ids, split.labels):
            by_path[i.removeprefix("images/")] = manifest.classes[lab]
    seen = 0
    for split in folder.splits.values():
        for i, lab in zip(split.ids, split.labels):
            assert by_path[i] == folder.classes[lab]
            seen += 1
    assert seen == 780


def test_official_split_is_honoured_and_val_carved_from_train(data_root):
    ds = create_dataset("ham10000_224", data_root)
    assert counts(ds, "test") == [10, 10, 17, 10, 13, 70, 10]  # official ISIC 2018 test counts (SOURCES.md)
    assert len(ds.splits["train"]) + len(ds.splits["val"]) == 471
    assert ds.identity["split"]["policy"] == "official+val_from_train"
    cxr = create_dataset("kermany_cxr_224", data_root)
    assert counts(cxr, "test") == [60, 100]


def test_multilabel_npz(tmp_path, data_root):
    src = np.load(data_root / "breastmnist.npz")
    rng = np.random.default_rng(0)
    arrays = {}
    for s in ("train", "val", "test"):
        arrays[f"{s}_images"] = src[f"{s}_images"]
        arrays[f"{s}_labels"] = rng.integers(0, 2, (len(src[f"{s}_images"]), 14)).astype(np.uint8)
    np.savez(tmp_path / "chestmnist.npz", **arrays)
    ds = create_dataset("chestmnist", tmp_path)
    assert ds.task == "multilabel" and ds.splits["train"].labels.shape == (546, 14)


# -- errors: one message naming the file/row and the fix ------------------------------------------

def test_unknown_dataset_suggests_close_names():
    with pytest.raises(MedfmError, match="did you mean 'pneumoniamnist'"):
        create_dataset("pneumonia_mnist")


def test_missing_data_file_names_it(tmp_path):
    with pytest.raises(MedfmError, match=r"pneumoniamnist_224\.npz not found.*--data-root"):
        create_dataset("pneumoniamnist_224", tmp_path)


def test_npz_label_outside_class_range(tmp_path, data_root):
    src = dict(np.load(data_root / "breastmnist.npz"))
    src["val_labels"] = src["val_labels"].copy()
    src["val_labels"][5] = 7
    np.savez(tmp_path / "breastmnist.npz", **src)
    with pytest.raises(MedfmError, match=r"val_labels\[5\] = 7 is outside the class range 0\.\.1"):
        create_dataset("breastmnist", tmp_path)


def test_npz_missing_key(tmp_path, data_root):
    src = dict(np.load(data_root / "breastmnist.npz"))
    del src["test_labels"]
    np.savez(tmp_path / "breastmnist.npz", **src)
    with pytest.raises(MedfmError, match="missing key.*test_labels"):
        create_dataset("breastmnist", tmp_path)


def _small_manifest(tmp_path, data_root, rows):
    for cls in ("benign", "malignant"):
        (tmp_path / cls).mkdir(exist_ok=True)
        for f in sorted((data_root / "busi" / "images" / cls).iterdir())[:4]:
            shutil.copy(f, tmp_path / cls / f.name)
    (tmp_path / "labels.csv").write_text(rows)
    return tmp_path / "labels.csv"


def test_manifest_errors_name_file_and_line(tmp_path, data_root):
    files = sorted((data_root / "busi" / "images" / "benign").iterdir())[:4]
    good = "".join(f"benign/{f.name},benign\n" for f in files)
    m = _small_manifest(tmp_path, data_root, "file,label\n" + good)
    with pytest.raises(MedfmError, match="missing column.*path"):
        create_dataset(str(m))
    _small_manifest(tmp_path, data_root, "path,label\n" + good + "benign/nope.png,benign\n")
    with pytest.raises(MedfmError, match=r"line 6: image .*nope\.png does not exist"):
        create_dataset(str(m))
    with_split = good.replace("benign\n", "benign,train\n")
    _small_manifest(tmp_path, data_root, "path,label,split\n" + with_split + f"benign/{files[3].name},benign,holdout\n")
    with pytest.raises(MedfmError, match=r"line 6: split 'holdout' is not train, val or test"):
        create_dataset(str(m))
    _small_manifest(tmp_path, data_root, "path,label,split\n" + with_split + f"benign/{files[3].name},benign,\n")
    with pytest.raises(MedfmError, match=r"line 6: empty split while other rows have one"):
        create_dataset(str(m))
    _small_manifest(tmp_path, data_root, "path,label\n" + good + f"benign/{files[0].name},\n")
    with pytest.raises(MedfmError, match=r"line 6: empty label"):
        create_dataset(str(m))


def test_registry_manifest_rejects_unknown_label(tmp_path, data_root):
    root = tmp_path / "root"
    (root / "busi").mkdir(parents=True)
    files = sorted((data_root / "busi" / "images" / "benign").iterdir())[:3]
    rows = "".join(f"images/benign/{f.name},{lab}\n" for f, lab in zip(files, ("benign", "malignant", "cyst")))
    shutil.copytree(data_root / "busi" / "images" / "benign", root / "busi" / "images" / "benign")
    (root / "busi" / "labels.csv").write_text("path,label\n" + rows)
    with pytest.raises(MedfmError, match=r"line 4: label 'cyst' is not one of this dataset's classes"):
        create_dataset("busi", root)

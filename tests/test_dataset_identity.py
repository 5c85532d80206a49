"""Datasets that cannot lie: content identity, the hash sidecar, strict manifests, duplicates, bad-input lines.

Real images (BUSI, Kermany, PneumoniaMNIST, BreastMNIST from the shared data); the counts asserted for
the published datasets are the ones measured on those copies (README "Guarantees").
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from medfm.config import ExtractConfig
from medfm.data import create_dataset
from medfm.data.content import HashStats, hash_files, sidecar_path
from medfm.errors import MedfmError


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFM_CACHE", str(tmp_path / "cache"))


def busi_copy(root, data_root, per_class=6):
    """A manifest over real BUSI images (benign, malignant) copied to ``root``; rows ``[path, label, split]``."""
    rows = []
    for cls in ("benign", "malignant"):
        files = sorted((data_root / "busi" / "images" / cls).iterdir(), key=lambda p: p.name)[:per_class]
        for k, f in enumerate(files):
            (root / cls).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, root / cls / f.name)
            rows.append([f"{cls}/{f.name}", cls, "train" if k < per_class - 2 else ("val" if k == per_class - 2 else "test")])
    return rows


def write_manifest(root, rows, header="path,label,split"):
    text = header + "\n" + "".join(",".join(r) + "\n" for r in rows)
    (root / "labels.csv").write_text(text)
    return root / "labels.csv"


# -- content identity -------------------------------------------------------------------------------------


def test_image_changed_in_place_gets_a_new_fingerprint_and_the_cache_is_not_reused(tmp_path, data_root):
    from medfm.extract import run_extract

    root = tmp_path / "bmp"
    rows = []
    for cls in ("benign", "malignant"):
        for k, f in enumerate(sorted((data_root / "busi" / "images" / cls).iterdir(), key=lambda p: p.name)[:4]):
            (root / cls).mkdir(parents=True, exist_ok=True)
            Image.open(f).convert("L").resize((32, 32)).save(root / cls / f"{k}.bmp")  # BMP: same size whatever the pixels
            rows.append([f"{cls}/{k}.bmp", cls, ("train", "train", "val", "test")[k]])
    manifest = write_manifest(root, rows)
    cfg = ExtractConfig(backbone="efficientnet_lite0", dataset=str(manifest), weights="random", img_size=32,
                        num_workers=0, batch_size=4, dtype="float32")
    first = run_extract(cfg)
    assert run_extract(cfg).reused  # unchanged: reused

    target = root / "malignant" / "2.bmp"  # a val image, inverted in place: same byte size, new bytes
    size = target.stat().st_size
    Image.fromarray(255 - np.asarray(Image.open(target))).save(target)
    assert target.stat().st_size == size
    second = run_extract(cfg)
    assert second.fingerprint != first.fingerprint and not second.reused and second.extracted == 8
    with pytest.raises(MedfmError):  # the old cache, named explicitly, is refused rather than reused
        run_extract(cfg.model_copy(update={"cache": str(first.cache)}))


def test_sidecar_skips_unchanged_files_rehash_reads_all_and_a_corrupt_sidecar_is_rebuilt(tmp_path, data_root):
    root = tmp_path / "busi"
    rels = [f"{cls}/{name}" for cls, name, _ in ((r[0].split("/")[0], r[0].split("/")[1], r) for r in busi_copy(root, data_root))]
    stats = HashStats()
    cold = hash_files(root, rels, stats=stats)
    assert (stats.hashed, stats.reused) == (12, 0)
    side = sidecar_path(root)
    assert side.is_file() and root not in side.parents  # outside the data folder: read-only data works

    stats = HashStats()
    assert hash_files(root, rels, stats=stats) == cold and (stats.hashed, stats.reused) == (0, 12)
    stats = HashStats()
    assert hash_files(root, rels, rehash=True, stats=stats) == cold and (stats.hashed, stats.reused) == (12, 0)

    touched = root / rels[0]  # rewritten with the same bytes and its mtime put back: ctime still changes
    st = touched.stat()
    touched.write_bytes(touched.read_bytes())
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns))
    stats = HashStats()
    assert hash_files(root, rels, stats=stats) == cold and (stats.hashed, stats.reused) == (1, 11)

    lines = side.read_text().splitlines()  # a digest altered in the sidecar: the whole sidecar is distrusted
    lines[1] = lines[1][:-1] + ("0" if lines[1][-1] != "0" else "1")
    side.write_text("\n".join(lines) + "\n")
    stats = HashStats()
    assert hash_files(root, rels, stats=stats) == cold and stats.hashed == 12
    side.write_bytes(side.read_bytes()[:100])  # truncated
    stats = HashStats()
    assert hash_files(root, rels, stats=stats) == cold and stats.hashed == 12
    stats = HashStats()
    hash_files(root, rels, stats=stats)
    assert stats.reused == 12  # rebuilt


# -- strict manifests and duplicates ----------------------------------------------------------------------


def test_path_listed_twice_mixed_labels_and_class_missing_from_train(tmp_path, data_root):
    rows = busi_copy(tmp_path, data_root)
    with pytest.raises(MedfmError, match=r"benign_\(1\)\.png is listed twice: .*line 2 and .*line 14"):
        create_dataset(str(write_manifest(tmp_path, rows + [[rows[0][0], "benign", "test"]])))

    numeric = [[p, "0" if lab == "benign" else "1", s] for p, lab, s in rows]
    numeric[-1][1] = "malignant"
    with pytest.raises(MedfmError, match="labels mix numbers and names .*'0' at .*line 2.*'malignant' at .*line 13"):
        create_dataset(str(write_manifest(tmp_path, numeric)))

    only_test = [r if r[1] == "benign" or r[2] == "test" else [r[0], r[1], "val"] for r in rows]
    only_test = [r for r in only_test if not (r[1] == "malignant" and r[2] == "val")]  # malignant: test only
    with pytest.raises(MedfmError, match="class.*malignant have no training images but appear in malignant: test —"):
        create_dataset(str(write_manifest(tmp_path, only_test)))
    allowed = create_dataset(str(tmp_path / "labels.csv"), allow_missing_class=True)
    assert allowed.identity["allow_missing_class"] == ["malignant"]
    assert allowed.summary()["train"]["per_class"]["malignant"] == 0


def test_leaking_and_contradictory_copies_error_warn_drop(tmp_path, data_root):
    rows = busi_copy(tmp_path, data_root)
    shutil.copy(tmp_path / rows[0][0], tmp_path / "benign" / "copy_of_first.png")  # train image, copied into test
    leak = rows + [["benign/copy_of_first.png", "benign", "test"]]
    manifest = write_manifest(tmp_path, leak)
    with pytest.raises(MedfmError, match=r"1 group.*\(1 across splits, 0 with different labels\).*benign_\(1\)\.png "
                                         r"\(labels.csv line 2\) \(train, benign\) = benign/copy_of_first\.png"):
        create_dataset(str(manifest))
    warn = create_dataset(str(manifest), duplicates="warn")
    assert warn.identity["duplicates"] == {"policy": "warn", "groups": 1, "across_splits": 1, "different_labels": 0}
    assert [len(s) for s in warn.splits.values()] == [8, 2, 3]
    drop = create_dataset(str(manifest), duplicates="drop")
    assert [len(s) for s in drop.splits.values()] == [8, 2, 2]  # the test copy goes, the train copy stays
    assert "benign/copy_of_first.png" not in drop.splits["test"].ids and rows[0][0] in drop.splits["train"].ids
    assert drop.identity["duplicates"]["dropped"] == {"test": 1} and drop.identity != warn.identity

    contra = rows + [["benign/copy_of_first.png", "malignant", "train"]]  # the same image labelled both ways
    manifest = write_manifest(tmp_path, contra)
    with pytest.raises(MedfmError, match=r"\(0 across splits, 1 with different labels\)"):
        create_dataset(str(manifest))
    drop = create_dataset(str(manifest), duplicates="drop")
    assert len(drop.splits["train"]) == 8 - 1  # both copies gone: its label cannot be trusted
    assert rows[0][0] not in drop.splits["train"].ids
    assert drop.identity["duplicates"]["dropped"] == {"train": 2}


def test_published_datasets_duplicates_as_measured(data_root):
    busi = create_dataset("busi", data_root)  # registry: warn, kept as published
    (group,) = busi.duplicates
    assert sorted(c.where.split(" ")[0].rsplit("/", 1)[1] for c in group.copies) == ["benign_(433).png", "malignant_(145).png"]
    assert group.contradictory and sum(len(s) for s in busi.splits.values()) == 780

    (kermany,) = create_dataset("kermany_cxr_224", data_root).duplicates
    assert not kermany.leaking and not kermany.contradictory and len(kermany.copies) == 2

    pneu = create_dataset("pneumoniamnist", data_root)
    assert pneu.identity["duplicates"] == {"policy": "warn", "groups": 27, "across_splits": 8, "different_labels": 0}
    assert [len(s) for s in pneu.splits.values()] == [4708, 524, 624]  # the official split, untouched

    (breast,) = create_dataset("breastmnist", data_root).duplicates
    assert [(c.split, c.label) for c in breast.copies] == [("train", "malignant"), ("test", "normal or benign")]
    dropped = create_dataset("breastmnist", data_root, duplicates="drop")
    assert [len(s) for s in dropped.splits.values()] == [545, 78, 155]
    assert "train/115" not in dropped.splits["train"].ids and "test/76" not in dropped.splits["test"].ids


def test_registry_dataset_runs_under_warn_and_the_probe_record_counts_the_groups(tmp_path, data_root):
    from medfm.config import ProbeConfig
    from medfm.extract import run_extract
    from medfm.probe import run_probe

    ex = run_extract(ExtractConfig(backbone="efficientnet_lite0", dataset="breastmnist", data_root=str(data_root),
                                   weights="random", img_size=32, num_workers=0, dtype="float32"))
    record = run_probe(ProbeConfig(cache=str(ex.cache), lrs=[1e-2], wds=[0.0], epochs=1, min_steps=1, bootstrap=0,
                                   out=str(tmp_path / "probe"), results=str(tmp_path / "r.sqlite")))
    assert record["duplicates"] == {"policy": "warn", "groups": 1, "across_splits": 1, "different_labels": 1}
    assert record["n"] == {"train": 546, "val": 78, "test": 156}  # kept as published


# -- one-line errors for bad input -------------------------------------------------------------------------


def test_csv_encodings_split_seed_and_img_size(tmp_path, data_root):
    rows = busi_copy(tmp_path, data_root)
    text = "path,label,split\n" + "".join(",".join(r) + "\n" for r in rows)
    (tmp_path / "labels.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())  # UTF-8 with a BOM: read
    assert len(create_dataset(str(tmp_path / "labels.csv")).splits["train"]) == 8
    (tmp_path / "labels.csv").write_bytes(text.replace("benign,", "bénign,").encode("latin-1"))
    with pytest.raises(MedfmError, match=r"is not UTF-8 text \(byte 0xe9 on line 2; Latin-1"):
        create_dataset(str(tmp_path / "labels.csv"))
    (tmp_path / "labels.csv").write_bytes(text.encode("utf-16"))
    with pytest.raises(MedfmError, match="is UTF-16 text, not UTF-8"):
        create_dataset(str(tmp_path / "labels.csv"))

    with pytest.raises(MedfmError, match="invalid setting split_seed: .*greater than or equal to 0"):
        ExtractConfig.load(None, {"backbone": "mobilenetv2", "dataset": "busi", "split_seed": -1})
    with pytest.raises(MedfmError, match="split-seed -1 is negative"):
        create_dataset("busi", data_root, seed=-1)
    with pytest.raises(MedfmError, match="invalid setting img_size: .*less than or equal to 4096"):
        ExtractConfig.load(None, {"backbone": "mobilenetv2", "dataset": "busi", "img_size": 100000})
    with pytest.raises(MedfmError, match=r"--img-size 4096 with a batch of 100000 needs at least \d+ GiB"):
        ExtractConfig.load(None, {"backbone": "mobilenetv2", "dataset": "busi", "img_size": 4096, "batch_size": 100000})
    from medfm.backbones.check import check_backbone

    with pytest.raises(MedfmError, match=r"--img-size 100000 is outside 16\.\.4096"):
        check_backbone("mobilenetv2", "random", 100000)


def test_latin1_manifest_is_one_line_at_the_cli(cli, tmp_path, data_root):
    rows = busi_copy(tmp_path / "d", data_root, per_class=4)
    (tmp_path / "d" / "labels.csv").write_bytes(("path,label,split\n" + "".join(",".join(r) + "\n" for r in rows))
                                                .replace("benign,", "bénign,").encode("latin-1"))
    line = cli.error("extract", "--backbone", "mobilenetv2", "--weights", "random", "--dataset", tmp_path / "d" / "labels.csv")
    assert "is not UTF-8 text" in line and "save the CSV as UTF-8" in line

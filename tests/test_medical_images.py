"""DICOM / NIfTI / 16-bit TIFF decoding, the real shared folders through `datasets inspect`, and
extract's split file and --skip-bad log (tiny real images, MobileNetV2 randomly initialised)."""

import json

import numpy as np
from dataset_trees import aptos_tree, write_dicom, write_nifti
from PIL import Image

from medfm.data.images import read_image
from medfm.data.inspection import inspect_dataset, print_report

PX = np.array([[0, 1000], [3000, 4095]], dtype=np.uint16)


def px(path):
    return np.asarray(read_image(path)).astype(int).tolist()


def test_dicom_full_range_without_clipping(tmp_path):
    assert px(write_dicom(tmp_path / "a.dcm", PX)) == [[0, 62], [187, 255]]  # 12-bit range -> 0..255, linear


def test_dicom_rescale_slope_intercept_in_float_then_monochrome1_inverted(tmp_path):
    # slope 2, intercept -1024 maps 0 -> -1024 (negative: uint16 arithmetic would wrap); MONOCHROME1: high = dark
    out = px(write_dicom(tmp_path / "b.dcm", PX, "MONOCHROME1", slope=2, intercept=-1024))
    hu = PX.astype(float) * 2 - 1024
    expected = 255 - np.rint((hu - hu.min()) / (hu.max() - hu.min()) * 255)
    assert out == expected.astype(int).tolist() == [[255, 193], [68, 0]]


def test_dicom_window_center_width(tmp_path):
    # window 1000 +- 1000 -> [0, 2000]: 1000 is mid-grey, 3000 and 4095 saturate white
    assert px(write_dicom(tmp_path / "c.dcm", PX, window=(1000, 2000), slope=1, intercept=0)) == [[0, 128], [255, 255]]


def test_nifti_middle_axial_slice_and_16bit_tiff(tmp_path):
    vol = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    img = read_image(write_nifti(tmp_path / "v.nii.gz", vol))
    assert img.mode == "L" and img.size == (4, 5)
    expected = np.rot90(vol[:, :, 3])
    expected = np.rint((expected - expected.min()) / np.ptp(expected) * 255)
    assert np.asarray(img).tolist() == expected.astype(int).tolist()
    Image.fromarray(np.array([[0, 65535], [1000, 2000]], dtype=np.uint16)).save(tmp_path / "t.tif")
    tif = read_image(tmp_path / "t.tif")
    assert tif.mode == "L" and np.asarray(tif).tolist() == [[0, 255], [4, 8]]  # scaled, never clipped at 255


def test_real_folders_load_as_manifests_and_inspect_prints_their_counts(data_root, capsys):
    ham = inspect_dataset("ham10000_224", data_root, decode=False)
    assert ham["counts"]["test"]["per_class"] == {"akiec": 10, "bcc": 10, "bkl": 17, "df": 10, "mel": 13, "nv": 70, "vasc": 10}
    assert ham["counts"]["train"]["n"] + ham["counts"]["val"]["n"] == 471 and ham["problems"] == []
    print_report(ham)
    text = capsys.readouterr().out
    assert "official train/test split" in text and "│ nv " in text and "no problems found" in text
    cxr = inspect_dataset(str(data_root / "kermany_cxr_224" / "labels.csv"), decode=False)
    assert cxr["counts"]["test"]["per_class"] == {"NORMAL": 60, "PNEUMONIA": 100}
    assert cxr["total_per_class"] == {"NORMAL": 404, "PNEUMONIA": 1095} and cxr["imbalance_ratio"] == 2.71
    from typer.testing import CliRunner

    from medfm.cli import app

    res = CliRunner().invoke(app, ["datasets", "inspect", "busi", "--data-root", str(data_root), "--json"])
    assert res.exit_code == 0, res.output
    busi = json.loads(res.stdout[res.stdout.index("{"):])
    assert busi["total_per_class"] == {"benign": 437, "malignant": 210, "normal": 133}
    assert busi["image_sizes"] == {"256x256 L": 780} and busi["problems"] == []
    assert sum(busi["counts"][s]["n"] for s in ("train", "val", "test")) == 780


def test_extract_writes_a_byte_identical_split_file_and_logs_skipped_files(tmp_path, monkeypatch, capsys):
    from medfm.config import ExtractConfig
    from medfm.extract import run_extract

    monkeypatch.setenv("MEDFM_CACHE", str(tmp_path / "cache"))
    aptos_tree(tmp_path / "data")
    bad = tmp_path / "data" / "aptos2019" / "train_images" / "004ab04.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    cfg = dict(backbone="mobilenetv2", weights="random", dataset="aptos2019:stratified", data_root=str(tmp_path / "data"),
               img_size=32, batch_size=8, num_workers=0)
    capsys.readouterr()
    result = run_extract(ExtractConfig(**cfg, skip_bad=True))
    log = capsys.readouterr().err
    assert "skipped" in log and "004ab04.png" in log and "line 6" in log
    split_file = result.cache.with_name(result.cache.name + ".splits.csv")
    first = split_file.read_bytes()
    assert first.startswith(b"split,id,label\n") and first.count(b"\n") == 20 and b"004ab04" not in first
    split_file.unlink()
    again = run_extract(ExtractConfig(**cfg, skip_bad=True))
    assert again.reused and again.cache == result.cache and split_file.read_bytes() == first

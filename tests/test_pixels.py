"""The decode-once pixel cache (`medfm prepare`) and extract reading it, on real BUSI ultrasound images."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import zarr

from medfm.config import ExtractConfig, PrepareConfig
from medfm.data import create_dataset
from medfm.errors import MedfmError
from medfm.extract import run_extract
from medfm.pixels import PixelCache, run_prepare
from medfm.pixels.prepare import SquareRGB

PER_CLASS = 10


@pytest.fixture(scope="module")
def busi_subset(data_root, tmp_path_factory):
    """A manifest of the first 10 BUSI images per class (absolute paths: nothing copied)."""
    rows = list(csv.DictReader(open(data_root / "busi" / "labels.csv")))
    picked, seen = [], {}
    for r in rows:
        if seen.get(r["label"], 0) < PER_CLASS:
            seen[r["label"]] = seen.get(r["label"], 0) + 1
            picked.append(r)
    path = tmp_path_factory.mktemp("busi-subset") / "labels.csv"
    with open(path, "w") as f:
        f.write("path,label\n" + "".join(f"{data_root / 'busi' / r['path']},{r['label']}\n" for r in picked))
    return path


def test_prepare_writes_squares_resumes_and_reuses(busi_subset, tmp_path):
    out = tmp_path / "pixels.zarr"
    cfg = PrepareConfig(dataset=str(busi_subset), size=96, chunk_rows=8, workers=1, out=str(out))
    first = run_prepare(cfg)
    ds = create_dataset(str(busi_subset))
    assert first.prepared == sum(len(s) for s in ds.splits.values()) == 3 * PER_CLASS
    g = zarr.open_group(str(out), mode="r")
    train = ds.splits["train"]
    assert g["train/images"].shape == (len(train), 96, 96, 3) and g["train/images"].dtype == np.uint8
    assert list(g["train/ids"][:]) == train.ids and (g["train/labels"][:] == train.labels).all()
    assert g["train/done"][:].all()
    # the stored square is exactly the documented policy applied to the decoded file
    assert (g["train/images"][3] == SquareRGB(96)(train.images.load(3)).numpy()).all()
    assert g["train/images"][:].std() > 10  # real image content, not fill

    # resume: lose one chunk (as a kill between its data and its done flag would), rerun, only it is redone
    before = g["train/images"][:]
    w = zarr.open_group(str(out), mode="r+")
    w["train/done"][1] = 0
    w["train/images"][8:16] = 0
    w.attrs["medfm"] = {**dict(w.attrs["medfm"]), "complete": False}
    again = run_prepare(cfg)
    assert again.prepared == 8 and not again.reused
    assert (zarr.open_group(str(out), mode="r")["train/images"][:] == before).all()
    assert run_prepare(cfg).reused

    with pytest.raises(MedfmError, match="different request"):
        run_prepare(cfg.model_copy(update={"size": 64}))
    with pytest.raises(MedfmError, match="different dataset or split"):
        PixelCache(out).check_dataset(create_dataset(str(busi_subset), seed=1))


def test_extract_reads_pixel_cache_close_to_image_path(busi_subset, mobilenet_weights, tmp_path, monkeypatch):
    """Features from pre-decoded pixels match the PIL path within a documented tolerance (README):
    per image cosine >= 0.99, mean >= 0.998 (MobileNetV2, ImageNet weights, 64 px from a 256 px cache)."""
    monkeypatch.setenv("MEDFM_CACHE", str(tmp_path / "cache"))
    pix = run_prepare(PrepareConfig(dataset=str(busi_subset), size=256, workers=1))
    base = dict(backbone="mobilenetv2", weights=str(mobilenet_weights), dataset=str(busi_subset), img_size=64,
                batch_size=16, dtype="float32", num_workers=0)
    files = run_extract(ExtractConfig(**base, pixels="none"))
    pixels = run_extract(ExtractConfig(**base))  # found automatically under $MEDFM_CACHE
    assert files.fingerprint != pixels.fingerprint
    meta_f = zarr.open_group(str(files.cache), mode="r").attrs["medfm"]
    meta_p = zarr.open_group(str(pixels.cache), mode="r").attrs["medfm"]
    assert "pixels" not in meta_f["fingerprint_inputs"]
    assert meta_p["fingerprint_inputs"]["pixels"]["fingerprint"] == pix.fingerprint
    assert meta_p["pixels"]["size"] == 256
    for split in ("train", "val", "test"):
        a = zarr.open_group(str(files.cache), mode="r")[f"{split}/features"][:].astype(np.float64)
        b = zarr.open_group(str(pixels.cache), mode="r")[f"{split}/features"][:].astype(np.float64)
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cos.min() >= 0.99 and cos.mean() >= 0.998, (split, cos.min(), cos.mean())
    # an explicit --pixels of other content is refused, never silently used
    with pytest.raises(MedfmError, match="different dataset or split"):
        run_extract(ExtractConfig(**{**base, "split_seed": 1}, pixels=str(pix.cache)))


def test_prepare_cli_names_corrupt_file(cli, busi_subset, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    lines = open(busi_subset).read().splitlines()
    manifest = tmp_path / "labels.csv"
    manifest.write_text("\n".join(lines[:7] + [f"{bad},benign"] + lines[7:]) + "\n")
    line = cli.error("prepare", "--dataset", manifest, "--size", "32", "--workers", "1")
    assert "broken.png" in line and "unreadable or corrupt" in line

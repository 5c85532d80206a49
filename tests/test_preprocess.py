"""Resize policies (crop / squash / pad) and --norm dataset, pixel-exact against references built here.

References are computed in the test with PIL / torchvision directly (study 1's own transform calls
for squash; a numpy canvas for MedMNIST+'s pad), never with medfm's code.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from medfm.backbones import Backbone, resolve_backbone
from medfm.backbones.norm import dataset_stats, stats_key, stats_path, with_dataset_norm
from medfm.backbones.preprocess import RESIZE_POLICIES, PolicyGeometry
from medfm.cache.fingerprint import fingerprint
from medfm.errors import MedfmError
from medfm.pixels.read import pixel_choice

# fingerprint(identity) of resolve_backbone("mobilenetv2", "random", 32) before resize policies existed
MOBILENET_32_IDENTITY = "5407d70058bb2b6d93842d8595774f32d3fbe4e300811c772bb2c3e440472b54"


def _transform(spec):
    return Backbone(spec, torch.nn.Identity()).transform  # the extract / eval transform, no model needed


def _normalised(pixels_uint8: np.ndarray, mean, std) -> torch.Tensor:
    x = torch.from_numpy(pixels_uint8.astype(np.float32)).permute(2, 0, 1) / 255.0
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


@pytest.fixture(scope="module")
def pneumonia_image(data_root) -> np.ndarray:
    return np.load(data_root / "pneumoniamnist.npz")["train_images"][0]  # 28 x 28 uint8, a real x-ray


@pytest.fixture(scope="module")
def busi_image(data_root) -> Image.Image:
    row = next(csv.DictReader(open(data_root / "busi" / "labels.csv")))
    img = Image.open(data_root / "busi" / row["path"]).convert("RGB")
    return img.crop((0, 0, img.width, img.height * 5 // 8))  # these copies are square: a wide real image


def test_pad_puts_the_original_28px_pixels_unscaled_on_a_black_224_canvas(pneumonia_image):
    spec = resolve_backbone("mobilenetv2", "random", 224, resize="pad")
    img = Image.fromarray(pneumonia_image, mode="L")
    expected = np.zeros((224, 224, 3), dtype=np.uint8)  # black in pixel space, before normalisation
    expected[98:126, 98:126] = pneumonia_image[..., None]  # (224 - 28) / 2 = 98: centred, not resampled
    policy = PolicyGeometry(RESIZE_POLICIES.get("pad"), 224, spec.data_config["interpolation"])
    geometry = np.asarray(policy(img.convert("RGB")))
    assert geometry.dtype == np.uint8 and np.array_equal(geometry, expected)
    x = _transform(spec)(img)  # what the model is fed: the same pixels, then the backbone's normalisation
    assert torch.equal(x, _normalised(expected, spec.data_config["mean"], spec.data_config["std"]))
    assert torch.allclose(x[:, 0, 0], -torch.tensor(spec.data_config["mean"]) / torch.tensor(spec.data_config["std"]))
    # larger than the input: shrunk on its longest side first (aspect kept), then centred
    wide = Image.fromarray(np.full((50, 300, 3), 200, dtype=np.uint8))
    g = np.asarray(policy(wide))
    rows = np.flatnonzero(g[:, 112, 0])
    assert g.shape == (224, 224, 3) and (rows[0], rows[-1]) == (93, 129)  # 300x50 -> 224x37 centred: rows 93..129


def test_squash_equals_study_1s_torchvision_transform(busi_image):
    spec = resolve_backbone("mobilenetv2", "random", 224, resize="squash")
    # study 1 @02db977 defaults/bases.py: Resize((256, 256)) (default bilinear), CenterCrop 224, ToTensor, Normalize
    study = T.Compose([T.Resize((256, 256)), T.CenterCrop(224), T.ToTensor(),
                       T.Normalize(spec.data_config["mean"], spec.data_config["std"])])
    assert torch.equal(_transform(spec)(busi_image), study(busi_image))
    # torchvision steps after the geometry, so an augmentation can go before ToTensor as in study 1's Compose
    assert [type(t).__name__ for t in _transform(spec).transforms[1].transforms] == ["PolicyGeometry", "ToTensor",
                                                                                      "Normalize"]
    ref = busi_image.resize((256, 256), Image.BILINEAR).crop((16, 16, 240, 240))  # plain PIL, same pixels
    policy = PolicyGeometry(RESIZE_POLICIES.get("squash"), 224, "bilinear")
    assert np.array_equal(np.asarray(policy(busi_image)), np.asarray(ref))
    other = resolve_backbone("mobilenetv2", "random", 224, resize="squash", resize_size=300)
    ref300 = T.Compose([T.Resize((300, 300)), T.CenterCrop(224), T.ToTensor(),
                        T.Normalize(spec.data_config["mean"], spec.data_config["std"])])
    assert torch.equal(_transform(other)(busi_image), ref300(busi_image))


def test_crop_is_the_backbones_shorter_side_resize_and_centre_crop(busi_image):
    spec = resolve_backbone("mobilenetv2", "random", 224)  # torchvision weights: bilinear, crop_pct 0.875
    cfg = spec.data_config
    ref = T.Compose([T.Resize(int(224 / cfg["crop_pct"]), interpolation=T.InterpolationMode.BILINEAR),
                     T.CenterCrop(224), T.ToTensor(), T.Normalize(cfg["mean"], cfg["std"])])
    assert torch.equal(_transform(spec)(busi_image), ref(busi_image))
    assert not torch.equal(_transform(spec)(busi_image), _transform(resolve_backbone(
        "mobilenetv2", "random", 224, resize="squash"))(busi_image))


def test_crop_with_a_resize_size_is_torchvisions_resize_then_centre_crop(busi_image):
    """Study 3 (GuanghuiFU/medical_dino_eval utils.py:L22-30): Resize(256) on the shorter side, CenterCrop(224)."""
    spec = resolve_backbone("mobilenetv2", "random", 224, resize_size=256)
    cfg = spec.data_config
    study = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(cfg["mean"], cfg["std"])])
    assert torch.equal(_transform(spec)(busi_image), study(busi_image))
    tall = busi_image.transpose(Image.Transpose.ROTATE_90)  # the other orientation takes the other branch
    assert torch.equal(_transform(spec)(tall), study(tall))
    assert spec.identity()["preprocessing"]["resize"]["policy"] == "crop_shorter"


def test_each_policy_has_its_own_fingerprint_and_crop_keeps_the_old_one():
    specs = {"crop": resolve_backbone("mobilenetv2", "random", 32),
             "squash": resolve_backbone("mobilenetv2", "random", 32, resize="squash"),
             "squash48": resolve_backbone("mobilenetv2", "random", 32, resize="squash", resize_size=48),
             "pad": resolve_backbone("mobilenetv2", "random", 32, resize="pad"),
             "crop48": resolve_backbone("mobilenetv2", "random", 32, resize_size=48)}
    prints = {k: fingerprint(s.identity()) for k, s in specs.items()}
    assert len(set(prints.values())) == 5
    assert prints["crop"] == MOBILENET_32_IDENTITY and "resize" not in specs["crop"].identity()["preprocessing"]
    assert specs["squash"].identity()["preprocessing"]["resize"]["resize_size"] == 37  # round(32 * 256 / 224)
    with pytest.raises(MedfmError, match="--resize-size is the side before the centre crop"):
        resolve_backbone("mobilenetv2", "random", 32, resize="pad", resize_size=40)
    with pytest.raises(MedfmError, match="smaller than the input size"):
        resolve_backbone("mobilenetv2", "random", 64, resize="squash", resize_size=60)


def test_squash_and_pad_never_read_crop_made_pixel_squares():
    pad = resolve_backbone("mobilenetv2", "random", 32, resize="pad")
    assert pixel_choice(None, pad) == "none" and pixel_choice("none", pad) == "none"
    with pytest.raises(MedfmError, match="centre-cropped squares"):
        pixel_choice("/some/pixels-256px.zarr", pad)
    assert pixel_choice(None, resolve_backbone("mobilenetv2", "random", 32)) is None  # crop: auto, as before


def test_dataset_norm_is_numpys_mean_and_std_of_the_padded_train_pixels(pneu_subset, tmp_path, monkeypatch):
    from medfm.data import create_dataset

    monkeypatch.setenv("MEDFM_CACHE", str(tmp_path))
    dataset = create_dataset(str(pneu_subset))
    spec = resolve_backbone("mobilenetv2", "random", 64, resize="pad", grey="red")
    train = dataset.splits["train"]
    canvases = np.zeros((len(train), 64, 64), dtype=np.float64)
    for k in range(len(train)):
        grey = np.asarray(train.images.load(k).convert("L"), dtype=np.float32) / np.float32(255.0)  # as ToTensor
        canvases[k, 18:46, 18:46] = grey
    stats = dataset_stats(spec, dataset)
    assert stats["mean"] == pytest.approx([canvases.mean()], rel=1e-10)  # one channel: --grey red
    assert stats["std"] == pytest.approx([canvases.std()], rel=1e-10)
    path = stats_path(dataset, fingerprint(stats_key(spec, dataset)))
    assert path.is_file()
    stamp = path.stat().st_mtime_ns
    normed = with_dataset_norm(spec, dataset)  # read back from the sidecar, not recomputed
    assert path.stat().st_mtime_ns == stamp
    assert normed.data_config["mean"] == (stats["mean"][0],) * 3 and normed.data_config["norm"]["channels"] == 1
    assert fingerprint(normed.identity()) != fingerprint(spec.identity())
    rgb = dataset_stats(resolve_backbone("mobilenetv2", "random", 64, resize="pad"), dataset)  # grey repeated
    assert rgb["mean"] == pytest.approx([canvases.mean()] * 3, rel=1e-10)


def test_dataset_norm_reaches_extract_and_finetune_alike(pneu_subset, tmp_path, monkeypatch):
    from medfm.config import ExtractConfig, FinetuneConfig
    from medfm.extract import run_extract
    from medfm.finetune.data import Augmentation, train_transform
    from medfm.finetune.runner import finetune_inputs, finetune_run_key

    monkeypatch.setenv("MEDFM_CACHE", str(tmp_path))
    common = dict(backbone="mobilenetv2", weights="random", dataset=str(pneu_subset), img_size=32, resize="pad")
    plain = run_extract(ExtractConfig(**common, num_workers=0))
    normed = run_extract(ExtractConfig(**common, norm="dataset", num_workers=0))
    assert normed.fingerprint != plain.fingerprint
    import zarr

    meta = zarr.open_group(str(normed.cache), mode="r").attrs["medfm"]
    pre = meta["fingerprint_inputs"]["backbone"]["preprocessing"]
    assert pre["norm"]["kind"] == "dataset" and pre["resize"]["policy"] == "pad" and meta["pixels"] is None
    ft = FinetuneConfig(**common, norm="dataset", epochs=1)
    dataset, spec = finetune_inputs(ft)  # the same sidecar: the same statistics as the extract
    assert list(spec.data_config["mean"]) == pre["mean"]
    assert finetune_run_key(ft, (dataset, spec)) != finetune_run_key(ft.model_copy(update={"norm": "backbone"}))
    flips = Augmentation(crop_scale=1.0, hflip=True, rotation=0.0)  # a random crop of the whole canvas, a flip
    x = train_transform(Backbone(spec, torch.nn.Identity()), flips)(dataset.splits["train"].images.load(0))
    black = (0 - torch.tensor(spec.data_config["mean"])) / torch.tensor(spec.data_config["std"])
    assert x.shape == (3, 32, 32) and torch.allclose(x[:, 0, 0], black, atol=1e-6)  # pad's black corner survives


def test_a_sweeps_resize_reaches_its_rows_and_their_identity(pneu_subset, tmp_path, monkeypatch):
    """--resize on the sweep reaches every extract; the probe row's identity names it (and crop's names nothing)."""
    from medfm.config import SweepConfig
    from medfm.results import ResultsStore
    from medfm.sweep import run_sweep

    monkeypatch.setenv("MEDFM_CACHE", str(tmp_path / "cache"))
    common = dict(backbones=["mobilenetv2"], datasets=[str(pneu_subset)], heads=["knn"], weights={"mobilenetv2": "random"},
                  img_size=32, probe={"ks": [5], "bootstrap": 0}, out=str(tmp_path / "runs"), results=str(tmp_path / "r.sqlite"))
    pad = run_sweep(SweepConfig(**common, resize="pad"))
    crop = run_sweep(SweepConfig(**common))
    assert pad["ran"] == crop["ran"] == 1 and pad["caches"] != crop["caches"]
    identities = {r["identity"].get("resize") for r in ResultsStore(str(tmp_path / "r.sqlite")).records()}
    assert identities == {"pad", None}


def test_study1_augmentation_goes_between_the_squash_crop_and_to_tensor():
    """Exact study 1: Resize((S, S)) -> CenterCrop -> its random steps -> ToTensor -> Normalize (defaults/bases.py:L63-158)."""
    from medfm.finetune.data import _flat, policy_for, train_transform

    spec = resolve_backbone("mobilenetv2", "random", 64, resize="squash")
    _, aug = policy_for("study1", "pneumoniamnist", None)
    steps = _flat(train_transform(Backbone(spec, torch.nn.Identity()), aug))
    assert [type(s).__name__ for s in steps][1:] == ["PolicyGeometry", "RandomResizedCrop", "RandomVerticalFlip",
                                                     "RandomHorizontalFlip", "RandomApply", "ToTensor", "Normalize"]
    assert steps[1].side == 73  # round(64 * 256 / 224)


def test_norm_sidecar_survives_truncation_edits_two_writers_and_a_full_disk(pneu_subset, tmp_path, monkeypatch):
    """The statistics sidecar: a truncated or hand-edited file is recomputed (never read as numbers); two
    writers at once both end with the same statistics and one whole file; a full disk is one MedfmError with
    no temporary file left behind."""
    import errno
    import json
    import threading
    from pathlib import Path

    from medfm.data import create_dataset

    monkeypatch.setenv("MEDFM_CACHE", str(tmp_path))
    dataset = create_dataset(str(pneu_subset))
    spec = resolve_backbone("mobilenetv2", "random", 32, resize="pad")
    first = dataset_stats(spec, dataset)
    path = stats_path(dataset, fingerprint(stats_key(spec, dataset)))
    whole = path.read_text()
    for broken in (whole[: len(whole) // 2], whole.replace('"mean"', '"mean_"'),
                   json.dumps({**json.loads(whole), "std": [0.1]})):  # truncated; no mean; 1 channel for 3
        path.write_text(broken)
        assert dataset_stats(spec, dataset)["mean"] == first["mean"]
        assert json.loads(path.read_text())["mean"] == first["mean"]  # replaced by a whole file

    path.unlink()
    results, start = [], threading.Barrier(2)

    def writer():
        start.wait()
        results.append(dataset_stats(spec, dataset))

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r["mean"] for r in results] == [first["mean"]] * 2 and [r["std"] for r in results] == [first["std"]] * 2
    assert json.loads(path.read_text())["key_sha256"] == first["key_sha256"]
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith("norm-")) == [path.name]

    path.unlink()
    real_write = Path.write_text

    def full(self, *args, **kwargs):
        if ".tmp" in self.name:
            real_write(self, "{")  # a partial file, then the disk fills
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(MedfmError, match="disk full writing .*norm-.*--norm dataset statistics"):
        dataset_stats(spec, dataset)
    assert not any(p.name.startswith("norm-") for p in path.parent.iterdir())  # no sidecar, no temporary file

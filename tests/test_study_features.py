"""Study 1's feature options (issue 17, point 9 and point 3): ``drop_cutoff`` and ``tokens_from attn_pool``.

``drop_cutoff``: features from an intermediate block, checked against a manual forward through the
first blocks of DINOv2 ViT-S/14 (real weights, 56 px) — the computation of study 1's
``new_forward_features`` (``utils/transformers/dinov2_utils.py:L93-115`` @02db977). ``attn_pool``:
CoCa's attention-pooler tokens, checked against the open_clip tower's own modules composed by hand
(the real ``coca_ViT-B-32`` architecture, seeded random init, at 64 px).
"""

from dataclasses import replace

import numpy as np
import pytest
import torch

from medfm.backbones import Backbone, create_backbone, resolve_backbone
from medfm.errors import MedfmError

CUT = 3


def test_drop_cutoff_features_equal_a_manual_forward_through_the_first_blocks(dinov2_s_weights):
    x = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    bb = create_backbone("dinov2_vits14", weights=str(dinov2_s_weights), img_size=56, drop_cutoff=CUT)
    net = bb.net
    ran = []
    later = net.blocks[CUT + 1].register_forward_hook(lambda m, i, o: ran.append(1))
    with torch.no_grad():
        cls, tokens = bb.embed(x, with_tokens=True)
        h = net.norm_pre(net.patch_drop(net._pos_embed(net.patch_embed(x))))
        for blk in net.blocks[: CUT + 1]:
            h = blk(h)
    later.remove()
    assert not ran  # the blocks after the cut-off never run
    torch.testing.assert_close(cls, net.norm(h)[:, 0], rtol=0, atol=0)  # study 1: x_norm_clstoken of block CUT
    torch.testing.assert_close(tokens, h[:, 1:], rtol=0, atol=0)  # its x_prenorm patch tokens (the DeiT head's input)
    assert len(bb.blocks()) == CUT + 1 and len(bb.dropped_blocks()) == 12 - CUT - 1
    with torch.no_grad():
        whole = Backbone(replace(bb.spec, drop_cutoff=None), net).embed(x)[0]
    assert not torch.allclose(whole, cls)  # and it is not the whole model's feature
    assert bb.spec.identity()["drop_cutoff"] == CUT and "drop_cutoff" not in resolve_backbone(
        "dinov2_vits14", weights="random", img_size=56).identity()  # unset: earlier fingerprints unchanged
    with pytest.raises(MedfmError, match=r"--drop-cutoff 12 is out of range: dinov2_vits14 has 12 blocks \(0..11\)"):
        Backbone(replace(bb.spec, drop_cutoff=12), net).blocks()
    with pytest.raises(MedfmError, match="--feature pooled is the model's own final output"):
        resolve_backbone("clip_vitb16", weights="random", drop_cutoff=2)


def test_drop_cutoff_cache_is_fingerprinted_and_finetune_trains_only_blocks_that_run(pneu_subset, dinov2_s_weights,
                                                                                     tmp_path):
    from medfm.cache import FeatureCache
    from medfm.config import ExtractConfig
    from medfm.extract import run_extract
    from medfm.finetune import FinetuneConfig, run_finetune

    common = dict(backbone="dinov2_vits14", weights=str(dinov2_s_weights), dataset=str(pneu_subset), img_size=28)
    cut = run_extract(ExtractConfig(**common, drop_cutoff=2, num_workers=0, cache=str(tmp_path / "c.zarr")))
    meta = FeatureCache(cut.cache).meta
    assert meta["backbone"]["drop_cutoff"] == 2 and meta["fingerprint_inputs"]["backbone"]["drop_cutoff"] == 2
    full = run_extract(ExtractConfig(**common, num_workers=0, cache=str(tmp_path / "f.zarr")))
    assert full.fingerprint != cut.fingerprint
    bb = create_backbone("dinov2_vits14", weights=str(dinov2_s_weights), img_size=28, drop_cutoff=2)
    first = torch.as_tensor(np.asarray(FeatureCache(cut.cache).features("train")[:4], dtype=np.float32))
    from medfm.data import create_dataset

    train = create_dataset(str(pneu_subset)).splits["train"]
    with torch.no_grad():
        ref = bb.embed(torch.stack([bb.transform(train.images.load(i)) for i in range(4)]))[0]
    torch.testing.assert_close(first, ref, rtol=2e-3, atol=2e-3)  # float16 cache

    out = tmp_path / "ft"
    rec = run_finetune(FinetuneConfig(**common, drop_cutoff=2, unfreeze=1, epochs=1, batch_size=16, fraction=0.5,
                                      num_workers=0, save_model=True, out=str(out), results=str(tmp_path / "r.sqlite")))
    assert rec["blocks"] == 3 and rec["identity"]["drop_cutoff"] == 2
    after = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    before = bb.net.state_dict()
    for name, tensor in before.items():
        same = torch.equal(after["net." + name], tensor)
        if name.startswith(("blocks.2.", "norm.")):
            continue  # the one unfrozen block and the final norm after it (as without --drop-cutoff)
        assert same, f"{name} changed: only block 2 (the last block that runs) and the final norm train"
    assert not all(torch.equal(after["net." + n], t) for n, t in before.items() if n.startswith("blocks.2."))


@pytest.fixture(scope="module")
def coca():
    return create_backbone("coca_vitb32", weights="random", img_size=64, tokens_from="attn_pool")


def test_coca_attn_pool_tokens_are_the_pooled_token_and_the_poolers_outputs(coca):
    net = coca.net
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pooled, tokens = coca.embed(x, with_tokens=True)
        # open_clip's CoCa tower by hand: transformer -> attention pooler (256 queries) -> ln_post;
        # query 0 projected is the image embedding, queries 1..255 are the tokens (study 1 concatenates them)
        q = net.ln_post(net.attn_pool(net.transformer(net._embeds(x))))
        expected = torch.cat([(q[:, 0] @ net.proj)[:, None], q[:, 1:]], dim=1)
    assert tokens.shape == (2, 256, 512) and pooled.shape == (2, 512)
    torch.testing.assert_close(tokens, expected, rtol=0, atol=0)
    torch.testing.assert_close(pooled, expected[:, 0], rtol=0, atol=0)
    assert coca.spec.identity()["tokens_from"] == "attn_pool" and coca.spec.tokens_source == "attn_pool"
    with pytest.raises(MedfmError, match="clip_vitb16 has no attention pooler"):
        resolve_backbone("clip_vitb16", weights="random", tokens_from="attn_pool")
    with pytest.raises(MedfmError, match="which --drop-cutoff drops"):
        resolve_backbone("coca_vitb32", weights="random", tokens_from="attn_pool", drop_cutoff=3)


def test_coca_attn_pool_feeds_the_deit_head_in_extract_and_finetune(coca, pneu_subset):
    from medfm.config import ExtractConfig, FinetuneConfig
    from medfm.data import create_dataset
    from medfm.extract.runner import default_cache_path, fingerprint_inputs
    from medfm.finetune.model import FinetuneModel
    from medfm.finetune.runner import finetune_inputs
    from medfm.heads.deit import DeiTHead

    dataset = create_dataset(str(pneu_subset))
    cfg = ExtractConfig(backbone="coca_vitb32", dataset=str(pneu_subset), weights="random", img_size=64, tokens=True,
                        tokens_from="attn_pool")
    inputs = fingerprint_inputs(cfg, dataset, coca.spec)
    assert inputs["tokens_from"] == "attn_pool" and inputs["backbone"]["tokens_from"] == "attn_pool"
    assert default_cache_path(dataset, coca.spec, "0" * 12, "zarr", True).name.startswith("coca_vitb32-pooled-attnpool-tokens")
    ft = FinetuneConfig(backbone="coca_vitb32", dataset=str(pneu_subset), weights="random", img_size=64, head="deit",
                        deit_weights="random", tokens_from="attn_pool")
    assert finetune_inputs(ft)[1].tokens_from == "attn_pool"
    assert finetune_inputs(ft.model_copy(update={"head": "linear"}))[1].tokens_from == "patch"  # pooled heads: unused
    seen = []
    head = DeiTHead(512, 2, depth=1, num_tokens=256)
    head.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    model = FinetuneModel(coca, head, "tokens", unfreeze=0).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)
        _, tokens = coca.embed(x, with_tokens=True)
    assert logits.shape == (2, 2) and torch.equal(seen[0], tokens) and tokens.shape[1] == 256


def test_seem_drop_cutoff_reads_the_stage_through_its_own_norm_as_study_1():
    """Study 1's focal branch reads SEEM's ``res{c+2}``: stage c's output through ``norm{c}``, mean over H x W."""
    bb = create_backbone("seem_focalt", weights="random", img_size=64, drop_cutoff=1)
    net = bb.net
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        mean, _ = bb.embed(x)
        h = net.layers[1](net.layers[0].downsample(net.layers[0](net.patch_embed(x))))
        expected = net.norm1(h.permute(0, 2, 3, 1)).mean(dim=(1, 2))
    torch.testing.assert_close(mean, expected, rtol=0, atol=0)


# -- study 3's DINOv2: torch.hub's dinov2_vits14_lc ------------------------------------------------------------

def _hub_lc_reference(vit, head, x):
    """facebookresearch/dinov2 hub/classifiers.py _LinearClassifierWrapper (layers=4), re-typed over a timm ViT:
    get_intermediate_layers(n=4, return_class_token=True) normalises the last 4 block outputs."""
    outs, h = [], vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
    for blk in vit.blocks:
        h = blk(h)
        outs.append(h)
    normed = [vit.norm(o) for o in outs[-4:]]
    return head(torch.cat([o[:, 0] for o in normed] + [normed[-1][:, vit.num_prefix_tokens:].mean(dim=1)], dim=1))


def test_dinov2_lc_is_the_hubs_backbone_plus_imagenet_linear_head(dinov2_s_weights, tmp_path, monkeypatch):
    """dinov2_vits14_lc from torch.hub's two files (head file, backbone file beside it) or from one state_dict:
    the same backbone as dinov2_vits14 from the same weights, the logits of the hub's wrapper, the backbone file's
    sha256 in the identity; a head file without its backbone, offline, is one error."""
    from safetensors.torch import load_file

    from medfm.cache.fingerprint import fingerprint

    torch.manual_seed(0)
    head_state = {"weight": torch.randn(1000, 5 * 384) * 0.02, "bias": torch.randn(1000) * 0.02}
    hub = tmp_path / "checkpoints"
    hub.mkdir()
    torch.save(head_state, hub / "dinov2_vits14_linear4_head.pth")
    torch.save(load_file(str(dinov2_s_weights)), hub / "dinov2_vits14_pretrain.pth")
    lc = create_backbone("dinov2_vits14_lc", weights=str(hub / "dinov2_vits14_linear4_head.pth"), img_size=56)
    plain = create_backbone("dinov2_vits14", weights=str(dinov2_s_weights), img_size=56)
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        logits, _ = lc.embed(x)
        assert torch.equal(lc.net.vit.state_dict()["blocks.11.mlp.fc2.weight"], plain.net.state_dict()["blocks.11.mlp.fc2.weight"])
        head = torch.nn.Linear(1920, 1000)
        head.load_state_dict(head_state)
        ref = _hub_lc_reference(plain.net, head, x)
    assert logits.shape == (2, 1000)
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)
    ident = lc.spec.identity()
    assert ident["model_config"]["backbone_weights"]["file"] == "dinov2_vits14_pretrain.pth"
    assert len(ident["model_config"]["backbone_weights"]["sha256"]) == 64

    whole = {**{f"backbone.{k}": v for k, v in load_file(str(dinov2_s_weights)).items()},
             **{f"linear_head.{k}": v for k, v in head_state.items()}}
    torch.save(whole, tmp_path / "lc_state_dict.pth")
    one = create_backbone("dinov2_vits14_lc", weights=str(tmp_path / "lc_state_dict.pth"), img_size=56)
    with torch.no_grad():
        torch.testing.assert_close(one.embed(x)[0], logits, rtol=0, atol=0)
    assert fingerprint(one.spec.identity()) != fingerprint(ident)

    alone = tmp_path / "alone"
    alone.mkdir()
    torch.save(head_state, alone / "dinov2_vits14_linear4_head.pth")
    monkeypatch.setenv("MEDFM_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    with pytest.raises(MedfmError, match="dinov2_vits14_pretrain.pth is not beside it") as exc:
        resolve_backbone("dinov2_vits14_lc", weights=str(alone / "dinov2_vits14_linear4_head.pth"), img_size=56)
    assert "--weights random" in exc.value.fix


def test_study3_mlp_head_on_the_lc_logits_trains_only_itself_when_frozen(pneu_subset, tmp_path):
    """Study 3's frozen DINOv2 row: the whole _lc model frozen, MLP 1000 -> 256 -> ReLU -> 2 trained; unfrozen:
    the ImageNet linear layer trains too."""
    from medfm.config import FinetuneConfig
    from medfm.finetune.runner import build_model, finetune_inputs
    from medfm.heads import HEADS

    cfg = FinetuneConfig(backbone="dinov2_vits14_lc", weights="random", dataset=str(pneu_subset), img_size=28,
                         head="mlp", unfreeze=0, epochs=1, num_workers=0)
    _, spec = finetune_inputs(cfg)
    model, _ = build_model(cfg, spec, HEADS.get("mlp"), 2)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert sum(trainable.values()) == 1000 * 256 + 256 + 256 * 2 + 2 and all(n.startswith("head.") for n in trainable)
    full, _ = build_model(cfg.model_copy(update={"unfreeze": "all"}), spec, HEADS.get("mlp"), 2)
    names = {n for n, p in full.named_parameters() if p.requires_grad}
    assert {"net.linear_head.weight", "net.vit.blocks.0.attn.qkv.weight"} <= names

"""Fine-tune config keys, freezing and lr groups on a real (randomly initialised) DINOv2-S, no data."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import REPO

from medfm.finetune import FinetuneConfig


def test_every_key_settable_from_a_config_file_and_documented(tmp_path):
    values = {"backbone": "dinov2_vits14", "dataset": "busi", "unfreeze": "all", "head": "deit", "head_depth": 2,
              "epochs": 3, "batch_size": 8, "grad_accum": 2, "lr": 3e-4, "head_lr": 1e-3, "weight_decay": 0.05,
              "layer_decay": 0.75, "warmup_steps": 5, "grad_clip": 3.0, "amp": False, "grad_checkpointing": True,
              "augment": "none", "class_weight": True, "balanced_sampling": True, "early_stop_patience": 4,
              "fraction": 0.1, "seed": 7, "keep": "last", "distributed": "fsdp", "deterministic": True, "resume": False}
    f = tmp_path / "ft.yaml"
    f.write_text(yaml.safe_dump({"finetune": values, "probe": {"head": "linear"}}))
    cfg = FinetuneConfig.load(f, {"epochs": 9})  # the command line wins over the file
    assert cfg.to_dict() == {**FinetuneConfig(backbone="x", dataset="y").to_dict(), **values, "epochs": 9}
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### `medfm finetune`"):readme.index("### `medfm demo`")]
    missing = [k for k in FinetuneConfig.model_fields if f"`{k}`" not in section]
    assert not missing, f"README's finetune table lacks {missing}"


def test_bad_unfreeze_is_rejected():
    from medfm.errors import MedfmError

    with pytest.raises(MedfmError, match="unfreeze"):
        FinetuneConfig.load(None, {"backbone": "b", "dataset": "d", "unfreeze": -2})


@pytest.fixture(scope="module")
def random_dinov2():
    """One randomly initialised DINOv2-S at 28 px; each FinetuneModel below re-applies its own freezing."""
    from medfm.backbones import create_backbone

    return create_backbone("dinov2_vits14", weights="random", img_size=28)


def test_unfreeze_sets_requires_grad_train_mode_and_layer_decay(random_dinov2):
    from medfm.finetune.model import FinetuneModel, param_groups

    bb = random_dinov2
    model = FinetuneModel(bb, torch.nn.Linear(384, 2), "pooled", unfreeze=2).train()
    trainable = {n for n, p in bb.net.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in bb.net.named_parameters() if n.startswith(("blocks.10.", "blocks.11.", "norm."))}
    assert all(not m.training for n, m in bb.net.named_modules() if n.startswith(("blocks.3.", "patch_embed")))
    assert bb.net.blocks[11].training and bb.net.blocks[10].norm1.training
    groups = param_groups(model, lr=1.0, head_lr=10.0, weight_decay=0.1, layer_decay=0.5)
    lr_of = {n: g["lr"] for g in groups for n in g["names"]}
    assert lr_of["net.blocks.11.attn.qkv.weight"] == 1.0 and lr_of["net.blocks.10.attn.qkv.weight"] == 0.5
    assert lr_of["net.norm.weight"] == 1.0 and lr_of["head.weight"] == 10.0
    wd_of = {n: g["weight_decay"] for g in groups for n in g["names"]}
    assert wd_of["net.blocks.11.attn.qkv.weight"] == 0.1 and wd_of["net.blocks.11.norm1.weight"] == 0.0

    full = FinetuneModel(bb, torch.nn.Linear(384, 2), "pooled", unfreeze=12)
    lr_full = {n: g["lr"] for g in param_groups(full, 1.0, 1.0, 0.0, 0.5) for n in g["names"]}
    assert lr_full["net.cls_token"] == 0.5**12 and lr_full["net.blocks.0.mlp.fc1.weight"] == 0.5**11

    frozen = FinetuneModel(bb, torch.nn.Linear(384, 2), "pooled", unfreeze=0).train()
    assert not any(p.requires_grad for p in frozen.net.parameters()) and not frozen.net.training
    assert frozen.head.training


def test_grad_checkpointing_still_trains_the_unfrozen_block(random_dinov2):
    from medfm.finetune.model import FinetuneModel

    bb = random_dinov2
    model = FinetuneModel(bb, torch.nn.Linear(384, 2), "pooled", unfreeze=1).train()
    torch.nn.init.normal_(model.head.weight)
    bb.net.set_grad_checkpointing(True)
    model(torch.randn(2, 3, 28, 28)).sum().backward()
    assert bb.net.blocks[11].mlp.fc1.weight.grad.abs().sum() > 0 and bb.net.norm.weight.grad is not None
    assert bb.net.blocks[10].mlp.fc1.weight.grad is None

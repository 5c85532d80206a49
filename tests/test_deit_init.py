"""The DeiT head starts from ImageNet DeiT-B by default (issue 17, point 1).

No real ImageNet DeiT-B file is available offline, so the loader is tested with a state dict of the
real ``deit_base_patch16_224`` architecture (timm, seeded random init) saved to a temporary file: the
key mapping is strict, the file's sha256 is what the run key and identity hold, and without a file
offline the CLI stops with one line saying how to pass one or choose random init.
"""

import hashlib

import pytest
import torch

from medfm.errors import MedfmError
from medfm.heads.deit import DeiTHead
from medfm.heads.deit_weights import DEIT_ENV, resolve_deit_weights, with_deit_identity


@pytest.fixture(scope="module")
def deit_file(tmp_path_factory):
    """The real DeiT-B/16 architecture (timm keys, ImageNet classifier included), seeded random init, on disk."""
    import timm

    torch.manual_seed(3)
    state = timm.create_model("deit_base_patch16_224", pretrained=False).state_dict()
    path = tmp_path_factory.mktemp("deit") / "deit_base_patch16_224.pth"
    torch.save({"model": state}, path)  # Meta's release wraps its state dict the same way
    return path, state


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No DeiT-B file anywhere medfm looks, and no network."""
    for var in (DEIT_ENV,):
        monkeypatch.delenv(var, raising=False)
    env = {"MEDFM_OFFLINE": "1", "MEDFM_WEIGHTS": str(tmp_path / "no-weights"), "HF_HUB_CACHE": str(tmp_path / "hf"),
           "TORCH_HOME": str(tmp_path / "torch")}
    (tmp_path / "no-weights").mkdir()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def test_default_init_loads_the_file_strictly_and_records_its_sha256(deit_file, monkeypatch):
    path, state = deit_file
    monkeypatch.setenv(DEIT_ENV, str(path))
    init = resolve_deit_weights(None)  # omitted = ImageNet DeiT-B, here found through $MEDFM_DEIT_WEIGHTS
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert init.kind == "file" and init.sha256 == digest and init.label == "imagenet"
    assert resolve_deit_weights("imagenet") == init
    head = DeiTHead(384, 2, depth=2, num_tokens=16, init=init)
    for key in ("cls_token", "pos_embed", "norm.weight", "norm.bias", "blocks.0.attn.qkv.weight", "blocks.1.mlp.fc2.bias"):
        assert torch.equal(head.state_dict()[key], state[key]), key
    assert not torch.equal(DeiTHead(384, 2, depth=2, init=resolve_deit_weights("random")).blocks[0].attn.qkv.weight,
                           state["blocks.0.attn.qkv.weight"])
    # a user's own file (PATH) is the same bytes: same identity, labelled as a file
    own = resolve_deit_weights(str(path))
    assert own.identity() == init.identity() == f"sha256:{digest}" and own.label == "file"
    # the run key / identity hold the resolved start for the deit head, and nothing changes for other heads
    assert with_deit_identity({"head": "deit", "deit_weights": None})["deit_weights"] == f"sha256:{digest}"
    assert with_deit_identity({"head": "deit", "deit_weights": "random"})["deit_weights"] == "random"
    assert with_deit_identity({"head": "linear", "deit_weights": None}) == {"head": "linear", "deit_weights": None}


def test_loader_refuses_files_that_are_not_deit_b(deit_file, tmp_path):
    _, state = deit_file
    tiny = {k: torch.zeros(()).expand(v.shape) for k, v in state.items()}  # every key and shape, a few bytes on disk

    def refused(st: dict, match: str):
        p = tmp_path / f"bad{len(list(tmp_path.iterdir()))}.pth"
        torch.save(st, p)
        with pytest.raises(MedfmError, match=match):
            DeiTHead(384, 2, depth=1, init=resolve_deit_weights(str(p)))

    refused({**tiny, "dist_token": torch.zeros(1, 1, 768)}, "unexpected dist_token")  # distilled DeiT
    refused({k: v for k, v in tiny.items() if k != "blocks.11.mlp.fc2.bias"}, "missing blocks.11.mlp.fc2.bias")
    refused({**tiny, "pos_embed": torch.zeros(1, 198, 768)}, r"pos_embed has shape \(1, 198, 768\)")
    ok = tmp_path / "no-classifier.pth"  # the ImageNet classifier may be left out; every other key must be there
    torch.save({k: v for k, v in tiny.items() if not k.startswith("head.")}, ok)
    DeiTHead(384, 2, depth=1, init=resolve_deit_weights(str(ok)))
    with pytest.raises(MedfmError, match="--deit-weights random"):
        resolve_deit_weights(str(tmp_path / "missing.pth"))


def test_offline_without_the_file_the_finetune_stops_before_training(offline, pneu_subset):
    from medfm.config import FinetuneConfig
    from medfm.finetune.runner import finetune_run_key

    cfg = FinetuneConfig(backbone="mobilenetv2", dataset=str(pneu_subset), head="deit", img_size=32)
    with pytest.raises(MedfmError, match="--deit-weights PATH") as err:
        finetune_run_key(cfg)
    assert "--deit-weights random" in str(err.value) and "MEDFM_OFFLINE is set" in str(err.value)
    finetune_run_key(cfg.model_copy(update={"deit_weights": "random"}))  # explicit random init needs no file


def test_deit_probe_offline_without_weights_exits_2_with_one_line(offline, cli, pneu_subset, mobilenet_weights, tmp_path):
    from medfm.config import ExtractConfig
    from medfm.extract import run_extract

    cache = run_extract(ExtractConfig(backbone="mobilenetv2", dataset=str(pneu_subset), img_size=32, tokens=True,
                                      num_workers=0, cache=str(tmp_path / "tokens.zarr"))).cache
    line = cli.error("probe", "--cache", cache, "--head", "deit", "--epochs", 1, env=offline)
    assert "deit_base_patch16_224.fb_in1k" in line and "--deit-weights PATH" in line
    assert "--deit-weights random" in line

"""`--grey red`: grey images through the stem's red-channel filter only (the first study's 1-channel stem).

medfm computes it by zeroing G and B after normalisation; these tests rebuild the stem as a real
1-input-channel conv keeping the red filter and check both give the same features.
"""

import copy

import numpy as np
import pytest
import torch

from medfm.backbones import GREY_MODES, create_backbone, resolve_backbone
from medfm.config import ExtractConfig
from medfm.errors import MedfmError
from medfm.extract import run_extract


def one_channel_stem(net: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``net`` whose first 3-input conv is rebuilt with 1 input channel and the red filter."""
    net = copy.deepcopy(net)
    for parent in net.modules():
        for name, child in parent.named_children():
            if isinstance(child, torch.nn.Conv2d) and child.in_channels == 3:
                conv = torch.nn.Conv2d(1, child.out_channels, child.kernel_size, child.stride, child.padding,
                                       child.dilation, child.groups, child.bias is not None)
                conv.weight.data.copy_(child.weight.data[:, :1])
                if child.bias is not None:
                    conv.bias.data.copy_(child.bias.data)
                setattr(parent, name, conv)
                return net
    raise AssertionError("no 3-channel stem conv found")


@pytest.mark.parametrize("name,size", [("dinov2_vits14", 56), ("mobilenetv2", 64)])
def test_red_mode_equals_a_rebuilt_one_channel_stem(name, size, request):
    weights = str(request.getfixturevalue("dinov2_s_weights" if name == "dinov2_vits14" else "mobilenet_weights"))
    red = create_backbone(name, weights=weights, img_size=size, grey="red")
    repeat = create_backbone(name, weights=weights, img_size=size)
    torch.manual_seed(0)
    grey = torch.rand(4, 1, size, size)
    mean, std = (torch.tensor(red.spec.data_config[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    x = (grey.expand(-1, 3, -1, -1) - mean) / std  # the normalised batch extract feeds the backbone
    with torch.inference_mode():
        got, _ = red.embed(x)
        plain, _ = repeat.embed(x)
        repeat.net = one_channel_stem(repeat.net)  # same real weights, stem rebuilt with 1 input channel
        want, _ = repeat.embed(x[:, :1])
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()
    assert (got - plain).norm() > 0.05 * plain.norm()  # and it is not the repeat mode's feature


def test_grey_mode_is_in_the_backbone_identity_and_repeat_keeps_the_old_one():
    repeat = resolve_backbone("mobilenetv2", "random", 32)
    red = resolve_backbone("mobilenetv2", "random", 32, grey="red")
    assert repeat.identity()["preprocessing"]["channels"] == GREY_MODES["repeat"] == "grey repeated to RGB"
    assert red.identity()["preprocessing"]["channels"] == GREY_MODES["red"]
    with pytest.raises(MedfmError, match="not a grey-image mode"):
        resolve_backbone("mobilenetv2", "random", 32, grey="green")


def test_red_mode_refuses_a_colour_dataset_and_runs_on_a_grey_one(data_root, mobilenet_weights, tmp_path):
    common = dict(backbone="mobilenetv2", weights=str(mobilenet_weights), img_size=32, data_root=str(data_root), grey="red")
    with pytest.raises(MedfmError, match=r"ham10000_224/.*is colour \(RGB\)"):  # dermoscopy: colour PNGs
        run_extract(ExtractConfig(dataset=str(data_root / "ham10000_224"), cache=str(tmp_path / "d.zarr"), **common))
    assert not (tmp_path / "d.zarr").exists()
    red = run_extract(ExtractConfig(dataset="breastmnist", cache=str(tmp_path / "red.zarr"), **common))
    rep = run_extract(ExtractConfig(dataset="breastmnist", cache=str(tmp_path / "rep.zarr"), **{**common, "grey": "repeat"}))
    assert red.fingerprint != rep.fingerprint
    from medfm.cache import FeatureCache

    a, b = FeatureCache(red.cache), FeatureCache(rep.cache)
    assert a.meta["fingerprint_inputs"]["backbone"]["preprocessing"]["channels"] == GREY_MODES["red"]
    assert not np.allclose(a.features("test"), b.features("test"))

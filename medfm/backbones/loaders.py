"""Loaders: one per model library, each turning a registry entry into a module plus a data config.

A loader answers three questions the pipeline asks of every backbone, whatever library made it:
what preprocessing it expects (without building it), how to build it from resolved weights, and
how to read its outputs as ``TokenOutput``.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Protocol

import torch
from torch import nn

from medfm.backbones.entry import BackboneEntry
from medfm.backbones.features import TokenOutput
from medfm.backbones.weights import RANDOM_INIT_SEED, HubSource, Weights
from medfm.errors import MedfmError


class Loader(Protocol):
    def data_config(self, entry: BackboneEntry) -> dict: ...

    def hub(self, entry: BackboneEntry) -> HubSource | None: ...

    def build(self, entry: BackboneEntry, weights: Weights, img_size: int | None) -> nn.Module: ...

    def tokens(self, net: nn.Module, x: torch.Tensor) -> TokenOutput: ...

    def blocks(self, net: nn.Module) -> list[nn.Module]: ...


LOADERS: dict[str, Loader] = {}


def _wrong_weights(entry: BackboneEntry, weights: Weights, exc: Exception) -> MedfmError:
    first = " ".join(str(exc).split())  # one line, whatever the library printed
    first = first if len(first) < 240 else first[:240] + "…"
    return MedfmError(
        f"{weights.path} does not fit backbone {entry.name!r} ({entry.model_id}): {first}",
        f"pass the checkpoint of {entry.model_id} (see `medfm backbones`)",
    )


class _KeyReport(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.problems: list[str] = []

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith(("Missing keys", "Unexpected keys")):
            self.problems.append(msg.split(" discovered")[0].split(" found")[0])


@contextmanager
def _strict_timm_load():
    """Fail on any missing or unexpected key in a timm pretrained load.

    timm loads non-strictly whenever the classifier is dropped (``num_classes=0``) and only logs
    the keys it skipped; a wrong checkpoint would then silently leave a mostly random model.
    """
    report = _KeyReport()
    logger = logging.getLogger("timm.models._builder")
    old_level = logger.level
    logger.addHandler(report)
    logger.setLevel(logging.INFO)
    try:
        yield report
    finally:
        logger.removeHandler(report)
        logger.setLevel(old_level)
    if report.problems:
        raise RuntimeError("; ".join(report.problems))


class TimmLoader:
    """timm models: preprocessing from the pretrained config, tokens from ``forward_features``."""

    def data_config(self, entry):
        import timm.data
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(entry.model_id)
        if cfg is None:
            raise MedfmError(f"timm has no pretrained config {entry.model_id!r}", "upgrade timm")
        return dict(timm.data.resolve_data_config(pretrained_cfg=cfg.to_dict()))

    def hub(self, entry):
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(entry.model_id)
        if cfg is None or not (cfg.hf_hub_id or cfg.url):
            return None
        return HubSource(hf_repo=cfg.hf_hub_id, url=cfg.url)

    def build(self, entry, weights, img_size):
        import timm

        kwargs = dict(num_classes=0, **entry.model_kwargs)
        if img_size and entry.arch == "vit":
            kwargs["img_size"] = img_size
        if weights.kind == "random":
            with torch.random.fork_rng():
                torch.manual_seed(RANDOM_INIT_SEED)
                return timm.create_model(entry.model_id, pretrained=False, **kwargs)
        # timm's own checkpoint filters run here: key remapping (e.g. Meta's DINOv2 .pth) and
        # position-embedding resampling to img_size.
        try:
            with _strict_timm_load():
                return timm.create_model(
                    entry.model_id, pretrained=True, pretrained_cfg_overlay=dict(file=str(weights.path)), **kwargs
                )
        except (RuntimeError, KeyError, ValueError) as exc:
            raise _wrong_weights(entry, weights, exc) from None

    def tokens(self, net, x):
        out = net.forward_features(x)
        if out.ndim == 4:  # CNN feature map [B, C, H, W]
            return TokenOutput(prefix=None, patches=out.flatten(2).transpose(1, 2))
        p = getattr(net, "num_prefix_tokens", 0)
        return TokenOutput(prefix=out[:, :p], patches=out[:, p:])

    def blocks(self, net):
        if hasattr(net, "blocks"):
            return list(net.blocks)
        if hasattr(net, "layer4"):  # ResNet family
            return [net.layer1, net.layer2, net.layer3, net.layer4]
        if hasattr(net, "stages"):
            return list(net.stages)
        raise MedfmError(f"no block list known for {type(net).__name__}", "report this backbone as a bug")


class TorchvisionLoader:
    """torchvision classification models (their exact ImageNet files), trunk = ``model.features``."""

    def _weights_enum(self, entry):
        import torchvision.models as tvm

        return tvm.get_model_weights(entry.model_id)[entry.model_kwargs.get("weights_tag", "IMAGENET1K_V1")]

    def data_config(self, entry):
        t = self._weights_enum(entry).transforms()
        crop = t.crop_size[0]
        return {
            "input_size": (3, crop, crop),
            "interpolation": t.interpolation.value,
            "mean": tuple(t.mean),
            "std": tuple(t.std),
            "crop_pct": crop / t.resize_size[0],
            "crop_mode": "center",
        }

    def hub(self, entry):
        return HubSource(url=self._weights_enum(entry).url)

    def build(self, entry, weights, img_size):
        import torchvision.models as tvm

        with torch.random.fork_rng():
            torch.manual_seed(RANDOM_INIT_SEED)
            net = tvm.get_model(entry.model_id, weights=None)
        if weights.kind != "random":
            state = torch.load(weights.path, map_location="cpu", weights_only=True)
            try:
                net.load_state_dict(state, strict=True)  # whole file, classifier included: exact match
            except RuntimeError as exc:
                raise _wrong_weights(entry, weights, exc) from None
        net.classifier = nn.Identity()  # features only, as timm's num_classes=0
        return net

    def tokens(self, net, x):
        fmap = net.features(x)  # what the model's own classifier average-pools
        return TokenOutput(prefix=None, patches=fmap.flatten(2).transpose(1, 2))

    def blocks(self, net):
        return list(net.features)


LOADERS["timm"] = TimmLoader()
LOADERS["torchvision"] = TorchvisionLoader()

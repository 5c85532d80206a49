"""Loaders: one per model library, each turning a registry entry into a module plus a data config.

A loader answers the questions the pipeline asks of every backbone, whatever library made it:
what preprocessing it expects (without building it), how to build it from resolved weights, how
to read its outputs as ``TokenOutput``, and which ordered blocks it has. Library-specific loaders
live in ``loader_*.py`` modules; each registers itself in ``LOADERS``.
"""

from __future__ import annotations

import importlib.util
import logging
from contextlib import contextmanager
from fnmatch import fnmatch

import torch
from torch import nn

from medfm.backbones.entry import BackboneEntry
from medfm.backbones.features import TokenOutput, block_output_to_tokens
from medfm.backbones.weights import RANDOM_INIT_SEED, HubSource, Weights
from medfm.errors import MedfmError

LOADERS: dict[str, "BaseLoader"] = {}


def register_loader(name: str):
    def wrap(cls):
        if name in LOADERS:  # two modules claiming one name would silently replace each other
            raise ValueError(f"loader {name!r} registered twice ({type(LOADERS[name]).__name__} and {cls.__name__})")
        LOADERS[name] = cls()
        return cls

    return wrap


def wrong_weights(entry: BackboneEntry, weights: Weights, exc: Exception | str) -> MedfmError:
    first = " ".join(str(exc).split())  # one line, whatever the library printed
    first = first if len(first) < 240 else first[:240] + "…"
    return MedfmError(
        f"{weights.path} does not fit backbone {entry.name!r} ({entry.model_id}): {first}",
        f"pass the checkpoint of {entry.model_id} (see `medfm backbones`)",
    )


_wrong_weights = wrong_weights  # the old private name


def resolve_blocks(net: nn.Module, spec: str) -> list[nn.Module]:
    """Blocks named by ``spec``: dotted paths, ',' separated.

    A plain name expands a container (``blocks`` -> its children); a glob picks children by name
    without expanding them (``layer[1-4]``, ``features.denseblock*``). Parameter-free modules
    (ReLU, pooling) are not blocks: "unfreeze the last N" counts only modules that can train.
    """
    found: list[nn.Module] = []
    for path in spec.split(","):
        *parents, last = path.strip().split(".")
        mod = net
        for p in parents:
            mod = getattr(mod, p)
        if any(c in last for c in "*?["):
            found += [m for n, m in mod.named_children() if fnmatch(n, last)]
        else:
            m = getattr(mod, last)
            found += list(m) if isinstance(m, (nn.ModuleList, nn.Sequential)) else [m]
    return [m for m in found if any(True for _ in m.parameters())]


def torch_load(path, mmap: bool = False) -> dict:
    """A checkpoint's state dict (safetensors or torch pickle), unwrapped from {'model': ...} etc.

    Every loader reads weights through here, so a file that is not a checkpoint at all (truncated,
    random bytes, a pickle of something else) is one error naming it for every backbone, never a
    library traceback. ``mmap`` maps a zip-format torch file instead of reading it (for a look at its
    keys); an old-format file is then read whole.
    """
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
            except RuntimeError:
                if not mmap:
                    raise
                state = torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - pickle, zip, safetensors and OS errors all mean "unreadable"
        first = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise MedfmError(f"{path} is not a readable checkpoint ({type(exc).__name__}: {first})",
                         "pass a torch .pth/.pt/.bin state dict or a .safetensors file; re-download it if it "
                         "was cut short") from None
    for key in ("model", "state_dict", "module"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise MedfmError(f"{path} holds a {type(state).__name__}, not a state dict",
                         "pass a checkpoint saved with torch.save(model.state_dict(), ...) or a .safetensors file")
    return state


class BaseLoader:
    """Defaults shared by all loaders; subclasses override what their library does differently."""

    requires: dict[str, str] = {}  # importable module -> pip package
    default_blocks = "blocks"
    config_beside_weights = False  # True: the model's config is read from its weights' folder (see configure)

    def configure(self, entry: BackboneEntry, weights: Weights) -> BackboneEntry:
        """The entry completed from the files beside its weights (hf: config.json, preprocessor_config.json)."""
        return entry

    def check_installed(self, entry: BackboneEntry) -> None:
        for module, package in self.requires.items():
            if importlib.util.find_spec(module) is None:
                raise MedfmError(
                    f"backbone {entry.name!r} needs the Python package {package!r} (module {module}), which is not installed",
                    f"pip install {package}",
                )

    def hub(self, entry):
        return None

    def transform(self, spec):
        """The library's own preprocessing for PIL images, or None to build it from ``data_config``."""
        return None

    def blocks(self, net: nn.Module, entry: BackboneEntry) -> list[nn.Module]:
        return resolve_blocks(net, entry.blocks or self.default_blocks)

    def attn_pool_tokens(self, entry: BackboneEntry) -> bool:
        """Whether the model has an attention pooler whose outputs ``--tokens-from attn_pool`` can read (CoCa)."""
        return False

    def block_layout(self, entry: BackboneEntry) -> str:
        return entry.block_layout or ("nld" if entry.arch == "vit" else "nchw")

    def num_prefix(self, net: nn.Module) -> int:
        return int(getattr(net, "num_prefix_tokens", 0))

    def final_norm(self, net: nn.Module) -> nn.Module | None:
        norm = getattr(net, "norm", None)
        return norm if isinstance(norm, nn.LayerNorm) else None

    def cutoff_tokens(self, net: nn.Module, entry: BackboneEntry, out, index: int) -> TokenOutput:
        """Block ``index``'s output as the features of ``--drop-cutoff index``: read as ``--layers`` reads a block."""
        return self.block_tokens(net, entry, out)

    def block_tokens(self, net: nn.Module, entry: BackboneEntry, out) -> TokenOutput:
        layout = self.block_layout(entry)
        norm = self.final_norm(net) if layout == "nld" else None
        return block_output_to_tokens(out, layout, self.num_prefix(net), norm)


def seeded(build):
    """Random init under a fixed seed, so two random builds are the same network."""
    with torch.random.fork_rng():
        torch.manual_seed(RANDOM_INIT_SEED)
        return build()


def load_strict(net: nn.Module, state: dict, entry: BackboneEntry, weights: Weights) -> nn.Module:
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise wrong_weights(entry, weights, exc) from None
    return net


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


@register_loader("timm")
class TimmLoader(BaseLoader):
    """timm models: preprocessing from the pretrained config, tokens from ``forward_features``."""

    def data_config(self, entry):
        import timm.data
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(entry.model_id)
        if cfg is None:
            raise MedfmError(f"timm has no pretrained config {entry.model_id!r}", "upgrade timm: pip install -U timm")
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
        if weights.kind == "random" or entry.remap:
            net = seeded(lambda: timm.create_model(entry.model_id, pretrained=False, **kwargs))
            if weights.kind == "random":
                return net
            from medfm.backbones.remap import REMAPS

            state = REMAPS.get(entry.remap)(torch_load(weights.path), net)
            return load_strict(net, state, entry, weights)
        # timm's own checkpoint filters run here: key remapping (e.g. Meta's DINOv2 .pth) and
        # position-embedding resampling to img_size.
        try:
            with _strict_timm_load():
                return timm.create_model(
                    entry.model_id, pretrained=True, pretrained_cfg_overlay=dict(file=str(weights.path)), **kwargs
                )
        except MedfmError:
            raise
        except Exception as exc:  # noqa: BLE001 - timm reads the file itself: pickle/safetensors/zip errors too
            raise wrong_weights(entry, weights, exc) from None

    def tokens(self, net, x):
        out = net.forward_features(x)
        if out.ndim == 4 and getattr(net, "output_fmt", "") == "NHWC":  # Swin-like maps [B, H, W, C]
            return TokenOutput(prefix=None, patches=out.flatten(1, 2))
        if out.ndim == 4:  # CNN (or SAM's neck) feature map [B, C, H, W]
            return TokenOutput(prefix=None, patches=out.flatten(2).transpose(1, 2))
        p = self.num_prefix(net)
        return TokenOutput(prefix=out[:, :p], patches=out[:, p:])

    def final_norm(self, net):
        norm = getattr(net, "norm", None)
        return None if norm is None or isinstance(norm, nn.Identity) else norm


@register_loader("torchvision")
class TorchvisionLoader(BaseLoader):
    """torchvision classification models (their exact ImageNet files), trunk = ``model.features``."""

    default_blocks = "features"

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

        net = seeded(lambda: tvm.get_model(entry.model_id, weights=None))
        if weights.kind != "random":
            state = torch_load(weights.path)
            load_strict(net, state, entry, weights)  # whole file, classifier included: exact match
        net.classifier = nn.Identity()  # features only, as timm's num_classes=0
        return net

    def tokens(self, net, x):
        fmap = net.features(x)  # what the model's own classifier average-pools
        return TokenOutput(prefix=None, patches=fmap.flatten(2).transpose(1, 2))

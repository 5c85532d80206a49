"""SAM2 image encoders built by the ``sam2`` package from the configs it ships (no network).

The source study pools the FPN neck's ``vision_features`` (256 channels, the stride-16 level the
SAM2 decoder reads) over H×W — not the Hiera trunk. Patch tokens are that neck map flattened;
the trunk's last-stage map is kept as the ``trunk`` feature kind (what timm's ``sam2_hiera_*`` gives).
"""

from __future__ import annotations

from medfm.backbones.features import TokenOutput
from medfm.backbones.loaders import BaseLoader, load_strict, register_loader, seeded, torch_load, wrong_weights
from medfm.backbones.weights import HubSource

SAM2_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/{}.pt"


@register_loader("sam2")
class Sam2Loader(BaseLoader):
    requires = {"sam2": "sam2", "hydra": "hydra-core"}
    default_blocks = "trunk.blocks"

    def _cfg(self, entry):
        import sam2  # noqa: F401 - registers sam2's config module with hydra
        from hydra import compose
        from omegaconf import OmegaConf

        cfg = compose(config_name=f"configs/sam2.1/{entry.model_id}.yaml")
        OmegaConf.resolve(cfg)
        return cfg.model

    def data_config(self, entry):
        size = int(self._cfg(entry).image_size)
        # SAM2Transforms: squash-resize to the model size, ImageNet mean/std
        return {"input_size": (3, size, size), "interpolation": "bilinear", "mean": (0.485, 0.456, 0.406),
                "std": (0.229, 0.224, 0.225), "crop_pct": 1.0, "crop_mode": "squash"}

    def hub(self, entry):
        return HubSource(url=SAM2_URL.format(entry.model_id.replace("hiera_b+", "hiera_base_plus").replace("hiera_l", "hiera_large")))

    def build(self, entry, weights, img_size):
        from hydra.utils import instantiate

        state = None
        if weights.kind != "random":  # read the file first: a wrong one fails before the build
            state = torch_load(weights.path)
            state = {k.removeprefix("image_encoder."): v for k, v in state.items() if k.startswith("image_encoder.")}
            if not state:
                raise wrong_weights(entry, weights, "no 'image_encoder.*' keys (not a SAM2 checkpoint)")
        cfg = self._cfg(entry)
        net = seeded(lambda: instantiate(cfg.image_encoder, _recursive_=True))
        return net if state is None else load_strict(net, state, entry, weights)

    def tokens(self, net, x):
        trunk = net.trunk(x)
        feats, _ = net.neck(trunk)
        if net.scalp > 0:
            feats = feats[: -net.scalp]
        vision = feats[-1]  # = ImageEncoder.forward(x)["vision_features"]
        return TokenOutput(prefix=None, patches=vision.flatten(2).transpose(1, 2),
                           extra={"trunk": trunk[-1].flatten(2).transpose(1, 2)})

    def block_layout(self, entry):
        return "nhwc"  # Hiera blocks work on [B, H, W, C]
